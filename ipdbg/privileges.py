"""Capability checks: name the missing privilege before anything starts."""

from __future__ import annotations

from .errors import PrivilegeError

# include/uapi/linux/capability.h
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
CAP_SYS_PTRACE = 19
CAP_PERFMON = 38
CAP_BPF = 39

CAP_NAMES = {
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_NET_RAW: "CAP_NET_RAW",
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
    CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
    CAP_PERFMON: "CAP_PERFMON",
    CAP_BPF: "CAP_BPF",
}


def parse_cap_eff(status_text: str) -> int:
    """The CapEff mask from the text of /proc/<pid>/status."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_caps(mask: int, needed: list[int]) -> list[str]:
    """Names of the capabilities in ``needed`` that ``mask`` lacks.

    CAP_BPF and CAP_PERFMON (5.8+) are also granted by CAP_SYS_ADMIN
    (kernel/bpf/syscall.c: bpf_capable(), perfmon_capable()).
    """
    out = []
    for cap in needed:
        if mask & (1 << cap):
            continue
        if cap in (CAP_BPF, CAP_PERFMON) and mask & (1 << CAP_SYS_ADMIN):
            continue
        out.append(CAP_NAMES.get(cap, f"capability {cap}"))
    return out


def read_cap_eff() -> int:
    with open("/proc/self/status") as f:
        return parse_cap_eff(f.read())


def require_caps(needed: list[int], what: str) -> None:
    """Raise PrivilegeError naming every missing capability for ``what``."""
    missing = missing_caps(read_cap_eff(), needed)
    if missing:
        raise PrivilegeError(
            f"{what} needs {', '.join(missing)} (missing)",
            "run as root (sudo ipdbg ...), or grant " + ", ".join(missing),
        )
