"""nf_tables netlink messages for edits by line number on iptables-nft (pure).

Values in, bytes out; bytes in, values out. Used by ``ipdbg.rules.nftedit`` for
`-D CHAIN N`, `-R CHAIN N RULE` and `-I CHAIN N RULE` on the nf_tables backend:
read the ruleset generation, dump the chain's rules up to line N (only their
handles are looked at, never their expressions), then send one transaction
tagged with that generation, so the kernel refuses it (ERESTART) if anything in
the ruleset changed since it was read (nfnetlink_rcv_batch, NFNL_BATCH_GENID,
kernel 4.20+). Names are the kernel's (include/uapi/linux/netfilter/nf_tables.h
and nfnetlink.h, 6.18).
"""

from __future__ import annotations

import socket
import struct

from ..nftrace import nl

NFNL_BATCH_GENID = 1  # enum nfnl_batch_attributes
NFTA_GEN_ID = 1
NFTA_RULE_COMPAT = 5
NFTA_RULE_POSITION = 6
NFTA_RULE_USERDATA = 7
NFTA_RULE_COMPAT_PROTO, NFTA_RULE_COMPAT_FLAGS = 1, 2
NFT_RULE_COMPAT_F_INV = 1 << 1
NFPROTO = {4: nl.NFPROTO_IPV4, 6: nl.NFPROTO_IPV6}

_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_BE64 = struct.Struct("!Q")


def format_getgen(seq: int) -> bytes:
    return nl.nfnl_msg(nl.NFNL_SUBSYS_NFTABLES, nl.NFT_MSG_GETGEN, socket.AF_UNSPEC,
                       nl.NLM_F_REQUEST, seq)


def format_rule_dump(family: int, table: str, chain: str, seq: int) -> bytes:
    """GETRULE dump of one chain (nf_tables_dump_rules filters by table and chain)."""
    return nl.nfnl_msg(nl.NFNL_SUBSYS_NFTABLES, nl.NFT_MSG_GETRULE, NFPROTO[family],
                       nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq,
                       nl.nla_str(nl.NFTA_RULE_TABLE, table) + nl.nla_str(nl.NFTA_RULE_CHAIN, chain))


