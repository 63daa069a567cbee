"""Per-packet paths and final verdicts from recorded traces (tests/fixtures/nftrace)."""

import json
import os
import re
from dataclasses import dataclass

from ipdbg.events import TraceEvent
from ipdbg.nftrace.decode import decode_nflog, decode_trace
from ipdbg.nftrace.path import build_paths, match_rule_verdict

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "nftrace")


@dataclass(frozen=True)
class Ref:  # the fields of ipdbg.rules.snapshot.RuleRef that path.py reads
    line: int
    text: str


def events(name):
    out = []
    with open(os.path.join(FIX, f"{name}.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            raw = bytes.fromhex(r["hex"])
            ev = decode_trace(raw) if r["kind"] == "trace" else decode_nflog(raw)
            if ev is not None and not ev.table.startswith("ipdbg_"):
                out.append(ev)
    return out


def nft_resolver(name):
    """handle -> (position in chain, text) from the recorded `nft -a list ruleset`."""
    refs, chain, pos = {}, None, 0
    with open(os.path.join(FIX, f"{name}.ruleset")) as f:
        for line in f:
            m = re.match(r"\s*chain (\S+) \{", line)
            if m:
                chain, pos = m.group(1), 0
                continue
            m = re.match(r"\s*(.*\S) # handle (\d+)$", line)
            if m and chain and not line.strip().startswith(("table", "chain")):
                pos += 1
                refs[(chain, int(m.group(2)))] = Ref(pos, m.group(1))
    return lambda ev: refs.get((ev.chain, ev.handle))


def by_dport(paths, dport, src=None):
    return [p for p in paths.values() if p.key and p.key.dport == dport and (src is None or p.key.src == src)]


def test_iptables_nft_reject_drop_jump_return():
    paths = build_paths(events("iptnft_v4"), nft_resolver("iptnft_v4"))
    (rej,) = by_dport(paths, 81)
    assert rej.verdict == "reject"
    assert (rej.decided_by.chain, rej.decided_by.handle, rej.decided_by.rule.line) == ("CHK", 9, 1)
    assert rej.format() == "filter/OUTPUT rule 1 JUMP CHK -> filter/CHK rule 1 REJECT"
    (drop,) = by_dport(paths, 82)
    assert drop.verdict == "drop" and drop.decided_by.rule.line == 2
    # ping out: OUTPUT rule 2 jumps to CHK, rule 3 returns, OUTPUT policy accepts
    (ping,) = [p for p in paths.values() if p.key and p.key.proto == 1 and p.key.src == "10.77.0.1"]
    assert ping.verdict == "accept"
    assert ping.format() == "filter/OUTPUT rule 2 JUMP CHK -> filter/CHK rule 3 RETURN -> filter/OUTPUT policy ACCEPT"
    assert ping.decided_by.type == "policy"


def test_implicit_return_from_a_user_chain():
    paths = build_paths(events("iptnft_v4"), nft_resolver("iptnft_v4"))
    # the RST that REJECT sends walks OUTPUT -> CHK (no rule matches) -> back to OUTPUT
    rst = [p for p in paths.values() if p.key and p.key.proto == 6 and p.key.src == "10.77.0.2"
           and any(s.chain == "OUTPUT" for s in p.steps)]
    assert rst
    assert rst[0].format() == "filter/OUTPUT rule 1 JUMP CHK -> filter/CHK return -> filter/OUTPUT policy ACCEPT"


def test_native_nft_verdict_map_and_drop():
    paths = build_paths(events("nft_inet"), nft_resolver("nft_inet"))
    (v4,) = [p for p in paths.values() if p.key and p.key.src == "10.78.0.2" and p.key.proto == 1]
    assert v4.verdict == "accept"
    assert v4.format() == "lab/in rule 2 JUMP icmpchk -> lab/icmpchk rule 3 JUMP v4 -> lab/v4 rule 1 ACCEPT"
    (d,) = by_dport(paths, 83)
    assert d.verdict == "drop" and d.decided_by.handle == 13 and d.decided_by.rule.line == 1


def test_legacy_verdict_comes_from_the_rule_text():
    evs = events("legacy")
    rules = {("ip", "OUTPUT", 2): Ref(2, "-A OUTPUT -p tcp -m tcp --dport 84 -j DROP"),
             ("ip6", "OUTPUT", 1): Ref(1, "-A OUTPUT -p tcp -m tcp --dport 85 -j REJECT --reject-with icmp6-port-unreachable")}
    paths = build_paths(evs, lambda ev: rules.get((ev.family, ev.chain, ev.rulenum)))
    (p4,) = by_dport(paths, 84)
    (p6,) = by_dport(paths, 85)
    assert p4.verdict == "drop" and p4.decided_by.rulenum == 2
    assert p6.verdict == "reject" and p6.decided_by.rulenum == 1
    # without the rules, the verdict stays unknown rather than guessed
    assert all(p.verdict == "" for p in build_paths(evs).values())


def _ev(**kw):
    base = dict(source="nftrace", netns=1, trace_id=7, family="ip", table="filter", chain="INPUT", type="rule")
    base.update(kw)
    return TraceEvent(**base)


def test_policy_drop_and_queue():
    p = build_paths([_ev(verdict="continue"), _ev(type="policy", policy="drop")])[(1, 7)]
    assert p.verdict == "drop" and p.decided_by.type == "policy"
    q = build_paths([_ev(verdict="queue", handle=4)])[(1, 7)]
    assert q.verdict == "queue" and q.decided_by.handle == 4


def test_accept_in_one_base_chain_then_drop_in_the_next():
    evs = [_ev(table="raw", chain="PREROUTING", verdict="accept", handle=2),
           _ev(chain="INPUT", verdict="drop", handle=9)]
    p = build_paths(evs)[(1, 7)]
    assert p.verdict == "drop" and p.decided_by.table == "filter"


def test_match_rule_verdict_goto_and_jump_for_legacy():
    ev = _ev(source="legacy", rulenum=3, verdict="")
    assert match_rule_verdict(ev, Ref(3, "-A INPUT -s 10.0.0.0/8 -j CUSTOM")) == ("jump", "CUSTOM")
    assert match_rule_verdict(ev, Ref(3, "-A INPUT -p tcp -j ACCEPT")) == ("accept", "")
    assert match_rule_verdict(ev, None) == ("", "")
    assert match_rule_verdict(ev, Ref(3, "-A INPUT -p udp -g OTHER")) == ("goto", "OTHER")


def test_a_reused_trace_id_is_split_into_packets():
    from ipdbg.events import PacketKey
    from ipdbg.nftrace.path import build_path_list

    k1 = PacketKey(4, 17, "10.0.0.1", "10.0.0.2", 5000, 53)
    k2 = PacketKey(4, 17, "10.0.0.1", "10.0.0.2", 5000, 53)
    evs = [_ev(chain="OUTPUT", verdict="accept", handle=3, key=k1, ts_ns=10),
           _ev(chain="POSTROUTING", table="nat", type="policy", policy="accept", key=k1, ts_ns=11),
           # same id, next packet of the flow (the skb memory was recycled)
           _ev(chain="OUTPUT", verdict="drop", handle=4, key=k2, ts_ns=20),
           # and again, after the drop
           _ev(chain="OUTPUT", verdict="accept", handle=3, key=k2, ts_ns=30)]
    paths = build_path_list(evs)
    assert [p.verdict for p in paths] == ["accept", "drop", "accept"]
    assert [p.events for p in paths] == [2, 1, 1]
    assert build_paths(evs)[(1, 7)].verdict == "accept"  # the last packet under that id


def test_long_gap_splits_too():
    from ipdbg.nftrace.path import build_path_list

    evs = [_ev(chain="INPUT", verdict="accept", handle=3, ts_ns=1),
           _ev(chain="INPUT", verdict="drop", handle=4, ts_ns=5_000_000_000)]
    assert [p.verdict for p in build_path_list(evs)] == ["accept", "drop"]
