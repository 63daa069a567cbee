"""Kernel addresses -> "function+0xoff" from /proc/kallsyms.

``parse_kallsyms`` and ``Kallsyms.symbolize`` are pure (tested from a recorded
file); ``read_kallsyms`` reads the running kernel's, ``start_read_kallsyms``
does it in a background thread and ``LazyKallsyms`` waits for it on first use.
Without root (or with kernel.kptr_restrict=2) every address reads as 0: then
nothing is symbolized and callers show the raw address.

Speed (6.18, ~120k text symbols): the lines are picked with one regular
expression and kept as their fixed-width hex text, which sorts and bisects like
the number, so no per-line int() or split(): ~40 ms instead of ~200 ms. The
result is cached per process while the set of loaded modules is unchanged
(/proc/modules), since module text moves when modules load or unload.
"""

from __future__ import annotations

import bisect
import re
import threading
from functools import cached_property
from operator import itemgetter

# Text symbols (functions): T/t. Weak (W/w) functions are text too.
# "ADDR TYPE NAME" then, for a module, "\t[MODULE]".
_TEXT_LINE = re.compile(r"^([0-9a-fA-F]+) [TtWw] (\S+)(?:[ \t]+\[([^\]\s]+)\])?[ \t]*$", re.M)


class Kallsyms:
    """Text symbols sorted by address. ``keys`` are the addresses as lowercase
    hex of one width (string order is then number order); aliases at one
    address keep their order in the file (the first one is shown)."""

    def __init__(self, keys: list[str], names: list[str], modules: list[str]):
        self.keys = keys
        self._names = names
        self._modules = modules
        self.width = len(keys[0]) if keys else 16

    def __bool__(self) -> bool:
        return bool(self.keys)

    def _index(self, addr: int) -> int:
        """Index of the first symbol at the highest address <= addr, or -1."""
        if not addr or not self.keys:
            return -1
        k = f"{addr:0{self.width}x}"
        if len(k) > self.width:
            i = len(self.keys) - 1
        else:
            i = bisect.bisect_right(self.keys, k) - 1
        if i < 0:
            return -1
        first = bisect.bisect_left(self.keys, self.keys[i], 0, i)
        return first

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the text symbol containing ``addr``."""
        i = self._index(addr)
        if i < 0:
            return None
        return self._names[i], addr - int(self.keys[i], 16)

    def symbolize(self, addr: int) -> str:
        """"nft_do_chain+0x3e8", "f+0x10 [mod]", or "0xffffffff81..." when unknown."""
        i = self._index(addr)
        if i < 0:
            return f"{addr:#x}"
        mod = self._modules[i]
        return f"{self._names[i]}+{addr - int(self.keys[i], 16):#x}" + (f" [{mod}]" if mod else "")

    # The deduplicated views (one name per address), for tests and tools.
    @cached_property
    def _unique(self) -> list[int]:
        return [i for i in range(len(self.keys)) if i == 0 or self.keys[i] != self.keys[i - 1]]

    @property
    def addrs(self) -> tuple[int, ...]:
        return tuple(int(self.keys[i], 16) for i in self._unique)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names[i] for i in self._unique)

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(self._modules[i] for i in self._unique)


def parse_kallsyms(text: str) -> Kallsyms:
    """Parse /proc/kallsyms text ("ADDR TYPE NAME [MODULE]" per line)."""
    found = _TEXT_LINE.findall(text)
    if not found:
        return Kallsyms([], [], [])
    width = max(len(a) for a, _, _ in found)
    if any(len(a) != width or not a.islower() and not a.isdigit() for a, _, _ in found):
        found = [(a.lower().zfill(width), n, m) for a, n, m in found]
    found.sort(key=itemgetter(0))  # stable: aliases keep the file's order
    keys = [f[0] for f in found]
    start = bisect.bisect_right(keys, "0" * width)  # hidden addresses (no root) read as 0
    return Kallsyms(keys[start:], [f[1] for f in found[start:]], [f[2] for f in found[start:]])


def read_kallsyms(path: str = "/proc/kallsyms") -> Kallsyms:
    """The running kernel's symbols (empty when addresses are hidden)."""
    try:
        with open(path) as f:
            return parse_kallsyms(f.read())
    except OSError:
        return Kallsyms([], [], [])


_cache_lock = threading.Lock()
_cache: dict[str, tuple[str, Kallsyms]] = {}  # path -> (/proc/modules text, symbols)


def _modules_stamp() -> str:
    try:
        with open("/proc/modules") as f:
            return f.read()
    except OSError:
        return ""


def read_kallsyms_cached(path: str = "/proc/kallsyms") -> Kallsyms:
    """``read_kallsyms``, reused while no module was loaded or unloaded."""
    stamp = _modules_stamp()
    with _cache_lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        syms = read_kallsyms(path)
        if syms:  # an empty read (no root) may succeed later
            _cache[path] = (stamp, syms)
        return syms


class LazyKallsyms:
    """Symbols read in a background thread; ``symbolize`` waits for them the
    first time it is called (most runs only need them for the first drop)."""

    def __init__(self, path: str = "/proc/kallsyms"):
        self._syms: Kallsyms | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="ipdbg-kallsyms",
                                        daemon=True)
        self._thread.start()

    def _run(self, path: str) -> None:
        try:
            self._syms = read_kallsyms_cached(path)
        except Exception:  # noqa: BLE001 - a failed read only means raw addresses
            self._syms = Kallsyms([], [], [])

    def get(self) -> Kallsyms:
        if self._syms is None:
            self._thread.join()
        return self._syms if self._syms is not None else Kallsyms([], [], [])

    def symbolize(self, addr: int) -> str:
        return self.get().symbolize(addr)


def start_read_kallsyms(path: str = "/proc/kallsyms") -> LazyKallsyms:
    return LazyKallsyms(path)
