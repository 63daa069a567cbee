"""Per packet, the path through the chains and the final verdict (pure).

``build_paths(events)`` groups TraceEvents by (netns, trace_id) and keeps, in
order, the steps that tell the story: rule verdicts (jump, goto, return,
accept, drop, queue), implicit returns from user chains, and policies.

Kernel facts (net/netfilter/nf_tables_core.c, nft_do_chain, 6.18): the end of
any chain emits a ``type=rule`` event with verdict continue and no handle; when
it closes a user chain the next event of that packet is in the calling chain
(an implicit return), when it closes a base chain the policy event follows.
A REJECT (iptables-nft ``-j REJECT``, nft ``reject``) is a rule verdict drop:
only the rule's text tells it apart. Legacy TRACE records carry no verdict:
it comes from the rule's text (``-j DROP``...) when the rule is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..events import TRACE_POLICY, TRACE_RETURN, TRACE_RULE, PacketKey, TraceEvent
from .decode import TRACE_SEEN

FINAL = ("drop", "reject", "queue", "stolen")
_REJECT = re.compile(r"(?:^|\s)(?:-j\s+REJECT|reject)(?:\s|$)")
_TARGET = re.compile(r"(?:^|\s)-j\s+(\S+)")
_GOTO = re.compile(r"(?:^|\s)-g\s+(\S+)")
_IPT_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "QUEUE": "queue",
                 "NFQUEUE": "queue", "RETURN": "return"}


@dataclass(frozen=True)
class Step:
    family: str
    table: str
    chain: str
    type: str  # "rule" | "return" | "policy"
    verdict: str  # for policy: the policy
    jump_target: str = ""
    handle: int | None = None
    rulenum: int | None = None
    rule: object = field(default=None, compare=False)  # RuleRef when resolved

    def format(self) -> str:
        where = f"{self.table}/{self.chain}"
        if self.type == TRACE_POLICY:
            return f"{where} policy {self.verdict.upper()}"
        if self.type == TRACE_RETURN:
            return f"{where} return"
        line = getattr(self.rule, "line", None) or self.rulenum
        pos = f"rule {line}" if line else (f"handle {self.handle}" if self.handle is not None else "rule")
        v = self.verdict.upper() + (f" {self.jump_target}" if self.jump_target else "")
        return f"{where} {pos} {v}".rstrip()


@dataclass
class PacketPath:
    netns: int
    trace_id: int
    source: str
    key: PacketKey | None = None
    steps: list[Step] = field(default_factory=list)
    verdict: str = ""  # accept | drop | reject | queue | stolen | "" (unknown or not finished)
    decided_by: Step | None = None  # the rule or policy that gave ``verdict``
    events: int = 0
    first_ts: int = 0
    seen_at: list[str] = field(default_factory=list)  # hooks where ipdbg's chain saw it (TRACE_SEEN)

    def format(self) -> str:
        return " -> ".join(s.format() for s in self.steps)


def match_rule_verdict(ev: TraceEvent, rule) -> tuple[str, str]:
    """(verdict, jump target) of a rule event, refined by the rule's text.

    nftrace gives the verdict (drop may be a REJECT); legacy TRACE gives none.
    """
    text = getattr(rule, "text", "") or ""
    verdict, target = ev.verdict, ev.jump_target
    if ev.source == "legacy":
        m = _TARGET.search(text)
        if m:
            t = m.group(1)
            verdict = _IPT_VERDICTS.get(t, "jump")
            target = "" if t in _IPT_VERDICTS else t
        m = _GOTO.search(text)
        if m:
            verdict, target = "goto", m.group(1)
    if verdict == "drop" and _REJECT.search(text):
        verdict = "reject"
    return verdict, target


SPLIT_GAP_NS = 1_000_000_000  # events of one trace id further apart than this: another packet


def split_packets(evs: list[TraceEvent]) -> list[list[TraceEvent]]:
    """Cut the events of one (netns, trace_id) into packets.

    The kernel reuses trace ids: from 5.19 the id hashes the skb's address, its
    flow hash and iif (nf_tables_trace.c, nft_trace_init: siphash_3u32), so the next packet of a
    flow often gets the same id once the skb memory is recycled. A new packet
    starts when the first event of a base chain (the one carrying the headers)
    comes for a base chain this packet already went through, after a final
    verdict, or after a long gap.
    """
    out: list[list[TraceEvent]] = []
    cur: list[TraceEvent] = []
    entered: set = set()
    final = False
    last_ts = 0
    for ev in evs:
        start = ev.key is not None
        base = (ev.source, ev.family, ev.table, ev.chain)
        if cur and (
            (ev.ts_ns and last_ts and ev.ts_ns - last_ts > SPLIT_GAP_NS)
            or ev.type == TRACE_SEEN  # our chain runs first on its hook: a packet starts there
            or (start and ev.source == "nftrace" and (base in entered or final))
            or (ev.source == "legacy" and final)
        ):
            out.append(cur)
            cur, entered, final = [], set(), False
        cur.append(ev)
        last_ts = ev.ts_ns or last_ts
        if start and ev.source == "nftrace":
            entered.add(base)
        if ev.type == TRACE_POLICY and ev.policy in FINAL:
            final = True
        elif ev.type == TRACE_RULE and ev.verdict in FINAL:
            final = True
    if cur:
        out.append(cur)
    return out


def build_path_list(events: Iterable[TraceEvent],
                    resolve: Callable[[TraceEvent], object] | None = None) -> list[PacketPath]:
    """Every packet's path, in the order of their first events."""
    groups: dict[tuple[int, int], list[TraceEvent]] = {}
    for ev in events:
        groups.setdefault((ev.netns, ev.trace_id), []).append(ev)
    paths = []
    for k, evs in groups.items():
        for part in split_packets(evs):
            paths.append(_build_one(k, part, resolve))
    paths.sort(key=lambda p: p.first_ts)
    return paths


