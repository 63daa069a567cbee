"""Join kernel drops and netfilter trace verdicts into explanations (pure).

Inputs are values: ``DropEvent`` (BPF: kfree_skb, icmp_send, tcp_send_reset),
``TraceEvent`` (nftrace netlink or legacy TRACE) and a ``resolve`` callable that
turns a trace event into its rule (``RuleRef``: table, chain, line, text, ...).
Output: ``Explanation`` objects, one per distinct flow and cause.

The join (kernel-notes.md, "Correlation without kprobes"): no skb pointer is
shared between BPF tracepoints and nftrace, so a drop is tied to a trace by the
packet's identity -- netns, addresses, ports, protocol, IP id / IPv6 flow label,
TCP sequence -- within a window (~1 s). A wrong join is worse than none: a drop
is attributed to a rule only when a trace of *that* packet (same key, same
netns) ended in a drop verdict, each trace explains at most one drop, and
when candidates disagree about the rule we say so instead of guessing.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .nftrace.path import TRACE_SEEN, build_paths, match_rule_verdict
from .events import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TRACE_POLICY,
                     TRACE_RULE, DropEvent, PacketKey, TraceEvent)

NS = 1_000_000_000
TCP_RST = 0x04  # TCP header flag
WINDOW_NS = 1 * NS  # a drop and its trace are at most this far apart
SETTLE_NS = 150_000_000  # wait this long after a drop for its trace and its reply events
REPLY_WINDOW_NS = 50_000_000  # REJECT's reply is sent just before the skb is freed

VERDICT_DROPPED = "dropped"
VERDICT_REJECTED = "rejected"
VERDICT_ACCEPTED = "accepted"
VERDICT_UNSEEN = "unseen"
BLOCKING = (VERDICT_DROPPED, VERDICT_REJECTED)

# Verdicts of a trace step that end the packet inside netfilter.
CAUSE_VERDICTS = ("drop", "reject", "queue", "stolen")
IPTABLES_HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")

# ICMP type/code of REJECT replies (include/uapi/linux/icmp.h, icmpv6.h).
ICMP_UNREACH_CODES = {0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable",
                      3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited",
                      13: "admin-prohibited"}
ICMP6_UNREACH_CODES = {0: "no-route", 1: "adm-prohibited", 3: "addr-unreachable",
                       4: "port-unreachable", 5: "policy-fail", 6: "reject-route"}


# ------------------------------------------------------------------ values

@dataclass
class PathStep:
    """One verdict of one packet in one chain (what the ``path`` line shows)."""

    table: str
    chain: str
    line: int | None
    verdict: str  # accept, drop, jump, goto, return, queue, ... (lower case)
    type: str = TRACE_RULE  # rule | policy | return
    family: str = ""
    target: str = ""  # jump/goto target chain
    handle: int | None = None
    text: str = ""

    def to_json(self) -> dict:
        out = {"table": self.table, "chain": self.chain, "line": self.line,
               "verdict": self.verdict, "type": self.type}
        if self.family:
            out["family"] = self.family
        if self.target:
            out["target"] = self.target
        if self.handle is not None:
            out["handle"] = self.handle
        return out


@dataclass
class Explanation:
    """Why packets of one flow were dropped (or that they were not)."""

    verdict: str  # dropped | rejected | accepted | unseen
    key: PacketKey | None  # the first packet, as sent (before NAT)
    netns: int = 0  # inode
    count: int = 1
    rule: object | None = None  # RuleRef
    path: list[PathStep] = field(default_factory=list)
    reason: str = ""  # kernel drop reason name (NETFILTER_DROP, NO_SOCKET, ...)
    location: str = ""  # "nft_do_chain+0x3e8"
    hook: str = ""  # OUTPUT, INPUT, ... when known
    fix: str | None = None
    fix_delete: str | None = None  # when ``fix`` narrows the rule (-R): deleting it instead
    note: str = ""  # plain words for drops no rule caused, or caveats
    reply: str = ""  # REJECT's reply: "tcp-reset", "icmp port-unreachable", ...
    nat_after: PacketKey | None = None  # the packet when it was dropped, if NAT changed it
    pid: int = 0
    comm: str = ""
    tcp_flags: int = 0
    first_ns: int = 0
    last_ns: int = 0
    netns_label: str = ""  # how to show/name the netns (the path or name we were given)
    filter_text: str = ""  # for "unseen": what we looked for

    def group_key(self) -> tuple:
        rule = self.rule
        rid = None if rule is None else (getattr(rule, "backend", ""), getattr(rule, "table", ""),
                                         getattr(rule, "chain", ""), getattr(rule, "line", None),
                                         getattr(rule, "handle", None))
        flow = self.key.flow() if self.key else None
        last = self.path[-1] if self.path else None
        step = (last.table, last.chain, last.type, last.verdict) if last else None
        return (self.netns, flow, self.verdict, rid, step if rid is None else None, self.reason)

    def to_json(self) -> dict:
        rule = None
        if self.rule is not None:
            r = self.rule
            rule = {"table": r.table, "chain": r.chain, "line": r.line, "text": r.text,
                    "backend": r.backend, "handle": getattr(r, "handle", None),
                    "family": getattr(r, "family", None)}
        out = {
            "verdict": self.verdict,
            "tuple": format_tuple_json(self.key),
            "netns": self.netns_label or (str(self.netns) if self.netns else None),
            "netns_inode": self.netns or None,
            "count": self.count,
            "rule": rule,
            "path": [s.to_json() for s in self.path],
            "reason": self.reason or None,
            "location": self.location or None,
            "hook": self.hook or None,
            "fix": self.fix,
            "note": self.note or None,
        }
        if self.fix_delete:
            out["fix_delete"] = self.fix_delete
        if self.reply:
            out["reply"] = self.reply
        if self.nat_after is not None:
            out["nat"] = {"before": format_tuple_json(self.key),
                          "after": format_tuple_json(self.nat_after)}
        if self.pid or self.comm:
            out["process"] = {"pid": self.pid, "comm": self.comm}
        if self.tcp_flags:
            out["tcp_flags"] = self.tcp_flags
        return out


def format_tuple_json(key: PacketKey | None) -> dict | None:
    if key is None:
        return None
    ports = key.proto in (IPPROTO_TCP, IPPROTO_UDP)
    return {"src": key.src, "dst": key.dst, "sport": key.sport if ports else None,
            "dport": key.dport if ports else None, "proto": key.proto_name}


# ------------------------------------------------------------------ fixes

def _rules_prefix(netns_spec: str | None, backend: str, family: int | str) -> list[str]:
    argv = ["ipdbg", "rules"]
    if netns_spec:
        argv += ["--netns", netns_spec]
    if backend == "legacy":
        argv += ["--backend", "legacy"]
    if family in (6, "ip6"):
        argv.append("-6")
    return argv


def _nft_prefix(netns_spec: str | None) -> list[str]:
    if not netns_spec:
        return ["nft"]
    if "/" not in netns_spec:
        return ["ip", "netns", "exec", netns_spec, "nft"]
    return ["nsenter", f"--net={netns_spec}", "nft"]


def _match_args(key: PacketKey) -> list[str]:
    args = []
    if key.proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6):
        args += ["-p", key.proto_name]
    args += ["-s", key.src, "-d", key.dst]
    if key.proto in (IPPROTO_TCP, IPPROTO_UDP):
        args += ["--dport", str(key.dport)]
    return args


def _nft_match(key: PacketKey) -> list[str]:
    ip = "ip6" if key.family == 6 else "ip"
    args = [ip, "saddr", key.src, ip, "daddr", key.dst]
    if key.proto in (IPPROTO_TCP, IPPROTO_UDP):
        args += [key.proto_name, "dport", str(key.dport)]
    return args


def format_nft_family(rule, step: PathStep | None = None) -> str:
    """The nft family of a rule: the trace's (RuleRef.family is 4/6/0)."""
    if step is not None and step.family not in ("", "legacy"):
        return step.family
    fam = getattr(rule, "family", 0)
    return {4: "ip", 6: "ip6"}.get(fam, fam if isinstance(fam, str) and fam else "inet")


