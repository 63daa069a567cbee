"""Expectation matching (pure): explanations as why-dropped's JSON gives them."""

from ipdbg.scenario.check import match_expectation, split_explanations
from ipdbg.scenario.schema import parse_scenario

LAB = """\
name: t
hosts:
  client: {addr: 10.0.0.1/24}
  server: {addr: 10.0.0.2/24}
links: [[client, server]]
traffic: {from: client, to: server, proto: tcp, port: 80}
expect: %s
"""
HOSTS = {"client": {"client", 1001}, "server": {"server", 1002}}


def item(expect: str):
    return parse_scenario(LAB % expect, "t.yaml").traffic[0]


def drop(netns="server", verdict="dropped", table="filter", chain="INPUT", line=3,
         reason="NETFILTER_DROP", count=1, flags=2, src="10.0.0.1", dst="10.0.0.2"):
    rule = {"table": table, "chain": chain, "line": line, "text": "-A INPUT -j DROP",
            "backend": "nft", "handle": 7} if line else None
    path = [{"table": table, "chain": chain, "line": line, "verdict": "drop",
             "type": "rule" if line else "policy"}] if table else []
    return {"verdict": verdict, "netns": netns, "netns_inode": 1002, "count": count,
            "rule": rule, "path": path, "reason": reason, "tcp_flags": flags,
            "tuple": {"src": src, "dst": dst, "sport": 40000, "dport": 80, "proto": "tcp"}}


def check(expect, exps, through=False):
    it = item(expect)
    return match_expectation(it.expect, it, exps, through, HOSTS)


def test_exact_rule_match_passes():
    seen, problems = check("{verdict: dropped, by: {host: server, table: filter, chain: INPUT, "
                           "line: 3}, reason: NETFILTER_DROP}", [drop()])
    assert problems == []
    assert seen.describe() == "dropped server filter/INPUT:3 NETFILTER_DROP"


def test_wrong_line_fails_and_says_why():
    _, problems = check("{verdict: dropped, by: {chain: INPUT, line: 2}}", [drop()])
    assert len(problems) == 1 and "line 3 != 2" in problems[0]


def test_wrong_host_and_reason():
    _, problems = check("{verdict: dropped, by: {host: client}, reason: NO_SOCKET}", [drop()])
    assert "host server != client" in problems[0] and "reason NETFILTER_DROP != NO_SOCKET" in problems[0]


def test_policy_drop_is_located_by_its_path():
    seen, problems = check("{verdict: dropped, by: {table: filter, chain: INPUT}}",
                           [drop(line=None)])
    assert problems == [] and seen.chain == "INPUT" and seen.line is None


def test_rejected_is_not_dropped():
    _, problems = check("{verdict: rejected}", [drop()])
    assert problems and problems[0].startswith("expected rejected, seen dropped")


def test_count_is_exact():
    assert check("{verdict: dropped, count: 3}", [drop(count=3)])[1] == []
    assert "expected 3 packet(s) dropped, seen 2" in check("{verdict: dropped, count: 3}",
                                                           [drop(count=2)])[1][0]


def test_delivered_needs_traffic_through_and_no_drop():
    assert check("{verdict: delivered}", [], through=True)[1] == []
    assert "did not get through" in check("{verdict: delivered}", [], through=False)[1][0]
    seen, problems = check("{verdict: delivered}", [drop()], through=True)
    assert problems and "expected delivered, but dropped" in problems[0]


def test_nothing_seen_for_a_drop():
    seen, problems = check("{verdict: dropped}", [], through=False)
    assert seen.verdict == "lost" and problems == ["expected dropped, seen lost"]


def test_probe_artifacts_are_set_aside():
    it = item("{verdict: delivered}")
    reply = drop(netns="client", table=None, line=None, reason="NO_SOCKET",
                 src="10.0.0.2", dst="10.0.0.1")
    teardown = drop(reason="NOT_SPECIFIED", table=None, line=None, flags=0x10)  # ACK only
    real = drop()
    kept, ignored = split_explanations([reply, teardown, real], it)
    assert kept == [real]
    assert [i["ignored"].split()[1] for i in ignored] == ["reply", "TCP"]
