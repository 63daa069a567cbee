"""What this kernel and host really allow: probed with real syscalls, never guessed.

Two halves, kept apart:

* pure (``parse_*``, ``select_tier``, ``build_report_rows``, ...): take recorded text
  and values, return values; unit-tested from tests/fixtures/probe/.
* effects (``read_*``, ``probe_bpf``): raw bpf(2) and perf_event_open(2) through
  ctypes, /proc, /sys and the system binaries. Every fd a probe opens is closed before
  the probe returns, so nothing stays loaded or attached.

BPF probes load the smallest valid program (``r0 = 0; exit``) with the program type,
expected attach type and BTF id each mechanism needs, then attach it the way the
engine would (kernel/bpf/syscall.c: bpf_prog_load(), bpf_raw_tracepoint_open();
kernel/events/core.c: perf_event_set_bpf_prog()).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

from . import privileges as priv

# -- results ---------------------------------------------------------------

OK = "ok"
MISSING = "missing"  # the kernel/host does not have it
REFUSED = "refused"  # it exists but the kernel or a policy said no (EPERM/EACCES)
WARNING = "warning"  # works, but something deserves attention, or could not be probed

MECHANISMS = ("tp_btf", "raw_tp", "tracepoint", "fentry", "kprobe")

# Targets: the hooks the engines use (architecture.md, engine table).
TP_NAME = "kfree_skb"  # include/trace/events/skb.h
FENTRY_FUNC = "nft_do_chain"  # net/netfilter/nf_tables_core.c
FENTRY_MODULE = "nf_tables"  # where nft_do_chain lives when not built in
KPROBE_FUNC = "nft_do_chain"

# Kernel-internal errno values that leak to user space (include/linux/errno.h).
_KERNEL_ERRNOS = {512: "ERESTARTSYS", 524: "ENOTSUPP", 525: "ETOOSMALL"}


def format_errno(num: int) -> tuple[str, str]:
    """(name, text) of an errno: (\"EPERM\", \"Operation not permitted\")."""
    name = errno.errorcode.get(num) or _KERNEL_ERRNOS.get(num) or f"errno {num}"
    text = os.strerror(num) if num in errno.errorcode else "kernel-internal error"
    return name, text


@dataclass(frozen=True)
class ProbeResult:
    """One mechanism: could a minimal program be loaded, and attached?

    ``loadable``/``attachable`` are None when that step was not reached (or not
    tried, see ``detail``). ``step`` names where it stopped: "load", "attach",
    "target" (the hook does not exist), "privileges" (not tried) or "" when it worked.
    ``prog_id``/``link_id`` are what the kernel assigned (evidence of a real load).
    """

    mechanism: str
    target: str
    loadable: bool | None = None
    attachable: bool | None = None
    step: str = ""
    error: str = ""  # errno name: "EPERM"
    error_text: str = ""  # "Operation not permitted"
    detail: str = ""
    prog_id: int | None = None

    @property
    def status(self) -> str:
        if self.loadable and self.attachable:
            return OK
        if self.step == "privileges":
            return WARNING
        if self.error in ("EPERM", "EACCES"):
            return REFUSED
        return MISSING

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status
        return d


def select_tier(results: dict[str, ProbeResult]) -> str | None:
    """The engine tier (architecture.md, "Engines") from the probe results.

    tracepoint needs tp_btf (hence BTF); fentry and kprobe build on it. With both,
    kprobe wins: it adds the pwru-style path trace on top of the exact skb join.
    """

    def works(name):
        r = results.get(name)
        return r is not None and r.status == OK

    if not works("tp_btf"):
        return None
    if works("kprobe"):
        return "kprobe"
    if works("fentry"):
        return "fentry"
    return "tracepoint"


# -- pure parsers ----------------------------------------------------------


def parse_kernel_version(release: str) -> tuple[int, int, int]:
    """``"6.18.44-fc-v769"`` -> (6, 18, 44); missing parts are 0."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def parse_iptables_version(text: str) -> tuple[str | None, str | None]:
    """``"iptables v1.8.9 (nf_tables)"`` -> ("1.8.9", "nf_tables"); 1.8.x before the
    backend split (or 1.6) prints no parenthesis: backend "legacy"."""
    m = re.search(r"v(\d+(?:\.\d+)+)(?:\s+\((\w+)\))?", text)
    if not m:
        return None, None
    return m.group(1), m.group(2) or "legacy"


def parse_nft_version(text: str) -> str | None:
    """``"nftables v1.0.6 (Lester Gooch #5)"`` -> "1.0.6"."""
    m = re.search(r"nftables v(\d+(?:\.\d+)+)", text)
    return m.group(1) if m else None


def parse_save_rule_count(text: str) -> int:
    """Rules in iptables-save output: its ``-A CHAIN ...`` lines."""
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def parse_nf_log(entries: dict[str, str]) -> dict[str, str]:
    """/proc/sys/net/netfilter/nf_log/<pf> contents -> {family: logger} for bound ones.

    pf numbers: include/uapi/linux/netfilter.h (NFPROTO_*)."""
    names = {"0": "unspec", "1": "inet", "2": "ipv4", "3": "arp", "5": "netdev", "7": "bridge", "10": "ipv6", "12": "decnet"}
    out = {}
    for pf, val in sorted(entries.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 99):
        val = val.strip()
        if val and val != "NONE":
            out[names.get(pf, "pf" + pf)] = val
    return out


def parse_kfree_skb_params(params: list[tuple[str, str]]) -> dict:
    """What the ``btf_trace_kfree_skb`` typedef says about the tracepoint's arguments
    (first param is the BPF context). include/trace/events/skb.h: reason 5.17+,
    rx_sk 6.11+."""
    types = [t for _, t in params[1:]]
    return {
        "found": bool(params),
        "args": types,
        "has_reason": "enum skb_drop_reason" in types,
        "has_rx_sk": len(types) >= 4 and types[3] == "struct sock *",
    }


@dataclass
class Privileges:
    uid: int
    cap_eff: int
    caps: dict[str, bool] = field(default_factory=dict)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def missing(self, needed: list[int]) -> list[str]:
        return priv.missing_caps(self.cap_eff, needed)


CAPS_SHOWN = (priv.CAP_NET_ADMIN, priv.CAP_BPF, priv.CAP_PERFMON, priv.CAP_SYS_ADMIN)
# bpf(BPF_PROG_LOAD) of tracing programs: CAP_BPF + CAP_PERFMON (5.8+, kernel/bpf/syscall.c);
# perf_event_open system-wide: CAP_PERFMON.
CAPS_FOR_BPF = [priv.CAP_BPF, priv.CAP_PERFMON]


def parse_privileges(uid: int, status_text: str) -> Privileges:
    """From the uid and the text of /proc/self/status."""
    mask = priv.parse_cap_eff(status_text)
    return Privileges(uid, mask, {priv.CAP_NAMES[c]: bool(mask & (1 << c)) for c in CAPS_SHOWN})


@dataclass
class HostFacts:
    """Everything doctor reports; filled by ``read_host_facts`` or from fixtures."""

    kernel_release: str = ""
    privileges: Privileges | None = None
    btf_present: bool = False
    btf_types: int = 0
    btf_parse_seconds: float | None = None
    drop_reasons: int = 0  # values in enum skb_drop_reason
    netfilter_drop_reason: int | None = None
    kfree_skb: dict = field(default_factory=dict)  # parse_kfree_skb_params()
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    iptables_version: str | None = None
    iptables_backend: str | None = None
    rule_counts: dict[str, int | None] = field(default_factory=dict)  # "nft/ipv4" -> n; None: unreadable
    nft_version: str | None = None
    libbpf_version: str | None = None
    libnftables: str | None = None  # soname when loadable
    nf_log: dict[str, str] = field(default_factory=dict)
    nf_log_all_netns: str | None = None
    notes: list[str] = field(default_factory=list)


def format_host_facts(f: HostFacts) -> dict:
    """HostFacts as JSON-ready data (recorded as fixtures by tests/fixtures/probe/record.sh)."""
    d = asdict(f)
    d["probes"] = {k: asdict(v) for k, v in f.probes.items()}
    if f.privileges is not None:
        d["privileges"] = {"uid": f.privileges.uid, "cap_eff": f.privileges.cap_eff}
    return d


def parse_host_facts(d: dict) -> HostFacts:
    """The inverse of ``format_host_facts``."""
    d = dict(d)
    p = d.pop("privileges", None)
    probes = {k: ProbeResult(**v) for k, v in d.pop("probes", {}).items()}
    f = HostFacts(**d, probes=probes)
    if p is not None:
        mask = p["cap_eff"]
        f.privileges = Privileges(p["uid"], mask, {priv.CAP_NAMES[c]: bool(mask & (1 << c)) for c in CAPS_SHOWN})
    return f


def _row(item, status, detail):
    return {"item": item, "status": status, "detail": detail}


def _probe_detail(r: ProbeResult) -> str:
    if r.status == OK:
        return (
            f"loaded and attached to {r.target}"
            + (f" (prog id {r.prog_id})" if r.prog_id else "")
            + (f"; {r.detail}" if r.detail else "")
        )
    if r.step == "privileges":
        return r.detail
    where = {"load": "load", "attach": "attach", "target": "target"}.get(r.step, r.step)
    msg = f"{where} failed: {r.error} ({r.error_text})" if r.error else f"{where} failed"
    return msg + (f"; {r.detail}" if r.detail else "")


def build_report_rows(f: HostFacts) -> list[dict]:
    """The doctor table, one dict per row (item / status / detail). Pure."""
    rows = []
    p = f.privileges
    if p is not None:
        missing = p.missing(list(CAPS_SHOWN))
        have = ", ".join(n for n, ok in p.caps.items() if ok) or "none"
        rows.append(
            _row(
                "privileges",
                OK if not missing else WARNING,
                ("root" if p.is_root and not missing else f"uid {p.uid}") + f"; CapEff has {have}"
                + (f"; missing {', '.join(missing)}" if missing else ""),
            )
        )
    major = parse_kernel_version(f.kernel_release)
    rows.append(_row("kernel", OK, f.kernel_release or "unknown"))
    if f.btf_present:
        t = f" in {f.btf_parse_seconds * 1000:.0f} ms" if f.btf_parse_seconds is not None else ""
        rows.append(_row("BTF", OK, f"/sys/kernel/btf/vmlinux: {f.btf_types} types, parsed{t}"))
    else:
        rows.append(_row("BTF", MISSING, "/sys/kernel/btf/vmlinux absent (CONFIG_DEBUG_INFO_BTF off)"))
    for name in MECHANISMS:
        r = f.probes.get(name)
        if r is None:
            continue
        rows.append(_row(f"bpf {name}", r.status, _probe_detail(r)))
    if f.btf_present:
        k = f.kfree_skb
        if not k.get("found"):
            rows.append(_row("drop reasons", MISSING, "no btf_trace_kfree_skb in BTF"))
        elif not k.get("has_reason"):
            rows.append(_row("drop reasons", MISSING, "kfree_skb has no reason argument (kernel < 5.17)"))
        elif f.netfilter_drop_reason is None:
            rows.append(_row("drop reasons", WARNING, f"{f.drop_reasons} reasons, no NETFILTER_DROP (kernel < 5.18)"))
        else:
            rows.append(
                _row(
                    "drop reasons",
                    OK,
                    f"kfree_skb({', '.join(k.get('args', []))}); {f.drop_reasons} reasons, "
                    f"NETFILTER_DROP = {f.netfilter_drop_reason}",
                )
            )
    owner_ok = major >= (5, 12, 0)
    rows.append(
        _row(
            "nft owned tables",
            OK if owner_ok else MISSING,
            "NFT_TABLE_F_OWNER (kernel 5.12+): trace tables vanish with ipdbg"
            if owner_ok
            else "NFT_TABLE_F_OWNER needs kernel 5.12+: trace tables must be removed by hand if ipdbg is killed",
        )
    )
    if f.iptables_version:
        rows.append(_row("iptables", OK, f"v{f.iptables_version}, backend {f.iptables_backend}"))
    else:
        rows.append(_row("iptables", MISSING, "iptables not found"))
    rows.append(_rules_row(f.rule_counts))
    rows.append(_row("nft", OK if f.nft_version else MISSING, f"v{f.nft_version}" if f.nft_version else "nft not found"))
    rows.append(
        _row(
            "libbpf",
            OK if f.libbpf_version else MISSING,
            f"libbpf.so.1 v{f.libbpf_version}" if f.libbpf_version else "libbpf.so.1 not loadable (apt install libbpf1)",
        )
    )
    if f.libnftables:
        rows.append(_row("libnftables", OK, f"{f.libnftables}" + (f" (nftables v{f.nft_version})" if f.nft_version else "")))
    else:
        rows.append(_row("libnftables", MISSING, "libnftables.so.1 not loadable (apt install libnftables1)"))
    bound = ", ".join(f"{k}={v}" for k, v in f.nf_log.items()) or "no logger bound"
    all_ns = f"; nf_log_all_netns={f.nf_log_all_netns}" if f.nf_log_all_netns is not None else ""
    rows.append(_row("nf_log", OK, bound + all_ns))
    for note in f.notes:
        rows.append(_row("note", WARNING, note))
    return rows


def _rules_row(counts: dict[str, int | None]) -> dict:
    if not counts:
        return _row("rule backends", MISSING, "iptables-nft-save / iptables-legacy-save not found")
    text = ", ".join(f"{k} {'?' if v is None else v}" for k, v in counts.items())
    unread = [k for k, v in counts.items() if v is None]
    nft = sum(v or 0 for k, v in counts.items() if k.startswith("nft"))
    legacy = sum(v or 0 for k, v in counts.items() if k.startswith("legacy"))
    if nft and legacy:
        return _row(
            "rule backends",
            WARNING,
            f"rules in BOTH nf_tables and legacy ({text}): both run, and each iptables "
            "command shows only its own backend",
        )
    if unread:
        return _row("rule backends", WARNING, f"could not read {', '.join(unread)} (rules: {text})")
    return _row("rule backends", OK, f"rules: {text}")


# -- effects: raw syscalls -------------------------------------------------

_SYSCALLS = {  # arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
    "riscv64": {"bpf": 280, "perf_event_open": 241},
    "i686": {"bpf": 357, "perf_event_open": 336},
    "armv7l": {"bpf": 386, "perf_event_open": 364},
    "s390x": {"bpf": 351, "perf_event_open": 331},
    "ppc64le": {"bpf": 361, "perf_event_open": 319},
}

# include/uapi/linux/bpf.h
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_GET_FD_BY_ID = 19
BPF_BTF_GET_NEXT_ID = 23
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
# include/uapi/linux/perf_event.h
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_SET_BPF = 0x40042408  # _IOW('$', 8, __u32)
PERF_ATTR_SIZE_VER5 = 112

PROG_NAME = b"ipdbg_probe"  # tests look for it in `bpftool prog list`
# r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT)
_INSNS = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_LICENSE = ctypes.create_string_buffer(b"GPL")

KPROBE_PMU_TYPE = "/sys/bus/event_source/devices/kprobe/type"
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class _SysErr(Exception):
    def __init__(self, num: int, detail: str = ""):
        self.errno = num
        self.detail = detail


_libc = None


def _syscall(name: str, *args) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    nr = _SYSCALLS.get(platform.machine(), {}).get(name)
    if nr is None:
        raise _SysErr(errno.ENOSYS, f"no {name} syscall number for {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        raise _SysErr(ctypes.get_errno())
    return ret


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    return _syscall("bpf", ctypes.c_long(cmd), attr, ctypes.c_long(len(attr)))


_ORDER = sys.byteorder


def _put(buf, off, size, value):
    ctypes.memmove(ctypes.addressof(buf) + off, value.to_bytes(size, _ORDER), size)


def _prog_load(prog_type: int, attach_type: int = 0, btf_id: int = 0, btf_obj_fd: int = 0) -> int:
    """BPF_PROG_LOAD of ``r0 = 0; exit``; returns the fd. union bpf_attr layout:
    include/uapi/linux/bpf.h (offsets stable since 5.5)."""
    insns = ctypes.create_string_buffer(_INSNS, len(_INSNS))
    log = ctypes.create_string_buffer(4096)
    attr = ctypes.create_string_buffer(144)
    _put(attr, 0, 4, prog_type)
    _put(attr, 4, 4, len(_INSNS) // 8)
    _put(attr, 8, 8, ctypes.addressof(insns))
    _put(attr, 16, 8, ctypes.addressof(_LICENSE))
    ctypes.memmove(ctypes.addressof(attr) + 48, PROG_NAME, len(PROG_NAME))
    _put(attr, 68, 4, attach_type)  # expected_attach_type
    _put(attr, 108, 4, btf_id)  # attach_btf_id
    _put(attr, 112, 4, btf_obj_fd)  # attach_btf_obj_fd: the module's BTF (5.11+)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except _SysErr as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOSPC):
            raise
        # Ask again with the verifier's log: it says why (e.g. "attach_btf_id is not a function").
        _put(attr, 24, 4, 1)
        _put(attr, 28, 4, len(log))
        _put(attr, 32, 8, ctypes.addressof(log))
        try:
            fd = _bpf(BPF_PROG_LOAD, attr)
        except _SysErr:
            text = log.value.decode(errors="replace").strip().splitlines()
            raise _SysErr(exc.errno, text[-1] if text else "") from None
        os.close(fd)
        raise


def _prog_id(fd: int) -> int | None:
    info = ctypes.create_string_buffer(256)  # struct bpf_prog_info: type @0, id @4
    attr = ctypes.create_string_buffer(16)
    _put(attr, 0, 4, fd)
    _put(attr, 4, 4, len(info))
    _put(attr, 8, 8, ctypes.addressof(info))
    try:
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    except _SysErr:
        return None
    return int.from_bytes(info.raw[4:8], _ORDER)


def _raw_tp_open(prog_fd: int, name: bytes | None) -> int:
    name_buf = ctypes.create_string_buffer(name) if name else None
    attr = ctypes.create_string_buffer(16)
    _put(attr, 0, 8, ctypes.addressof(name_buf) if name_buf is not None else 0)
    _put(attr, 8, 4, prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr)


def _perf_open(ptype: int, config: int, config1: int = 0) -> int:
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE_VER5)
    _put(attr, 0, 4, ptype)
    _put(attr, 4, 4, PERF_ATTR_SIZE_VER5)
    _put(attr, 8, 8, config)
    _put(attr, 16, 8, 1)  # sample_period
    _put(attr, 48, 4, 1)  # wakeup_events
    _put(attr, 56, 8, config1)  # kprobe_func
    # pid -1, cpu 0: system-wide on one CPU is enough to attach.
    return _syscall(
        "perf_event_open", attr, ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(-1),
        ctypes.c_long(PERF_FLAG_FD_CLOEXEC),
    )


def _perf_attach(perf_fd: int, prog_fd: int) -> None:
    try:
        fcntl.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
    except OSError as exc:
        raise _SysErr(exc.errno) from None


def read_tracepoint_id(category: str, name: str) -> tuple[int, str]:
    """(id, where it was read) of a tracepoint. When tracefs is not mounted, mount it in
    a private mount namespace of a child process (invisible to the rest of the host)."""
    for d in TRACEFS_DIRS:
        path = f"{d}/events/{category}/{name}/id"
        if os.path.exists(path):
            with open(path) as f:
                return int(f.read()), path
    if shutil.which("unshare") is None:
        raise _SysErr(errno.ENOENT, "tracefs not mounted and unshare(1) not found")
    script = (
        'mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || exit 3; '
        f'cat /sys/kernel/tracing/events/{category}/{name}/id'
    )
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=10,
    )
    if p.returncode == 3:
        raise _SysErr(errno.EPERM, "tracefs not mounted, and mounting it privately was refused")
    if p.returncode != 0 or not p.stdout.strip().isdigit():
        raise _SysErr(errno.ENOENT, f"no tracepoint {category}:{name} in tracefs")
    return int(p.stdout), "tracefs is not mounted: id read from a private mount"


def _fail(mech, target, step, exc, loaded=None, prog_id=None):
    name, text = format_errno(exc.errno)
    return ProbeResult(
        mech, target, loadable=loaded, attachable=False if step == "attach" else None,
        step=step, error=name, error_text=text, detail=exc.detail, prog_id=prog_id,
    )


def _probe(mech: str, target: str, load, attach) -> ProbeResult:
    """load() -> prog fd; attach(prog_fd) -> list of fds. Everything is closed here."""
    try:
        prog_fd = load()
    except _SysErr as exc:
        return _fail(mech, target, "load", exc, loaded=False)
    fds = []
    try:
        pid = _prog_id(prog_fd)
        try:
            fds = attach(prog_fd)
        except _SysErr as exc:
            return _fail(mech, target, "attach", exc, loaded=True, prog_id=pid)
        return ProbeResult(mech, target, loadable=True, attachable=True, prog_id=pid)
    finally:
        for fd in fds:
            os.close(fd)
        os.close(prog_fd)


def _no_target(mech, target, why):
    return ProbeResult(mech, target, step="target", error="ENOENT", error_text=os.strerror(errno.ENOENT), detail=why)


def probe_tp_btf(kbtf) -> ProbeResult:
    target = f"btf_trace_{TP_NAME}"
    if kbtf is None:
        return _no_target("tp_btf", target, "no kernel BTF")
    btf_id = kbtf.find(target, "TYPEDEF")
    if btf_id is None:
        return _no_target("tp_btf", target, f"no {target} in the kernel's BTF")
    return _probe(
        "tp_btf", target,
        lambda: _prog_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, btf_id),
        lambda fd: [_raw_tp_open(fd, None)],
    )


def probe_raw_tp() -> ProbeResult:
    return _probe(
        "raw_tp", TP_NAME,
        lambda: _prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT),
        lambda fd: [_raw_tp_open(fd, TP_NAME.encode())],
    )


def probe_tracepoint() -> ProbeResult:
    target = f"skb:{TP_NAME}"
    try:
        tp_id, source = read_tracepoint_id("skb", TP_NAME)
    except _SysErr as exc:
        return _fail("tracepoint", target, "target", exc)

    def attach(prog_fd):
        pfd = _perf_open(PERF_TYPE_TRACEPOINT, tp_id)
        try:
            _perf_attach(pfd, prog_fd)
        except _SysErr:
            os.close(pfd)
            raise
        return [pfd]

    r = _probe("tracepoint", target, lambda: _prog_load(BPF_PROG_TYPE_TRACEPOINT), attach)
    if source.startswith("tracefs is not mounted"):
        r = dataclasses.replace(r, detail="; ".join(x for x in (r.detail, source) if x))
    return r


def read_module_btf_fd(module: str) -> int:
    """An fd of the kernel's BTF object for ``module`` (found by name among the loaded
    BTF objects: BPF_BTF_GET_NEXT_ID + BPF_OBJ_GET_INFO_BY_FD, 5.11+). The caller closes it."""
    next_id = 0
    while True:
        attr = ctypes.create_string_buffer(12)
        _put(attr, 0, 4, next_id)
        try:
            _bpf(BPF_BTF_GET_NEXT_ID, attr)
        except _SysErr as exc:
            if exc.errno == errno.ENOENT:
                raise _SysErr(errno.ENOENT, f"no BTF object for module {module}") from None
            raise
        next_id = int.from_bytes(attr.raw[4:8], _ORDER)
        attr = ctypes.create_string_buffer(12)
        _put(attr, 0, 4, next_id)
        try:
            fd = _bpf(BPF_BTF_GET_FD_BY_ID, attr)
        except _SysErr:
            continue  # freed meanwhile
        name = ctypes.create_string_buffer(64)
        info = ctypes.create_string_buffer(32)  # struct bpf_btf_info: name @16, name_len @24
        _put(info, 16, 8, ctypes.addressof(name))
        _put(info, 24, 4, len(name))
        iattr = ctypes.create_string_buffer(16)
        _put(iattr, 0, 4, fd)
        _put(iattr, 4, 4, len(info))
        _put(iattr, 8, 8, ctypes.addressof(info))
        try:
            _bpf(BPF_OBJ_GET_INFO_BY_FD, iattr)
        except _SysErr:
            os.close(fd)
            continue
        if name.value.decode(errors="replace") == module:
            return fd
        os.close(fd)


def _fentry_target(kbtf, func: str, module: str, btf_dir: str):
    """(btf_id, module name or "") of ``func``: in vmlinux, else in the module's split BTF
    (Debian builds nf_tables as a module; /sys/kernel/btf/<module>, 5.11+)."""
    btf_id = kbtf.find(func, "FUNC")
    if btf_id is not None:
        return btf_id, ""
    from .btf import parse_btf

    try:
        with open(os.path.join(btf_dir, module), "rb") as f:
            mod = parse_btf(f.read(), base=kbtf)
    except FileNotFoundError:
        raise _SysErr(errno.ENOENT, f"{func} not in vmlinux BTF and module {module} not loaded") from None
    btf_id = mod.find(func, "FUNC")
    if btf_id is None:
        raise _SysErr(errno.ENOENT, f"no {func} in the BTF of vmlinux or {module}")
    return btf_id, module


def probe_fentry(kbtf, btf_dir: str = "/sys/kernel/btf") -> ProbeResult:
    if kbtf is None:
        return _no_target("fentry", FENTRY_FUNC, "no kernel BTF")
    try:
        btf_id, module = _fentry_target(kbtf, FENTRY_FUNC, FENTRY_MODULE, btf_dir)
    except _SysErr as exc:
        return _fail("fentry", FENTRY_FUNC, "target", exc)
    target = f"{module}:{FENTRY_FUNC}" if module else FENTRY_FUNC

    def load():
        if not module:
            return _prog_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, btf_id)
        obj_fd = read_module_btf_fd(module)
        try:
            return _prog_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, btf_id, obj_fd)
        finally:
            os.close(obj_fd)

    # fentry links also come from BPF_RAW_TRACEPOINT_OPEN (5.5+).
    return _probe("fentry", target, load, lambda fd: [_raw_tp_open(fd, None)])


def probe_kprobe() -> ProbeResult:
    def attach(prog_fd):
        try:
            with open(KPROBE_PMU_TYPE) as f:
                pmu = int(f.read())
        except FileNotFoundError:
            raise _SysErr(errno.ENOENT, f"no kprobe PMU ({KPROBE_PMU_TYPE} missing): CONFIG_KPROBES is off") from None
        func = ctypes.create_string_buffer(KPROBE_FUNC.encode())
        pfd = _perf_open(pmu, 0, ctypes.addressof(func))
        try:
            _perf_attach(pfd, prog_fd)
        except _SysErr:
            os.close(pfd)
            raise
        return [pfd]

    return _probe("kprobe", KPROBE_FUNC, lambda: _prog_load(BPF_PROG_TYPE_KPROBE), attach)


def probe_bpf(kbtf, privileges: Privileges | None = None) -> dict[str, ProbeResult]:
    """Probe every mechanism. Without CAP_BPF/CAP_PERFMON nothing is tried: each result
    says which capability is missing."""
    if privileges is not None:
        missing = privileges.missing(CAPS_FOR_BPF)
        if missing:
            why = f"not probed: needs {', '.join(missing)} (missing); run as root"
            targets = {"tp_btf": f"btf_trace_{TP_NAME}", "raw_tp": TP_NAME, "tracepoint": f"skb:{TP_NAME}",
                       "fentry": FENTRY_FUNC, "kprobe": KPROBE_FUNC}
            return {m: ProbeResult(m, targets[m], step="privileges", detail=why) for m in MECHANISMS}
    return {
        "tp_btf": probe_tp_btf(kbtf),
        "raw_tp": probe_raw_tp(),
        "tracepoint": probe_tracepoint(),
        "fentry": probe_fentry(kbtf),
        "kprobe": probe_kprobe(),
    }


# -- effects: host facts ---------------------------------------------------


def read_privileges() -> Privileges:
    with open("/proc/self/status") as f:
        return parse_privileges(os.geteuid(), f.read())


def _run(argv: list[str], timeout: float = 10) -> str | None:
    """stdout of a system binary, or None when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout + p.stderr if p.returncode == 0 else None