def parse_gen(buf: bytes, seq: int) -> int | None:
    """The generation id from a NEWGEN answer to request ``seq``; raises OSError on an error answer."""
    for mtype, _f, s, _p, payload in nl.parse_nlmsgs(buf):
        if s != seq:
            continue
        if mtype == nl.NLMSG_ERROR:
            err = nl.parse_nlmsgerr(payload)
            if err:
                raise OSError(err, "GETGEN")
            continue
        if mtype == (nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_NEWGEN:
            attrs = nl.parse_attrs(payload, 4)
            if NFTA_GEN_ID in attrs:
                return nl.parse_be32(attrs[NFTA_GEN_ID])
    return None


class RuleScan:
    """Feed the datagrams of a rule dump; stops caring after line ``want``.

    ``handles[i]`` is the handle of line i+1. Only each message's header and
    its NFTA_RULE_HANDLE are read (nf_tables_fill_rule_info puts table, chain,
    handle first), so a line deep in a 20,000-rule chain costs little here;
    ``done`` is set at NLMSG_DONE or once line ``want`` is seen, ``error`` to
    an errno from an NLMSG_ERROR.
    """

    __slots__ = ("seq", "want", "handles", "done", "error", "complete", "last")

    def __init__(self, seq: int, want: int):
        self.seq, self.want = seq, want
        self.handles: list[int] = []
        self.last = b""  # the whole message of line ``want``
        self.done = self.complete = False
        self.error = 0

    def feed(self, buf: bytes) -> None:
        off, end = 0, len(buf)
        unpack, handles, want = _HDR.unpack_from, self.handles, self.want
        rule_type = (nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_NEWRULE
        while off + 16 <= end:
            length, mtype, _flags, seq, _pid = unpack(buf, off)
            if length < 16 or off + length > end:
                break
            if seq == self.seq:
                if mtype == rule_type:  # (a dump the ruleset changed under: the generation tells)
                    handles.append(_find_handle(buf, off + 20, off + length))
                    if len(handles) >= want:
                        self.last = bytes(buf[off:off + length])
                        self.done = True
                        return
                elif mtype == nl.NLMSG_DONE:
                    self.done = self.complete = True
                    return
                elif mtype == nl.NLMSG_ERROR:
                    self.error = nl.parse_nlmsgerr(memoryview(buf)[off + 16:off + length]) or 0
                    self.done = True
                    return
            off += (length + 3) & ~3


def _find_handle(buf: bytes, off: int, end: int) -> int:
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        alen, atype = unpack(buf, off)
        if alen < 4:
            break
        if atype & nl.NLA_TYPE_MASK == nl.NFTA_RULE_HANDLE:
            return _BE64.unpack_from(buf, off + 4)[0]
        off += (alen + 3) & ~3
    return -1


def parse_rule_body(buf: bytes) -> list[tuple[int, int, bytes, bytes | None]]:
    """(handle, nfproto, expressions attribute, userdata attribute or None) of each rule
    message in a dump; the attributes whole (header included), to be sent back as they are."""
    out = []
    rule_type = (nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_NEWRULE
    for mtype, _f, _s, _p, payload in nl.parse_nlmsgs(buf):
        if mtype != rule_type:
            continue
        fam = payload[0]
        off, end = 4, len(payload)
        handle, exprs, udata = -1, None, None
        while off + 4 <= end:
            alen, atype = _NLA.unpack_from(payload, off)
            if alen < 4:
                break
            t = atype & nl.NLA_TYPE_MASK
            whole = bytes(payload[off:off + ((alen + 3) & ~3)])
            if t == nl.NFTA_RULE_HANDLE:
                handle = _BE64.unpack_from(payload, off + 4)[0]
            elif t == nl.NFTA_RULE_EXPRESSIONS:
                exprs = whole
            elif t == NFTA_RULE_USERDATA:
                udata = whole
            off += (alen + 3) & ~3
        if exprs is not None:
            out.append((handle, fam, exprs, udata))
    return out


def parse_rule_identity(msg: bytes) -> bytes:
    """What makes a rule message the same rule: its expressions (a counter's values
    left out: they move with traffic) and userdata. A rule replaced in place keeps
    its handle (nf_tables_newrule, NLM_F_REPLACE), so the handle alone is not it."""
    rules = parse_rule_body(msg)
    if not rules:
        return b""
    _h, _f, exprs, udata = rules[0]
    out = []
    for elem in _nested(exprs):
        attrs = nl.parse_attrs(elem, 0)
        name = nl.parse_str(attrs.get(nl.NFTA_EXPR_NAME, b""))
        out.append(name.encode() + b"\0" + (b"" if name == "counter" else bytes(elem)))
    return b"|".join(out) + b"#" + (udata or b"")


def parse_expr_names(exprs: bytes) -> list[str]:
    """The expression names, in order, of an NFTA_RULE_EXPRESSIONS attribute."""
    return [nl.parse_str(nl.parse_attrs(e, 0).get(nl.NFTA_EXPR_NAME, b"")) for e in _nested(exprs)]


# expressions that name another object of the table (a set, a stateful object):
# copied from the throw-away netns they would name the wrong one, or none
REFERENCING = frozenset({"lookup", "dynset", "objref"})


def _nested(attr: bytes):
    """The payloads of the attributes nested in ``attr`` (a whole attribute)."""
    off, end = 4, len(attr)
    while off + 4 <= end:
        alen, _t = _NLA.unpack_from(attr, off)
        if alen < 4:
            break
        yield attr[off + 4:off + alen]
        off += (alen + 3) & ~3


def format_compat(proto: int, inverted: bool) -> bytes:
    """NFTA_RULE_COMPAT as iptables-nft sends it for every rule (nft.c add_compat):
    the `-p` protocol, which xt matches check (e.g. tcp needs protocol 6). The kernel
    does not dump it back, so it is rebuilt from the rule's own `-p`."""
    return nl.nla_nested(NFTA_RULE_COMPAT, nl.nla_be32(NFTA_RULE_COMPAT_PROTO, proto),
                         nl.nla_be32(NFTA_RULE_COMPAT_FLAGS, NFT_RULE_COMPAT_F_INV if inverted else 0))


def format_edit_batch(op: str, family: int, table: str, chain: str, genid: int, seq: int,
                      handle: int | None = None, body: bytes = b"") -> tuple[bytes, int]:
    """(one nf_tables transaction, seq of the edit message whose ACK tells the outcome).

    op "delete": DELRULE ``handle``; "replace": NEWRULE|NLM_F_REPLACE of ``handle``
    in place; "insert": NEWRULE before rule ``handle``; "append": NEWRULE at the
    end (``handle`` None). ``body`` holds the new rule's expressions, userdata and
    compat attributes.
    """
    sub, fam = nl.NFNL_SUBSYS_NFTABLES, NFPROTO[family]
    req = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    where = nl.nla_str(nl.NFTA_RULE_TABLE, table) + nl.nla_str(nl.NFTA_RULE_CHAIN, chain)
    if op == "delete":
        msg, flags, attrs = nl.NFT_MSG_DELRULE, req, where + nl.nla(nl.NFTA_RULE_HANDLE, _BE64.pack(handle))
    elif op == "replace":
        msg, flags = nl.NFT_MSG_NEWRULE, req | nl.NLM_F_REPLACE
        attrs = where + nl.nla(nl.NFTA_RULE_HANDLE, _BE64.pack(handle)) + body
    elif op == "insert":
        msg, flags = nl.NFT_MSG_NEWRULE, req | nl.NLM_F_CREATE
        attrs = where + nl.nla(NFTA_RULE_POSITION, _BE64.pack(handle)) + body
    elif op == "append":
        msg, flags, attrs = nl.NFT_MSG_NEWRULE, req | nl.NLM_F_CREATE | nl.NLM_F_APPEND, where + body
    else:
        raise ValueError(op)
    begin = nl.nfnl_msg(0, nl.NFNL_MSG_BATCH_BEGIN, socket.AF_UNSPEC, nl.NLM_F_REQUEST, seq,
                        nl.nla_be32(NFNL_BATCH_GENID, genid), res_id=sub)
    edit = nl.nfnl_msg(sub, msg, fam, flags, seq + 1, attrs)
    end = nl.nfnl_msg(0, nl.NFNL_MSG_BATCH_END, socket.AF_UNSPEC, nl.NLM_F_REQUEST, seq + 2, res_id=sub)
    return begin + edit + end, seq + 1


def parse_acks(buf: bytes) -> dict[int, int]:
    """{seq: errno (0 = ACK)} of the NLMSG_ERROR messages in ``buf``."""
    out = {}
    for mtype, _f, s, _p, payload in nl.parse_nlmsgs(buf):
        if mtype == nl.NLMSG_ERROR:
            out[s] = nl.parse_nlmsgerr(payload)
    return out


# iptables' own names for -p (xtables.c xtables_chain_protos), before /etc/protocols
_PROTOS = {"tcp": 6, "sctp": 132, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58,
           "ipv6-icmp": 58, "esp": 50, "ah": 51, "ipv6-mh": 135, "mh": 135, "all": 0}


def parse_rule_proto(tokens: list[str]) -> tuple[int, bool] | None:
    """(protocol number, negated) of a rule's `-p`/`--protocol` ((0, False) without one);
    None when it is not a name this knows (the caller then lets iptables-restore do it)."""
    for i, tok in enumerate(tokens):
        if tok in ("-p", "--protocol", "--proto") and i + 1 < len(tokens):
            neg = i > 0 and tokens[i - 1] == "!"
            val = tokens[i + 1]
            if val == "!" and i + 2 < len(tokens):  # old syntax: -p ! tcp
                neg, val = True, tokens[i + 2]
            val = val.lower()
            if val.isdigit():
                n = int(val)
                return (n, neg) if 0 <= n <= 255 else None
            if val in _PROTOS:
                return _PROTOS[val], neg
            return None
    return 0, False
