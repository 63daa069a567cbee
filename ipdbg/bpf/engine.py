"""Load drops.bpf.o, attach it, and read the drops it reports (effects).

``DropMonitor`` is the one entry point (``ipdbg drops``, why-dropped, bench):

    with DropMonitor(build_filter(dst="198.51.100.80:80")) as mon:
        select.select([mon], [], [], 1.0)
        for ev in mon.poll(0): ...
        mon.lost

Programs are chosen per tier and per kind (``TIERS``). The tracepoint tier tries
each flavour in order, tp_btf first, then raw_tp, then the classic tracepoint
(which needs tracefs), and keeps the first that loads. The fentry and kprobe
tiers will add their programs to ``TIERS`` and reuse the same loader.
"""

from __future__ import annotations

import os
import platform
from contextlib import ExitStack
from dataclasses import dataclass

from ..errors import KernelError, SystemToolError, UsageError
from ..events import DropEvent
from ..filters import PacketFilter
from ..privileges import CAP_BPF, CAP_PERFMON, require_caps
from . import libbpf
from .decode import CONFIG_SIZE, EventDecoder, pack_config, pack_netns_keys, parse_reason_names

OBJECT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drops.bpf.o")
DEFAULT_RINGBUF_BYTES = 32 << 20  # ~300k events of 112 bytes: rides out bursts


@dataclass(frozen=True)
class ProgSpec:
    kind: str  # "kfree_skb" | "icmp_send" | "tcp_send_reset"
    flavour: str  # "tp_btf" | "raw_tp" | "tracepoint"
    program: str  # function name in drops.bpf.c
    tracepoint: str  # kernel tracepoint name (btf_trace_<name> in BTF)

    @property
    def attach_name(self) -> str:
        return f"{self.flavour}/{self.tracepoint}"


def _specs(kind: str, btf: str, raw: str, tp: str | None = None) -> list[ProgSpec]:
    out = [ProgSpec(kind, "tp_btf", btf, kind), ProgSpec(kind, "raw_tp", raw, kind)]
    if tp:
        out.append(ProgSpec(kind, "tracepoint", tp, kind))
    return out


# tier -> flavours to try in order -> programs
TIERS: dict[str, dict] = {
    "tracepoint": {
        "flavours": ("tp_btf", "raw_tp", "tracepoint"),
        "programs": (
            _specs("kfree_skb", "ipdbg_kfree_skb_btf", "ipdbg_kfree_skb_raw", "ipdbg_kfree_skb_tp")
            + _specs("icmp_send", "ipdbg_icmp_send_btf", "ipdbg_icmp_send_raw")
            + _specs("tcp_send_reset", "ipdbg_tcp_send_reset_btf", "ipdbg_tcp_send_reset_raw")
        ),
    },
}
ALL_KINDS = ("kfree_skb", "icmp_send", "tcp_send_reset")
# tiers whose drops come from another tier's programs (until they have their own)
SHARED_DROP_TIERS = {"fentry": "tracepoint", "kprobe": "tracepoint"}


def resolve_reasons(names: list[str] | tuple[str, ...], enum_values: dict[str, int]) -> list[int]:
    """Drop reason names (any case, with or without SKB_DROP_REASON_) -> values."""
    by_name = {n.upper(): v for v, n in parse_reason_names(enum_values).items()}
    out = []
    for name in names:
        key = name.upper()
        if key.startswith("SKB_DROP_REASON_"):
            key = key[len("SKB_DROP_REASON_"):]
        if key not in by_name:
            close = sorted(n for n in by_name if key[:4] in n)[:8]
            raise UsageError(f"unknown drop reason {name!r} on this kernel",
                             "known here: " + (", ".join(close) if close else ", ".join(sorted(by_name)[:12]) + ", ..."))
        out.append(by_name[key])
    return out


