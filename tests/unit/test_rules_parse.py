"""ipdbg.rules.parse: iptables-save text -> Ruleset, from recorded real outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipdbg.errors import UsageError
from ipdbg.rules.model import Match, Option
from ipdbg.rules.parse import parse_rule_spec, parse_save, split_spec

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "recorded"
SAVES = sorted(RECORDED.glob("*.save"))


def test_recorded_fixtures_exist():
    assert len(SAVES) >= 60  # 30+ rulesets x 2 backends


@pytest.mark.parametrize("path", SAVES, ids=lambda p: p.name)
def test_save_round_trip(path):
    """Every table, chain, policy, counter and rule line comes back out verbatim."""
    text = path.read_text()
    rs = parse_save(text, 6 if "ip6tables" in text.splitlines()[0] else 4)
    lines = []
    for table in rs.tables.values():
        lines.append(f"*{table.name}")
        for c in table.chains.values():
            lines.append(f":{c.name} {c.policy or '-'} [{c.packets}:{c.bytes}]")
        for c in table.chains.values():
            for r in c.rules:
                lines.append(f"[{r.packets}:{r.bytes}] -A {c.name}" + (f" {r.spec}" if r.spec else ""))
        lines.append("COMMIT")
    expected = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == expected


def test_parse_counters_and_chains():
    rs = parse_save((RECORDED / "23-counters.nft.save").read_text(), 4)
    f = rs.tables["filter"]
    assert list(f.chains) == ["INPUT", "FORWARD", "OUTPUT", "C"]
    assert f.chains["OUTPUT"].policy == "ACCEPT" and f.chains["OUTPUT"].builtin
    assert f.chains["OUTPUT"].packets == 18446744073709551615
    assert f.chains["C"].policy is None and not f.chains["C"].builtin
    r = f.chains["INPUT"].rules[-1]
    assert (r.packets, r.bytes) == (9999499999999, 12345678901234567)
    assert r.spec == "-s 10.0.0.7/32 -j ACCEPT"
    assert r.parts.source == "10.0.0.7/32" and r.parts.target == "ACCEPT"


def test_parse_parts_of_a_docker_rule():
    rs = parse_save((RECORDED / "25-docker.legacy.save").read_text(), 4)
    r = rs.tables["filter"].chains["DOCKER"].rules[0]
    p = r.parts
    assert r.spec == "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT"
    assert (p.destination, p.destination_negated) == ("172.17.0.2/32", False)
    assert (p.in_interface, p.in_negated) == ("docker0", True)
    assert (p.out_interface, p.out_negated) == ("docker0", False)
    assert p.protocol == "tcp" and p.fragment is None
    assert p.matches == [Match("tcp", [Option("--dport", ["80"])])]
    assert (p.target, p.target_kind, p.target_options) == ("ACCEPT", "jump", [])


def test_parse_quoted_comment_and_negated_options():
    rs = parse_save((RECORDED / "08-comments.nft.save").read_text(), 4)
    rules = rs.tables["filter"].chains["INPUT"].rules
    comments = [m.options[0].values[0] for r in rules for m in r.parts.matches if m.name == "comment"]
    assert "with spaces and 'quotes'" in comments
    assert 'double "quoted" text' in comments
    assert "back\\slash" in comments
    assert "-j DROP" in comments  # a quoted "-j" is a value, not the target
    quoted_j = [r for r in rules if '"-j DROP"' in r.spec]
    assert len(quoted_j) == 1 and quoted_j[0].parts.target == "ACCEPT"

    p = parse_rule_spec("-p tcp -m tcp ! --sport 1000:2000 ! --dport 3000:4000 -j DROP", 4)
    assert p.matches[0].options == [Option("--sport", ["1000:2000"], True),
                                    Option("--dport", ["3000:4000"], True)]


def test_parse_goto_fragment_and_target_options():
    p = parse_rule_spec("-p icmp ! -f -m icmp --icmp-type 8 -g LOGDROP", 4)
    assert p.fragment is False and p.target == "LOGDROP" and p.target_kind == "goto"
    p = parse_rule_spec('-j LOG --log-prefix "DROP: " --log-level 4', 4)
    assert p.target_options == [Option("--log-prefix", ["DROP: "]), Option("--log-level", ["4"])]
    p = parse_rule_spec("-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN", 4)
    assert p.matches[0].options == [Option("--tcp-flags", ["FIN,SYN,RST,ACK", "SYN"])]
    assert p.target is None and p.target_kind == "none"


def test_parse_argv_with_implicit_protocol_match():
    p = parse_rule_spec(["-p", "tcp", "--dport", "22", "-j", "ACCEPT"], 4)
    assert p.matches == [Match("tcp", [Option("--dport", ["22"])])]
    assert p.target == "ACCEPT"


def test_split_spec_unescapes_like_iptables_restore():
    toks, quoted = split_spec(r'-m comment --comment "a \"b\" \\ \'c\'" -j ACCEPT')
    assert toks == ["-m", "comment", "--comment", "a \"b\" \\ 'c'", "-j", "ACCEPT"]
    assert quoted == [False, False, False, True, False, False]


@pytest.mark.parametrize("bad", [
    "-m comment --comment \"open -j ACCEPT",
    "! ! -s 10.0.0.1 -j DROP",
    "-j ACCEPT -j DROP",
    "--dport 22 -j ACCEPT",
    "-s",
    "-j ACCEPT !",
])
def test_bad_rule_specs_raise_usage_error(bad):
    with pytest.raises(UsageError):
        parse_rule_spec(bad, 4)


def test_fragment_is_ipv4_only():
    with pytest.raises(UsageError):
        parse_rule_spec("-f -j DROP", 6)


@pytest.mark.parametrize("bad", [
    "-A INPUT -j ACCEPT\n",                            # rule outside a table
    "*filter\n:INPUT ACCEPT [0:0]\n-A OUTPUT -j DROP\nCOMMIT\n",  # undeclared chain
    "*filter\n:INPUT ACCEPT [x:0]\nCOMMIT\n",          # bad counters
    "*filter\n[1:2 -A INPUT -j DROP\nCOMMIT\n",
    "*filter\nbogus\nCOMMIT\n",
])
def test_bad_save_text_raises_usage_error(bad):
    with pytest.raises(UsageError):
        parse_save(bad, 4)


def test_parse_without_counters_and_empty_rule():
    rs = parse_save("*raw\n:PREROUTING ACCEPT\n:X - [0:0]\n-A X\n-A PREROUTING -j X\nCOMMIT\n", 4)
    x = rs.tables["raw"].chains["X"]
    assert x.rules[0].spec == "" and x.rules[0].parts.target is None
    assert rs.tables["raw"].chains["PREROUTING"].packets == 0


def test_incompatible_nft_tables_are_noted():
    """iptables-nft-save's own text when nft rules it cannot show share the table."""
    text = ("# Table `filter' contains incompatible base-chains, use 'nft' tool to list them.\n"
            "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Nov 24 16:15:09 2026\n"
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "[0:0] -A INPUT -j ACCEPT\nCOMMIT\n")
    rs = parse_save(text, 4)
    assert rs.incompatible == {
        "filter": "Table `filter' contains incompatible base-chains, use 'nft' tool to list them."}
    assert len(rs.tables["filter"].chains["INPUT"].rules) == 1

    from ipdbg.rules.listing import UnsupportedExtension, format_list, format_rules_S
    with pytest.raises(UnsupportedExtension) as exc:
        format_list(rs, "filter", numeric=True)
    assert exc.value.kind == "table" and "nft" in exc.value.message
    with pytest.raises(UnsupportedExtension):
        format_rules_S(rs, "filter")