def build_paths(events: Iterable[TraceEvent],
                resolve: Callable[[TraceEvent], object] | None = None) -> dict[tuple[int, int], PacketPath]:
    """{(netns, trace_id): PacketPath} from events in arrival order.

    When the kernel reused a trace id for several packets, the value is the last
    of them; ``build_path_list`` returns them all.
    """
    out: dict[tuple[int, int], PacketPath] = {}
    for p in build_path_list(events, resolve):
        out[(p.netns, p.trace_id)] = p
    return out


def _build_one(k, evs: list[TraceEvent], resolve) -> PacketPath:
    path = PacketPath(netns=k[0], trace_id=k[1], source=evs[0].source, events=len(evs), first_ts=evs[0].ts_ns)
    tentative: Step | None = None
    for i, ev in enumerate(evs):
        if path.key is None and ev.key is not None:
            path.key = ev.key
        if path.verdict in FINAL:
            continue  # nothing after a drop changes the outcome (a later event would be another packet)
        if ev.type == TRACE_SEEN:
            path.seen_at.append(ev.chain)  # ipdbg's own chain: where, not a step of the decision
            continue
        if ev.type == TRACE_RULE and ev.source == "nftrace" and ev.handle is None and ev.verdict == "continue":
            nxt = evs[i + 1] if i + 1 < len(evs) else None
            if nxt is not None and nxt.table == ev.table and nxt.chain != ev.chain and nxt.type != TRACE_POLICY:
                path.steps.append(Step(ev.family, ev.table, ev.chain, TRACE_RETURN, "return"))
            continue  # end of a base chain: the policy event follows
        if ev.type == TRACE_POLICY:
            step = Step(ev.family, ev.table, ev.chain, TRACE_POLICY, ev.policy, rulenum=ev.rulenum)
            path.steps.append(step)
            if ev.policy in FINAL:
                path.verdict, path.decided_by = ev.policy, step
            elif ev.policy == "accept" or ev.policy == "":
                tentative = step
            continue
        if ev.type == TRACE_RETURN:
            path.steps.append(Step(ev.family, ev.table, ev.chain, TRACE_RETURN, "return", rulenum=ev.rulenum))
            continue
        rule = resolve(ev) if resolve is not None else None
        verdict, target = match_rule_verdict(ev, rule)
        step = Step(ev.family, ev.table, ev.chain, TRACE_RULE, verdict, target, ev.handle, ev.rulenum, rule)
        if verdict == "continue":
            continue  # a rule that only counted, logged or marked: not part of the decision
        path.steps.append(step)
        if verdict in FINAL:
            path.verdict, path.decided_by = verdict, step
        elif verdict == "accept":
            tentative = step
    if not path.verdict and tentative is not None:
        if tentative.type == TRACE_RULE or tentative.verdict == "accept":
            path.verdict, path.decided_by = "accept", tentative
    return path
