"""Parse and validate a scenario file (pure: text in, dataclasses out).

Validation walks the composed YAML node tree (``yaml.compose``) rather than the
loaded objects, so every error names the file and the line of the offending
node: ``FILE:LINE: ...``. Nothing is built before a file validates. The format is
documented in docs/scenarios.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import UsageError

VERDICTS = ("dropped", "rejected", "delivered")
PROTOS = ("tcp", "udp", "icmp", "icmpv6")
BACKENDS = ("nft", "legacy")
LISTEN_PROTOS = ("tcp", "udp")
DEFAULT_TIMEOUT = 1.5  # seconds of tracing after the traffic was sent
_HOST_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
_IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
_REASON = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SYSCTL = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")


@dataclass(frozen=True)
class Listener:
    proto: str  # tcp | udp
    port: int

    def __str__(self) -> str:
        return f"{self.proto}/{self.port}"


@dataclass(frozen=True)
class Host:
    name: str
    addrs: tuple[str, ...] = ()  # CIDR; put on the host's first link
    routes: tuple[str, ...] = ()  # `ip route add` arguments, e.g. "default via 10.0.0.254"
    forwarding: bool = False
    switch: bool = False  # an L2 switch: all its links enslaved to one bridge, no addresses
    sysctls: tuple[tuple[str, str], ...] = ()
    listen: tuple[Listener, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class LinkEnd:
    host: str
    addrs: tuple[str, ...] = ()
    ifname: str | None = None


@dataclass(frozen=True)
class Link:
    a: LinkEnd
    b: LinkEnd
    line: int = 0


@dataclass(frozen=True)
class Rules:
    host: str
    backend: str = "nft"  # for iptables/ip6tables text: iptables-nft or iptables-legacy
    iptables: str | None = None  # iptables-restore input
    ip6tables: str | None = None  # ip6tables-restore input
    nft: str | None = None  # `nft -f -` input
    line: int = 0
    # kind -> file line of the text's first line, to map a restore tool's
    # "line N" back into the scenario file
    text_lines: tuple[tuple[str, int], ...] = ()

    def file_line(self, kind: str, text_line: int) -> int:
        start = dict(self.text_lines).get(kind)
        return self.line if start is None else start + text_line - 1


@dataclass(frozen=True)
class By:
    """Where the verdict must come from; None fields are not checked."""

    host: str | None = None
    table: str | None = None
    chain: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Expectation:
    verdict: str  # dropped | rejected | delivered
    by: By | None = None
    reason: str | None = None  # kernel drop reason without SKB_DROP_REASON_
    count: int | None = None  # packets with that verdict (exact); None = at least one
    line: int = 0

    def describe(self) -> str:
        parts = [self.verdict]
        if self.count is not None:
            parts[0] += f" x{self.count}"
        if self.by is not None:
            where = format_where(self.by.host, self.by.table, self.by.chain, self.by.line)
            if where:
                parts.append(where)
        if self.reason:
            parts.append(self.reason)
        return " ".join(parts)


def format_where(host, table, chain, line) -> str:
    where = f"{table or '*'}/{chain or '*'}" if (table or chain) else ""
    if line is not None:
        where += f":{line}"
    if host:
        where = f"{host}" + (f" {where}" if where else "")
    return where


@dataclass(frozen=True)
class Traffic:
    src_host: str  # the host that sends
    dst: str  # destination address (resolved from a host name when one was given)
    dst_host: str | None  # the host owning dst, if it is a lab host
    proto: str
    port: int | None
    count: int = 1
    src: str | None = None  # source address to bind
    expect: Expectation | None = None
    line: int = 0

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.dst).version

    def describe(self) -> str:
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        port = f":{self.port}" if self.port else ""
        n = f" x{self.count}" if self.count != 1 else ""
        return f"{self.src_host} -> {dst}{port} {self.proto}{n}"


@dataclass(frozen=True)
class Scenario:
    name: str
    filename: str
    description: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    rules: tuple[Rules, ...] = ()
    traffic: tuple[Traffic, ...] = ()
    timeout: float = DEFAULT_TIMEOUT

    def host_addrs(self, name: str) -> list[str]:
        """Every CIDR a host gets, in the order they are assigned."""
        out = list(self.hosts[name].addrs)
        for link in self.links:
            for end in (link.a, link.b):
                if end.host == name:
                    out.extend(end.addrs)
        return out


# ---------------------------------------------------------------- node helpers

class _Ctx:
    def __init__(self, filename: str):
        self.filename = filename
        self._constructor = SafeConstructor()

    def error(self, node: Node | int | None, msg: str) -> UsageError:
        """``node`` is the YAML node at fault, or a line number (1-based)."""
        if isinstance(node, int):
            line = node
        else:
            line = node.start_mark.line + 1 if node is not None else 1
        return UsageError(f"{self.filename}:{line}: {msg}",
                          "the format is described in docs/scenarios.md")

    def value(self, node: ScalarNode):
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.error(node, f"bad value: {exc.problem}") from None

    # typed readers ---------------------------------------------------------
    def mapping(self, node: Node, what: str, allowed: set[str],
                required: tuple[str, ...] = ()) -> dict[str, tuple[Node, Node]]:
        """key -> (key node, value node); unknown, duplicate and missing keys are errors."""
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what}: expected a mapping, got {_kind(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode):
                raise self.error(knode, f"{what}: keys must be plain names")
            key = str(knode.value)
            if key not in allowed:
                raise self.error(knode, f"{what}: unknown key {key!r} "
                                        f"(allowed: {', '.join(sorted(allowed))})")
            if key in out:
                raise self.error(knode, f"{what}: key {key!r} given twice")
            out[key] = (knode, vnode)
        for key in required:
            if key not in out:
                raise self.error(node, f"{what}: missing key {key!r}")
        return out

    def free_mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]]:
        """A mapping whose keys are names chosen by the author (hosts, sysctls)."""
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what}: expected a mapping, got {_kind(node)}")
        seen = set()
        out = []
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode):
                raise self.error(knode, f"{what}: keys must be plain names")
            key = str(knode.value)
            if key in seen:
                raise self.error(knode, f"{what}: {key!r} given twice")
            seen.add(key)
            out.append((key, knode, vnode))
        return out

    def seq(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(node, f"{what}: expected a list, got {_kind(node)}")
        return list(node.value)

    def seq_or_one(self, node: Node) -> list[Node]:
        return list(node.value) if isinstance(node, SequenceNode) else [node]

    def string(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{what}: expected a string, got {_kind(node)}")
        v = self.value(node)
        if isinstance(v, bool) or v is None or not isinstance(v, (str, int, float)):
            raise self.error(node, f"{what}: expected a string, got {_kind(node, v)}")
        return str(node.value) if not isinstance(v, str) else v

    def integer(self, node: Node, what: str, lo: int, hi: int) -> int:
        v = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.error(node, f"{what}: expected an integer, got {_kind(node, v)}")
        if not lo <= v <= hi:
            raise self.error(node, f"{what}: {v} is out of range ({lo}..{hi})")
        return v

    def number(self, node: Node, what: str, lo: float, hi: float) -> float:
        v = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise self.error(node, f"{what}: expected a number, got {_kind(node, v)}")
        if not lo <= v <= hi:
            raise self.error(node, f"{what}: {v} is out of range ({lo}..{hi})")
        return float(v)

    def boolean(self, node: Node, what: str) -> bool:
        v = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(v, bool):
            raise self.error(node, f"{what}: expected true or false, got {_kind(node, v)}")
        return v

    def choice(self, node: Node, what: str, choices) -> str:
        v = self.string(node, what)
        if v not in choices:
            raise self.error(node, f"{what}: {v!r} is not one of {', '.join(choices)}")
        return v

    def cidr(self, node: Node, what: str) -> str:
        text = self.string(node, what)
        if "/" not in text:
            raise self.error(node, f"{what}: {text!r} needs a prefix length (e.g. 10.0.0.1/24)")
        try:
            ipaddress.ip_interface(text)
        except ValueError:
            raise self.error(node, f"{what}: {text!r} is not an IPv4/IPv6 address/prefix") from None
        return text

    def address(self, node: Node, what: str) -> str:
        text = self.string(node, what)
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise self.error(node, f"{what}: {text!r} is not an IPv4/IPv6 address") from None

    def host_ref(self, node: Node, what: str, hosts: dict[str, Host]) -> str:
        name = self.string(node, what)
        if name not in hosts:
            raise self.error(node, f"{what}: no host named {name!r} "
                                   f"(hosts: {', '.join(hosts) or 'none'})")
        return name


def _kind(node: Node, value=None) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if value is None and isinstance(node, ScalarNode) and node.tag.endswith(":null"):
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({node.value})"
    if isinstance(value, (int, float)):
        return f"a number ({node.value})"
    return f"{node.value!r}"


# ---------------------------------------------------------------- the format

_TOP = {"name", "description", "hosts", "links", "rules", "traffic", "expect", "timeout"}
_HOST = {"addr", "routes", "forwarding", "sysctls", "listen", "switch"}
_LINK_END = {"addr", "if"}
_RULES = {"backend", "iptables", "ip6tables", "nft"}
_TRAFFIC = {"from", "to", "proto", "port", "count", "src", "expect"}
_EXPECT = {"verdict", "by", "reason", "count"}
_BY = {"host", "table", "chain", "line"}


def parse_scenario(text: str, filename: str = "<scenario>") -> Scenario:
    """Validate scenario text; raise UsageError("FILE:LINE: ...") on the first problem."""
    ctx = _Ctx(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise UsageError(f"{filename}:{line}: not valid YAML: {exc.problem or exc.context}",
                         "the format is described in docs/scenarios.md") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{filename}:1: not valid YAML: {exc}") from None
    if root is None:
        raise UsageError(f"{filename}:1: empty scenario file")
    top = ctx.mapping(root, "scenario", _TOP, required=("name", "hosts", "traffic"))

    name = ctx.string(top["name"][1], "name")
    description = ctx.string(top["description"][1], "description") if "description" in top else ""
    timeout = (ctx.number(top["timeout"][1], "timeout", 0.2, 30) if "timeout" in top
               else DEFAULT_TIMEOUT)

    hosts = _parse_hosts(ctx, top["hosts"][1])
    links = _parse_links(ctx, top["links"][1], hosts) if "links" in top else []
    for host in hosts.values():
        if host.addrs and not any(host.name in (ln.a.host, ln.b.host) for ln in links):
            raise ctx.error(host.line,
                            f"host {host.name}: has an addr but no link to put it on")
    rules = _parse_rules(ctx, top["rules"][1], hosts) if "rules" in top else []

    scenario = Scenario(name=name, filename=filename, description=description, hosts=hosts,
                        links=tuple(links), rules=tuple(rules), timeout=timeout)
    default_expect = (_parse_expect(ctx, top["expect"][1], hosts, "expect")
                      if "expect" in top else None)
    traffic = [_parse_traffic(ctx, n, scenario, default_expect)
               for n in ctx.seq_or_one(top["traffic"][1])]
    if not traffic:
        raise ctx.error(top["traffic"][1], "traffic: at least one item is needed")
    return Scenario(name=name, filename=filename, description=description, hosts=hosts,
                    links=tuple(links), rules=tuple(rules), traffic=tuple(traffic),
                    timeout=timeout)


def _parse_hosts(ctx: _Ctx, node: Node) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    for name, knode, vnode in ctx.free_mapping(node, "hosts"):
        if not _HOST_NAME.match(name):
            raise ctx.error(knode, f"hosts: bad host name {name!r} (letters, digits, - and _; "
                                   "at most 15 characters, starting with a letter)")
        what = f"host {name}"
        if isinstance(vnode, ScalarNode) and vnode.tag.endswith(":null"):
            hosts[name] = Host(name=name, line=knode.start_mark.line + 1)
            continue
        m = ctx.mapping(vnode, what, _HOST)
        addrs = tuple(ctx.cidr(n, f"{what}: addr") for n in ctx.seq_or_one(m["addr"][1])) \
            if "addr" in m else ()
        routes = tuple(ctx.string(n, f"{what}: routes") for n in ctx.seq(m["routes"][1], f"{what}: routes")) \
            if "routes" in m else ()
        forwarding = ctx.boolean(m["forwarding"][1], f"{what}: forwarding") if "forwarding" in m else False
        switch = ctx.boolean(m["switch"][1], f"{what}: switch") if "switch" in m else False
        if switch:
            for key in ("addr", "routes", "listen", "forwarding"):
                if key in m:
                    raise ctx.error(m[key][0], f"{what}: a switch has no {key} (it only bridges)")
        sysctls = []
        if "sysctls" in m:
            for key, kn, vn in ctx.free_mapping(m["sysctls"][1], f"{what}: sysctls"):
                if not _SYSCTL.match(key):
                    raise ctx.error(kn, f"{what}: sysctls: {key!r} is not a sysctl name "
                                        "(e.g. net.ipv4.conf.all.rp_filter)")
                v = ctx.value(vn) if isinstance(vn, ScalarNode) else None
                if isinstance(v, bool):
                    v = int(v)
                if not isinstance(v, (int, str)):
                    raise ctx.error(vn, f"{what}: sysctls: {key}: expected a number or a string")
                sysctls.append((key, str(v)))
        listen = []
        if "listen" in m:
            for n in ctx.seq(m["listen"][1], f"{what}: listen"):
                spec = ctx.string(n, f"{what}: listen")
                proto, _, port = spec.partition("/")
                if proto not in LISTEN_PROTOS or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ctx.error(n, f"{what}: listen: {spec!r} is not PROTO/PORT "
                                       "(tcp/80, udp/53)")
                listen.append(Listener(proto, int(port)))
        hosts[name] = Host(name=name, addrs=addrs, routes=routes, forwarding=forwarding,
                           switch=switch,
                           sysctls=tuple(sysctls), listen=tuple(listen),
                           line=knode.start_mark.line + 1)
    if not hosts:
        raise ctx.error(node, "hosts: at least one host is needed")
    return hosts


def _parse_links(ctx: _Ctx, node: Node, hosts: dict[str, Host]) -> list[Link]:
    links = []
    used_ifs: dict[str, set[str]] = {}
    for item in ctx.seq(node, "links"):
        if isinstance(item, SequenceNode):
            # [a, b]: each end takes nothing but its host's own addr (on its first link)
            ends_n = item.value
            if len(ends_n) != 2:
                raise ctx.error(item, "links: a link joins exactly two hosts ([a, b])")
            ends = [LinkEnd(ctx.host_ref(n, "links", hosts)) for n in ends_n]
        elif isinstance(item, MappingNode):
            # {a: ADDR, b: {addr: ADDR, if: NAME}}
            entries = ctx.free_mapping(item, "links")
            if len(entries) != 2:
                raise ctx.error(item, "links: a link joins exactly two hosts "
                                      "({client: 10.0.0.1/24, router: 10.0.0.254/24})")
            ends = []
            for hname, kn, vn in entries:
                ctx.host_ref(kn, "links", hosts)
                what = f"link end {hname}"
                if isinstance(vn, MappingNode):
                    m = ctx.mapping(vn, what, _LINK_END)
                    addrs = tuple(ctx.cidr(n, f"{what}: addr") for n in ctx.seq_or_one(m["addr"][1])) \
                        if "addr" in m else ()
                    ifname = None
                    if "if" in m:
                        ifname = ctx.string(m["if"][1], f"{what}: if")
                        if not _IFNAME.match(ifname):
                            raise ctx.error(m["if"][1], f"{what}: if: bad interface name {ifname!r}")
                        if ifname in used_ifs.setdefault(hname, set()):
                            raise ctx.error(m["if"][1], f"{what}: interface {ifname} used twice")
                        used_ifs[hname].add(ifname)
                    ends.append(LinkEnd(hname, addrs, ifname))
                elif isinstance(vn, ScalarNode) and vn.tag.endswith(":null"):
                    ends.append(LinkEnd(hname))
                else:
                    addrs = tuple(ctx.cidr(n, f"{what}: addr") for n in ctx.seq_or_one(vn))
                    ends.append(LinkEnd(hname, addrs))
        else:
            raise ctx.error(item, "links: each link is [a, b] or {a: ADDR, b: ADDR}")
        for end in ends:
            if hosts[end.host].switch and end.addrs:
                raise ctx.error(item, f"links: {end.host} is a switch: its link ends have "
                                      "no address")
        if ends[0].host == ends[1].host:
            raise ctx.error(item, f"links: a link from {ends[0].host} to itself")
        links.append(Link(ends[0], ends[1], line=item.start_mark.line + 1))
    return links


def _parse_rules(ctx: _Ctx, node: Node, hosts: dict[str, Host]) -> list[Rules]:
    out = []
    for hname, kn, vn in ctx.free_mapping(node, "rules"):
        ctx.host_ref(kn, "rules", hosts)
        what = f"rules for {hname}"
        line = kn.start_mark.line + 1
        if isinstance(vn, ScalarNode):
            text = _text(ctx.string(vn, what))
            _check_restore_text(ctx, vn, what, "iptables", text)
            out.append(Rules(hname, iptables=text, line=line,
                             text_lines=(("iptables", _first_text_line(vn)),)))
            continue
        m = ctx.mapping(vn, what, _RULES)
        if not ({"iptables", "ip6tables", "nft"} & set(m)):
            raise ctx.error(vn, f"{what}: give iptables, ip6tables or nft text")
        backend = ctx.choice(m["backend"][1], f"{what}: backend", BACKENDS) if "backend" in m else "nft"
        texts = {k: _text(ctx.string(m[k][1], f"{what}: {k}")) if k in m else None
                 for k in ("iptables", "ip6tables", "nft")}
        for k in ("iptables", "ip6tables"):
            if texts[k] is not None:
                _check_restore_text(ctx, m[k][1], f"{what}: {k}", k, texts[k])
        starts = tuple((k, _first_text_line(m[k][1])) for k in texts if k in m)
        out.append(Rules(hname, backend=backend, line=line, text_lines=starts, **texts))
    return out


def _first_text_line(node: Node) -> int:
    """File line (1-based) of a scalar's first line of text: a block scalar
    (``|``, ``>``) starts on the line after its indicator."""
    block = isinstance(node, ScalarNode) and node.style in ("|", ">")
    return node.start_mark.line + (2 if block else 1)


def _check_restore_text(ctx: _Ctx, node: Node, what: str, kind: str, text: str) -> None:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines or not lines[0].startswith("*") or lines[-1] != "COMMIT":
        raise ctx.error(node, f"{what}: {kind}-restore text starts each table with "
                              "*filter/*nat/... and ends it with COMMIT")


def _text(t: str) -> str:
    return t if t.endswith("\n") else t + "\n"


def _parse_expect(ctx: _Ctx, node: Node, hosts: dict[str, Host], what: str) -> Expectation:
    m = ctx.mapping(node, what, _EXPECT, required=("verdict",))
    verdict = ctx.choice(m["verdict"][1], f"{what}: verdict", VERDICTS)
    by = None
    if "by" in m:
        if verdict == "delivered":
            raise ctx.error(m["by"][0], f"{what}: a delivered packet has no 'by'")
        bm = ctx.mapping(m["by"][1], f"{what}: by", _BY)
        by = By(
            host=ctx.host_ref(bm["host"][1], f"{what}: by: host", hosts) if "host" in bm else None,
            table=ctx.string(bm["table"][1], f"{what}: by: table") if "table" in bm else None,
            chain=ctx.string(bm["chain"][1], f"{what}: by: chain") if "chain" in bm else None,
            line=ctx.integer(bm["line"][1], f"{what}: by: line", 1, 100000) if "line" in bm else None,
        )
    reason = None
    if "reason" in m:
        if verdict == "delivered":
            raise ctx.error(m["reason"][0], f"{what}: a delivered packet has no drop reason")
        reason = ctx.string(m["reason"][1], f"{what}: reason")
        if reason.startswith("SKB_DROP_REASON_"):
            reason = reason[len("SKB_DROP_REASON_"):]
        if not _REASON.match(reason):
            raise ctx.error(m["reason"][1], f"{what}: reason: {reason!r} is not a kernel drop "
                                            "reason name (NETFILTER_DROP, NO_SOCKET, ...)")
    count = ctx.integer(m["count"][1], f"{what}: count", 0, 1000) if "count" in m else None
    return Expectation(verdict=verdict, by=by, reason=reason, count=count,
                       line=node.start_mark.line + 1)


def _parse_traffic(ctx: _Ctx, node: Node, sc: Scenario,
                   default_expect: Expectation | None) -> Traffic:
    what = "traffic"
    m = ctx.mapping(node, what, _TRAFFIC, required=("from", "to", "proto"))
    src_host = ctx.host_ref(m["from"][1], f"{what}: from", sc.hosts)
    if sc.hosts[src_host].switch:
        raise ctx.error(m["from"][1], f"{what}: from: {src_host} is a switch (no address)")
    proto = ctx.choice(m["proto"][1], f"{what}: proto", PROTOS)
    src = ctx.address(m["src"][1], f"{what}: src") if "src" in m else None
    if src is not None and src not in {str(ipaddress.ip_interface(a).ip)
                                        for a in sc.host_addrs(src_host)}:
        raise ctx.error(m["src"][1], f"{what}: src {src} is not an address of {src_host}")

    to_node = m["to"][1]
    to = ctx.string(to_node, f"{what}: to")
    want_family = ipaddress.ip_address(src).version if src else (6 if proto == "icmpv6" else None)
    if to in sc.hosts:
        dst_host = to
        cands = [ipaddress.ip_interface(a).ip for a in sc.host_addrs(to)]
        cands = [a for a in cands if want_family is None or a.version == want_family]
        if not cands:
            fam = f"IPv{want_family} " if want_family else ""
            raise ctx.error(to_node, f"{what}: to: host {to} has no {fam}address "
                                     "(give one to the host or to its link)")
        dst = str(cands[0])
    else:
        try:
            dst = str(ipaddress.ip_address(to))
        except ValueError:
            raise ctx.error(to_node, f"{what}: to: {to!r} is neither a host "
                                     f"({', '.join(sc.hosts)}) nor an address") from None
        dst_host = next((h for h in sc.hosts
                         if dst in {str(ipaddress.ip_interface(a).ip) for a in sc.host_addrs(h)}),
                        None)
        if dst_host is None:
            # Traffic only between the lab's own namespaces (DEVELOPERS.md), but a
            # DNAT'ed address or a service VIP is owned by no host: allow documentation
            # ranges and 10.x only.
            ip = ipaddress.ip_address(dst)
            if not any(ip in ipaddress.ip_network(n) for n in _LAB_RANGES):
                raise ctx.error(to_node, f"{what}: to: {dst} is outside the lab's address "
                                         f"ranges ({', '.join(_LAB_RANGES)})")
    fam = ipaddress.ip_address(dst).version
    if src is not None and ipaddress.ip_address(src).version != fam:
        raise ctx.error(m["src"][1], f"{what}: src {src} and to {dst} are of different IP versions")
    if proto == "icmp" and fam == 6:
        proto = "icmpv6"
    if proto == "icmpv6" and fam == 4:
        raise ctx.error(m["proto"][1], f"{what}: icmpv6 to an IPv4 address")
    port = None
    if proto in ("tcp", "udp"):
        if "port" not in m:
            raise ctx.error(node, f"{what}: missing key 'port' for {proto}")
        port = ctx.integer(m["port"][1], f"{what}: port", 1, 65535)
    elif "port" in m:
        raise ctx.error(m["port"][0], f"{what}: {proto} has no port")
    count = ctx.integer(m["count"][1], f"{what}: count", 1, 100) if "count" in m else 1
    if "expect" in m:
        expect = _parse_expect(ctx, m["expect"][1], sc.hosts, f"{what}: expect")
    elif default_expect is not None:
        expect = default_expect
    else:
        raise ctx.error(node, f"{what}: no expectation (give 'expect' here or at the top)")
    return Traffic(src_host=src_host, dst=dst, dst_host=dst_host, proto=proto, port=port,
                   count=count, src=src, expect=expect, line=node.start_mark.line + 1)


_LAB_RANGES = ("10.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
               "2001:db8::/32", "fd00::/8")
