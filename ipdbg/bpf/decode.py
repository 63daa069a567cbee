"""Bytes of drops.bpf.c <-> Python values (pure: no BPF, no /proc).

Keep in sync with ipdbg/bpf/drops.h: ``EVENT_FORMAT`` is ``struct drop_event``
and ``CONFIG_FORMAT`` is ``struct drops_config``, field by field, in order.
tests/unit/test_bpf_decode.py checks both sizes against the object's BTF.
"""

from __future__ import annotations

import gc
import socket
import struct
from collections.abc import Callable, Iterable

from ..events import IPPROTO_TCP, DropEvent, PacketKey
from ..filters import PacketFilter

# drops.h: DROP_KIND_*
KINDS = {1: "kfree_skb", 2: "icmp_send", 3: "tcp_send_reset"}
KIND_IDS = {v: k for k, v in KINDS.items()}

MAX_NETNS = 4096  # DROPS_MAX_NETNS: entries of the netns_filter hash map
MAX_REASONS = 16  # DROPS_MAX_REASONS
IFNAMSIZ = 16

# struct drop_event: ts_ns skb location | pid netns ifindex reason cpu ident seq |
# sport dport | kind family proto tcp_flags | icmp_type icmp_code | saddr daddr comm
EVENT_FORMAT = "=QQQIIIIIIIHHBBBBhh16s16s16s"
EVENT_FIELDS = ("ts_ns", "skb", "location", "pid", "netns", "ifindex", "reason", "cpu", "ident",
                "seq", "sport", "dport", "kind", "family", "proto", "tcp_flags", "icmp_type",
                "icmp_code", "saddr", "daddr", "comm")
EVENT = struct.Struct(EVENT_FORMAT)
EVENT_SIZE = EVENT.size  # 112

# struct drops_config: reasons[16] src{net,mask} dst{net,mask} ifname[16] n_netns
# n_reasons sport dport has_src has_dst family proto both_directions ports_need_l4
# has_ifname pad[1]
CONFIG_FORMAT = "=16I16s16s16s16s16sIIHHBBBBBBBx"
CONFIG_FIELDS = ("reasons", "src.net", "src.mask", "dst.net", "dst.mask", "ifname", "n_netns",
                 "n_reasons", "sport", "dport", "has_src", "has_dst", "family", "proto",
                 "both_directions", "ports_need_l4", "has_ifname")
CONFIG = struct.Struct(CONFIG_FORMAT)
CONFIG_SIZE = CONFIG.size  # 164


def _cidr(net) -> tuple[bytes, bytes]:
    """(network bytes, mask bytes), zero-padded to 16 bytes."""
    return (net.network_address.packed.ljust(16, b"\0"), net.netmask.packed.ljust(16, b"\0"))


def pack_config(flt: PacketFilter, netns_inodes: Iterable[int] = (),
                reason_values: Iterable[int] = (), iface: str | None = None) -> bytes:
    """The ``struct drops_config`` the BPF program reads (const volatile ``cfg``).

    The netns inodes themselves go into the ``netns_filter`` map
    (``pack_netns_keys``); the config only says how many there are."""
    from ..errors import UsageError

    inodes = list(dict.fromkeys(netns_inodes))
    reasons = list(dict.fromkeys(reason_values))
    if len(inodes) > MAX_NETNS:
        raise UsageError(f"at most {MAX_NETNS} network namespaces can be watched at once")
    if len(reasons) > MAX_REASONS:
        raise UsageError(f"at most {MAX_REASONS} drop reasons can be given at once")
    name = (iface or "").encode()
    if len(name) >= IFNAMSIZ or b"\0" in name or b"/" in name:
        raise UsageError(f"{iface!r} is not an interface name",
                         f"at most {IFNAMSIZ - 1} bytes, e.g. eth0")
    src_net, src_mask = _cidr(flt.src) if flt.src is not None else (b"", b"")
    dst_net, dst_mask = _cidr(flt.dst) if flt.dst is not None else (b"", b"")
    ports = bool(flt.sport or flt.dport)
    return CONFIG.pack(
        *(reasons + [0] * (MAX_REASONS - len(reasons))),
        src_net, src_mask, dst_net, dst_mask, name,
        len(inodes), len(reasons),
        flt.sport or 0, flt.dport or 0,
        flt.src is not None, flt.dst is not None,
        flt.family or 0, flt.proto or 0,
        bool(flt.both_directions), ports and flt.proto is None, bool(name),
    )


def pack_netns_keys(netns_inodes: Iterable[int]) -> list[bytes]:
    """The ``netns_filter`` map's keys (u32 inodes, host order), without repeats."""
    return [struct.pack("=I", i) for i in dict.fromkeys(netns_inodes)]


def format_addr(family: int, raw: bytes) -> str:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