_DPORT_WORDS = ("--dport", "--dports", "--destination-port", "--destination-ports", "multiport")


def format_narrowed_rule(text: str, key: PacketKey | None) -> list[str] | None:
    """The rule (iptables-save text) with this flow's destination port left out:
    ``-p tcp -j DROP`` -> ``-p tcp ! --dport 80 -j DROP``; None when it does not fit
    (no ``-p`` of the flow's protocol, already a port match, no port)."""
    if key is None or key.proto not in (IPPROTO_TCP, IPPROTO_UDP) or not key.dport:
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if len(words) < 3 or words[0] != "-A":
        return None
    args = words[2:]
    if any(w in _DPORT_WORDS for w in args):
        return None
    proto_ok = any(w in ("-p", "--protocol") and i + 1 < len(args)
                   and args[i + 1] == key.proto_name and (i == 0 or args[i - 1] != "!")
                   for i, w in enumerate(args))
    if not proto_ok:
        return None
    at = next((i for i, w in enumerate(args) if w in ("-j", "--jump", "-g", "--goto")),
              len(args))
    out = args[:at] + ["!", "--dport", str(key.dport)] + args[at:]
    return [w if w == "!" else shlex.quote(w) for w in out]


def format_fix(rule, key: PacketKey | None, netns_spec: str | None = None,
               step: PathStep | None = None, narrow: bool = True) -> str | None:
    """The command that removes what dropped the packet.

    A rule: replace it by a narrower one that leaves this flow's port out when
    that fits (``-R``), else delete it by line (``ipdbg rules -t T -D CHAIN N``)
    or, in a native nftables table, by handle. A chain policy: accept this flow
    before the policy applies (append an ACCEPT rule narrowed to the flow).
    """
    if rule is not None:
        if rule.backend == "nftables":
            if getattr(rule, "handle", None) is None:
                return None
            return " ".join(_nft_prefix(netns_spec) + [
                "delete", "rule", format_nft_family(rule, step), rule.table, rule.chain,
                "handle", str(rule.handle)])
        fam = rule.family if rule.family else (key.family if key else 4)
        prefix = _rules_prefix(netns_spec, rule.backend, fam) + ["-t", rule.table]
        if narrow:
            spec = format_narrowed_rule(rule.text, key)
            if spec is not None:
                return " ".join(prefix + ["-R", rule.chain, str(rule.line)] + spec)
        return " ".join(prefix + ["-D", rule.chain, str(rule.line)])
    if step is not None and step.type == TRACE_POLICY and key is not None:
        iptables_like = (step.table in IPTABLES_TABLES and step.chain in IPTABLES_HOOKS
                         and step.family in ("ip", "ip6", ""))
        if step.family == "legacy" or iptables_like:
            backend = "legacy" if step.family == "legacy" else "nft"
            return " ".join(_rules_prefix(netns_spec, backend, key.family)
                            + ["-t", step.table, "-A", step.chain] + _match_args(key)
                            + ["-j", "ACCEPT"])
        return " ".join(_nft_prefix(netns_spec) + [
            "add", "rule", step.family or "inet", step.table, step.chain]
            + _nft_match(key) + ["accept"])
    return None


