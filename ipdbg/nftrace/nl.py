"""Netlink constants and message (de)serialisation for nf_tables and nfnetlink_log.

Pure: bytes in, values out (and values in, bytes out). Names are the kernel's
(include/uapi/linux/netlink.h, netfilter/nfnetlink.h, netfilter/nf_tables.h,
netfilter/nfnetlink_log.h, kernel 6.18).
"""

from __future__ import annotations

import struct

# linux/netlink.h
NETLINK_NETFILTER = 12
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33

# linux/netfilter/nfnetlink.h
NFNETLINK_V0 = 0
NFNL_SUBSYS_ULOG = 4
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10  # NLMSG_MIN_TYPE
NFNL_MSG_BATCH_END = 0x11
NFNLGRP_NFTABLES = 7
NFNLGRP_NFTRACE = 9

# linux/netfilter.h: protocol families (nfgen_family)
NFPROTO_UNSPEC, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_ARP = 0, 1, 2, 3
NFPROTO_NETDEV, NFPROTO_BRIDGE, NFPROTO_IPV6 = 5, 7, 10
NFT_FAMILY_NAMES = {NFPROTO_INET: "inet", NFPROTO_IPV4: "ip", NFPROTO_ARP: "arp",
                    NFPROTO_NETDEV: "netdev", NFPROTO_BRIDGE: "bridge", NFPROTO_IPV6: "ip6"}
NFT_FAMILY_NUMBERS = {v: k for k, v in NFT_FAMILY_NAMES.items()}
# Hooks (NF_INET_*; bridge hooks share the numbers)
NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD = 0, 1, 2
NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = 3, 4
# Verdicts (linux/netfilter.h) and nf_tables' own (nf_tables.h, enum nft_verdicts)
NF_DROP, NF_ACCEPT, NF_STOLEN, NF_QUEUE, NF_REPEAT, NF_STOP = 0, 1, 2, 3, 4, 5
NF_VERDICT_MASK = 0xFF
NFT_CONTINUE, NFT_BREAK, NFT_JUMP, NFT_GOTO, NFT_RETURN = -1, -2, -3, -4, -5
VERDICT_NAMES = {NF_DROP: "drop", NF_ACCEPT: "accept", NF_STOLEN: "stolen", NF_QUEUE: "queue",
                 NF_REPEAT: "repeat", NF_STOP: "stop", NFT_CONTINUE: "continue",
                 NFT_BREAK: "break", NFT_JUMP: "jump", NFT_GOTO: "goto", NFT_RETURN: "return"}

# nf_tables.h: enum nf_tables_msg_types
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN, NFT_MSG_DELCHAIN = 3, 4, 5
NFT_MSG_NEWRULE, NFT_MSG_GETRULE, NFT_MSG_DELRULE = 6, 7, 8
NFT_MSG_NEWSET, NFT_MSG_GETSET, NFT_MSG_DELSET = 9, 10, 11
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN, NFT_MSG_TRACE = 15, 16, 17
# Messages that change what a rule handle resolves to (ruleset notifications).
NFT_RULESET_CHANGES = frozenset({NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN,
                                 NFT_MSG_DELCHAIN, NFT_MSG_NEWRULE, NFT_MSG_DELRULE,
                                 NFT_MSG_NEWSET, NFT_MSG_DELSET, NFT_MSG_NEWSETELEM,
                                 NFT_MSG_DELSETELEM})

NFT_TABLE_F_DORMANT, NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST = 0x1, 0x2, 0x4
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_USE, NFTA_TABLE_HANDLE = 1, 2, 3, 4
NFTA_TABLE_OWNER = 7
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK = 1, 2, 3, 4
NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFTA_META_DREG, NFTA_META_KEY, NFTA_META_SREG = 1, 2, 3
NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA = 1, 2, 3
NFT_CMP_EQ = 0
NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_OFFSET, NFTA_PAYLOAD_LEN = 1, 2, 3, 4
NFT_PAYLOAD_LL_HEADER, NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER = 0, 1, 2
NFTA_BITWISE_SREG, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN = 1, 2, 3
NFTA_BITWISE_MASK, NFTA_BITWISE_XOR = 4, 5
NFT_REG_VERDICT, NFT_REG_1 = 0, 1
# enum nft_meta_keys
NFT_META_PROTOCOL, NFT_META_IIFNAME, NFT_META_OIFNAME = 1, 6, 7
NFT_META_NFTRACE, NFT_META_NFPROTO, NFT_META_L4PROTO = 12, 15, 16

