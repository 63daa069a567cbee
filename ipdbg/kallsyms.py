"""Kernel addresses -> "function+0xoff" from /proc/kallsyms.

``parse_kallsyms`` and ``Kallsyms.symbolize`` are pure (tested from a recorded
file); ``read_kallsyms`` reads the running kernel's. Without root (or with
kernel.kptr_restrict=2) every address reads as 0: then nothing is symbolized
and callers show the raw address.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Text symbols (functions): T/t. Weak (W/w) functions are text too.
_TEXT_TYPES = frozenset("TtWw")


@dataclass(frozen=True)
class Kallsyms:
    addrs: tuple[int, ...]  # sorted
    names: tuple[str, ...]  # "func"
    modules: tuple[str, ...]  # "" for the kernel image, else "nf_tables"

    def __bool__(self) -> bool:
        return bool(self.addrs)

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the text symbol containing ``addr``."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or not addr:
            return None
        return self.names[i], addr - self.addrs[i]

    def symbolize(self, addr: int) -> str:
        """"nft_do_chain+0x3e8", "f+0x10 [mod]", or "0xffffffff81..." when unknown."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or not addr:
            return f"{addr:#x}"
        mod = self.modules[i]
        return f"{self.names[i]}+{addr - self.addrs[i]:#x}" + (f" [{mod}]" if mod else "")


def parse_kallsyms(text: str) -> Kallsyms:
    """Parse /proc/kallsyms text ("ADDR TYPE NAME [MODULE]" per line)."""
    pairs: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        if not addr:
            continue  # hidden addresses (no root / kptr_restrict)
        mod = parts[3].strip("[]") if len(parts) > 3 else ""
        # Several names at one address (aliases): keep the first, as the kernel's
        # own %pS does for the lowest-indexed one.
        pairs.setdefault(addr, (parts[2], mod))
    addrs = sorted(pairs)
    return Kallsyms(tuple(addrs), tuple(pairs[a][0] for a in addrs),
                    tuple(pairs[a][1] for a in addrs))


def read_kallsyms(path: str = "/proc/kallsyms") -> Kallsyms:
    """The running kernel's symbols (empty when addresses are hidden)."""
    try:
        with open(path) as f:
            return parse_kallsyms(f.read())
    except OSError:
        return Kallsyms((), (), ())