# ------------------------------------------------------------------ plain words

def _ep(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port else host


def format_reason_note(reason: str, key: PacketKey | None, reply: str = "") -> str:
    """Plain words for a drop that no rule caused (include/net/dropreason-core.h)."""
    dst = _ep(key.dst, key.dport if key and key.proto in (IPPROTO_TCP, IPPROTO_UDP) else None) \
        if key else "the destination"
    src = key.src if key else "the source"
    if reason == "NO_SOCKET":
        what = "nothing listens on " + dst
        if key and key.proto == IPPROTO_TCP:
            return what + " (the peer answered RST)"
        if key and key.proto == IPPROTO_UDP:
            return what + (" (the peer answered ICMP port unreachable)" if reply else "")
        return what
    words = {
        "IP_RPFILTER": f"reverse path filter (rp_filter): the route back to {src} does not "
                       "leave through the interface the packet came in on",
        "IP_OUTNOROUTES": f"no route from this host to {dst}",
        "IP_INNOROUTES": f"no route for the incoming packet to {dst}",
        "IP_INADDRERRORS": f"{dst}: invalid destination address for an incoming packet",
        "IP_NOPROTO": "no handler for this IP protocol on the receiving host",
        "NEIGH_FAILED": f"the next hop towards {dst} did not answer ARP/neighbour discovery",
        "NEIGH_QUEUEFULL": "too many packets waiting for neighbour resolution",
        "NEIGH_DEAD": "the neighbour entry was removed while the packet waited",
        "NEIGH_CREATEFAIL": "could not create a neighbour entry",
        "OTHERHOST": "the frame was addressed to another host's MAC address",
        "IPV6DISABLED": "IPv6 is disabled on the interface",
        "IP_INHDR": "bad IP header (or TTL expired while forwarding)",
        "PKT_TOO_SMALL": "packet shorter than its headers",
        "TCP_CSUM": "bad TCP checksum", "UDP_CSUM": "bad UDP checksum",
        "SOCKET_FILTER": "a socket filter (BPF) on the receiving socket dropped it",
        "SOCKET_RCVBUFF": "the receiving socket's buffer was full",
        "PROTO_MEM": "the protocol's memory limit was reached",
        "XFRM_POLICY": "an IPsec (xfrm) policy refused it",
        "TC_INGRESS": "a tc ingress filter dropped it", "TC_EGRESS": "a tc egress filter dropped it",
        "QDISC_DROP": "the queueing discipline dropped it",
        "CPU_BACKLOG": "the CPU backlog queue was full",
        "DEV_READY": "the device was down", "IPV6_NDISC_FRAG": "fragmented neighbour discovery",
        "UNHANDLED_PROTO": "no handler for this protocol",
        "NOT_SPECIFIED": "the kernel gave no reason",
    }
    return words.get(reason, f"the kernel dropped it ({reason})" if reason else "")


def format_reply(drop_reply: DropEvent | None, rule, family: int) -> str:
    """What a REJECT answered: from the icmp_send event, else from the rule text."""
    if drop_reply is not None:
        if drop_reply.kind == "tcp_send_reset":
            return "tcp-reset"
        codes = ICMP6_UNREACH_CODES if family == 6 else ICMP_UNREACH_CODES
        name = codes.get(drop_reply.icmp_code, f"code {drop_reply.icmp_code}")
        return f"{'icmpv6' if family == 6 else 'icmp'} {name}"
    text = (getattr(rule, "text", "") or "") if rule is not None else ""
    low = text.lower()
    if "tcp-reset" in low or "tcp reset" in low:
        return "tcp-reset"
    if "--reject-with " in low:
        return low.split("--reject-with ", 1)[1].split()[0]
    if "reject with " in low:
        words = [w for w in low.split("reject with ", 1)[1].split() if w not in ("type", "code")]
        return " ".join(words[:2])
    return "icmpv6 port-unreachable" if family == 6 else "icmp port-unreachable"


def format_seen_note(hooks: list[str]) -> str:
    """An accepted packet that only ipdbg's own trace chains saw (no rules on its hooks)."""
    where = " and ".join(hooks)
    return (f"seen at {where} (ipdbg's trace chain{'s' if len(hooks) > 1 else ''}) and not "
            f"dropped; no nftables or traced iptables chain of this netns saw it (no rules "
            f"on {'that hook' if len(hooks) == 1 else 'those hooks'})")


def is_reject(rule) -> bool:
    """iptables ``-j REJECT`` or nftables ``reject``: a drop that answers."""
    text = getattr(rule, "text", "") or ""
    return "-j REJECT" in text or re.search(r"(^|\s)reject(\s|$)", text) is not None


def _hook_of(step: PathStep | None, base_chain: str) -> str:
    for name in (base_chain, step.chain if step else ""):
        if name in IPTABLES_HOOKS:
            return name
        low = name.lower()
        for hook in IPTABLES_HOOKS:
            if low == hook.lower():
                return hook
    return ""


# ------------------------------------------------------------------ the join

class _Trace:
    """Every event of one packet in one netns (one trace id)."""

    __slots__ = ("netns", "source", "trace_id", "events", "keys", "cause", "cause_key",
                 "cause_base", "first_ns", "last_ns", "consumed", "base_chain", "seen_at")

    def __init__(self, ev: TraceEvent):
        self.netns, self.source, self.trace_id = ev.netns, ev.source, ev.trace_id
        self.events: list[TraceEvent] = []
        self.keys: list[PacketKey] = []  # one per base chain, in order
        self.cause: int | None = None  # index of the step that dropped it
        self.cause_key: PacketKey | None = None
        self.cause_base = ""
        self.base_chain = ""
        self.first_ns = self.last_ns = ev.ts_ns
        self.consumed = False
        self.seen_at: list[str] = []  # hooks where ipdbg's own trace chain saw it

    def mark_seen(self, ev: TraceEvent) -> PacketKey | None:
        """ipdbg's own chain saw the packet at a hook: a key and a place, not a step."""
        self.last_ns = max(self.last_ns, ev.ts_ns)
        hook = ev.chain.upper()
        if hook not in self.seen_at:
            self.seen_at.append(hook)
        if ev.key is not None and ev.key not in self.keys:
            self.keys.append(ev.key)
            return ev.key
        return None

    def add(self, ev: TraceEvent, verdict: str) -> PacketKey | None:
        """Append; returns a key that is new for this trace (to index it).

        ``verdict``: the step's verdict refined by its rule (legacy TRACE has none)."""
        self.events.append(ev)
        self.last_ns = max(self.last_ns, ev.ts_ns)
        new = None
        if ev.key is not None:
            self.base_chain = ev.chain
            if ev.key not in self.keys:
                new = ev.key
            self.keys.append(ev.key)
        if self.cause is None and _is_cause(ev, verdict):
            self.cause = len(self.events) - 1
            self.cause_key = self.keys[-1] if self.keys else None
            self.cause_base = self.base_chain
        return new

    @property
    def first_key(self) -> PacketKey | None:
        return self.keys[0] if self.keys else None


def _is_cause(ev: TraceEvent, verdict: str) -> bool:
    if ev.type == TRACE_POLICY:
        return (ev.policy or ev.verdict).lower() in CAUSE_VERDICTS
    if ev.type == TRACE_RULE:
        return verdict in CAUSE_VERDICTS
    return False


_DISCARD = Explanation("discard", None)  # _try_drop: a drop to leave out


class Correlator:
    """Incremental join. Feed events with ``add_drop``/``add_trace`` in any order,
    call ``poll(now_ns)`` (CLOCK_MONOTONIC, the events' clock) to finalize what
    has settled, and ``finish()`` at the end.

    ``resolve(TraceEvent) -> RuleRef | None`` names the rule of a trace step;
    ``netns_specs`` maps a netns inode to how the user names it (for fix
    commands; absent = the current netns); ``netns_labels`` to how to show it.
    """

    def __init__(self, resolve: Callable[[TraceEvent], object] | None = None,
                 netns_specs: dict[int, str] | None = None,
                 netns_labels: dict[int, str] | None = None,
                 window_ns: int = WINDOW_NS, settle_ns: int = SETTLE_NS,
                 ignore_tables: Iterable[str] = ()):
        self._resolve_fn = resolve
        self._resolved: dict[tuple, object] = {}
        self.netns_specs = dict(netns_specs or {})
        self.netns_labels = dict(netns_labels or {})
        self.window_ns, self.settle_ns = window_ns, settle_ns
        self.ignore_tables = set(ignore_tables)
        self._traces: dict[tuple, _Trace] = {}
        self._by_key: dict[tuple, list[_Trace]] = defaultdict(list)
        self._pending: list[DropEvent] = []
        self._retired: list[_Trace] = []  # replaced in _traces by a later packet, same id
        # REJECT/closed-port replies, by the dropped skb and by its key (recent ones).
        self._replies_by_skb: dict[int, DropEvent] = {}
        self._replies_by_key: dict[PacketKey, DropEvent] = {}
        self._groups: dict[tuple, Explanation] = {}
        self._order: list[tuple] = []
        self._accepted: dict[tuple, Explanation] = {}
        self._seen_hooks: dict[tuple, list[str]] = {}  # accepted flow -> hooks ipdbg's chain saw it at
        self.latest_ns = 0
        self.unfinished = 0  # drops left out by finish(cut=True)
        self.rst_consumed = 0  # RSTs freed by the TCP stack itself (not drops; see add_drop)
        self._extra: set[int] = set()  # id() of pending drops outside the filter

    # ---- input
    def add_trace(self, ev: TraceEvent) -> None:
        tid = (ev.netns, ev.source, ev.trace_id)
        tr = self._traces.get(tid)
        if tr is None or tr.cause is not None:
            # Nothing follows a drop for one packet: a later event with this id is
            # another packet (legacy ids come from the packet's headers).
            if tr is not None:
                self._retired.append(tr)
            tr = self._traces[tid] = _Trace(ev)
        if ev.type == TRACE_SEEN or ev.table in self.ignore_tables:
            # ipdbg's own trace chain (TRACE_SEEN, or all its events with --debug): the
            # packet was at that hook, which matters when no chain of the user's saw it.
            new_key = tr.mark_seen(ev)
        else:
            verdict = ""
            if ev.type == TRACE_RULE:
                verdict, _ = match_rule_verdict(ev, self._resolve(ev))
            new_key = tr.add(ev, verdict)
        if new_key is not None:
            self._by_key[(ev.netns, new_key)].append(tr)
        self.latest_ns = max(self.latest_ns, ev.ts_ns)

    def add_drop(self, ev: DropEvent, extra: bool = False) -> None:
        """``extra``: a drop outside the user's filter (e.g. after DNAT rewrote the
        destination), kept only if it joins the trace of a packet that matched."""
        self.latest_ns = max(self.latest_ns, ev.ts_ns)
        if ev.kind != "kfree_skb":
            if len(self._replies_by_skb) > 8192:  # bounded: replies matter for ~50 ms
                self._replies_by_skb.clear()
                self._replies_by_key.clear()
            if ev.skb:
                self._replies_by_skb[ev.skb] = ev
            if ev.key is not None:
                self._replies_by_key[ev.key] = ev
            return
        if (ev.key is not None and ev.key.proto == IPPROTO_TCP and ev.tcp_flags & TCP_RST
                and ev.reason_name != "NETFILTER_DROP"):
            # tcp_v4_rcv/tcp_v6_rcv free a RST they processed, or one for a socket
            # that is already gone (a RST is never answered, RFC 9293 3.10.7.1), with
            # kfree_skb (NOT_SPECIFIED, NO_SOCKET; seen on 6.18 at tcp_v4_rcv+0x99 when
            # a connection closes with a RST): the RST did its job, nothing was lost.
            # A RST dropped by a rule is NETFILTER_DROP and still counts.
            self.rst_consumed += 1
            return
        if extra:
            self._extra.add(id(ev))
        self._pending.append(ev)

    def add(self, ev, extra: bool = False) -> None:
        if isinstance(ev, DropEvent):
            self.add_drop(ev, extra)
        else:
            self.add_trace(ev)

    # ---- output
    def poll(self, now_ns: int | None = None) -> list[Explanation]:
        """Finalize settled drops and traces; returns the new per-packet explanations."""
        now = self.latest_ns if now_ns is None else now_ns
        out: list[Explanation] = []
        self._pending.sort(key=lambda d: d.ts_ns)
        keep = []
        for drop in self._pending:
            exp = self._try_drop(drop, now, final=False)
            if exp is None:
                keep.append(drop)
                continue
            self._extra.discard(id(drop))
            if exp is not _DISCARD:
                out.append(exp)
        self._pending = keep
        out.extend(self._settle_traces(now, final=False))
        for exp in out:
            self._merge(exp)
        return out

    def finish(self, flt=None, watched: Iterable[int] = (), cut: bool = False) -> list[Explanation]:
        """Finalize everything; then add ``accepted`` flows (traced, not dropped) or,
        when nothing at all was seen, one ``unseen`` answer for ``flt``.

        ``cut``: we stop early (--count reached) while events may still be in
        flight: drops that can be joined now are, the others are left out and
        counted in ``unfinished`` rather than called drops with no rule."""
        now = self.latest_ns + 10 * self.window_ns
        for drop in sorted(self._pending, key=lambda d: d.ts_ns):
            if cut and drop.reason_name == "NETFILTER_DROP" and not self._candidates(drop):
                self.unfinished += id(drop) not in self._extra
                continue
            exp = self._try_drop(drop, now, final=True)
            if exp is not _DISCARD:
                self._merge(exp)
        self._pending = []
        self._extra.clear()
        if cut:
            for tr in list(self._traces.values()) + self._retired:
                if tr.cause is not None and not tr.consumed:
                    tr.consumed = True
                    self.unfinished += 1
        for exp in self._settle_traces(now, final=True):
            self._merge(exp)
        return self.explanations(flt, watched)

    def explanations(self, flt=None, watched: Iterable[int] = ()) -> list[Explanation]:
        blocking = [self._groups[k] for k in self._order]
        if blocking:
            flows = set()
            for e in blocking:
                for k in (e.key, e.nat_after):
                    if k is not None:
                        flows.add(k.flow())
            accepted = [e for e in self._accepted.values() if e.key.flow() not in flows]
            return blocking + accepted
        if self._accepted:
            return list(self._accepted.values())
        if flt is None:
            return []
        watched = list(watched)
        label = ", ".join(self.netns_labels.get(i, str(i)) for i in watched)
        if len(watched) > 3:
            label = f"{len(watched)} namespaces"
        return [Explanation(VERDICT_UNSEEN, format_filter_key(flt), count=0,
                            netns_label=label,
                            filter_text=format_filter_text(flt),
                            note="in the watched netns, no matching packet was seen (by a "
                                 "chain of the ruleset or at ipdbg's prerouting/output trace "
                                 "chains), and the kernel dropped none")]

    @property
    def blocking_count(self) -> int:
        return len(self._order)

    def has_pending(self) -> bool:
        """Drops not yet explained, or traces ending in a drop not yet joined."""
        return bool(self._pending) or any(t.cause is not None and not t.consumed
                                          for t in list(self._traces.values()) + self._retired)

    # ---- internals
    def _resolve(self, ev: TraceEvent):
        if self._resolve_fn is None or ev.type == TRACE_POLICY:
            return None
        ident = (ev.netns, ev.source, ev.family, ev.table, ev.chain, ev.handle, ev.rulenum)
        if ident not in self._resolved:
            try:
                self._resolved[ident] = self._resolve_fn(ev)
            except Exception:  # a rule deleted since: show the step without text
                self._resolved[ident] = None
        return self._resolved[ident]

    def _path(self, tr: _Trace, upto: int | None = None) -> list[PathStep]:
        events = tr.events if upto is None else tr.events[:upto + 1]
        paths = build_paths(events, self._resolve)
        if not paths:
            return []
        steps = []
        for st in next(iter(paths.values())).steps:
            rule = st.rule
            line = getattr(rule, "line", None) if rule is not None else None
            if line is None and st.type == TRACE_RULE:
                line = st.rulenum
            family = "legacy" if tr.source == "legacy" else st.family
            steps.append(PathStep(st.table, st.chain, line, st.verdict.lower(), st.type, family,
                                  st.jump_target, st.handle,
                                  getattr(rule, "text", "") if rule is not None else ""))
        return steps

    def _reply_for(self, drop: DropEvent) -> DropEvent | None:
        for r in (self._replies_by_skb.get(drop.skb) if drop.skb else None,
                  self._replies_by_key.get(drop.key) if drop.key is not None else None):
            # skb addresses are reused once freed: the reply must be of this moment.
            if r is not None and abs(r.ts_ns - drop.ts_ns) <= REPLY_WINDOW_NS:
                return r
        return None

    def _candidates(self, drop: DropEvent) -> list[_Trace]:
        if drop.key is None:
            return []
        if drop.netns:
            pools = self._by_key.get((drop.netns, drop.key), [])
        else:  # the engine could not tell the netns: only the key then
            pools = [t for (ns, k), ts in self._by_key.items() if k == drop.key for t in ts]
        return [t for t in pools if not t.consumed and t.cause is not None
                and abs(t.events[t.cause].ts_ns - drop.ts_ns) <= self.window_ns]

    def _try_drop(self, drop: DropEvent, now: int, final: bool) -> Explanation | None:
        age = now - drop.ts_ns
        if not final and age < self.settle_ns:
            return None
        netfilter = drop.reason_name == "NETFILTER_DROP"
        if not netfilter:
            return _DISCARD if id(drop) in self._extra else self._explain_kernel(drop)
        cands = self._candidates(drop)
        if not cands:
            if not final and age < self.window_ns:
                return None  # its trace may still come (legacy logs are batched)
            if id(drop) in self._extra:
                return _DISCARD  # not a packet the user asked about
            return self._explain_unattributed(drop)
        causes = {self._cause_id(t) for t in cands}
        if len(causes) > 1:  # two traces of identical packets disagree: do not guess
            exp = self._explain_unattributed(drop)
            exp.note = ("packets identical to this one were dropped by different rules "
                        "at the same time; not attributing it to either")
            for t in cands:
                t.consumed = True
            return exp
        tr = min(cands, key=lambda t: abs(t.events[t.cause].ts_ns - drop.ts_ns))
        tr.consumed = True
        return self._explain_trace(tr, drop)

    def _cause_id(self, tr: _Trace) -> tuple:
        ev = tr.events[tr.cause]
        return (ev.table, ev.chain, ev.type, ev.handle, ev.rulenum, ev.family)

    def _base(self, drop: DropEvent | None, key: PacketKey | None, netns: int) -> dict:
        return dict(key=key, netns=netns, netns_label=self.netns_labels.get(netns, ""),
                    pid=drop.pid if drop else 0, comm=drop.comm if drop else "",
                    tcp_flags=drop.tcp_flags if drop else 0,
                    first_ns=drop.ts_ns if drop else 0, last_ns=drop.ts_ns if drop else 0,
                    reason=drop.reason_name if drop else "",
                    location=drop.location_sym if drop else "")

    def _explain_trace(self, tr: _Trace, drop: DropEvent | None) -> Explanation:
        path = self._path(tr, tr.cause)
        cause_ev = tr.events[tr.cause]
        rule = self._resolve(cause_ev) if cause_ev.type == TRACE_RULE else None
        key = tr.first_key or (drop.key if drop else None)
        base = self._base(drop, key, tr.netns)
        if drop is None:
            base.update(reason="NETFILTER_DROP", first_ns=cause_ev.ts_ns, last_ns=cause_ev.ts_ns)
        step = path[-1] if path else None
        exp = Explanation(VERDICT_DROPPED, rule=rule, path=path,
                          hook=_hook_of(step, tr.cause_base), **base)
        after = tr.cause_key or (drop.key if drop else None)
        if key is not None and after is not None and key.flow() != after.flow():
            exp.nat_after = after
        verdict = (cause_ev.verdict or cause_ev.policy).lower()
        if verdict == "queue":
            exp.note = "queued to NFQUEUE and dropped there (no program listening on the queue?)"
        if rule is not None and is_reject(rule):
            exp.verdict = VERDICT_REJECTED
            exp.reply = format_reply(self._reply_for(drop) if drop else None, rule,
                                     key.family if key else 4)
        elif rule is None and cause_ev.type == TRACE_RULE:
            exp.note = exp.note or ("the rule's text could not be read back (no rule "
                                    "snapshot, or the rule was deleted since)")
        if drop is None:
            exp.note = exp.note or "the kernel's drop event for this packet was not seen; " \
                                   "the verdict is the rule's"
        spec = self.netns_specs.get(tr.netns)
        exp.fix = format_fix(rule, after or key, spec, step)
        if rule is not None and exp.fix and " -R " in exp.fix:
            exp.fix_delete = format_fix(rule, after or key, spec, step, narrow=False)
        return exp

    def _explain_unattributed(self, drop: DropEvent) -> Explanation:
        exp = Explanation(VERDICT_DROPPED, **self._base(drop, drop.key, drop.netns))
        legacy_hook = drop.location_sym.startswith("nf_hook_slow")
        exp.note = ("netfilter drop with no rule: no nftables or iptables rule gave a drop "
                    "verdict for this packet (NFQUEUE without a listener, conntrack, a BPF "
                    "netfilter program, or lost trace events)")
        if legacy_hook:
            exp.note += "; dropped at nf_hook_slow (iptables-legacy or an older kernel)"
        return exp

    def _explain_kernel(self, drop: DropEvent) -> Explanation:
        exp = Explanation(VERDICT_DROPPED, **self._base(drop, drop.key, drop.netns))
        reply = self._reply_for(drop)
        exp.note = format_reason_note(drop.reason_name, drop.key, reply.kind if reply else "")
        if reply is not None:
            exp.reply = format_reply(reply, None, drop.key.family if drop.key else 4)
        return exp

    def _settle_traces(self, now: int, final: bool) -> list[Explanation]:
        """Traces old enough that no drop will join them any more: a drop verdict
        nobody joined becomes a trace-only explanation, the rest ``accepted`` flows."""
        out = []
        horizon = self.window_ns + self.settle_ns
        done = [(tid, tr) for tid, tr in self._traces.items()
                if final or now - tr.last_ns >= horizon]
        retired = [tr for tr in self._retired if final or now - tr.last_ns >= horizon]
        for tid, _ in done:
            del self._traces[tid]
        self._retired = [tr for tr in self._retired if tr not in retired]
        for tr in [tr for _, tr in done] + retired:
            for k in set(tr.keys):
                lst = self._by_key.get((tr.netns, k))
                if lst is not None:
                    if tr in lst:
                        lst.remove(tr)
                    if not lst:
                        del self._by_key[(tr.netns, k)]
            if tr.consumed:
                continue
            if tr.cause is not None:
                out.append(self._explain_trace(tr, None))
            elif tr.first_key is not None:
                self._note_accepted(tr)
        return out

    def _note_accepted(self, tr: _Trace) -> None:
        key = tr.first_key
        gk = (tr.netns, key.flow())
        exp = self._accepted.get(gk)
        path = self._path(tr)
        if exp is None:
            exp = self._accepted[gk] = Explanation(
                VERDICT_ACCEPTED, key, tr.netns, 0, path=path,
                netns_label=self.netns_labels.get(tr.netns, ""), first_ns=tr.first_ns)
            if tr.keys[-1].flow() != key.flow():
                exp.nat_after = tr.keys[-1]
        exp.count += 1
        exp.path = path or exp.path
        exp.last_ns = tr.last_ns
        hooks = self._seen_hooks.setdefault(gk, [])
        hooks.extend(h for h in tr.seen_at if h not in hooks)
        if hooks and not exp.path:
            # No chain of the user's saw it: only ipdbg's own trace chain did.
            exp.hook = hooks[0]
            exp.note = format_seen_note(hooks)

    def _merge(self, exp: Explanation | None) -> None:
        if exp is None:
            return
        gk = exp.group_key()
        cur = self._groups.get(gk)
        if cur is None:
            self._groups[gk] = exp
            self._order.append(gk)
            return
        cur.count += exp.count
        cur.first_ns = min(cur.first_ns or exp.first_ns, exp.first_ns or cur.first_ns)
        cur.last_ns = max(cur.last_ns, exp.last_ns)
        for attr in ("reason", "location", "reply", "comm"):
            if not getattr(cur, attr) and getattr(exp, attr):
                setattr(cur, attr, getattr(exp, attr))
        if not cur.pid and exp.pid:
            cur.pid = exp.pid


def correlate(events: Iterable, resolve=None, flt=None, netns_specs=None, netns_labels=None,
              ignore_tables: Iterable[str] = (), watched: Iterable[int] = (),
              extra: Iterable = ()) -> list[Explanation]:
    """All at once: every DropEvent/TraceEvent of a run -> explanations.

    ``extra``: the drops (among ``events``) seen outside the filter (add_drop)."""
    c = Correlator(resolve, netns_specs, netns_labels, ignore_tables=ignore_tables)
    extra_ids = {id(e) for e in extra}
    for ev in sorted(events, key=lambda e: e.ts_ns):
        c.add(ev, id(ev) in extra_ids)
        c.poll(None)
    return c.finish(flt, watched)


# ------------------------------------------------------------------ filters as text

def format_filter_key(flt) -> PacketKey | None:
    """A PacketKey standing for what a filter asks (for the ``unseen`` answer)."""
    if flt is None:
        return None
    fam = flt.family or 4
    any_addr = "::" if fam == 6 else "0.0.0.0"

    def addr(net):
        if net is None:
            return any_addr
        return str(net.network_address) if net.num_addresses == 1 else str(net)

    return PacketKey(fam, flt.proto or 0, addr(flt.src), addr(flt.dst),
                     flt.sport or 0, flt.dport or 0)


def format_filter_text(flt) -> str:
    parts = []
    for opt, net, port in (("--src", flt.src, flt.sport), ("--dst", flt.dst, flt.dport)):
        if net is None and port is None:
            continue
        host = "" if net is None else (str(net.network_address) if net.num_addresses == 1
                                       else str(net))
        if host and ":" in host and port:
            host = f"[{host}]"
        parts.append(f"{opt} {host}{':' + str(port) if port else ''}")
    if flt.proto is not None:
        from .events import PROTO_NAMES
        parts.append(f"--proto {PROTO_NAMES.get(flt.proto, flt.proto)}")
    if flt.iface:
        parts.append(f"--iface {flt.iface}")
    return " ".join(parts) or "(any packet)"

