"""Print functions of iptables extensions, for ``iptables -L`` (pure).

One printer per match (``MATCH_PRINTERS``) and target (``TARGET_PRINTERS``),
reimplementing the ``print`` callback of iptables 1.8.9's extensions/libxt_*.c,
libipt_*.c and libip6t_*.c from the option text iptables-save wrote (their
``save`` callbacks). A printer raises ``UnsupportedExtension`` for anything it
has not been checked against (tests/root/test_rules_compat.py): the caller then
runs the system's ``iptables -L``, so a listing is never wrong, only slower.

Name lookups go through the injected resolver in ``PrintContext`` (see lookup.py).
"""

from __future__ import annotations

import ipaddress

from ..errors import IpdbgError
from .model import Match, Option, RuleParts

class UnsupportedExtension(IpdbgError):
    """A match or target whose -L text we do not render; fall back to iptables -L."""

    default_hint = "ipdbg falls back to the system's iptables -L for this listing"

    def __init__(self, kind: str, name: str, detail: str = ""):
        self.kind = kind  # "match" or "target"
        self.name = name
        super().__init__(f"{kind} {name}: {detail or 'no native renderer'}")


# libxtables xtables_chain_protos (1.8.9): names tried before getprotobynumber().
_CHAIN_PROTOS = {"tcp": 6, "sctp": 132, "udp": 17, "udplite": 136, "icmp": 1,
                 "ipv6-icmp": 58, "icmpv6": 58, "esp": 50, "ah": 51, "ipv6-mh": 135,
                 "mh": 135, "all": 0}
# Debian 12 netbase /etc/protocols (IANA numbers), for -n when no resolver is given.
_PROTOCOLS = {
    "ip": 0, "hopopt": 0, "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "tcp": 6,
    "egp": 8, "igp": 9, "pup": 12, "udp": 17, "hmp": 20, "xns-idp": 22, "rdp": 27,
    "iso-tp4": 29, "dccp": 33, "xtp": 36, "ddp": 37, "idpr-cmtp": 38, "ipv6": 41,
    "ipv6-route": 43, "ipv6-frag": 44, "idrp": 45, "rsvp": 46, "gre": 47, "esp": 50,
    "ah": 51, "skip": 57, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "rspf": 73,
    "vmtp": 81, "eigrp": 88, "ospf": 89, "ax.25": 93, "ipip": 94, "etherip": 97,
    "encap": 98, "pim": 103, "ipcomp": 108, "vrrp": 112, "l2tp": 115, "isis": 124,
    "sctp": 132, "fc": 133, "mobility-header": 135, "udplite": 136, "mpls-in-ip": 137,
    "manet": 138, "hip": 139, "shim6": 140, "wesp": 141, "rohc": 142, "ethernet": 143,
    "mptcp": 262,
}

class PrintContext:
    """What a printer needs besides its match: flags, family, lookups, the rule."""

    __slots__ = ("numeric", "family", "resolver", "parts", "addrs", "protos")

    def __init__(self, numeric, family, resolver):
        self.numeric = numeric
        self.family = family
        self.resolver = resolver
        self.parts: RuleParts | None = None
        self.addrs: dict = {}   # address text -> column text, for this listing
        self.protos: dict = {}  # protocol name -> number text, for this listing


def _mask_suffix(mask, family: int) -> str:
    """xtables_ipmask_to_numeric / xtables_ip6mask_to_numeric."""
    full = 32 if family == 4 else 128
    if mask is None:
        return ""
    if isinstance(mask, int):
        return "" if mask == full else f"/{mask}"
    return "/" + mask  # non-contiguous, already dotted (v4) or compressed (v6)


def _split_addr(text: str, family: int):
    """ "10.0.0.0/8" -> ("10.0.0.0", 8); "/255.0.255.0" masks stay strings."""
    addr, slash, mask = text.partition("/")
    if not slash:
        return addr, (32 if family == 4 else 128)
    if mask.isdigit():
        return addr, int(mask)
    # A dotted or IPv6 mask: contiguous masks print as a prefix length.
    try:
        net = ipaddress.ip_network(f"0.0.0.0/{mask}" if family == 4 else f"::/{mask}")
        return addr, net.prefixlen
    except ValueError:
        return addr, mask


def _addr_name(addr: str, family: int, resolver) -> str:
    """xtables_ipaddr_to_anyname / xtables_ip6addr_to_anyname."""
    name = resolver.lookup_host(addr, family)
    if name:
        return name
    if family == 4:
        name = resolver.lookup_network(addr)
        if name:
            return name
    return addr


def format_address(text: str | None, family: int, numeric: bool, resolver) -> str:
    """Source/destination column text (print_ipv4_addresses / print_ipv6_addresses)."""
    if text is None:
        return ("0.0.0.0/0" if family == 4 else "::/0") if numeric else "anywhere"
    addr, mask = _split_addr(text, family)
    # iptables tests the mask (IPv4: smsk == 0), ip6tables the address (src == ::),
    # so "! -s ::/64" lists as "!anywhere" (iptables/nft-ipv6.c print_ipv6_addresses).
    if not numeric and (mask == 0 if family == 4 else addr == "::"):
        return "anywhere"
    if not numeric:
        addr = _addr_name(addr, family, resolver)
    return addr + _mask_suffix(mask, family)


def proto_number(name: str, resolver) -> int:
    if name.isdigit():
        return int(name)
    if name in _CHAIN_PROTOS:
        return _CHAIN_PROTOS[name]
    if resolver is not None:
        num = resolver.lookup_protocol_number(name)
        if num is not None:
            return num
    if name in _PROTOCOLS:
        return _PROTOCOLS[name]
    raise UnsupportedExtension("protocol", name, "unknown protocol name")


def _service(port: str, proto: str | None, ctx: PrintContext) -> str:
    if ctx.numeric or proto is None:
        return port
    return ctx.resolver.lookup_service(int(port), proto) or port


def _ports_proto(ctx: PrintContext) -> str | None:
    """The protocol name getservbyport() gets (multiport/tcp/udp/sctp print_port)."""
    p = ctx.parts.protocol if ctx.parts else None
    if p is None:
        return None
    num = proto_number(p, None) if not p.isdigit() else int(p)
    return {6: "tcp", 17: "udp", 136: "udplite", 132: "sctp", 33: "dccp"}.get(num)


def _unsupported(m: Match, kind: str = "match", detail: str = "") -> UnsupportedExtension:
    return UnsupportedExtension(kind, m.name if isinstance(m, Match) else m, detail)


def _one(opt: Option) -> str:
    if len(opt.values) != 1:
        raise UnsupportedExtension("option", opt.name, f"expected one value, got {opt.values}")
    return opt.values[0]


def save_quote(value: str) -> str:
    """xtables_save_string(): the way iptables-save writes a string value."""
    if value and all(c in _NO_QUOTE for c in value):
        return value
    return '"' + "".join("\\" + c if c in "\"\\'" else c for c in value) + '"'


_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# ---------------------------------------------------------------- match printers