# enum nft_trace_attributes
NFTA_TRACE_TABLE = 1
NFTA_TRACE_CHAIN = 2
NFTA_TRACE_RULE_HANDLE = 3
NFTA_TRACE_TYPE = 4
NFTA_TRACE_VERDICT = 5
NFTA_TRACE_ID = 6
NFTA_TRACE_LL_HEADER = 7
NFTA_TRACE_NETWORK_HEADER = 8
NFTA_TRACE_TRANSPORT_HEADER = 9
NFTA_TRACE_IIF = 10
NFTA_TRACE_IIFTYPE = 11
NFTA_TRACE_OIF = 12
NFTA_TRACE_OIFTYPE = 13
NFTA_TRACE_MARK = 14
NFTA_TRACE_NFPROTO = 15
NFTA_TRACE_POLICY = 16
NFTA_TRACE_PAD = 17
NFTA_TRACE_CT_ID = 18  # 6.16+
NFTA_TRACE_CT_DIRECTION = 19
NFTA_TRACE_CT_STATUS = 20
NFTA_TRACE_CT_STATE = 21
# enum nft_trace_types
NFT_TRACETYPE_UNSPEC, NFT_TRACETYPE_POLICY, NFT_TRACETYPE_RETURN, NFT_TRACETYPE_RULE = 0, 1, 2, 3

# linux/netfilter/nfnetlink_log.h
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ = 1, 2, 3
NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 4, 5, 6
NFULNL_CFG_CMD_NONE, NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 0, 1, 2
NFULNL_CFG_CMD_PF_BIND, NFULNL_CFG_CMD_PF_UNBIND = 3, 4
NFULNL_COPY_NONE, NFULNL_COPY_META, NFULNL_COPY_PACKET = 0, 1, 2
NFULA_PACKET_HDR, NFULA_MARK, NFULA_TIMESTAMP = 1, 2, 3
NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV = 4, 5
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # res_id is big-endian: packed by hand
_NLA = struct.Struct("=HH")


def _pad4(n: int) -> int:
    return (n + 3) & ~3


# ---- building -----------------------------------------------------------------

def nla(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _NLA.pack(n, atype) + payload + b"\0" * (_pad4(n) - n)


def nla_nested(atype: int, *children: bytes) -> bytes:
    return nla(atype | NLA_F_NESTED, b"".join(children))


def nla_str(atype: int, s: str) -> bytes:
    return nla(atype, s.encode() + b"\0")


def nla_be32(atype: int, v: int) -> bytes:
    return nla(atype, struct.pack("!I", v & 0xFFFFFFFF))


def nla_u8(atype: int, v: int) -> bytes:
    return nla(atype, bytes([v]))


def nlmsg(msg_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    return _NLMSGHDR.pack(16 + len(payload), msg_type, flags, seq, pid) + payload


def nfgenmsg(family: int, res_id: int = 0) -> bytes:
    return struct.pack("=BB", family, NFNETLINK_V0) + struct.pack("!H", res_id)


def nfnl_msg(subsys: int, msg: int, family: int, flags: int, seq: int, attrs: bytes = b"",
             res_id: int = 0) -> bytes:
    return nlmsg((subsys << 8) | msg, flags, seq, nfgenmsg(family, res_id) + attrs)


# ---- parsing ------------------------------------------------------------------

def parse_nlmsgs(buf: bytes | memoryview):
    """Yield (type, flags, seq, pid, payload-memoryview) for each message in ``buf``."""
    mv = memoryview(buf)
    off, end = 0, len(mv)
    unpack = _NLMSGHDR.unpack_from
    while off + 16 <= end:
        length, mtype, flags, seq, pid = unpack(mv, off)
        if length < 16 or off + length > end:
            break
        yield mtype, flags, seq, pid, mv[off + 16:off + length]
        off += _pad4(length)


def parse_attrs(buf: bytes | memoryview, offset: int = 0) -> dict[int, memoryview]:
    """Flat {type: payload} of the attributes in ``buf`` from ``offset`` (last one wins)."""
    out = {}
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    end = len(mv)
    unpack = _NLA.unpack_from
    while offset + 4 <= end:
        alen, atype = unpack(mv, offset)
        if alen < 4:
            break
        out[atype & NLA_TYPE_MASK] = mv[offset + 4:offset + alen]
        offset += (alen + 3) & ~3
    return out


def parse_nlmsgerr(payload: memoryview) -> int:
    """errno (positive, 0 for an ACK) from an NLMSG_ERROR payload."""
    return -struct.unpack_from("=i", payload, 0)[0]


def parse_str(v: memoryview | bytes) -> str:
    b = bytes(v)
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode(errors="replace")


def parse_be32(v) -> int:
    return struct.unpack_from("!I", v, 0)[0]


def parse_be64(v) -> int:
    return struct.unpack_from("!Q", v, 0)[0]
