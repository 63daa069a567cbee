"""What the user asked to watch: one packet filter shared by every engine (pure).

``PacketFilter`` is built from the CLI's --src/--dst/--proto/... options; the BPF
side packs it into its ``const volatile`` config, the nftrace side turns it into
an nft match, and the correlator re-checks decoded keys with ``match_key``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .errors import UsageError
from .events import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PacketKey

PROTOS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "icmp": IPPROTO_ICMP,
          "icmpv6": IPPROTO_ICMPV6, "all": None}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Endpoint:
    net: Network | None = None
    port: int | None = None


@dataclass(frozen=True)
class PacketFilter:
    src: Network | None = None
    dst: Network | None = None
    sport: int | None = None
    dport: int | None = None
    proto: int | None = None  # IPPROTO_*; None = any
    iface: str | None = None
    # Match packets in either direction (replies too), e.g. to tie a RST to its SYN.
    both_directions: bool = False
    reasons: tuple[str, ...] = field(default=())  # drop reason names; empty = any

    @property
    def family(self) -> int | None:
        """4 or 6 when an address pins it, else None (both)."""
        for net in (self.src, self.dst):
            if net is not None:
                return net.version
        if self.proto == IPPROTO_ICMP:
            return 4
        if self.proto == IPPROTO_ICMPV6:
            return 6
        return None


_BRACKETED = re.compile(r"^\[(?P<addr>[^\]]+)\](?::(?P<port>\d+))?$")


def parse_port(text: str, what: str = "port") -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"bad {what} {text!r}: expected a number from 1 to 65535")
    return int(text)


def parse_endpoint(text: str, what: str = "address") -> Endpoint:
    """HOST, HOST:PORT, CIDR, CIDR:PORT, [IPV6]:PORT, IPV6, :PORT.

    A bare IPv6 address (with several colons) has no port; use brackets for one.
    """
    text = text.strip()
    if not text:
        raise UsageError(f"empty {what}")
    m = _BRACKETED.match(text)
    if m:
        host, port = m.group("addr"), m.group("port")
    elif text.startswith(":"):
        host, port = "", text[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    net = None
    if host:
        try:
            net = ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise UsageError(
                f"bad {what} {text!r}: not an IPv4/IPv6 address or CIDR",
                "examples: 198.51.100.80:80, 10.0.0.0/24, [2001:db8::1]:443",
            ) from None
    return Endpoint(net, parse_port(port, f"port in {what}") if port else None)


def parse_proto(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return PROTOS[text.lower()]
    except KeyError:
        raise UsageError(f"bad protocol {text!r}", "use one of: " + ", ".join(PROTOS)) from None


def build_filter(src: str | None = None, dst: str | None = None, proto: str | None = None,
                 iface: str | None = None, reasons: tuple[str, ...] = ()) -> PacketFilter:
    s = parse_endpoint(src, "--src") if src else Endpoint()
    d = parse_endpoint(dst, "--dst") if dst else Endpoint()
    if s.net is not None and d.net is not None and s.net.version != d.net.version:
        raise UsageError("--src and --dst are of different IP versions")
    p = parse_proto(proto)
    if p in (IPPROTO_ICMP, IPPROTO_ICMPV6) and (s.port or d.port):
        raise UsageError("ports make no sense with --proto icmp/icmpv6")
    return PacketFilter(src=s.net, dst=d.net, sport=s.port, dport=d.port, proto=p,
                        iface=iface, reasons=tuple(reasons))


def _match_one(f: PacketFilter, src: str, dst: str, sport: int, dport: int) -> bool:
    if f.src is not None and ipaddress.ip_address(src) not in f.src:
        return False
    if f.dst is not None and ipaddress.ip_address(dst) not in f.dst:
        return False
    if f.sport is not None and sport != f.sport:
        return False
    if f.dport is not None and dport != f.dport:
        return False
    return True


def match_key(f: PacketFilter, key: PacketKey | None) -> bool:
    """Does a decoded packet match the filter? (ports only count for TCP/UDP)."""
    if key is None:
        return f == PacketFilter()
    if f.proto is not None and key.proto != f.proto:
        return False
    if f.proto is None and (f.sport or f.dport) and key.proto not in (IPPROTO_TCP, IPPROTO_UDP):
        return False
    fam = f.family
    if fam is not None and key.family != fam:
        return False
    if _match_one(f, key.src, key.dst, key.sport, key.dport):
        return True
    return f.both_directions and _match_one(f, key.dst, key.src, key.dport, key.sport)
