"""The correlator replayed on events recorded from real runs (tests/fixtures/correlate/).

Each CASE.jsonl holds the DropEvents, TraceEvents and rule look-ups of one
`why-dropped --record` run in a namespace lab (record_fixtures.py);
CASE.expected.json the explanations why-dropped printed live. Replaying the
events must give the same answers.
"""

import json
import os

import pytest

from ipdbg.correlate import correlate as _correlate
from ipdbg.record import parse_event_record, rule_ident
from ipdbg.render import format_explanation
from ipdbg.rules.snapshot import RuleRef

HERE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "correlate")
CASES = sorted(f[:-len(".jsonl")] for f in os.listdir(HERE) if f.endswith(".jsonl"))
FIELDS = ("verdict", "tuple", "netns_inode", "reason", "hook", "nat", "reply")


class Run(list):
    """The recorded events, and those the relaxed (post-NAT) monitor saw."""
    extra: list


def load(case):
    events, rules = Run(), {}
    events.extra = []
    with open(os.path.join(HERE, f"{case}.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            if d["event"] == "rule":
                rules[rule_ident(d)] = RuleRef(**d["rule"]) if d["rule"] else None
            else:
                ev = parse_event_record(d)
                events.append(ev)
                if d.get("extra"):
                    events.extra.append(ev)
    with open(os.path.join(HERE, f"{case}.expected.json")) as f:
        expected = json.load(f)
    return events, (lambda ev: rules.get(rule_ident(ev))), expected


def correlate(events, resolve):
    return _correlate(events, resolve, extra=getattr(events, "extra", ()))


def _rule(e):
    r = e["rule"]
    return r and (r["table"], r["chain"], r["line"], r["backend"], r["text"])


def _same(got, want):
    for k in FIELDS:
        assert got.get(k) == want.get(k), (k, got, want)
    assert _rule(got) == _rule(want)
    assert [(p["table"], p["chain"], p["line"], p["verdict"]) for p in got["path"]] == \
        [(p["table"], p["chain"], p["line"], p["verdict"]) for p in want["path"]]


@pytest.mark.parametrize("case", [c for c in CASES if c != "busy"])
def test_replay_gives_the_live_answer(case):
    events, resolve, expected = load(case)
    got = [e.to_json() for e in correlate(events, resolve)]
    assert len(got) == len(expected)
    for g, w in zip(got, expected):
        _same(g, w)
        assert g["count"] == w["count"]


def test_replay_busy_never_misattributes():
    events, resolve, expected = load("busy")
    exps = correlate(events, resolve)
    got = [e.to_json() for e in exps]
    line_of = {81: 1, 82: 2, 83: 3}
    for g in got:
        assert g["rule"] is not None, g  # every recorded drop has its trace in the file
        assert g["rule"]["line"] == line_of[g["tuple"]["dport"]]
        assert g["verdict"] == ("rejected" if g["tuple"]["dport"] == 83 else "dropped")
    by_flow = {(g["tuple"]["sport"], g["tuple"]["dport"]): g for g in got}
    for w in expected:  # what was printed live (--count cut) is in the replay, unchanged
        _same(by_flow[(w["tuple"]["sport"], w["tuple"]["dport"])], w)


def test_rendered_answers():
    events, resolve, _ = load("user_chain_input")
    text = format_explanation(correlate(events, resolve)[0])
    assert "  rule     filter/BLOCK line 2: -A BLOCK -p tcp -m tcp --dport 80 -j DROP" in text
    assert "  path     filter/INPUT rule 2 JUMP BLOCK -> filter/BLOCK rule 2 DROP" in text
    events, resolve, _ = load("reject_icmp")
    text = format_explanation(correlate(events, resolve)[0])
    assert text.startswith("REJECTED 10.60.0.1:") and "  reply    icmp port-unreachable" in text
    events, resolve, _ = load("closed_port")
    text = format_explanation(correlate(events, resolve)[0])
    assert "NO_SOCKET at tcp_v4_rcv" in text and "nothing listens on 198.51.100.80:8080" in text
    events, resolve, _ = load("policy_drop")
    text = format_explanation(correlate(events, resolve)[0])
    assert "  rule     filter/INPUT policy DROP" in text
    assert text.endswith("  fix      ipdbg rules -t filter -A INPUT -p tcp -s 10.60.0.1 "
                         "-d 198.51.100.80 --dport 80 -j ACCEPT")