def read_libbpf_version() -> str | None:
    try:
        lib = ctypes.CDLL("libbpf.so.1")
        return f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"
    except (OSError, AttributeError):
        return None


def read_libnftables() -> str | None:
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    return "libnftables.so.1"


def read_rule_counts(allowed: bool = True) -> dict[str, int | None]:
    """Rules per backend and family; None where unreadable (``allowed`` False: not tried,
    since without CAP_NET_ADMIN a save may print an empty ruleset instead of failing)."""
    counts = {}
    for backend in ("nft", "legacy"):
        for fam, cmd in (("ipv4", "iptables"), ("ipv6", "ip6tables")):
            tool = f"{cmd}-{backend}-save"
            if shutil.which(tool) is None:
                continue
            out = _run([tool]) if allowed else None
            counts[f"{backend}/{fam}"] = None if out is None else parse_save_rule_count(out)
    return counts


def read_nf_log() -> tuple[dict[str, str], str | None]:
    base = "/proc/sys/net/netfilter/nf_log"
    entries = {}
    try:
        for pf in os.listdir(base):
            with open(os.path.join(base, pf)) as f:
                entries[pf] = f.read()
    except OSError:
        pass
    try:
        with open("/proc/sys/net/netfilter/nf_log_all_netns") as f:
            all_ns = f.read().strip()
    except OSError:
        all_ns = None
    return parse_nf_log(entries), all_ns


