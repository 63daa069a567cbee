"""Compare what a scenario expected with what was seen (pure).

Input: the traffic item, the explanations why-dropped produced (their JSON form:
``verdict``, ``netns``, ``count``, ``rule`` {table, chain, line, ...}, ``reason``)
and whether the traffic got through. Output: a ``Seen`` summary and the list of
expectation mismatches (empty = pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .schema import Expectation, Traffic, _format_by

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
        where = _format_by(self.host, self.table, self.chain, self.line)
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


def _reason_name(reason) -> str | None:
    if reason is None:
        return None
    if isinstance(reason, dict):
        reason = reason.get("name") or reason.get("reason")
    text = str(reason)
    return text[len("SKB_DROP_REASON_"):] if text.startswith("SKB_DROP_REASON_") else text


def summarize_seen(explanations: list[dict], through: bool,
                   host_ids: dict[str, set]) -> Seen:
    """One line of what happened to a traffic item."""
    blocking = [e for e in explanations if e.get("verdict") in BLOCKING]
    if not blocking:
        return Seen("delivered" if through else "lost")
    # The explanation with the most packets speaks for the item; others are listed.
    blocking.sort(key=lambda e: -int(e.get("count") or 1))
    first = blocking[0]
    rule = first.get("rule") or {}
    seen = Seen(
        verdict=first["verdict"],
        count=sum(int(e.get("count") or 1) for e in blocking if e["verdict"] == first["verdict"]),
        host=match_host(first.get("netns"), host_ids),
        table=rule.get("table"), chain=rule.get("chain"), line=rule.get("line"),
        reason=_reason_name(first.get("reason")),
    )
    for e in blocking[1:]:
        r = e.get("rule") or {}
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
        rule = e.get("rule") or {}
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