def _tcpudp_ports(label: str, opt: Option, proto: str, ctx: PrintContext) -> str:
    """libxt_tcp.c / libxt_udp.c print_ports()."""
    val = _one(opt)
    inv = "!" if opt.negated else ""
    lo, sep, hi = val.partition(":")
    if not sep:
        return f" {label}:{inv}{_service(lo, proto, ctx)}"
    lo = lo or "0"
    hi = hi or "65535"
    if lo == "0" and hi == "65535" and not opt.negated:
        return ""
    if lo == hi:
        return f" {label}:{inv}{_service(lo, proto, ctx)}"
    return f" {label}s:{inv}{_service(lo, proto, ctx)}:{_service(hi, proto, ctx)}"


_TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
              ("URG", 0x20))
_TCP_FLAG_BITS = dict(_TCP_FLAGS) | {"ALL": 0x3F, "NONE": 0}


def _tcp_flag_value(text: str) -> int:
    v = 0
    for name in text.split(","):
        if name not in _TCP_FLAG_BITS:
            raise UnsupportedExtension("option", "--tcp-flags", f"unknown flag {name}")
        v |= _TCP_FLAG_BITS[name]
    return v


def _tcp_flag_names(v: int) -> str:
    names = [name for name, bit in _TCP_FLAGS if v & bit]
    return ",".join(names) if names else "NONE"


def _print_tcp(m: Match, ctx: PrintContext) -> str:
    out = {"--sport": "", "--dport": "", "--tcp-option": "", "--tcp-flags": ""}
    for opt in m.options:
        if opt.name in ("--sport", "--source-port", "--dport", "--destination-port"):
            key = "--sport" if opt.name in ("--sport", "--source-port") else "--dport"
            out[key] = _tcpudp_ports(key[2] + "pt", opt, "tcp", ctx)
        elif opt.name == "--tcp-option":
            out["--tcp-option"] = f" option={'!' if opt.negated else ''}{int(_one(opt))}"
        elif opt.name == "--tcp-flags":
            if len(opt.values) != 2:
                raise _unsupported(m, detail="--tcp-flags needs two values")
            mask, cmp = (_tcp_flag_value(v) for v in opt.values)
            inv = "!" if opt.negated else ""
            if ctx.numeric:
                out["--tcp-flags"] = f" flags:{inv}0x{mask:02X}/0x{cmp:02X}"
            else:
                out["--tcp-flags"] = f" flags:{inv}{_tcp_flag_names(mask)}/{_tcp_flag_names(cmp)}"
        elif opt.name == "--syn":
            inv = "!" if opt.negated else ""
            out["--tcp-flags"] = (f" flags:{inv}0x17/0x02" if ctx.numeric
                                  else f" flags:{inv}FIN,SYN,RST,ACK/SYN")
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return " tcp" + out["--sport"] + out["--dport"] + out["--tcp-option"] + out["--tcp-flags"]


def _make_ports_printer(proto: str):
    def printer(m: Match, ctx: PrintContext) -> str:
        spt = dpt = ""
        for opt in m.options:
            if opt.name in ("--sport", "--source-port"):
                spt = _tcpudp_ports("spt", opt, proto, ctx)
            elif opt.name in ("--dport", "--destination-port"):
                dpt = _tcpudp_ports("dpt", opt, proto, ctx)
            else:
                raise _unsupported(m, detail=f"option {opt.name}")
        return f" {proto}{spt}{dpt}"
    return printer


# libxtables xtables_icmp codes (1.8.9): (name, type, code_min, code_max); first match wins.
_ICMP_CODES = (
    ("any", 0xFF, 0, 0xFF), ("echo-reply", 0, 0, 0xFF),
    ("destination-unreachable", 3, 0, 0xFF), ("network-unreachable", 3, 0, 0),
    ("host-unreachable", 3, 1, 1), ("protocol-unreachable", 3, 2, 2),
    ("port-unreachable", 3, 3, 3), ("fragmentation-needed", 3, 4, 4),
    ("source-route-failed", 3, 5, 5), ("network-unknown", 3, 6, 6),
    ("host-unknown", 3, 7, 7), ("network-prohibited", 3, 9, 9),
    ("host-prohibited", 3, 10, 10), ("TOS-network-unreachable", 3, 11, 11),
    ("TOS-host-unreachable", 3, 12, 12), ("communication-prohibited", 3, 13, 13),
    ("host-precedence-violation", 3, 14, 14), ("precedence-cutoff", 3, 15, 15),
    ("source-quench", 4, 0, 0xFF), ("redirect", 5, 0, 0xFF),
    ("network-redirect", 5, 0, 0), ("host-redirect", 5, 1, 1),
    ("TOS-network-redirect", 5, 2, 2), ("TOS-host-redirect", 5, 3, 3),
    ("echo-request", 8, 0, 0xFF), ("router-advertisement", 9, 0, 0xFF),
    ("router-solicitation", 10, 0, 0xFF), ("time-exceeded", 11, 0, 0xFF),
    ("ttl-zero-during-transit", 11, 0, 0), ("ttl-zero-during-reassembly", 11, 1, 1),
    ("parameter-problem", 12, 0, 0xFF), ("ip-header-bad", 12, 0, 0),
    ("required-option-missing", 12, 1, 1), ("timestamp-request", 13, 0, 0xFF),
    ("timestamp-reply", 14, 0, 0xFF), ("address-mask-request", 17, 0, 0xFF),
    ("address-mask-reply", 18, 0, 0xFF),
)
_ICMP6_CODES = (
    ("destination-unreachable", 1, 0, 0xFF), ("no-route", 1, 0, 0),
    ("communication-prohibited", 1, 1, 1), ("beyond-scope", 1, 2, 2),
    ("address-unreachable", 1, 3, 3), ("port-unreachable", 1, 4, 4),
    ("failed-policy", 1, 5, 5), ("reject-route", 1, 6, 6),
    ("packet-too-big", 2, 0, 0xFF), ("time-exceeded", 3, 0, 0xFF),
    ("ttl-zero-during-transit", 3, 0, 0), ("ttl-zero-during-reassembly", 3, 1, 1),
    ("parameter-problem", 4, 0, 0xFF), ("bad-header", 4, 0, 0),
    ("unknown-header-type", 4, 1, 1), ("unknown-option", 4, 2, 2),
    ("echo-request", 128, 0, 0xFF), ("echo-reply", 129, 0, 0xFF),
    ("router-solicitation", 133, 0, 0xFF), ("router-advertisement", 134, 0, 0xFF),
    ("neighbour-solicitation", 135, 0, 0xFF), ("neighbour-advertisement", 136, 0, 0xFF),
    ("redirect", 137, 0, 0xFF),
)


def _make_icmp_printer(label: str, opt_name: str, table):
    def printer(m: Match, ctx: PrintContext) -> str:
        if len(m.options) != 1 or m.options[0].name != opt_name:
            raise _unsupported(m, detail="options")
        opt = m.options[0]
        val = _one(opt)
        if val == "any":
            typ, lo, hi = 0xFF, 0, 0xFF
        else:
            t, slash, c = val.partition("/")
            if not t.isdigit() or (slash and not c.isdigit()):
                raise _unsupported(m, detail=f"type {val}")
            typ = int(t)
            lo, hi = (int(c), int(c)) if slash else (0, 0xFF)
        return f" {label}" + _icmp_type(typ, lo, hi, opt.negated, ctx, table)
    return printer


