"""The owned trace table as an nf_tables netlink batch (pure: values in, bytes out).

One table flagged NFT_TABLE_F_OWNER (kernel 5.12+; net/netfilter/nf_tables_api.c
binds it to the netlink socket that sends this batch and deletes it when that
socket is released), two base chains at priority INT_MIN on prerouting and
output, and rules that match the PacketFilter and do ``meta nftrace set 1``.
The rules are what `nft` would generate for, e.g.::

    meta nfproto ipv4 meta l4proto tcp ip daddr 198.51.100.0/24 tcp dport 80 meta nftrace set 1
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..events import IPPROTO_TCP, IPPROTO_UDP
from ..filters import PacketFilter
from . import nl
from .nl import nla, nla_be32, nla_nested, nla_str

PRIORITY_FIRST = -2147483648  # INT_MIN: before conntrack (-200), raw (-300) and every user chain
CHAINS = (("prerouting", nl.NF_INET_PRE_ROUTING), ("output", nl.NF_INET_LOCAL_OUT))
IFNAMSIZ = 16


@dataclass(frozen=True)
class Match:
    """One conjunction of the filter: a rule of the trace chain."""

    family: int | None  # 4, 6 or None
    proto: int | None
    src: object = None  # ipaddress network
    dst: object = None
    sport: int | None = None
    dport: int | None = None


def format_matches(flt: PacketFilter) -> list[Match]:
    """The filter as a list of conjunctions (one nft rule each).

    Ports without a protocol need a rule for TCP and one for UDP; both
    directions add the mirrored rules.
    """
    fams = [flt.family]  # pinned by an address or by icmp/icmpv6, else None (both)
    if flt.proto is not None:
        protos = [flt.proto]
    elif flt.sport is not None or flt.dport is not None:
        protos = [IPPROTO_TCP, IPPROTO_UDP]
    else:
        protos = [None]
    out = []
    dirs = [(flt.src, flt.dst, flt.sport, flt.dport)]
    if flt.both_directions:
        dirs.append((flt.dst, flt.src, flt.dport, flt.sport))
    for src, dst, sport, dport in dirs:
        for fam in fams:
            for proto in protos:
                m = Match(fam, proto, src, dst, sport, dport)
                if m not in out:
                    out.append(m)
    return out


# ---- expressions ----------------------------------------------------------------

def _expr(name: str, *attrs: bytes) -> bytes:
    return nla_nested(nl.NFTA_LIST_ELEM, nla_str(nl.NFTA_EXPR_NAME, name),
                      nla_nested(nl.NFTA_EXPR_DATA, *attrs))


def _data(atype: int, value: bytes) -> bytes:
    return nla_nested(atype, nla(nl.NFTA_DATA_VALUE, value))


def expr_meta_load(key: int) -> bytes:
    return _expr("meta", nla_be32(nl.NFTA_META_DREG, nl.NFT_REG_1), nla_be32(nl.NFTA_META_KEY, key))


def expr_cmp_eq(value: bytes) -> bytes:
    return _expr("cmp", nla_be32(nl.NFTA_CMP_SREG, nl.NFT_REG_1), nla_be32(nl.NFTA_CMP_OP, nl.NFT_CMP_EQ),
                 _data(nl.NFTA_CMP_DATA, value))


def expr_payload(base: int, offset: int, length: int) -> bytes:
    return _expr("payload", nla_be32(nl.NFTA_PAYLOAD_DREG, nl.NFT_REG_1),
                 nla_be32(nl.NFTA_PAYLOAD_BASE, base), nla_be32(nl.NFTA_PAYLOAD_OFFSET, offset),
                 nla_be32(nl.NFTA_PAYLOAD_LEN, length))


def expr_bitwise_mask(mask: bytes) -> bytes:
    return _expr("bitwise", nla_be32(nl.NFTA_BITWISE_SREG, nl.NFT_REG_1),
                 nla_be32(nl.NFTA_BITWISE_DREG, nl.NFT_REG_1), nla_be32(nl.NFTA_BITWISE_LEN, len(mask)),
                 _data(nl.NFTA_BITWISE_MASK, mask), _data(nl.NFTA_BITWISE_XOR, bytes(len(mask))))


def expr_set_nftrace() -> list[bytes]:
    """``meta nftrace set 1 accept``.

    nft_meta_set_init (net/netfilter/nft_meta.c): NFTRACE takes a 1-byte register
    load. The accept ends only our chain (the next hook entry still sees the
    packet, as after our policy accept) and saves two trace messages per packet
    and hook: without it, nft_do_chain (6.18) also reports our rule's continue,
    the end of our chain and our policy.
    """
    return [_expr("immediate", nla_be32(nl.NFTA_IMMEDIATE_DREG, nl.NFT_REG_1),
                  _data(nl.NFTA_IMMEDIATE_DATA, b"\x01")),
            _expr("meta", nla_be32(nl.NFTA_META_KEY, nl.NFT_META_NFTRACE),
                  nla_be32(nl.NFTA_META_SREG, nl.NFT_REG_1)),
            _expr("immediate", nla_be32(nl.NFTA_IMMEDIATE_DREG, nl.NFT_REG_VERDICT),
                  nla_nested(nl.NFTA_IMMEDIATE_DATA,
                             nla_nested(nl.NFTA_DATA_VERDICT, nla_be32(nl.NFTA_VERDICT_CODE, nl.NF_ACCEPT))))]


def _match_net(net, which: str) -> list[bytes]:
    if net.version == 4:
        off = 12 if which == "src" else 16
    else:
        off = 8 if which == "src" else 24
    size = net.max_prefixlen // 8
    exprs = [expr_payload(nl.NFT_PAYLOAD_NETWORK_HEADER, off, size)]
    if net.prefixlen < net.max_prefixlen:
        exprs.append(expr_bitwise_mask(net.netmask.packed))
    exprs.append(expr_cmp_eq(net.network_address.packed))
    return exprs


def format_rule_exprs(m: Match, hook: int, iface: str | None, table_family: str = "inet") -> list[bytes]:
    """Expressions of one trace rule (ending in ``meta nftrace set 1``)."""
    exprs: list[bytes] = []
    if m.family is not None:
        if table_family == "bridge":
            exprs += [expr_meta_load(nl.NFT_META_PROTOCOL),
                      expr_cmp_eq(struct.pack("!H", 0x0800 if m.family == 4 else 0x86DD))]
        else:
            exprs += [expr_meta_load(nl.NFT_META_NFPROTO),
                      expr_cmp_eq(bytes([nl.NFPROTO_IPV4 if m.family == 4 else nl.NFPROTO_IPV6]))]
    if iface:
        key = nl.NFT_META_IIFNAME if hook == nl.NF_INET_PRE_ROUTING else nl.NFT_META_OIFNAME
        exprs += [expr_meta_load(key), expr_cmp_eq(iface.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0"))]
    if m.proto is not None:
        exprs += [expr_meta_load(nl.NFT_META_L4PROTO), expr_cmp_eq(bytes([m.proto]))]
    if m.src is not None:
        exprs += _match_net(m.src, "src")
    if m.dst is not None:
        exprs += _match_net(m.dst, "dst")
    if m.sport is not None:
        exprs += [expr_payload(nl.NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2), expr_cmp_eq(struct.pack("!H", m.sport))]
    if m.dport is not None:
        exprs += [expr_payload(nl.NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2), expr_cmp_eq(struct.pack("!H", m.dport))]
    return exprs + expr_set_nftrace()


# ---- the batch ------------------------------------------------------------------

def format_trace_batch(table: str, flt: PacketFilter, family: str = "inet", seq: int = 1) -> tuple[bytes, list[int]]:
    """(bytes of one nfnetlink batch, seqs that expect an ACK) creating the owned trace table."""
    fam = nl.NFT_FAMILY_NUMBERS[family]
    sub = nl.NFNL_SUBSYS_NFTABLES
    req = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    msgs = [nl.nfnl_msg(0, nl.NFNL_MSG_BATCH_BEGIN, socket.AF_UNSPEC, nl.NLM_F_REQUEST, seq,
                        res_id=nl.NFNL_SUBSYS_NFTABLES)]
    acks = []
    s = seq + 1
    msgs.append(nl.nfnl_msg(sub, nl.NFT_MSG_NEWTABLE, fam, req | nl.NLM_F_CREATE | nl.NLM_F_EXCL, s,
                            nla_str(nl.NFTA_TABLE_NAME, table) +
                            nla_be32(nl.NFTA_TABLE_FLAGS, nl.NFT_TABLE_F_OWNER)))
    acks.append(s)
    matches = format_matches(flt)
    for chain, hook in CHAINS:
        s += 1
        hook_attr = nla_nested(nl.NFTA_CHAIN_HOOK, nla_be32(nl.NFTA_HOOK_HOOKNUM, hook),
                               nla_be32(nl.NFTA_HOOK_PRIORITY, PRIORITY_FIRST))
        msgs.append(nl.nfnl_msg(sub, nl.NFT_MSG_NEWCHAIN, fam, req | nl.NLM_F_CREATE, s,
                                nla_str(nl.NFTA_CHAIN_TABLE, table) + nla_str(nl.NFTA_CHAIN_NAME, chain) +
                                hook_attr + nla_be32(nl.NFTA_CHAIN_POLICY, nl.NF_ACCEPT) +
                                nla_str(nl.NFTA_CHAIN_TYPE, "filter")))
        acks.append(s)
        for m in matches:
            s += 1
            exprs = nla_nested(nl.NFTA_RULE_EXPRESSIONS, *format_rule_exprs(m, hook, flt.iface, family))
            msgs.append(nl.nfnl_msg(sub, nl.NFT_MSG_NEWRULE, fam, req | nl.NLM_F_CREATE | nl.NLM_F_APPEND, s,
                                    nla_str(nl.NFTA_RULE_TABLE, table) + nla_str(nl.NFTA_RULE_CHAIN, chain) +
                                    exprs))
            acks.append(s)
    s += 1
    msgs.append(nl.nfnl_msg(0, nl.NFNL_MSG_BATCH_END, socket.AF_UNSPEC, nl.NLM_F_REQUEST, s,
                            res_id=nl.NFNL_SUBSYS_NFTABLES))
    return b"".join(msgs), acks


def format_nflog_config(group: int, pf: int, cmd: int | None, seq: int, copy_range: int = 0,
                        nlbufsiz: int = 0, timeout: int | None = None, qthresh: int = 0) -> bytes:
    """One NFULNL_MSG_CONFIG request (net/netfilter/nfnetlink_log.c, nfulnl_recv_config)."""
    attrs = b""
    if cmd is not None:
        attrs += nl.nla_u8(nl.NFULA_CFG_CMD, cmd)
    if copy_range:
        attrs += nla(nl.NFULA_CFG_MODE, struct.pack("!IBB", copy_range, nl.NFULNL_COPY_PACKET, 0))
    if nlbufsiz:
        attrs += nla_be32(nl.NFULA_CFG_NLBUFSIZ, nlbufsiz)
    if timeout is not None:
        attrs += nla_be32(nl.NFULA_CFG_TIMEOUT, timeout)
    if qthresh:
        attrs += nla_be32(nl.NFULA_CFG_QTHRESH, qthresh)
    return nl.nfnl_msg(nl.NFNL_SUBSYS_ULOG, nl.NFULNL_MSG_CONFIG, pf, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq,
                       attrs, res_id=group)
