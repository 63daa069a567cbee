"""Decode nftrace (NFT_MSG_TRACE) and legacy TRACE (nfnetlink_log) messages (pure).

``decode_trace`` turns the payload of one NFT_MSG_TRACE message (after the
nlmsghdr) into a TraceEvent, with the kernel's attribute names
(include/uapi/linux/netfilter/nf_tables.h, net/netfilter/nf_tables_trace.c).
``decode_nflog`` turns one NFULNL_MSG_PACKET carrying the
``TRACE: table:chain:type:N`` prefix of ip_tables/ip6_tables into a TraceEvent
with ``source="legacy"``.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import zlib

from ..events import TRACE_POLICY, TRACE_RETURN, TRACE_RULE, PacketKey, TraceEvent, parse_packet_headers
from . import nl
from .nl import (NFTA_TRACE_CHAIN, NFTA_TRACE_CT_DIRECTION, NFTA_TRACE_CT_ID, NFTA_TRACE_CT_STATE,
                 NFTA_TRACE_CT_STATUS, NFTA_TRACE_ID, NFTA_TRACE_IIF, NFTA_TRACE_MARK,
                 NFTA_TRACE_NETWORK_HEADER, NFTA_TRACE_NFPROTO, NFTA_TRACE_OIF, NFTA_TRACE_POLICY,
                 NFTA_TRACE_RULE_HANDLE, NFTA_TRACE_TABLE, NFTA_TRACE_TRANSPORT_HEADER,
                 NFTA_TRACE_TYPE, NFTA_TRACE_VERDICT, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE)

TRACE_TYPES = {nl.NFT_TRACETYPE_POLICY: TRACE_POLICY, nl.NFT_TRACETYPE_RETURN: TRACE_RETURN,
               nl.NFT_TRACETYPE_RULE: TRACE_RULE}
# Not a kernel trace type: ipdbg's own chain saw the packet on that hook (table and chain
# are ours: chain "prerouting" or "output"), verdict "". No rule of the user's is involved.
TRACE_SEEN = "seen"

# NF_CT_STATE_* bits as nft_ct reports them (include/uapi/linux/netfilter/nf_conntrack_common.h:
# NF_CT_STATE_BIT(ctinfo) = 1 << (ctinfo + 1), INVALID = 1, UNTRACKED = 1 << 6).
CT_STATE_BITS = ((1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked"))
CT_DIRECTIONS = {0: "original", 1: "reply"}

_BE32 = struct.Struct("!I")
_BE32S = struct.Struct("!i")
_BE64 = struct.Struct("!Q")
_NLA = struct.Struct("=HH")


class DecodeError(ValueError):
    """A message that does not have the shape the kernel sends."""


def format_verdict(code: int) -> str:
    """Verdict name for a NFTA_VERDICT_CODE / NFTA_TRACE_POLICY value."""
    if code >= 0:
        code &= nl.NF_VERDICT_MASK
    return nl.VERDICT_NAMES.get(code, str(code))


def _cstr(v: memoryview) -> str:
    b = v.tobytes()
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode(errors="replace")


def _attrs(mv: memoryview, off: int) -> dict:
    out = {}
    end = len(mv)
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        alen, atype = unpack(mv, off)
        if alen < 4:
            break
        out[atype & 0x3FFF] = mv[off + 4:off + alen]
        off += (alen + 3) & ~3
    return out


def decode_ct_state(bits: int) -> list[str]:
    return [name for bit, name in CT_STATE_BITS if bits & bit]


# Memo tables keep the hot path (20,000+ packets/s, several messages each) cheap: the
# same few table/chain names and addresses come back in almost every message.
_STRS: dict[bytes, str] = {}
_ADDRS: dict[bytes, str] = {}
_MEMO_MAX = 4096


def _name(v: memoryview) -> str:
    b = v.tobytes()
    s = _STRS.get(b)
    if s is None:
        i = b.find(b"\0")
        s = (b if i < 0 else b[:i]).decode(errors="replace")
        if len(_STRS) > _MEMO_MAX:
            _STRS.clear()
        _STRS[b] = s
    return s


def _addr(b: bytes) -> str:
    s = _ADDRS.get(b)
    if s is None:
        s = str(ipaddress.ip_address(b))
        if len(_ADDRS) > _MEMO_MAX:
            _ADDRS.clear()
        _ADDRS[b] = s
    return s


def decode_headers(network: bytes, transport: bytes) -> PacketKey | None:
    """ipdbg.events.parse_packet_headers for the NETWORK/TRANSPORT_HEADER pair, memoised.

    Same result (tests/unit/test_nftrace_decode.py checks it against the shared one).
    """
    if len(network) >= 20 and network[0] >> 4 == 4:
        proto = network[9]
        src, dst = _addr(network[12:16]), _addr(network[16:20])
        ident = (network[4] << 8) | network[5]
        family = 4
    elif len(network) >= 40 and network[0] >> 4 == 6:
        proto = network[6]
        src, dst = _addr(network[8:24]), _addr(network[24:40])
        ident = ((network[1] & 0x0F) << 16) | (network[2] << 8) | network[3]
        family = 6
    else:
        return None
    sport = dport = seq = 0
    n = len(transport)
    if proto == 6 or proto == 17:
        if n >= 4:
            sport, dport = _PORTS.unpack_from(transport, 0)
            if proto == 6 and n >= 8:
                seq = _BE32.unpack_from(transport, 4)[0]
    elif (proto == 1 or proto == 58) and n >= 8:
        sport, dport = _PORTS.unpack_from(transport, 4)
    return _new_key(family, proto, src, dst, sport, dport, ident, seq)


_PORTS = struct.Struct("!HH")
_new = object.__new__


def _new_key(family, proto, src, dst, sport, dport, ident, seq) -> PacketKey:
    k = _new(PacketKey)
    k.__dict__.update(family=family, proto=proto, src=src, dst=dst, sport=sport, dport=dport,
                      ident=ident, seq=seq)
    return k


def _new_event(**fields) -> TraceEvent:
    # The frozen dataclass's __init__ costs ~5 us through object.__setattr__ per field;
    # filling __dict__ gives the same object (equal, same hash) for a tenth of that.
    ev = _new(TraceEvent)
    ev.__dict__.update(fields)
    return ev


def decode_trace(payload: bytes | memoryview, netns: int = 0, ts_ns: int = 0) -> TraceEvent:
    """TraceEvent from the payload of one NFT_MSG_TRACE message (nfgenmsg + attributes)."""
    mv = payload if isinstance(payload, memoryview) else memoryview(payload)
    if len(mv) < 4:
        raise DecodeError("NFT_MSG_TRACE shorter than its nfgenmsg")
    family = nl.NFT_FAMILY_NAMES.get(mv[0]) or str(mv[0])
    a = _attrs(mv, 4)
    g = a.get
    tid = g(NFTA_TRACE_ID)
    tt = g(NFTA_TRACE_TYPE)
    if tid is None or tt is None:
        raise DecodeError("NFT_MSG_TRACE without NFTA_TRACE_ID or NFTA_TRACE_TYPE")
    u32 = _BE32.unpack_from
    ttype = u32(tt)[0]
    verdict = jump = policy = ""
    v = g(NFTA_TRACE_VERDICT)
    if v is not None:
        va = _attrs(v, 0)
        c = va.get(NFTA_VERDICT_CODE)
        if c is not None:
            verdict = format_verdict(_BE32S.unpack_from(c)[0])
        c = va.get(NFTA_VERDICT_CHAIN)
        if c is not None:
            jump = _name(c)
    p = g(NFTA_TRACE_POLICY)
    if p is not None:
        policy = format_verdict(u32(p)[0])
    h = g(NFTA_TRACE_RULE_HANDLE)
    key = None
    net = g(NFTA_TRACE_NETWORK_HEADER)
    if net is not None:
        tr = g(NFTA_TRACE_TRANSPORT_HEADER)
        key = decode_headers(net.tobytes(), tr.tobytes() if tr is not None else b"")
    ct = {}
    if NFTA_TRACE_CT_ID in a or NFTA_TRACE_CT_STATE in a:  # conntrack attributes, 6.16+
        if NFTA_TRACE_CT_ID in a:
            ct["id"] = u32(a[NFTA_TRACE_CT_ID])[0]
        if NFTA_TRACE_CT_DIRECTION in a:
            d = a[NFTA_TRACE_CT_DIRECTION][0]
            ct["direction"] = CT_DIRECTIONS.get(d, str(d))
        if NFTA_TRACE_CT_STATUS in a:
            ct["status"] = u32(a[NFTA_TRACE_CT_STATUS])[0]
        if NFTA_TRACE_CT_STATE in a:
            ct["state"] = decode_ct_state(u32(a[NFTA_TRACE_CT_STATE])[0])
    x = g(NFTA_TRACE_TABLE)
    table = _name(x) if x is not None else ""
    x = g(NFTA_TRACE_CHAIN)
    chain = _name(x) if x is not None else ""
    x = g(NFTA_TRACE_IIF)
    iif = u32(x)[0] if x is not None else 0
    x = g(NFTA_TRACE_OIF)
    oif = u32(x)[0] if x is not None else 0
    x = g(NFTA_TRACE_MARK)
    mark = u32(x)[0] if x is not None else 0
    x = g(NFTA_TRACE_NFPROTO)
    nfproto = u32(x)[0] if x is not None else 0
    return _new_event(
        source="nftrace", netns=netns, trace_id=u32(tid)[0], family=family, table=table, chain=chain,
        type=TRACE_TYPES.get(ttype) or str(ttype), verdict=verdict, jump_target=jump,
        handle=_BE64.unpack_from(h)[0] if h is not None else None, rulenum=None, policy=policy,
        iif=iif, oif=oif, mark=mark, nfproto=nfproto, ts_ns=ts_ns, key=key, ct=ct)


def decode_seen(payload: bytes | memoryview | None, netns: int = 0, ts_ns: int = 0,
                ev: TraceEvent | None = None) -> TraceEvent:
    """A TRACE_SEEN event from a message of ipdbg's own trace table (or its decoded ``ev``):
    where (table, chain = hook), which packet (key, interfaces), no verdict, no handle."""
    if ev is None:
        ev = decode_trace(payload, netns, ts_ns)
    fields = dict(ev.__dict__)
    fields.update(type=TRACE_SEEN, verdict="", jump_target="", handle=None, policy="", ts_ns=ts_ns or ev.ts_ns)
    return _new_event(**fields)


# ip_tables.c / ip6_tables.c trace_packet(): "TRACE: %s:%s:%s:%u " (table, chain, comment, rulenum)
# with comment one of "rule", "return", "policy" (comments[] in ip_tables.c).
_TRACE_PREFIX = re.compile(r"^TRACE: ([^:]+):([^:]+):(rule|return|policy):(\d+)")
_LEGACY_FAMILY = {nl.NFPROTO_IPV4: "ip", nl.NFPROTO_IPV6: "ip6"}


def decode_legacy_trace_id(key: PacketKey | None, payload: bytes) -> int:
    """A per-packet id for legacy TRACE records (the kernel sends none).

    Built from the fields that stay the same while one packet walks the legacy
    tables of one netns (addresses, ports, IP id / flow label, TCP seq), so the
    records of one packet share it. Offset above 2**32 so that it never equals
    an nftrace NFTA_TRACE_ID (a be32).
    """
    if key is not None:
        ident = f"{key.family}|{key.proto}|{key.src}|{key.dst}|{key.sport}|{key.dport}|{key.ident}|{key.seq}"
        return (1 << 32) | zlib.crc32(ident.encode())
    return (1 << 32) | zlib.crc32(payload[:64])


def decode_nflog(payload: bytes | memoryview, netns: int = 0, ts_ns: int = 0) -> TraceEvent | None:
    """TraceEvent from one NFULNL_MSG_PACKET payload, or None if it is not a TRACE record."""
    mv = payload if isinstance(payload, memoryview) else memoryview(payload)
    if len(mv) < 4:
        raise DecodeError("NFULNL_MSG_PACKET shorter than its nfgenmsg")
    pf = mv[0]
    a = _attrs(mv, 4)
    pre = a.get(nl.NFULA_PREFIX)
    if pre is None:
        return None
    m = _TRACE_PREFIX.match(_cstr(pre))
    if m is None:
        return None
    table, chain, ttype, num = m.group(1), m.group(2), m.group(3), int(m.group(4))
    data = a[nl.NFULA_PAYLOAD].tobytes() if nl.NFULA_PAYLOAD in a else b""
    key = parse_packet_headers(data) if data else None
    g = a.get
    return TraceEvent(
        source="legacy",
        netns=netns,
        trace_id=decode_legacy_trace_id(key, data),
        family=_LEGACY_FAMILY.get(pf, str(pf)),
        table=table,
        chain=chain,
        type=ttype,
        rulenum=num,
        iif=_BE32.unpack_from(g(nl.NFULA_IFINDEX_INDEV))[0] if nl.NFULA_IFINDEX_INDEV in a else 0,
        oif=_BE32.unpack_from(g(nl.NFULA_IFINDEX_OUTDEV))[0] if nl.NFULA_IFINDEX_OUTDEV in a else 0,
        mark=_BE32.unpack_from(g(nl.NFULA_MARK))[0] if nl.NFULA_MARK in a else 0,
        nfproto=pf,
        ts_ns=ts_ns,
        key=key,
    )


def decode_ruleset_change(msg_type: int, payload: bytes | memoryview) -> tuple[int, str] | None:
    """(NFT_MSG_*, table) for an NFNLGRP_NFTABLES notification that changes rules, else None.

    Attribute 1 is the table name in every such message (NFTA_TABLE_NAME,
    NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE).
    """
    if msg_type >> 8 != nl.NFNL_SUBSYS_NFTABLES:
        return None
    msg = msg_type & 0xFF
    if msg not in nl.NFT_RULESET_CHANGES:
        return None
    mv = payload if isinstance(payload, memoryview) else memoryview(payload)
    a = _attrs(mv, 4)
    return msg, (_cstr(a[1]) if 1 in a else "")