def _icmp_type(typ, lo, hi, inv, ctx, table) -> str:
    """libxt_icmp.c print_icmptype()."""
    if not ctx.numeric:
        for name, t, cmin, cmax in table:
            if t == typ and cmin == lo and cmax == hi:
                return f" {'!' if inv else ''}{name}"
    out = " !" if inv else ""
    out += f"type {typ}"
    if lo == hi:
        out += f" code {lo}"
    elif lo != 0 or hi != 0xFF:
        out += f" codes {lo}-{hi}"
    return out


def _print_multiport(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1:
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    kind = {"--sports": "sports", "--source-ports": "sports", "--dports": "dports",
            "--destination-ports": "dports", "--ports": "ports"}.get(opt.name)
    if kind is None:
        raise _unsupported(m, detail=f"option {opt.name}")
    proto = _ports_proto(ctx)
    items = []
    for item in _one(opt).split(","):
        lo, sep, hi = item.partition(":")
        s = _service(lo, proto, ctx)
        if sep:
            s += ":" + _service(hi, proto, ctx)
        items.append(s)
    return f" multiport {kind} {' !' if opt.negated else ''}{','.join(items)}"


_CT_ADDR_OPTS = {"--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst"}
_CT_PLAIN_OPTS = {"--ctstate", "--ctproto", "--ctstatus", "--ctexpire", "--ctorigsrcport",
                  "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport", "--ctdir"}


def _print_conntrack(m: Match, ctx: PrintContext) -> str:
    """libxt_conntrack.c conntrack_dump() with an empty prefix."""
    out = []
    for opt in m.options:
        if opt.name in _CT_PLAIN_OPTS:
            val = _one(opt)
        elif opt.name in _CT_ADDR_OPTS:
            val = _ct_addr(_one(opt), ctx)
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
        out.append(f"{' !' if opt.negated else ''} {opt.name[2:]} {val}")
    return "".join(out)


def _ct_addr(text: str, ctx: PrintContext) -> str:
    addr, mask = _split_addr(text, ctx.family)
    if not ctx.numeric and addr in ("0.0.0.0", "::"):
        return "anywhere"
    if not ctx.numeric:
        addr = _addr_name(addr, ctx.family, ctx.resolver)
    return addr + _mask_suffix(mask, ctx.family)


def _print_state(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--state":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f"{' !' if opt.negated else ''} state {_one(opt)}"


def _print_comment(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--comment":
        raise _unsupported(m, detail="options")
    return f" /* {_one(m.options[0])} */"


def _mark_text(val: str) -> str:
    """print_mark(): 0x%x, plus /0x%x unless the mask is all ones."""
    mark, slash, mask = val.partition("/")
    out = f"0x{int(mark, 0):x}"
    if slash and int(mask, 0) != 0xFFFFFFFF:
        out += f"/0x{int(mask, 0):x}"
    return out


def _print_mark(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--mark":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" mark match{' !' if opt.negated else ''} {_mark_text(_one(opt))}"


def _print_connmark(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--mark":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" connmark match {'!' if opt.negated else ''} {_mark_text(_one(opt))}"


def _print_limit(m: Match, ctx: PrintContext) -> str:
    rate, burst = None, "5"
    for opt in m.options:
        if opt.name == "--limit" and not opt.negated:
            rate = _one(opt)
        elif opt.name == "--limit-burst" and not opt.negated:
            burst = _one(opt)
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    if rate is None:
        rate = "3/hour"  # XT_LIMIT_AVG default; iptables-save always writes --limit
    return f" limit: avg {rate} burst {burst}"


def _print_iprange(m: Match, ctx: PrintContext) -> str:
    out = []
    for opt in m.options:
        label = {"--src-range": "source", "--dst-range": "destination"}.get(opt.name)
        if label is None:
            raise _unsupported(m, detail=f"option {opt.name}")
        out.append(f" {label} IP range {'! ' if opt.negated else ''}{_one(opt)}")
    return "".join(out)


def _print_addrtype(m: Match, ctx: PrintContext) -> str:
    out = [" ADDRTYPE match"]
    for opt in m.options:
        if opt.name in ("--src-type", "--dst-type"):
            out.append(f" {opt.name[2:]} {'!' if opt.negated else ''}{_one(opt)}")
        elif opt.name == "--limit-iface-in" and not opt.negated:
            out.append(" limit-in")
        elif opt.name == "--limit-iface-out" and not opt.negated:
            out.append(" limit-out")
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return "".join(out)


def _print_mac(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--mac-source":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" MAC {'! ' if opt.negated else ''}{_one(opt)}"


def _print_owner(m: Match, ctx: PrintContext) -> str:
    """libxt_owner.c owner_mt_print() (revision 1)."""
    out = []
    for opt in m.options:
        inv = " !" if opt.negated else ""
        if opt.name == "--socket-exists":
            out.append(f"{inv} owner socket exists")
        elif opt.name in ("--uid-owner", "--gid-owner"):
            val = _one(opt)
            label = "UID" if opt.name == "--uid-owner" else "GID"
            if "-" not in val and not ctx.numeric:
                look = ctx.resolver.lookup_user if label == "UID" else ctx.resolver.lookup_group
                val = look(int(val)) or val
            out.append(f"{inv} owner {label} match {val}")
        elif opt.name == "--suppl-groups":
            out.append(f"{inv} incl. suppl. groups")
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return "".join(out)


def _print_pkttype(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--pkt-type":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" PKTTYPE {'!=' if opt.negated else '='} {_one(opt)}"


def _print_length(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--length":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" length {'!' if opt.negated else ''}{_one(opt)}"


_PHYSDEV_OPTS = {"--physdev-in", "--physdev-out", "--physdev-is-in", "--physdev-is-out",
                 "--physdev-is-bridged"}


def _print_physdev(m: Match, ctx: PrintContext) -> str:
    out = [" PHYSDEV match"]
    for opt in m.options:
        if opt.name not in _PHYSDEV_OPTS:
            raise _unsupported(m, detail=f"option {opt.name}")
        out.append(f"{' !' if opt.negated else ''} {opt.name}")
        out.extend(" " + v for v in opt.values)
    return "".join(out)


def _print_recent(m: Match, ctx: PrintContext) -> str:
    """libxt_recent.c recent_print(): fixed order, whatever the save order."""
    o = {opt.name: opt for opt in m.options}
    known = {"--set", "--rcheck", "--update", "--remove", "--seconds", "--reap", "--hitcount",
             "--rttl", "--name", "--mask", "--rsource", "--rdest"}
    if set(o) - known or any(x.negated for x in m.options
                             if x.name not in ("--set", "--rcheck", "--update", "--remove")):
        raise _unsupported(m, detail="options")
    inv = any(x.negated for x in m.options)
    out = [" !" if inv else "", " recent:"]
    for name, word in (("--set", " SET"), ("--rcheck", " CHECK"), ("--update", " UPDATE"),
                       ("--remove", " REMOVE")):
        if name in o:
            out.append(word)
    if "--seconds" in o and int(_one(o["--seconds"])):
        out.append(f" seconds: {int(_one(o['--seconds']))}")
    if "--reap" in o:
        out.append(" reap")
    if "--hitcount" in o and int(_one(o["--hitcount"])):
        out.append(f" hit_count: {int(_one(o['--hitcount']))}")
    if "--rttl" in o:
        out.append(" TTL-Match")
    out.append(f" name: {_one(o['--name']) if '--name' in o else 'DEFAULT'}")
    if "--rsource" in o:
        out.append(" side: source")
    elif "--rdest" in o:
        out.append(" side: dest")
    if "--mask" in o:
        out.append(f" mask: {_one(o['--mask'])}")
    return "".join(out)


def _print_statistic(m: Match, ctx: PrintContext) -> str:
    o = {opt.name: opt for opt in m.options}
    mode = _one(o["--mode"]) if "--mode" in o else None
    inv = any(x.negated for x in m.options)
    if mode == "random" and set(o) <= {"--mode", "--probability"} and "--probability" in o:
        return f" statistic mode random{' !' if inv else ''} probability {_one(o['--probability'])}"
    if mode == "nth" and set(o) <= {"--mode", "--every", "--packet"} and "--every" in o:
        out = f" statistic mode nth{' !' if inv else ''} every {_one(o['--every'])}"
        if "--packet" in o and int(_one(o["--packet"])):
            out += f" packet {int(_one(o['--packet']))}"
        return out
    raise _unsupported(m, detail="options")


def _print_tcpmss(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--mss":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" tcpmss match {'!' if opt.negated else ''}{_one(opt)}"


def _print_dscp(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--dscp":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" DSCP match {'!' if opt.negated else ''}0x{int(_one(opt), 0):02x}"


_TOS_NAMES = {0x02: "Minimize-Cost", 0x04: "Maximize-Reliability", 0x08: "Maximize-Throughput",
              0x10: "Minimize-Delay", 0x00: "Normal-Service"}


def _tos_value(text: str) -> tuple[int, int]:
    v, slash, mk = text.partition("/")
    return int(v, 0), (int(mk, 0) if slash else 0xFF)


def _print_tos(m: Match, ctx: PrintContext) -> str:
    """libxt_tos.c tos_mt_print_v1(); tos_try_print_symbolic() needs mask 0x3f."""
    if len(m.options) != 1 or m.options[0].name != "--tos":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    value, mask = _tos_value(_one(opt))
    out = " tos match" + ("!" if opt.negated else "")
    if not ctx.numeric and mask == 0x3F and value in _TOS_NAMES:
        return out + " " + _TOS_NAMES[value]
    return out + f"0x{value:02x}/0x{mask:02x}"


def _make_ttl_printer(label: str):
    prefix = "--" + label.lower() + "-"

    def printer(m: Match, ctx: PrintContext) -> str:
        if len(m.options) != 1:
            raise _unsupported(m, detail="options")
        opt = m.options[0]
        op = {"eq": "!=" if opt.negated else "==", "lt": "<", "gt": ">"}.get(
            opt.name[len(prefix):] if opt.name.startswith(prefix) else "")
        if op is None or (opt.negated and opt.name != prefix + "eq"):
            raise _unsupported(m, detail=f"option {opt.name}")
        return f" {label} match {label} {op} {_one(opt)}"
    return printer


def _print_helper(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--helper":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f' helper match {"! " if opt.negated else ""}"{_one(opt)}"'


def _print_rpfilter(m: Match, ctx: PrintContext) -> str:
    out = " rpfilter"
    for opt in m.options:
        if opt.name not in ("--loose", "--validmark", "--accept-local", "--invert") or opt.negated:
            raise _unsupported(m, detail=f"option {opt.name}")
        out += " " + opt.name[2:]
    return out


def _print_socket(m: Match, ctx: PrintContext) -> str:
    """libxt_socket.c: the option names are printed with their dashes."""
    out = " socket"
    for opt in m.options:
        if opt.negated or opt.values or opt.name not in (
                "--transparent", "--nowildcard", "--restore-skmark"):
            raise _unsupported(m, detail=f"option {opt.name}")
        out += " " + opt.name
    return out


_SET_OPTS = {"--match-set", "--return-nomatch", "--update-counters", "--update-subcounters",
             "--packets-eq", "--packets-lt", "--packets-gt", "--bytes-eq", "--bytes-lt",
             "--bytes-gt"}


def _print_set(m: Match, ctx: PrintContext) -> str:
    """libxt_set.c set_printv4(): the save text without dashes (" ! match-set S src")."""
    out = []
    for opt in m.options:
        if opt.name not in _SET_OPTS:
            raise _unsupported(m, detail=f"option {opt.name}")
        out.append(f"{' !' if opt.negated else ''} {opt.name[2:]}")
        out.extend(" " + v for v in opt.values)
    return "".join(out)


_HASHLIMIT_TAIL = (("--hashlimit-htable-size", "htable-size"), ("--hashlimit-htable-max", "htable-max"),
                   ("--hashlimit-htable-gcinterval", "htable-gcinterval"),
                   ("--hashlimit-htable-expire", "htable-expire"),
                   ("--hashlimit-srcmask", "srcmask"), ("--hashlimit-dstmask", "dstmask"))


def _print_hashlimit(m: Match, ctx: PrintContext) -> str:
    """libxt_hashlimit.c hashlimit_mt_print() (revisions 1-3, packet rates only)."""
    o = {}
    for opt in m.options:
        if opt.negated or opt.name in o:
            raise _unsupported(m, detail=f"option {opt.name}")
        o[opt.name] = opt
    known = {"--hashlimit-upto", "--hashlimit-above", "--hashlimit-burst", "--hashlimit-mode",
             "--hashlimit-name"} | {name for name, _ in _HASHLIMIT_TAIL}
    if set(o) - known:  # rate-match / rate-interval print a converted rate
        raise _unsupported(m, detail=f"options {sorted(set(o) - known)}")
    if "--hashlimit-upto" in o:
        out = " limit: up to " + _one(o["--hashlimit-upto"])
    elif "--hashlimit-above" in o:
        out = " limit: above " + _one(o["--hashlimit-above"])
    else:
        raise _unsupported(m, detail="no rate")
    if "b/s" in out:  # byte rates: print_bytes() differs from the save text
        raise _unsupported(m, detail="byte rate")
    out += " burst " + (_one(o["--hashlimit-burst"]) if "--hashlimit-burst" in o else "5")
    if "--hashlimit-mode" in o:
        out += " mode " + _one(o["--hashlimit-mode"]).replace(",", "-")
    for name, word in _HASHLIMIT_TAIL:
        if name in o:
            out += f" {word} {_one(o[name])}"
    return out


def _print_connlimit(m: Match, ctx: PrintContext) -> str:
    """libxt_connlimit.c connlimit_print4/6(): " #conn src/32 > 10"."""
    o = {opt.name: opt for opt in m.options}
    if set(o) - {"--connlimit-above", "--connlimit-upto", "--connlimit-mask",
                 "--connlimit-saddr", "--connlimit-daddr"} or any(x.negated for x in m.options):
        raise _unsupported(m, detail="options")
    if "--connlimit-upto" in o:
        op, limit = "<=", _one(o["--connlimit-upto"])
    elif "--connlimit-above" in o:
        op, limit = ">", _one(o["--connlimit-above"])
    else:
        raise _unsupported(m, detail="no limit")
    mask = _one(o["--connlimit-mask"]) if "--connlimit-mask" in o else str(
        32 if ctx.family == 4 else 128)
    side = "dst" if "--connlimit-daddr" in o else "src"
    return f" #conn {side}/{mask} {op} {limit}"


def _print_quota(m: Match, ctx: PrintContext) -> str:
    # libxt_quota.c quota_print() ignores XT_QUOTA_INVERT: "! --quota 5" prints no "!".
    if len(m.options) != 1 or m.options[0].name != "--quota":
        raise _unsupported(m, detail="options")
    return f" quota: {_one(m.options[0])} bytes"


def _print_cpu(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--cpu":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f" cpu {'! ' if opt.negated else ''}{_one(opt)}"


def _print_connbytes(m: Match, ctx: PrintContext) -> str:
    o = {opt.name: opt for opt in m.options}
    if set(o) != {"--connbytes", "--connbytes-mode", "--connbytes-dir"} or \
            o["--connbytes-mode"].negated or o["--connbytes-dir"].negated:
        raise _unsupported(m, detail="options")
    c = o["--connbytes"]
    return (f"{' !' if c.negated else ''} connbytes {_one(c)} connbytes mode "
            f"{_one(o['--connbytes-mode'])} connbytes direction {_one(o['--connbytes-dir'])}")


def _print_policy(m: Match, ctx: PrintContext) -> str:
    """libxt_policy.c policy_print() for plain element options (no negation, no tunnel)."""
    out = [" policy match"]
    for opt in m.options:
        if opt.negated:
            raise _unsupported(m, detail=f"negated {opt.name}")
        if opt.name in ("--dir", "--pol", "--reqid", "--spi", "--mode", "--tunnel-src",
                        "--tunnel-dst"):
            out.append(f" {opt.name[2:]} {_one(opt)}")
        elif opt.name == "--strict" and not opt.values:
            out.append(" strict")
        elif opt.name == "--proto":
            val = _one(opt)
            out.append(f" proto {proto_number(val, ctx.resolver) if ctx.numeric else val}")
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return "".join(out)


def _print_ecn(m: Match, ctx: PrintContext) -> str:
    out = [" ECN match"]
    for opt in m.options:
        inv = "!" if opt.negated else ""
        if opt.name == "--ecn-tcp-cwr":
            out.append(f" {inv}CWR")
        elif opt.name == "--ecn-tcp-ece":
            out.append(f" {inv}ECE")
        elif opt.name == "--ecn-ip-ect" and not opt.negated:
            out.append(f" ECT={_one(opt)}")
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return "".join(out)


def _range_text(label: str, val: str, neg: bool, full_max: int) -> str:
    """print_spis()/print_ids() shape: " spi:!5" or " spis:1:2"; nothing for the full range."""
    lo, sep, hi = val.partition(":")
    inv = "!" if neg else ""
    if not sep or lo == hi:
        return f" {label}:{inv}{int(lo)}"
    lo, hi = int(lo or 0), int(hi or full_max)
    if lo == 0 and hi == full_max and not neg:
        return ""
    return f" {label}s:{inv}{lo}:{hi}"


def _print_esp(m: Match, ctx: PrintContext) -> str:
    out = " esp"
    for opt in m.options:
        if opt.name != "--espspi":
            raise _unsupported(m, detail=f"option {opt.name}")
        out += _range_text("spi", _one(opt), opt.negated, 0xFFFFFFFF)
    return out


def _print_ah(m: Match, ctx: PrintContext) -> str:
    """libipt_ah.c / libip6t_ah.c ah_print() (IPv6: "length:" follows without a space)."""
    out = " ah"
    for opt in m.options:
        if opt.name == "--ahspi":
            out += _range_text("spi", _one(opt), opt.negated, 0xFFFFFFFF)
        elif opt.name == "--ahlen" and ctx.family == 6:
            out += f"length:{'!' if opt.negated else ''}{int(_one(opt))}"
        elif opt.name == "--ahres" and ctx.family == 6 and not opt.negated:
            out += " reserved"
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return out


def _print_frag(m: Match, ctx: PrintContext) -> str:
    """libip6t_frag.c frag_print(): " frag " then the ids without their leading space."""
    ids, rest = "", ""
    words = {"--fragres": " reserved", "--fragfirst": " first", "--fragmore": " more",
             "--fraglast": " last"}
    for opt in m.options:
        if opt.name == "--fragid":
            ids = _range_text("id", _one(opt), opt.negated, 0xFFFFFFFF).lstrip(" ")
        elif opt.name == "--fraglen":
            rest += f" length:{'!' if opt.negated else ''}{int(_one(opt))}"
        elif opt.name in words and not opt.negated and not opt.values:
            rest += words[opt.name]
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return " frag " + ids + rest


def _print_rt(m: Match, ctx: PrintContext) -> str:
    out = " rt"
    for opt in m.options:
        inv = "!" if opt.negated else ""
        if opt.name == "--rt-type":
            out += f" type:{inv}{int(_one(opt))}"
        elif opt.name == "--rt-segsleft":
            out += _range_text("segsleft", _one(opt), opt.negated, 0xFFFFFFFF)
        elif opt.name == "--rt-len":
            out += f" length:{inv}{int(_one(opt))}"
        elif opt.name == "--rt-0-res" and not opt.negated:
            out += " reserved"
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return out


_IPV6HEADER_BITS = {"hop-by-hop": 0x80, "ipv6-opts": 0x40, "ipv6-route": 0x20, "ipv6-frag": 0x10,
                    "ah": 0x08, "esp": 0x04, "ipv6-nonxt": 0x02, "protocol": 0x01}


def _print_ipv6header(m: Match, ctx: PrintContext) -> str:
    out, soft = "", ""
    for opt in m.options:
        if opt.name == "--header":
            names = _one(opt).split(",")
            if any(n not in _IPV6HEADER_BITS for n in names):
                raise _unsupported(m, detail=f"header {_one(opt)}")
            inv = "!" if opt.negated else ""
            if ctx.numeric:
                out = f" flags:{inv}0x{sum(_IPV6HEADER_BITS[n] for n in names):02X}"
            else:
                out = f" flags:{inv}{_one(opt)}"
        elif opt.name == "--soft" and not opt.negated:
            soft = " soft"
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return " ipv6header" + out + soft


def _make_exthdr_printer(name: str):
    def printer(m: Match, ctx: PrintContext) -> str:
        out = f" {name}"
        for opt in m.options:
            if opt.name == f"--{name}-len":
                out += f" length:{'!' if opt.negated else ''}{int(_one(opt))}"
            elif opt.name == f"--{name}-opts" and not opt.negated:
                out += f" opts {_one(opt)}"
            else:
                raise _unsupported(m, detail=f"option {opt.name}")
        return out
    return printer


_MH_TYPES = ("binding-refresh-request", "home-test-init", "careof-test-init", "home-test",
             "careof-test", "binding-update", "binding-acknowledgement", "binding-error")


def _print_mh(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--mh-type" or m.options[0].negated:
        raise _unsupported(m, detail="options")
    lo, sep, hi = _one(m.options[0]).partition(":")
    lo, hi = int(lo), int(hi) if sep else int(lo)
    if lo == 0 and hi == 0xFF:
        raise _unsupported(m, detail="full range")

    def name(t: int) -> str:
        return str(t) if ctx.numeric or t >= len(_MH_TYPES) else _MH_TYPES[t]
    return f" mh {name(lo)}" if lo == hi else f" mh {name(lo)}:{name(hi)}"


_DCCP_TYPES = ("REQUEST", "RESPONSE", "DATA", "ACK", "DATAACK", "CLOSEREQ", "CLOSE", "RESET",
               "SYNC", "SYNCACK", "INVALID")


def _print_dccp(m: Match, ctx: PrintContext) -> str:
    out = " dccp"
    for opt in m.options:
        if opt.name in ("--sport", "--source-port"):
            out += _tcpudp_ports("spt", opt, "dccp", ctx)
        elif opt.name in ("--dport", "--destination-port"):
            out += _tcpudp_ports("dpt", opt, "dccp", ctx)
        elif opt.name == "--dccp-types" and not opt.negated:
            names = _one(opt).split(",")
            if any(n not in _DCCP_TYPES for n in names):
                raise _unsupported(m, detail=f"types {_one(opt)}")
            out += " " + (",".join(str(_DCCP_TYPES.index(n)) for n in names)
                          if ctx.numeric else _one(opt))
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return out


def _print_u32(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--u32":
        raise _unsupported(m, detail="options")
    opt = m.options[0]
    return f' u32{" !" if opt.negated else ""} "{_one(opt)}"'


def _print_string(m: Match, ctx: PrintContext) -> str:
    """libxt_string.c string_print(): the pattern quoted as its save does (" and \\)."""
    out = ""
    for opt in m.options:
        if opt.name in ("--string", "--hex-string"):
            val = _one(opt)
            if opt.name == "--string":
                val = val.replace("\\", "\\\\").replace('"', '\\"')
            out += f' STRING match {"!" if opt.negated else ""} "{val}"'
        elif opt.negated:
            raise _unsupported(m, detail=f"negated {opt.name}")
        elif opt.name == "--algo":
            out += f" ALGO name {_one(opt)}"
        elif opt.name == "--from":
            out += f" FROM {_one(opt)}"
        elif opt.name == "--to":
            out += f" TO {_one(opt)}"
        elif opt.name == "--icase" and not opt.values:
            out += " ICASE"
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return out


def _ordinal(n: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10 if n % 100 not in (11, 12, 13) else 0, "th")
    return f"{n}{suffix}"


def _print_time(m: Match, ctx: PrintContext) -> str:
    """libxt_time.c time_print()."""
    o = {}
    for opt in m.options:
        if opt.negated or opt.name in o:
            raise _unsupported(m, detail=f"option {opt.name}")
        o[opt.name] = opt
    if set(o) - {"--timestart", "--timestop", "--weekdays", "--monthdays", "--datestart",
                 "--datestop", "--kerneltz", "--contiguous"}:
        raise _unsupported(m, detail="options")
    out = " TIME"
    if "--timestart" in o or "--timestop" in o:
        start = _one(o["--timestart"]) if "--timestart" in o else "00:00:00"
        stop = _one(o["--timestop"]) if "--timestop" in o else "23:59:59"
        out += f" from {start} to {stop}"
    if "--weekdays" in o:
        out += " on " + _one(o["--weekdays"])
    if "--monthdays" in o:
        out += " on " + ",".join(_ordinal(int(d)) for d in _one(o["--monthdays"]).split(","))
    if "--datestart" in o:
        out += " starting from " + _one(o["--datestart"]).replace("T", " ")
    if "--datestop" in o and _one(o["--datestop"]) != "2038-01-19T03:14:07":  # INT_MAX
        out += " until date " + _one(o["--datestop"]).replace("T", " ")
    if "--kerneltz" not in o:
        out += " UTC"
    if "--contiguous" in o:
        out += " contiguous"
    return out


def _print_cgroup(m: Match, ctx: PrintContext) -> str:
    if len(m.options) != 1 or m.options[0].name != "--cgroup" or m.options[0].negated:
        raise _unsupported(m, detail="options")
    return f" cgroup {_one(m.options[0])}"


def _print_cluster(m: Match, ctx: PrintContext) -> str:
    o = {opt.name: opt for opt in m.options}
    if set(o) != {"--cluster-local-nodemask", "--cluster-total-nodes", "--cluster-hash-seed"} \
            or any(x.negated for x in m.options):
        raise _unsupported(m, detail="options")
    return (f" cluster node_mask={_one(o['--cluster-local-nodemask'])} "
            f"total_nodes={_one(o['--cluster-total-nodes'])} "
            f"hash_seed={_one(o['--cluster-hash-seed'])}")


# libxt_sctp.c sctp_chunk_names[0..14]: index == chunk type only up to here; its
# print_chunk() indexes the table by chunk type, so later names print wrongly there
# and are left to iptables.
_SCTP_CHUNKS = ("DATA", "INIT", "INIT_ACK", "SACK", "HEARTBEAT", "HEARTBEAT_ACK", "ABORT",
                "SHUTDOWN", "SHUTDOWN_ACK", "ERROR", "COOKIE_ECHO", "COOKIE_ACK", "ECN_ECNE",
                "ECN_CWR", "SHUTDOWN_COMPLETE")


def _print_sctp(m: Match, ctx: PrintContext) -> str:
    """libxt_sctp.c sctp_print(): ports, then " [!] MODE CHUNKS"."""
    out = " sctp"
    for opt in m.options:
        if opt.name in ("--sport", "--source-port"):
            out += _tcpudp_ports("spt", opt, "sctp", ctx)
        elif opt.name in ("--dport", "--destination-port"):
            out += _tcpudp_ports("dpt", opt, "sctp", ctx)
        elif opt.name == "--chunk-types" and len(opt.values) == 2 and \
                opt.values[0] in ("any", "all", "only"):
            mode, chunks = opt.values
            if chunks not in ("ALL", "NONE"):
                names = chunks.split(",")
                if any(n not in _SCTP_CHUNKS for n in names):  # flags (DATA:Be) or later types
                    raise _unsupported(m, detail=f"chunk types {chunks}")
                if ctx.numeric:
                    chunks = ",".join(f"0x{_SCTP_CHUNKS.index(n):04X}" for n in names)
            out += f"{' !' if opt.negated else ''} {mode} {chunks}"
        else:
            raise _unsupported(m, detail=f"option {opt.name}")
    return out


MATCH_PRINTERS = {
    "esp": _print_esp,
    "ah": _print_ah,
    "frag": _print_frag,
    "rt": _print_rt,
    "ipv6header": _print_ipv6header,
    "hbh": _make_exthdr_printer("hbh"),
    "dst": _make_exthdr_printer("dst"),
    "mh": _print_mh,
    "dccp": _print_dccp,
    "u32": _print_u32,
    "string": _print_string,
    "time": _print_time,
    "cgroup": _print_cgroup,
    "cluster": _print_cluster,
    "hashlimit": _print_hashlimit,
    "connlimit": _print_connlimit,
    "quota": _print_quota,
    "cpu": _print_cpu,
    "connbytes": _print_connbytes,
    "policy": _print_policy,
    "ecn": _print_ecn,
    "tcp": _print_tcp,
    "udp": _make_ports_printer("udp"),
    "sctp": _print_sctp,
    "icmp": _make_icmp_printer("icmp", "--icmp-type", _ICMP_CODES),
    "icmp6": _make_icmp_printer("ipv6-icmp", "--icmpv6-type", _ICMP6_CODES),
    "multiport": _print_multiport,
    "conntrack": _print_conntrack,
    "state": _print_state,
    "comment": _print_comment,
    "mark": _print_mark,
    "connmark": _print_connmark,
    "limit": _print_limit,
    "iprange": _print_iprange,
    "addrtype": _print_addrtype,
    "mac": _print_mac,
    "owner": _print_owner,
    "pkttype": _print_pkttype,
    "length": _print_length,
    "physdev": _print_physdev,
    "recent": _print_recent,
    "statistic": _print_statistic,
    "tcpmss": _print_tcpmss,
    "dscp": _print_dscp,
    "tos": _print_tos,
    "ttl": _make_ttl_printer("TTL"),
    "hl": _make_ttl_printer("HL"),
    "helper": _print_helper,
    "rpfilter": _print_rpfilter,
    "socket": _print_socket,
    "set": _print_set,
}

# ---------------------------------------------------------------- target printers

STANDARD_TARGETS = {"ACCEPT", "DROP", "RETURN", "QUEUE"}
_LOG_LEVELS = {0: "emerg", 1: "alert", 2: "crit", 3: "err", 4: "warn", 5: "notice",
               6: "info", 7: "debug"}
_LOG_FLAGS = (("--log-tcp-sequence", 0x01, "tcp-sequence"), ("--log-tcp-options", 0x02, "tcp-options"),
              ("--log-ip-options", 0x04, "ip-options"), ("--log-uid", 0x08, "uid"),
              ("--log-macdecode", 0x20, "macdecode"))


def _opts(parts: RuleParts) -> dict[str, Option]:
    o = {}
    for opt in parts.target_options:
        if opt.negated or opt.name in o:
            raise UnsupportedExtension("target", parts.target or "", f"option {opt.name}")
        o[opt.name] = opt
    return o


def _only(parts: RuleParts, o: dict, allowed) -> None:
    extra = set(o) - set(allowed)
    if extra:
        raise UnsupportedExtension("target", parts.target or "", f"options {sorted(extra)}")


def _t_log(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--log-prefix", "--log-level"} | {f[0] for f in _LOG_FLAGS})
    level = int(_one(o["--log-level"])) if "--log-level" in o else 4
    flags = sum(bit for name, bit, _ in _LOG_FLAGS if name in o)
    out = " LOG"
    if ctx.numeric:
        out += f" flags {flags} level {level}"
    else:
        out += f" level {_LOG_LEVELS[level]}" if level in _LOG_LEVELS else f" UNKNOWN level {level}"
        out += "".join(" " + word for name, _, word in _LOG_FLAGS if name in o)
    if "--log-prefix" in o and _one(o["--log-prefix"]):
        out += f' prefix "{_one(o["--log-prefix"])}"'
    return out


def _t_nflog(parts: RuleParts, ctx: PrintContext) -> str:
    out = []
    for opt in parts.target_options:
        if opt.name == "--nflog-prefix":
            out.append(" nflog-prefix " + save_quote(_one(opt)))
        elif opt.name in ("--nflog-group", "--nflog-size", "--nflog-range", "--nflog-threshold"):
            out.append(f" {opt.name[2:]} {_one(opt)}")
        else:
            raise UnsupportedExtension("target", "NFLOG", f"option {opt.name}")
    return "".join(out)


def _t_reject(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--reject-with"})
    if "--reject-with" not in o:
        return " reject-with " + ("icmp-port-unreachable" if ctx.family == 4 else "icmp6-port-unreachable")
    return " reject-with " + _one(o["--reject-with"])


def _make_nat_printer(range_opt: str, label: str):
    def printer(parts: RuleParts, ctx: PrintContext) -> str:
        out = []
        for opt in parts.target_options:
            if opt.name == range_opt and not opt.negated:
                out.append(label + _one(opt))
            elif opt.name in ("--random", "--random-fully", "--persistent") and not opt.values:
                out.append(" " + opt.name[2:])
            else:
                raise UnsupportedExtension("target", parts.target, f"option {opt.name}")
        return "".join(out)
    return printer


def _t_mark(parts: RuleParts, ctx: PrintContext) -> str:
    """libxt_MARK.c mark_tg_print() (revision 2; iptables-save writes --set-xmark)."""
    o = _opts(parts)
    _only(parts, o, {"--set-xmark"})
    if "--set-xmark" not in o:
        raise UnsupportedExtension("target", "MARK", "no --set-xmark")
    return " MARK " + _xmark(_one(o["--set-xmark"]))


def _xmark(val: str) -> str:
    v, slash, mk = val.partition("/")
    mark = int(v, 0)
    mask = int(mk, 0) if slash else 0xFFFFFFFF
    if mark == 0:
        return f"and 0x{~mask & 0xFFFFFFFF:x}"
    if mark == mask:
        return f"or 0x{mark:x}"
    if mask == 0:
        return f"xor 0x{mark:x}"
    if mask == 0xFFFFFFFF:
        return f"set 0x{mark:x}"
    return f"xset 0x{mark:x}/0x{mask:x}"


def _t_connmark(parts: RuleParts, ctx: PrintContext) -> str:
    """libxt_CONNMARK.c connmark_tg_print() (revisions 1 and 2 without shifts)."""
    o = _opts(parts)
    _only(parts, o, {"--set-xmark", "--save-mark", "--restore-mark", "--nfmask", "--ctmask"})
    if "--set-xmark" in o:
        return " CONNMARK " + _xmark(_one(o["--set-xmark"]))
    nfmask = int(_one(o["--nfmask"]), 0) if "--nfmask" in o else 0xFFFFFFFF
    ctmask = int(_one(o["--ctmask"]), 0) if "--ctmask" in o else 0xFFFFFFFF
    if "--save-mark" in o:
        if nfmask == ctmask == 0xFFFFFFFF:
            return " CONNMARK save"
        if nfmask == ctmask:
            return f" CONNMARK save mask 0x{nfmask:x}"
        return f" CONNMARK save nfmask 0x{nfmask:x} ctmask ~0x{ctmask:x}"
    if "--restore-mark" in o:
        if nfmask == ctmask == 0xFFFFFFFF:
            return " CONNMARK restore"
        if nfmask == ctmask:
            return f" CONNMARK restore mask 0x{ctmask:x}"
        return f" CONNMARK restore ctmask 0x{ctmask:x} nfmask ~0x{nfmask:x}"
    raise UnsupportedExtension("target", "CONNMARK", "mode")


def _t_ct(parts: RuleParts, ctx: PrintContext) -> str:
    out = [" CT"]
    for opt in parts.target_options:
        if opt.name == "--notrack" and not opt.values:
            out.append(" notrack")
        elif opt.name in ("--helper", "--timeout", "--ctevents", "--expevents", "--zone",
                          "--zone-orig", "--zone-reply"):
            out.append(f" {opt.name[2:]} {_one(opt)}")
        else:
            raise UnsupportedExtension("target", "CT", f"option {opt.name}")
    return "".join(out)


def _t_fixed(text: str):
    def printer(parts: RuleParts, ctx: PrintContext) -> str:
        if parts.target_options:
            raise UnsupportedExtension("target", parts.target, "options")
        return text
    return printer


def _t_tcpmss(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--clamp-mss-to-pmtu", "--set-mss"})
    if "--clamp-mss-to-pmtu" in o:
        return " TCPMSS clamp to PMTU"
    if "--set-mss" in o:
        return f" TCPMSS set {_one(o['--set-mss'])}"
    raise UnsupportedExtension("target", "TCPMSS", "no option")


def _t_dscp(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--set-dscp"})
    return f" DSCP set 0x{int(_one(o['--set-dscp']), 0):02x}"


def _t_tos(parts: RuleParts, ctx: PrintContext) -> str:
    """libxt_TOS.c tos_tg_print_v1()."""
    o = _opts(parts)
    _only(parts, o, {"--set-tos"})
    value, mask = _tos_value(_one(o["--set-tos"]))
    if ctx.numeric:
        return f" TOS set 0x{value:02x}/0x{mask:02x}"
    if mask == 0x3F and value in _TOS_NAMES:
        return "  TOS set" + _TOS_NAMES[value]
    if value == 0:
        return f" TOS and 0x{~mask & 0xFF:02x}"
    if value == mask:
        return f" TOS or 0x{value:02x}"
    if mask == 0:
        return f" TOS xor 0x{value:02x}"
    return f" TOS set 0x{value:02x}/0x{mask:02x}"


def _make_ttl_target(label: str):
    prefix = "--" + label.lower() + "-"
    words = {"set": "set to", "dec": "decrement by", "inc": "increment by"}

    def printer(parts: RuleParts, ctx: PrintContext) -> str:
        o = _opts(parts)
        if len(o) != 1:
            raise UnsupportedExtension("target", label, "options")
        (name, opt), = o.items()
        word = words.get(name[len(prefix):]) if name.startswith(prefix) else None
        if word is None:
            raise UnsupportedExtension("target", label, f"option {name}")
        return f" {label} {word} {_one(opt)}"
    return printer


def _t_classify(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--set-class"})
    major, _, minor = _one(o["--set-class"]).partition(":")
    return f" CLASSIFY set {int(major, 16):x}:{int(minor, 16):x}"


def _t_nfqueue(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--queue-num", "--queue-balance", "--queue-bypass", "--queue-cpu-fanout"})
    if "--queue-balance" in o:
        lo, _, hi = _one(o["--queue-balance"]).partition(":")
        out = f" NFQUEUE balance {int(lo)}:{int(hi)}"
    else:
        out = f" NFQUEUE num {int(_one(o['--queue-num'])) if '--queue-num' in o else 0}"
    if "--queue-bypass" in o:
        out += " bypass"
    if "--queue-cpu-fanout" in o:
        out += " cpu-fanout"
    return out


def _t_set(parts: RuleParts, ctx: PrintContext) -> str:
    """libxt_SET.c set_target_print_v*: the save text without dashes."""
    out = []
    for opt in parts.target_options:
        if opt.negated or opt.name not in ("--add-set", "--del-set", "--exist", "--timeout"):
            raise UnsupportedExtension("target", "SET", f"option {opt.name}")
        out.append(" " + opt.name[2:])
        out.extend(" " + v for v in opt.values)
    return "".join(out)


def _t_tproxy(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--on-port", "--on-ip", "--tproxy-mark"})
    if "--on-port" not in o:
        raise UnsupportedExtension("target", "TPROXY", "no --on-port")
    ip = _one(o["--on-ip"]) if "--on-ip" in o else ("0.0.0.0" if ctx.family == 4 else "::")
    mark, _, mask = (_one(o["--tproxy-mark"]) if "--tproxy-mark" in o else "0x0/0x0").partition("/")
    mask = mask or "0xffffffff"
    return (f" TPROXY redirect {ip}:{int(_one(o['--on-port']))} "
            f"mark 0x{int(mark, 0):x}/0x{int(mask, 0):x}")


def _t_tee(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--gateway"})
    return f" TEE gw:{_one(o['--gateway'])}"


_TCPOPT_NAMES = {2: "mss", 3: "wscale", 4: "sack-permitted", 5: "sack", 8: "timestamp", 19: "md5"}


def _t_tcpoptstrip(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--strip-options"})
    nums = [int(x) for x in _one(o["--strip-options"]).split(",")]
    if ctx.numeric:
        return " TCPOPTSTRIP options " + ",".join(map(str, nums))
    return " TCPOPTSTRIP options " + ",".join(_TCPOPT_NAMES.get(n, str(n)) for n in nums)


def _t_ecn(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--ecn-tcp-remove"})
    return " ECN TCP remove"


def _t_audit(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--type"})
    return f" AUDIT {_one(o['--type'])}"


def _t_idletimer(parts: RuleParts, ctx: PrintContext) -> str:
    o = _opts(parts)
    _only(parts, o, {"--timeout", "--label"})
    return f" timeout:{_one(o['--timeout'])} label:{_one(o['--label'])}"


TARGET_PRINTERS = {
    "SET": _t_set,
    "TPROXY": _t_tproxy,
    "TEE": _t_tee,
    "TCPOPTSTRIP": _t_tcpoptstrip,
    "ECN": _t_ecn,
    "AUDIT": _t_audit,
    "IDLETIMER": _t_idletimer,
    "LOG": _t_log,
    "NFLOG": _t_nflog,
    "REJECT": _t_reject,
    "DNAT": _make_nat_printer("--to-destination", " to:"),
    "SNAT": _make_nat_printer("--to-source", " to:"),
    "MASQUERADE": _make_nat_printer("--to-ports", " masq ports: "),
    "REDIRECT": _make_nat_printer("--to-ports", " redir ports "),
    "NETMAP": _make_nat_printer("--to", " to:"),
    "MARK": _t_mark,
    "CONNMARK": _t_connmark,
    "CT": _t_ct,
    "NOTRACK": _t_fixed(" NOTRACK"),
    "TRACE": _t_fixed(""),
    "CHECKSUM": lambda parts, ctx: (" CHECKSUM fill" if [o.name for o in parts.target_options]
                                    == ["--checksum-fill"] else _t_fixed("")(parts, ctx)),
    "TCPMSS": _t_tcpmss,
    "DSCP": _t_dscp,
    "TOS": _t_tos,
    "TTL": _make_ttl_target("TTL"),
    "HL": _make_ttl_target("HL"),
    "CLASSIFY": _t_classify,
    "NFQUEUE": _t_nfqueue,
}