def read_host_facts(btf_path: str = "/sys/kernel/btf/vmlinux") -> HostFacts:
    """Probe everything doctor reports (loads and unloads BPF programs when allowed)."""
    import time

    from .btf import read_vmlinux_btf

    f = HostFacts(kernel_release=os.uname().release, privileges=read_privileges())
    kbtf = None
    try:
        t0 = time.perf_counter()
        kbtf = read_vmlinux_btf(btf_path)
        reasons = kbtf.enum_values("skb_drop_reason")
        f.btf_parse_seconds = time.perf_counter() - t0
        f.btf_present = True
        f.btf_types = kbtf.count
        f.drop_reasons = len(reasons)
        f.netfilter_drop_reason = reasons.get("SKB_DROP_REASON_NETFILTER_DROP")
        f.kfree_skb = parse_kfree_skb_params(kbtf.func_proto_params(f"btf_trace_{TP_NAME}"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        f.notes.append(f"{btf_path} unreadable: {exc}")
    f.probes = probe_bpf(kbtf, f.privileges)
    f.iptables_version, f.iptables_backend = parse_iptables_version(_run(["iptables", "--version"]) or "")
    can_read_rules = not f.privileges.missing([priv.CAP_NET_ADMIN])
    f.rule_counts = read_rule_counts(can_read_rules)
    if not can_read_rules:
        f.notes.append("rule counts need CAP_NET_ADMIN (missing): run as root")
    f.nft_version = parse_nft_version(_run(["nft", "--version"]) or "")
    f.libbpf_version = read_libbpf_version()
    f.libnftables = read_libnftables()
    f.nf_log, f.nf_log_all_netns = read_nf_log()
    return f