class DropMonitor:
    def __init__(self, flt: PacketFilter | None = None, netns_inodes: list[int] | None = None,
                 reasons: list[str] | None = None, kinds=ALL_KINDS, debug: bool = False,
                 tier: str = "tracepoint", ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES,
                 flavours: tuple[str, ...] | None = None, ring_reader: str = "auto",
                 iface: str | None = None):
        self.filter = flt or PacketFilter()
        self.netns_inodes = list(dict.fromkeys(netns_inodes or []))
        # only packets on this device (by name, in any watched netns), in the kernel
        self.iface = iface or None
        reasons = list(reasons or []) + [r for r in self.filter.reasons if r not in (reasons or [])]
        self.reasons = reasons
        self.kinds = tuple(kinds)
        for k in self.kinds:
            if k not in ALL_KINDS:
                raise UsageError(f"unknown event kind {k!r}", "use: " + ", ".join(ALL_KINDS))
        # The fentry and kprobe tiers see drops with the same tracepoint programs
        # (architecture.md, "Engines"); they add rule programs elsewhere.
        tier = SHARED_DROP_TIERS.get(tier, tier)
        if tier not in TIERS:
            raise UsageError(f"unknown engine tier {tier!r}", "use one of: " + ", ".join(TIERS))
        self.tier = tier
        self.debug = debug
        self.ringbuf_bytes = ringbuf_bytes
        # "mmap": our own reader of the ring (x86-64 only, see libbpf.MmapRing);
        # "libbpf": ring_buffer__poll with a callback per record (any CPU).
        if ring_reader == "auto":
            ring_reader = "mmap" if platform.machine() in ("x86_64", "AMD64") else "libbpf"
        if ring_reader not in ("mmap", "libbpf"):
            raise UsageError(f"unknown ring reader {ring_reader!r}")
        self.ring_reader = ring_reader
        # which flavours to try, in order (tests force the fallbacks with it)
        self.flavours = tuple(flavours) if flavours else TIERS[tier]["flavours"]
        self.attached: list[str] = []
        self.skipped: dict[str, str] = {}  # kind -> why it is not attached
        self.load_failures: list[str] = []  # flavours tried before the one that loaded
        self.links: list[libbpf.Link] = []
        self.reason_names: dict[int, str] = {}
        self._stack: ExitStack | None = None
        self._obj: libbpf.BpfObject | None = None
        self._ring: libbpf.RingBuffer | None = None
        self._lost_map: libbpf.Map | None = None
        self._decoder: EventDecoder | None = None

    # -- set-up ----------------------------------------------------------------

    def __enter__(self) -> "DropMonitor":
        require_caps([CAP_BPF, CAP_PERFMON], "watching drops with BPF")
        if not os.path.exists(OBJECT_PATH):
            raise SystemToolError(f"{OBJECT_PATH} is missing (the BPF objects are not built)",
                                  "run `make setup` (it runs `make -C ipdbg/bpf`)")
        facts = read_kernel_facts()
        enum = facts.reasons if facts is not None else {}
        self.reason_names = parse_reason_names(enum)
        reason_values = resolve_reasons(self.reasons, enum) if self.reasons else []
        config = pack_config(self.filter, self.netns_inodes, reason_values, self.iface)
        wanted = [k for k in self.kinds if facts is None or k in facts.tracepoints]
        for k in self.kinds:
            if k not in wanted:
                self.skipped[k] = f"this kernel has no {k} tracepoint"
        if "kfree_skb" not in wanted and "kfree_skb" in self.kinds:
            raise KernelError("this kernel has no skb:kfree_skb tracepoint")

        self._stack = ExitStack()
        try:
            self._load(wanted, config)
            self._lost_map = self._obj.map("lost")
            if self.ring_reader == "mmap":
                self._ring = libbpf.MmapRing(self._obj.map("events"), self.ringbuf_bytes)
            else:
                self._ring = libbpf.RingBuffer(self._obj.map("events"))
            self._stack.callback(self._ring.close)
            # Symbols: read from here on at SCHED_IDLE (_IdleSymbols), not
            # before the load (that slowed the load down ~4x on 2 CPUs).
            self._decoder = EventDecoder(self.reason_names, _IdleSymbols().symbolize)
        except BaseException:
            self._close()
            raise
        return self

    def _load(self, kinds: list[str], config: bytes) -> None:
        """Open, load and attach the programs of one flavour, trying them in
        order; a flavour whose kfree_skb program fails to load or attach is
        undone and the next one is tried (its error is kept for the report)."""
        tier = TIERS[self.tier]
        failures = []
        for flavour in self.flavours:
            chosen = [s for s in tier["programs"] if s.flavour == flavour and s.kind in kinds]
            if "kfree_skb" in kinds and not any(s.kind == "kfree_skb" for s in chosen):
                continue
            attempt = ExitStack()
            try:
                obj = libbpf.BpfObject(OBJECT_PATH, debug=self.debug)
                attempt.callback(obj.close)
                names = {s.program for s in chosen}
                for prog in obj.programs():
                    prog.set_autoload(prog.name in names)
                rodata = obj.map(".rodata").initial_value()
                if len(rodata) < CONFIG_SIZE:
                    raise KernelError(f".rodata of {OBJECT_PATH} is {len(rodata)} bytes, "
                                      f"expected {CONFIG_SIZE}: rebuild the BPF objects")
                # `cfg` is the only .rodata variable: offset 0 (drops.bpf.c).
                rodata[:CONFIG_SIZE] = config
                obj.map("events").set_max_entries(self.ringbuf_bytes)
                netns_map = obj.map("netns_filter")
                netns_map.set_max_entries(max(1, len(self.netns_inodes)))
                obj.load()
                # before any program is attached: no event escapes the filter
                for key in pack_netns_keys(self.netns_inodes):
                    netns_map.update(key, b"\1")
                links, attached, skipped = [], [], {}
                for spec in chosen:
                    try:
                        link = obj.program(spec.program).attach()
                    except KernelError as exc:
                        if spec.kind == "kfree_skb":
                            raise
                        skipped[spec.kind] = exc.message
                        continue
                    attempt.callback(link.close)  # closed before the object (LIFO)
                    links.append(link)
                    attached.append(spec.attach_name)
            except KernelError as exc:
                attempt.close()
                failures.append(f"{flavour}: {exc.message}")
                continue
            except BaseException:
                attempt.close()
                raise
            self._stack.enter_context(attempt)
            self._obj = obj
            self.links, self.attached = links, attached
            self.skipped.update(skipped)
            self.load_failures = failures
            return
        raise KernelError("no flavour of the drop programs loads and attaches: " + "; ".join(failures))

    # -- tear-down -------------------------------------------------------------

    def _close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()  # links first (LIFO), then the ring, then the object
        self.links = []
        self._ring = None
        self._obj = None

    def __exit__(self, *exc) -> None:
        self._close()

    close = _close

    # -- reading ---------------------------------------------------------------

    def fileno(self) -> int:
        return self._ring.fileno()

    def poll_raw(self, timeout_ms: int) -> list[bytes]:
        """The raw records (struct drop_event), for fixtures and benchmarks."""
        if self.ring_reader == "libbpf":
            return self._ring.poll(timeout_ms)
        self._ring.wait(timeout_ms)
        buf, recs = self._ring.read()
        return [buf[off:off + n] for off, n in recs]

    def poll(self, timeout_ms: int) -> list[DropEvent]:
        """Events ready within ``timeout_ms`` (0: do not wait; -1: wait), decoded."""
        if self.ring_reader == "libbpf":
            return self._decoder.decode_many(self._ring.poll(timeout_ms))
        self._ring.wait(timeout_ms)
        buf, recs = self._ring.read()
        return self._decoder.decode_buffer(buf, recs)

    def discard_pending(self) -> int:
        """Consume what is still in the ring without decoding it; return how many
        events that was (an exiting ``ipdbg drops`` reports them as unread)."""
        n = 0
        while True:
            if self.ring_reader == "libbpf":
                got = len(self._ring.consume())
            else:
                got = len(self._ring.read(max_bytes=1 << 24)[1])
            if not got:
                return n
            n += got

    def decode(self, records: list[bytes]) -> list[DropEvent]:
        return self._decoder.decode_many(records)

    @property
    def lost(self) -> int:
        """Events the kernel could not put in the ring buffer (all CPUs, so far)."""
        if self._lost_map is None:
            return 0
        return sum(self._lost_map.lookup_percpu_u64(0))

    @property
    def link_ids(self) -> list[int]:
        return [link.id for link in self.links]


