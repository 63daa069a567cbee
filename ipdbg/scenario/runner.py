"""Run a validated scenario: build the lab, apply rules, listen, trace, send, check.

Generic: nothing here knows a scenario by name. The lab (``ipdbg.lab``) is always
torn down, also on Ctrl-C, SIGTERM (cli.py turns it into an exception) or any
failure; if we are SIGKILLed its namespaces die with their holder processes.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field

from .. import traffic as tx
from ..errors import IpdbgError, SystemToolError, UsageError
from ..lab import Lab
from .check import Seen, match_expectation, split_explanations
from .schema import Scenario, Traffic

# Per attempt: short, so that a dropped connect costs one SYN and a scenario stays
# at a few seconds. Lab links are veths: a delivered packet answers in microseconds.
CONNECT_TIMEOUT = 0.5
UDP_SETTLE = 0.3  # time for the listener thread to count datagrams that got through

RESTORE = {
    ("iptables", "nft"): ["iptables-nft-restore"],
    ("iptables", "legacy"): ["iptables-legacy-restore", "-w", "5"],
    ("ip6tables", "nft"): ["ip6tables-nft-restore"],
    ("ip6tables", "legacy"): ["ip6tables-legacy-restore", "-w", "5"],
}
# "Error occurred at line: N" (iptables-restore), "/dev/stdin:N:C-C: Error" (nft)
_TOOL_LINE = re.compile(r"Error occurred at line: (\d+)|/dev/stdin:(\d+):")
_NAT_WORDS = re.compile(r"^\*nat\b|\b(dnat|snat|masquerade|redirect)\b", re.I | re.M)


@dataclass
class ItemResult:
    traffic: Traffic
    sent: list[str] = field(default_factory=list)  # traffic.py words, one per attempt
    through: bool = False
    seen: Seen | None = None
    problems: list[str] = field(default_factory=list)
    explanations: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)  # the probe's own artifacts (check.py)
    lost_events: int = 0
    ready_s: float = 0.0  # investigate(): until its engines were armed
    elapsed_s: float = 0.0  # investigate(): in all

    @property
    def ok(self) -> bool:
        return self.seen is not None and not self.problems

    def to_json(self) -> dict:
        t = self.traffic
        return {
            "traffic": {"from": t.src_host, "to": t.dst, "to_host": t.dst_host, "proto": t.proto,
                        "port": t.port, "count": t.count, "src": t.src, "line": t.line},
            "expected": t.expect.describe() if t.expect else None,
            "seen": self.seen.describe() if self.seen else None,
            "sent": self.sent,
            "through": self.through,
            "pass": self.ok,
            "problems": self.problems,
            "explanations": self.explanations,
            "ignored": self.ignored,
            "lost_events": self.lost_events,
            "trace_ready_s": round(self.ready_s, 3),
            "trace_s": round(self.elapsed_s, 3),
        }


@dataclass
class ScenarioResult:
    scenario: Scenario
    items: list[ItemResult] = field(default_factory=list)
    error: str | None = None  # the lab could not be built / traced
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.items) and all(i.ok for i in self.items)

    def to_json(self) -> dict:
        return {"scenario": self.scenario.name, "file": self.scenario.filename,
                "pass": self.ok, "error": self.error, "seconds": round(self.seconds, 2),
                "items": [i.to_json() for i in self.items]}


# ------------------------------------------------------------------ building

def build_lab(lab: Lab, sc: Scenario) -> None:
    """Hosts, links, addresses, sysctls, routes, in that order (sysctls on an
    interface need the interface; routes need the addresses)."""
    for name in sc.hosts:
        host = lab.add_host(name)
        # No duplicate address detection on the lab's links: while a new link's
        # link-local address is tentative (about a second), a router here (6.18)
        # left its next hop's neighbour entry INCOMPLETE and IPv6 forwarded
        # through it was lost; lab.py's `nodad` covers only the global addresses.
        host.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                  "net.ipv6.conf.default.accept_dad=0"])
    placed: set[str] = set()
    ports: dict[str, list[str]] = {}  # switch host -> its interfaces
    for link in sc.links:
        addrs = []
        for end in (link.a, link.b):
            own = [] if end.host in placed else list(sc.hosts[end.host].addrs)
            placed.add(end.host)
            addrs.append(own + list(end.addrs))
        ifs = lab.link(lab.hosts[link.a.host], lab.hosts[link.b.host], addrs[0], addrs[1],
                       a_if=link.a.ifname, b_if=link.b.ifname)
        for end, ifname in zip((link.a, link.b), ifs):
            if sc.hosts[end.host].switch:
                ports.setdefault(end.host, []).append(ifname)
    for name, ifnames in ports.items():
        host = lab.hosts[name]
        host.run(["ip", "link", "add", "br0", "type", "bridge"])
        for ifname in ifnames:
            host.run(["ip", "link", "set", ifname, "master", "br0"])
        host.run(["ip", "link", "set", "br0", "up"])
    for name, spec in sc.hosts.items():
        host = lab.hosts[name]
        if spec.forwarding:
            host.sysctl("net.ipv4.ip_forward", 1)
            host.sysctl("net.ipv6.conf.all.forwarding", 1)
        for key, value in spec.sysctls:
            host.sysctl(key, value)
        for route in spec.routes:
            words = route.split()
            six = any(":" in w for w in words)
            host.run(["ip"] + (["-6"] if six else []) + ["route", "add"] + words)


def apply_rules(lab: Lab, sc: Scenario) -> None:
    """Each host's rules through its backend's own restore tool (atomic per table)."""
    for rules in sc.rules:
        host = lab.hosts[rules.host]
        for kind in ("iptables", "ip6tables", "nft"):
            text = getattr(rules, kind)
            if text is None:
                continue
            argv = ["nft", "-f", "-"] if kind == "nft" else RESTORE[(kind, rules.backend)]
            proc = host.run(argv, check=False, input=text)
            if proc.returncode != 0:
                out = proc.stderr or proc.stdout
                line = rules.line
                m = _TOOL_LINE.search(out)
                if m:
                    line = rules.file_line(kind, int(m.group(1) or m.group(2)))
                msg = " ".join(ln.strip() for ln in out.splitlines()
                               if ln.strip() and not ln.startswith("Try "))[:300]
                raise UsageError(f"{sc.filename}:{line}: rules for {rules.host}: "
                                 f"`{argv[0]}` refused the {kind} text: {msg}",
                                 f"try it by hand: {argv[0]} --test < FILE" if kind != "nft"
                                 else "try it by hand: nft -c -f FILE")


def start_listeners(lab: Lab, sc: Scenario) -> list:
    out = []
    try:
        for name, spec in sc.hosts.items():
            for ls in spec.listen:
                out.append(tx.start_listener(lab.hosts[name].netns, ls.proto, ls.port))
    except OSError as exc:
        for listener in out:
            listener.close()
        raise SystemToolError(f"{sc.filename}: could not listen: {exc}") from None
    return out


# ------------------------------------------------------------------ traffic

def _uses_nat(sc: Scenario) -> bool:
    return any(_NAT_WORDS.search(t) for r in sc.rules
               for t in (r.iptables, r.ip6tables, r.nft) if t)


def build_item_filter(sc: Scenario, item: Traffic):
    """The why-dropped filter for one traffic item.

    The destination as sent, unless the lab rewrites addresses (DNAT, MASQUERADE):
    then the protocol alone, as the packet may be dropped after the rewrite under
    another address; the lab carries no other traffic of that protocol.
    """
    from ..filters import build_filter

    if _uses_nat(sc) and item.family == 4:
        flt = build_filter(proto=item.proto)
    else:
        dst = f"[{item.dst}]" if ":" in item.dst else item.dst
        if item.port:
            dst += f":{item.port}"
        flt = build_filter(dst=dst, proto=item.proto)
    # Replies belong to the flow: a dropped SYN-ACK or echo reply is its failure too.
    return dataclasses.replace(flt, both_directions=True)


def send_item(lab: Lab, item: Traffic) -> list[str]:
    """Send one traffic item; one word per attempt (traffic.py's words)."""
    netns = lab.hosts[item.src_host].netns
    if item.proto == "tcp":
        return [tx.send_tcp_connect(netns, item.dst, item.port, src=item.src,
                                    timeout=CONNECT_TIMEOUT) for _ in range(item.count)]
    if item.proto == "udp":
        return [tx.send_udp(netns, item.dst, item.port, src=item.src, count=item.count)]
    return [tx.send_icmp_echo(netns, item.dst, src=item.src, timeout=CONNECT_TIMEOUT)
            for _ in range(item.count)]


def _got_through(item: Traffic, sent: list[str], udp_received: int) -> bool:
    if item.proto == "tcp":
        return all(w == tx.CONNECTED for w in sent)
    if item.proto == "udp":
        return udp_received >= item.count
    return all(w == tx.REPLY for w in sent)


def _udp_served(listeners) -> int:
    return sum(ls.served for ls in listeners if ls.proto == "udp")


def observe_item(lab: Lab, sc: Scenario, item: Traffic, listeners, debug: bool = False
                 ) -> ItemResult:
    """Arm tracing in every lab host, send the item once tracing is ready, collect."""
    from ..investigate import investigate  # why-dropped's machinery

    result = ItemResult(item)
    before = _udp_served(listeners)

    def probe() -> str:  # run by investigate() in a thread once its engines are armed
        result.sent = send_item(lab, item)
        return ",".join(result.sent)

    # Every host: the sender, the routers on the path and the receiver.
    paths = [h.netns for h in lab.hosts.values()]
    labels = {h.inode: name for name, h in lab.hosts.items()}
    flt = build_item_filter(sc, item)
    # An upper bound: investigate() returns shortly after the probe when nothing is
    # pending; the slowest probe is count attempts that each time out.
    timeout = sc.timeout + item.count * CONNECT_TIMEOUT
    inv = investigate(paths, flt, timeout, probe=probe, netns_labels=labels, debug=debug)
    if inv.probe_result and inv.probe_result.startswith("error"):
        result.problems.append(f"sending failed: {inv.probe_result}")
    if not result.sent:
        result.problems.append("the traffic was not sent (tracing never became ready)")
    if item.proto == "udp":
        deadline = time.monotonic() + UDP_SETTLE
        while _udp_served(listeners) - before < item.count and time.monotonic() < deadline:
            time.sleep(0.02)
    result.through = _got_through(item, result.sent, _udp_served(listeners) - before)
    result.explanations, result.ignored = split_explanations(_explanations_json(inv), item)
    result.lost_events = int(getattr(inv, "lost", 0) or 0)
    result.ready_s = float(getattr(inv, "ready_s", 0.0) or 0.0)
    result.elapsed_s = float(getattr(inv, "elapsed_s", 0.0) or 0.0)
    host_ids = {name: {h.inode, h.netns, name} for name, h in lab.hosts.items()}
    result.seen, problems = match_expectation(item.expect, item, result.explanations,
                                              result.through, host_ids)
    result.problems.extend(problems)
    if result.lost_events:
        result.problems.append(f"{result.lost_events} trace event(s) lost")
    return result


def _explanations_json(inv) -> list[dict]:
    if inv is None:
        return []
    if hasattr(inv, "to_json"):
        data = inv.to_json()
        if isinstance(data, dict):
            data = data.get("explanations", [])
        return list(data)
    exps = getattr(inv, "explanations", inv)
    return [e.to_json() if hasattr(e, "to_json") else dict(e) for e in exps]


# ------------------------------------------------------------------ one scenario

def run_scenario(sc: Scenario, debug: bool = False) -> ScenarioResult:
    """Build, run and always tear down one scenario. Errors that concern only this
    scenario (rules refused, a tool failed) are recorded in the result; Ctrl-C and
    SIGTERM propagate after the teardown."""
    res = ScenarioResult(sc)
    t0 = time.monotonic()
    listeners: list = []
    try:
        with Lab(prefix="sc") as lab:
            try:
                build_lab(lab, sc)
                apply_rules(lab, sc)
                listeners = start_listeners(lab, sc)
                for item in sc.traffic:
                    res.items.append(observe_item(lab, sc, item, listeners, debug=debug))
            finally:
                # Sockets hold their netns: close them before the holders go.
                for listener in listeners:
                    listener.close()
    except IpdbgError as exc:
        if exc.exit_code == 130:
            raise
        res.error = exc.message
    except ImportError as exc:
        res.error = f"why-dropped's machinery is not available: {exc}"
    except Exception as exc:  # a tool or the kernel failed for this scenario only
        if debug:
            raise
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        res.seconds = time.monotonic() - t0
    return res
