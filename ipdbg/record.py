"""Events as JSON records and back (pure), for recorded fixtures.

``investigate(..., record=PATH)`` writes one record per line; the unit tests of
the correlator replay them (tests/fixtures/correlate/).
"""

from __future__ import annotations

import dataclasses
import json

from .events import DropEvent, PacketKey, TraceEvent


def format_event_record(ev) -> dict:
    data = dataclasses.asdict(ev)
    data["event"] = "drop" if isinstance(ev, DropEvent) else "trace"
    return data


def format_rule_record(ev: TraceEvent, rule) -> dict:
    """What ``resolve(ev)`` returned for a trace step (to replay resolve offline)."""
    return {"event": "rule", "netns": ev.netns, "source": ev.source, "family": ev.family,
            "table": ev.table, "chain": ev.chain, "handle": ev.handle, "rulenum": ev.rulenum,
            "rule": None if rule is None else {
                f.name: getattr(rule, f.name) for f in dataclasses.fields(rule)}}


def parse_event_record(data: dict):
    data = dict(data)
    kind = data.pop("event")
    data.pop("extra", None)
    key = data.pop("key", None)
    key = PacketKey(**key) if key else None
    if kind == "drop":
        return DropEvent(key=key, **data)
    if kind == "trace":
        return TraceEvent(key=key, **data)
    raise ValueError(f"not an event record: {kind!r}")


def rule_ident(ev_or_rec) -> tuple:
    get = (ev_or_rec.get if isinstance(ev_or_rec, dict)
           else lambda k: getattr(ev_or_rec, k))
    return (get("netns"), get("source"), get("family"), get("table"), get("chain"),
            get("handle"), get("rulenum"))


def dump_records(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)