class _IdleSymbols:
    """/proc/kallsyms (ipdbg.kallsyms: ~100 ms of CPU, generated by the kernel and
    parsed holding the GIL; cached per process), read in a thread that runs at
    SCHED_IDLE: it only takes CPU time nothing else wants. Read at normal
    priority right after attach, it took ~2.7% off the wall rate of a flood
    measured then (bench/events.py); read only when the first event needs it,
    it competed with the traffic that caused the event (iperf3 0.99 -> 0.95).
    The first event that needs a location puts the thread back to SCHED_OTHER
    (if it has not finished) and waits for it."""

    def __init__(self):
        import threading

        self._syms = None
        self._tid: int | None = None
        self._urgent = False
        self._thread = threading.Thread(target=self._run, name="ipdbg-kallsyms", daemon=True)
        self._thread.start()

    @staticmethod
    def _set_policy(tid: int, policy: int) -> None:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError:
            pass  # then it runs at the priority it has

    def _run(self) -> None:
        import threading

        from ..kallsyms import Kallsyms, read_kallsyms_cached

        self._tid = threading.get_native_id()
        self._set_policy(0, os.SCHED_IDLE)  # 0: this thread
        if self._urgent:  # symbolize() came first
            self._set_policy(0, os.SCHED_OTHER)
        try:
            self._syms = read_kallsyms_cached()
        except Exception:  # noqa: BLE001 - a failed read only means raw addresses
            self._syms = Kallsyms([], [], [])

    def symbolize(self, addr: int) -> str:
        if self._syms is None:
            self._urgent = True
            if self._tid is not None:
                self._set_policy(self._tid, os.SCHED_OTHER)
            self._thread.join()
        return self._syms.symbolize(addr)


