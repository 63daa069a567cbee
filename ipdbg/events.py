"""Event types shared by the engines and the correlator (pure: no I/O).

Engines turn raw bytes into these frozen dataclasses:
  * ``DropEvent``   - from BPF (kfree_skb, icmp_send, tcp_send_reset), decoded by
                      ipdbg.bpf.decode
  * ``TraceEvent``  - from nftrace netlink (NFT_MSG_TRACE) or from the legacy
                      TRACE records (nfnetlink_log), decoded by ipdbg.nftrace
The packet identity used to join them is ``PacketKey``; ``parse_packet_headers``
builds it from raw IPv4/IPv6 + transport header bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

# IANA protocol numbers
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
PROTO_NAMES = {IPPROTO_ICMP: "icmp", IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMPV6: "icmpv6"}

TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"),
                  (0x10, "ACK"), (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"))


def format_tcp_flags(flags: int) -> str:
    return ",".join(name for bit, name in TCP_FLAG_NAMES if flags & bit)


@dataclass(frozen=True)
class PacketKey:
    """What identifies one packet across BPF and netlink (not the skb pointer).

    ``ident`` is the IPv4 header's id or the IPv6 flow label; ``seq`` the TCP
    sequence number (0 for other protocols). For ICMP echo, ``sport`` holds the
    echo id and ``dport`` the sequence number.
    """

    family: int  # 4 or 6
    proto: int
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    ident: int = 0
    seq: int = 0

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))

    def flow(self) -> tuple:
        """The flow (no per-packet fields): retransmissions share it."""
        return (self.family, self.proto, self.src, self.dst, self.sport, self.dport)


@dataclass(frozen=True)
class DropEvent:
    """One kernel event from BPF: a freed skb (kfree_skb) or a reply it caused."""

    kind: str  # "kfree_skb" | "icmp_send" | "tcp_send_reset"
    ts_ns: int  # CLOCK_MONOTONIC (bpf_ktime_get_ns)
    cpu: int
    skb: int
    pid: int
    comm: str
    netns: int  # inode
    ifindex: int
    key: PacketKey | None  # None when the packet is not IPv4/IPv6
    tcp_flags: int = 0
    reason: int = 0  # numeric skb_drop_reason (kernel-specific)
    reason_name: str = ""  # from the running kernel's BTF, without the SKB_DROP_REASON_ prefix
    location: int = 0  # kernel address
    location_sym: str = ""  # "nft_do_chain+0x3e8"
    icmp_type: int = -1  # icmp_send only
    icmp_code: int = -1


# Trace event types (include/uapi/linux/netfilter/nf_tables.h, enum nft_trace_types)
TRACE_POLICY = "policy"
TRACE_RETURN = "return"
TRACE_RULE = "rule"


@dataclass(frozen=True)
class TraceEvent:
    """One verdict step of one packet in one chain.

    From nftrace: ``trace_id`` is NFTA_TRACE_ID, ``handle`` the nft rule handle.
    From legacy TRACE: ``trace_id`` is assigned by the decoder per packet,
    ``handle`` is None and ``rulenum`` is the iptables line number.
    """

    source: str  # "nftrace" | "legacy"
    netns: int
    trace_id: int
    family: str  # nft family name: "ip", "ip6", "inet", "bridge", ...
    table: str
    chain: str
    type: str  # TRACE_RULE | TRACE_RETURN | TRACE_POLICY
    verdict: str = ""  # "accept", "drop", "continue", "jump", "goto", "return", "queue", ...
    jump_target: str = ""
    handle: int | None = None
    rulenum: int | None = None
    policy: str = ""
    iif: int = 0
    oif: int = 0
    mark: int = 0
    nfproto: int = 0
    ts_ns: int = 0  # CLOCK_MONOTONIC when received
    key: PacketKey | None = None  # only on the first event of a packet in a base chain
    ct: dict = field(default_factory=dict, compare=False, hash=False)


def parse_packet_headers(network: bytes, transport: bytes | None = None) -> PacketKey | None:
    """PacketKey from an IPv4/IPv6 header (+ transport header when separate).

    When ``transport`` is None, the transport header is taken from ``network``
    after the IP header (as in a full packet from nfnetlink_log).
    """
    if not network:
        return None
    version = network[0] >> 4
    if version == 4 and len(network) >= 20:
        ihl = (network[0] & 0x0F) * 4
        ident = struct.unpack_from("!H", network, 4)[0]
        proto = network[9]
        src = str(ipaddress.IPv4Address(network[12:16]))
        dst = str(ipaddress.IPv4Address(network[16:20]))
        l4 = transport if transport is not None else network[ihl:]
        family = 4
    elif version == 6 and len(network) >= 40:
        ident = struct.unpack_from("!I", network, 0)[0] & 0xFFFFF
        proto = network[6]
        src = str(ipaddress.IPv6Address(network[8:24]))
        dst = str(ipaddress.IPv6Address(network[24:40]))
        l4 = transport if transport is not None else network[40:]
        family = 6
    else:
        return None
    sport = dport = seq = 0
    if proto in (IPPROTO_TCP, IPPROTO_UDP) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4, 0)
        if proto == IPPROTO_TCP and len(l4) >= 8:
            seq = struct.unpack_from("!I", l4, 4)[0]
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(l4) >= 8:
        sport, dport = struct.unpack_from("!HH", l4, 4)  # echo id, echo seq
    return PacketKey(family, proto, src, dst, sport, dport, ident, seq)
