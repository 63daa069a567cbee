"""Compare what a scenario expected with what was seen (pure).

Input: the traffic item, the explanations why-dropped produced (their JSON form:
``verdict``, ``netns``, ``count``, ``rule`` {table, chain, line, ...}, ``reason``)
and whether the traffic got through. Output: a ``Seen`` summary and the list of
expectation mismatches (empty = pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .schema import Expectation, Traffic, format_where

BLOCKING = ("dropped", "rejected")


@dataclass
class Seen:
    verdict: str  # dropped | rejected | delivered | lost (not through, no drop attributed)
    count: int = 0  # packets with that verdict
    host: str | None = None
    table: str | None = None
    chain: str | None = None
    line: int | None = None
    reason: str | None = None
    extra: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [self.verdict + (f" x{self.count}" if self.count > 1 else "")]
        where = format_where(self.host, self.table, self.chain, self.line)
        if where:
            parts.append(where)
        if self.reason:
            parts.append(self.reason)
        return " ".join(parts)


def match_host(netns, host_ids: dict[str, set]) -> str | None:
    """Which lab host an explanation's ``netns`` (inode, path or name) belongs to."""
    if netns is None:
        return None
    if isinstance(netns, dict):
        for key in ("inode", "inum", "path", "name"):
            if key in netns:
                found = match_host(netns[key], host_ids)
                if found:
                    return found
        return None
    for name, ids in host_ids.items():
        if netns in ids or str(netns) in {str(i) for i in ids}:
            return name
    return None


def where_of(e: dict) -> dict:
    """table/chain/line of the verdict: the rule, else the path step that ended the
    packet (a chain's policy has no rule and no line)."""
    rule = e.get("rule") or {}
    if rule.get("chain"):
        return rule
    for step in reversed(e.get("path") or []):
        if str(step.get("verdict", "")).lower() in ("drop", "reject", "dropped", "rejected"):
            return {"table": step.get("table"), "chain": step.get("chain"),
                    "line": step.get("line") if step.get("type") == "rule" else None}
    return {}


def _reason_name(reason) -> str | None:
    if reason is None:
        return None
    if isinstance(reason, dict):
        reason = reason.get("name") or reason.get("reason")
    text = str(reason)
    return text[len("SKB_DROP_REASON_"):] if text.startswith("SKB_DROP_REASON_") else text


TCP_SYN = 0x02


def split_explanations(explanations: list[dict], traffic: Traffic
                       ) -> tuple[list[dict], list[dict]]:
    """(explanations that count, those that are artifacts of the probe itself).

    Artifacts, each tagged with ``ignored`` saying why:
    * a reply that the sending host's stack frees with NO_SOCKET has arrived: the
      probe's UDP socket is closed once the datagrams are out, and an ICMP echo
      reply is freed by ping_rcv (net/ipv4/ping.c) after the raw socket took its copy;
    * a TCP packet without SYN: the probe is a connect(), which is over with the
      handshake; it then closes with a RST, and the teardown packets that cross it
      may be freed by either stack (e.g. NOT_SPECIFIED in tcp_v4_rcv).
    """
    kept, ignored = [], []
    for e in explanations:
        tup = e.get("tuple") or {}
        reason = _reason_name(e.get("reason"))
        why = None
        # A reply comes from the address we sent to (NAT undone by conntrack); a packet
        # from elsewhere (e.g. a SYN-ACK from a DNAT target's own address, the
        # hairpin-NAT failure) is not an artifact and counts.
        inbound_to_sender = (e.get("netns") == traffic.src_host
                             and tup.get("src") == traffic.dst and tup.get("dst") != traffic.dst)
        if inbound_to_sender and reason == "NO_SOCKET" and not (e.get("rule") or e.get("path")):
            why = "a reply that reached the sender after its probe socket closed"
        elif (traffic.proto == "tcp" and e.get("tcp_flags")
              and not int(e["tcp_flags"]) & TCP_SYN and e.get("verdict") in BLOCKING):
            why = "a TCP packet after the handshake (the probe's teardown)"
        if why is None:
            kept.append(e)
        else:
            ignored.append({**e, "ignored": why})
    return kept, ignored


def summarize_seen(explanations: list[dict], through: bool,
                   host_ids: dict[str, set]) -> Seen:
    """One line of what happened to a traffic item."""
    blocking = [e for e in explanations if e.get("verdict") in BLOCKING]
    if not blocking:
        return Seen("delivered" if through else "lost")
    # The explanation with the most packets speaks for the item; others are listed.
    blocking.sort(key=lambda e: -int(e.get("count") or 1))
    first = blocking[0]
    rule = where_of(first)
    seen = Seen(
        verdict=first["verdict"],
        count=sum(int(e.get("count") or 1) for e in blocking if e["verdict"] == first["verdict"]),
        host=match_host(first.get("netns"), host_ids),
        table=rule.get("table"), chain=rule.get("chain"), line=rule.get("line"),
        reason=_reason_name(first.get("reason")),
    )
    for e in blocking[1:]:
        r = where_of(e)
        seen.extra.append(Seen(e["verdict"], int(e.get("count") or 1),
                               match_host(e.get("netns"), host_ids), r.get("table"),
                               r.get("chain"), r.get("line"),
                               _reason_name(e.get("reason"))).describe())
    return seen


def match_expectation(exp: Expectation, traffic: Traffic, explanations: list[dict],
                      through: bool, host_ids: dict[str, set]) -> tuple[Seen, list[str]]:
    """(what was seen, mismatches). An expectation holds when some explanation with
    the expected verdict matches every field given in ``by`` and ``reason``, and, with
    ``count``, when the packets so explained add up to it exactly."""
    seen = summarize_seen(explanations, through, host_ids)
    problems: list[str] = []
    blocking = [e for e in explanations if e.get("verdict") in BLOCKING]
    if exp.verdict == "delivered":
        if blocking:
            problems.append(f"expected delivered, but {seen.describe()}")
        elif not through:
            problems.append("expected delivered, but the traffic did not get through "
                            "(and no drop was attributed)")
        return seen, problems

    candidates = [e for e in blocking if e["verdict"] == exp.verdict]
    if not candidates:
        problems.append(f"expected {exp.verdict}, seen {seen.describe()}")
        return seen, problems

    def fits(e: dict) -> list[str]:
        bad = []
        rule = where_of(e)
        by = exp.by
        if by is not None:
            if by.host is not None and match_host(e.get("netns"), host_ids) != by.host:
                bad.append(f"host {match_host(e.get('netns'), host_ids) or e.get('netns')} "
                           f"!= {by.host}")
            for attr in ("table", "chain", "line"):
                want = getattr(by, attr)
                if want is not None and rule.get(attr) != want:
                    bad.append(f"{attr} {rule.get(attr)} != {want}")
        if exp.reason is not None and _reason_name(e.get("reason")) != exp.reason:
            bad.append(f"reason {_reason_name(e.get('reason'))} != {exp.reason}")
        return bad

    fitting = [e for e in candidates if not fits(e)]
    if not fitting:
        problems.append(f"expected {exp.describe()}, seen {seen.describe()} "
                        f"({'; '.join(fits(candidates[0]))})")
        return seen, problems
    if exp.count is not None:
        n = sum(int(e.get("count") or 1) for e in fitting)
        if n != exp.count:
            problems.append(f"expected {exp.count} packet(s) {exp.verdict}, seen {n}")
    return seen, problems