@dataclass(frozen=True)
class KernelFacts:
    reasons: dict  # enum skb_drop_reason: name -> value
    tracepoints: frozenset  # kinds whose btf_trace_<kind> typedef exists


_facts_cache: list = []  # [KernelFacts | None] once read: the running kernel does not change


def read_kernel_facts() -> KernelFacts | None:
    """What the loader needs from the running kernel's BTF, read once per process
    (through libbpf's C parser; ipdbg.btf if that fails). None without BTF: then
    tp_btf cannot work, raw_tp and tracepoint may."""
    if _facts_cache:
        return _facts_cache[0]
    typedefs = [f"btf_trace_{k}" for k in ALL_KINDS]
    try:
        try:
            enum, present = libbpf.read_vmlinux_btf_facts("skb_drop_reason", typedefs)
        except SystemToolError:
            from ..btf import read_vmlinux_btf

            btf = read_vmlinux_btf()
            enum = btf.enum_values("skb_drop_reason")
            present = {t for t in typedefs if btf.find(t, "TYPEDEF") is not None}
        facts = KernelFacts(dict(enum), frozenset(k for k in ALL_KINDS if f"btf_trace_{k}" in present))
    except OSError:
        facts = None
    _facts_cache.append(facts)
    return facts


def read_drop_program_rows(facts=None) -> list[dict]:
    """`ipdbg doctor` section: load and attach the drop programs (matching nothing),
    report which attach, then detach. Rows: {"item", "status", "detail"}."""
    from ..filters import build_filter

    rows = []
    with DropMonitor(build_filter(dst="203.0.113.255/32", proto="udp")) as mon:
        for name, link in zip(mon.attached, mon.links):
            rows.append({"item": name, "status": "ok", "detail": f"attached (link id {link.id})"})
        for kind, why in mon.skipped.items():
            rows.append({"item": kind, "status": "missing", "detail": why})
        for failure in mon.load_failures:
            flavour, _, why = failure.partition(": ")
            rows.append({"item": f"{flavour} flavour", "status": "refused", "detail": why})
        rows.append({"item": "ring buffer", "status": "ok",
                     "detail": f"{mon.ringbuf_bytes >> 20} MiB, {mon.lost} events lost"})
    return rows