class EventDecoder:
    """Decodes records of one run; caches what repeats (addresses, symbols).

    ``reason_names``: value -> name from the kernel's ``enum skb_drop_reason``
    (without the SKB_DROP_REASON_ prefix); ``symbolize``: address -> "func+0x1a".
    """

    def __init__(self, reason_names: dict[int, str] | None = None,
                 symbolize: Callable[[int], str] | None = None):
        self.reason_names = dict(reason_names or {})
        self.symbolize = symbolize
        self._addrs: dict[tuple[int, bytes], str] = {}
        self._syms: dict[int, str] = {}
        self._comms: dict[bytes, str] = {}

    def _addr(self, family: int, raw: bytes) -> str:
        k = (family, raw)
        s = self._addrs.get(k)
        if s is None:
            if len(self._addrs) > 65536:
                self._addrs.clear()
            s = self._addrs[k] = format_addr(family, raw)
        return s

    def _sym(self, addr: int) -> str:
        s = self._syms.get(addr)
        if s is None:
            if len(self._syms) > 65536:
                self._syms.clear()
            s = self._syms[addr] = (self.symbolize(addr) if self.symbolize and addr else "")
        return s

    def decode(self, rec: bytes) -> DropEvent:
        return self.decode_many((rec,))[0]

    def decode_many(self, records: Iterable[bytes]) -> list[DropEvent]:
        """Decode a batch of records (each one ``struct drop_event``)."""
        unpack = EVENT.unpack_from
        return self.decode_tuples(unpack(rec) for rec in records)

    def decode_buffer(self, buf: bytes, records: Iterable[tuple[int, int]]) -> list[DropEvent]:
        """Decode the records at (offset, length) in one buffer (a ring-buffer batch)."""
        unpack = EVENT.unpack_from
        return self.decode_tuples(unpack(buf, off) for off, n in records if n >= EVENT_SIZE)

    def decode_tuples(self, tuples: Iterable[tuple]) -> list[DropEvent]:
        """Decode a batch of ``EVENT`` tuples.

        This is the per-event hot path of ``ipdbg drops`` (the bench needs 200k
        events/s), so the frozen dataclasses are filled through
        their ``__dict__`` instead of their generated ``__init__`` (3x faster; the
        objects are identical: equality, hashing and repr are unchanged), and the
        cyclic GC is paused for the batch (these objects hold no cycles)."""
        out: list[DropEvent] = []
        append = out.append
        new = object.__new__
        kinds = KINDS
        reasons = self.reason_names
        addrs = self._addrs
        addr = self._addr
        syms = self._syms
        comms = self._comms
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for (ts, skb, loc, pid, netns, ifindex, reason, cpu, ident, seq, sport, dport,
                 kind, family, proto, flags, itype, icode, saddr, daddr, comm) in tuples:
                if family:
                    key = new(PacketKey)
                    key.__dict__.update(
                        family=family, proto=proto,
                        src=addrs.get((family, saddr)) or addr(family, saddr),
                        dst=addrs.get((family, daddr)) or addr(family, daddr),
                        sport=sport, dport=dport, ident=ident,
                        seq=seq if proto == IPPROTO_TCP else 0)
                else:
                    key = None
                c = comms.get(comm)
                if c is None:
                    c = comms[comm] = comm.split(b"\0", 1)[0].decode(errors="replace")
                ev = new(DropEvent)
                if kind == 1:
                    rname = reasons.get(reason)
                    if rname is None:
                        rname = f"reason {reason}"
                    sym = syms.get(loc)
                    if sym is None:
                        sym = self._sym(loc)
                    ev.__dict__.update(
                        kind="kfree_skb", ts_ns=ts, cpu=cpu, skb=skb, pid=pid, comm=c, netns=netns,
                        ifindex=ifindex, key=key, tcp_flags=flags if proto == IPPROTO_TCP else 0,
                        reason=reason, reason_name=rname, location=loc, location_sym=sym,
                        icmp_type=itype, icmp_code=icode)
                else:
                    ev.__dict__.update(
                        kind=kinds.get(kind, str(kind)), ts_ns=ts, cpu=cpu, skb=skb, pid=pid, comm=c,
                        netns=netns, ifindex=ifindex, key=key,
                        tcp_flags=flags if proto == IPPROTO_TCP else 0, reason=0, reason_name="",
                        location=loc, location_sym=self._sym(loc) if loc else "",
                        icmp_type=itype, icmp_code=icode)
                append(ev)
        finally:
            if gc_was_on:
                gc.enable()
        return out


# include/uapi/linux/bpf.h: BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_HDR = 8


def parse_ring_records(buf: bytes) -> tuple[list[tuple[int, int]], int]:
    """Walk a slice of a BPF ring buffer's data area, starting at the consumer
    position: ([(offset, length) of each committed record], bytes consumed).

    Each record is a u32 length (bit 31: still being written, bit 30:
    discarded), a u32 page offset, then the data, padded to 8 bytes
    (kernel/bpf/ringbuf.c). Stops at the first busy record and at a record cut
    by the end of ``buf``; discarded records are consumed but not returned.
    """
    recs = []
    off = 0
    avail = len(buf)
    unpack = struct.unpack_from
    flags = RINGBUF_BUSY | RINGBUF_DISCARD
    while off + RINGBUF_HDR <= avail:
        hdr = unpack("=I", buf, off)[0]
        if hdr & RINGBUF_BUSY:
            break
        n = hdr & ~flags
        if off + RINGBUF_HDR + n > avail:
            break
        if not hdr & RINGBUF_DISCARD:
            recs.append((off + RINGBUF_HDR, n))
        off += (n + RINGBUF_HDR + 7) & ~7
    return recs, off


def decode_drop_event(rec: bytes, reason_names: dict[int, str] | None = None,
                      symbolize: Callable[[int], str] | None = None) -> DropEvent:
    """One ring-buffer record -> DropEvent."""
    return EventDecoder(reason_names, symbolize).decode(rec)


def parse_reason_names(enum_values: dict[str, int]) -> dict[int, str]:
    """{"SKB_DROP_REASON_NO_SOCKET": 3, ...} (BTF enum) -> {3: "NO_SOCKET", ...}."""
    out: dict[int, str] = {}
    for name, value in enum_values.items():
        short = name[len("SKB_DROP_REASON_"):] if name.startswith("SKB_DROP_REASON_") else name
        if short == "MAX":
            continue
        out.setdefault(value, short)
    return out

