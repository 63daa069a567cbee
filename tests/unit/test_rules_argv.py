"""argv.py: iptables syntax -> RulesCommand, and the bad inputs it rejects."""

import pytest

from ipdbg.errors import UsageError
from ipdbg.rules.argv import (format_command, format_rule_tokens, parse_argv,
                              parse_batch)


def one(*argv):
    inv = parse_argv(list(argv))
    assert len(inv.commands) == 1
    return inv, inv.commands[0]


def test_list_with_iptables_flags():
    inv, c = one("-t", "nat", "-L", "POSTROUTING", "--line-numbers", "-n", "-v", "-x")
    assert (c.action, c.table, c.chain) == ("list", "nat", "POSTROUTING")
    assert c.numeric and c.verbose and c.exact and c.line_numbers
    assert inv.output == "text" and inv.backend == "auto" and c.family == 4


def test_list_without_chain_and_flags_grouped_after():
    _, c = one("-L", "-n")
    assert c.chain is None and c.numeric


def test_insert_with_and_without_line():
    _, c = one("-I", "INPUT", "3", "-p", "tcp", "--dport", "20", "-j", "ACCEPT")
    assert (c.action, c.chain, c.line, c.rule) == ("insert", "INPUT", 3,
                                                   ("-p", "tcp", "--dport", "20", "-j", "ACCEPT"))
    _, c = one("-I", "INPUT", "-j", "ACCEPT")
    assert c.line is None


def test_replace_delete():
    _, c = one("-R", "INPUT", "3", "-j", "DROP")
    assert (c.action, c.line, c.rule) == ("replace", 3, ("-j", "DROP"))
    _, c = one("-D", "OUTPUT", "1")
    assert (c.action, c.line, c.rule) == ("delete", 1, ())
    _, c = one("-D", "OUTPUT", "-d", "198.51.100.80/32", "-j", "DROP")
    assert c.line is None and c.rule == ("-d", "198.51.100.80/32", "-j", "DROP")


def test_o_is_output_before_the_command_and_interface_inside_a_rule():
    inv, c = one("-o", "json", "-A", "FORWARD", "-o", "eth0", "-j", "ACCEPT")
    assert inv.output == "json" and c.rule == ("-o", "eth0", "-j", "ACCEPT")
    inv, c = one("-S", "INPUT", "-o", "json")
    assert inv.output == "json"
    inv, c = one("-A", "FORWARD", "-o", "json", "-j", "ACCEPT", "--output", "json")
    assert inv.output == "json" and c.rule == ("-o", "json", "-j", "ACCEPT")


def test_our_options():
    inv, c = one("--backend", "legacy", "--netns", "client", "--dry-run", "-6", "-D", "INPUT", "2")
    assert (inv.backend, inv.netns, inv.dry_run, c.family) == ("legacy", "client", True, 6)
    inv, c = one("--backend=nft", "-t", "raw", "-F")
    assert inv.backend == "nft" and c.action == "flush" and c.chain is None


def test_flags_inside_rule_values_stay_in_the_rule():
    _, c = one("-A", "INPUT", "-m", "comment", "--comment", "-n", "-j", "ACCEPT", "-v")
    assert c.rule == ("-m", "comment", "--comment", "-n", "-j", "ACCEPT")
    assert c.verbose and not c.numeric
    _, c = one("-A", "INPUT", "-p", "tcp", "--syn", "-n", "-j", "ACCEPT")
    assert c.numeric and c.rule == ("-p", "tcp", "--syn", "-j", "ACCEPT")


def test_negation_and_pasted_iptables_prefix():
    _, c = one("iptables", "-A", "INPUT", "!", "-s", "10.0.0.0/8", "-j", "DROP")
    assert c.rule == ("!", "-s", "10.0.0.0/8", "-j", "DROP")
    _, c = one("ip6tables", "-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP")
    assert c.family == 6


def test_policy_and_chains():
    _, c = one("-P", "FORWARD", "DROP")
    assert (c.action, c.chain, c.target) == ("policy", "FORWARD", "DROP")
    _, c = one("-E", "OLD", "NEW")
    assert (c.action, c.target) == ("rename_chain", "NEW")
    _, c = one("-Z", "INPUT", "2")
    assert (c.action, c.line) == ("zero", 2)


@pytest.mark.parametrize("argv, msg", [
    ([], "no command given"),
    (["-t", "bogus", "-L"], "unknown table 'bogus'"),
    (["-D", "INPUT", "0"], "line numbers start at 1"),
    (["-D", "INPUT", "x1"], None),
    (["-R", "INPUT", "-j", "DROP"], "needs a line number"),
    (["-R", "INPUT", "2"], "needs a rule spec"),
    (["-A", "INPUT"], "needs a rule spec"),
    (["-D", "INPUT"], "needs a line number or a rule spec"),
    (["-L", "-D", "INPUT", "1"], "two commands"),
    (["-A", "INPUT", "-s", "10.0.0.300", "-j", "DROP"], "malformed address '10.0.0.300'"),
    (["-A", "INPUT", "-d", "example.com", "-j", "DROP"], "malformed address"),
    (["-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP"], "IPv6 address in an IPv4 rule"),
    (["-A", "INPUT", "-p", "tcp", "--dport", "70000", "-j", "DROP"], "invalid port '70000'"),
    (["-A", "INPUT", "-p", "tcp", "--dport", "8$0", "-j", "DROP"], "invalid port"),
    (["-A", "INPUT", "-j"], "needs a value"),
    (["-P", "INPUT", "REJECT"], "invalid policy"),
    (["-N", "A" * 29], "longer than 28"),
    (["-A", "INPUT", "-m", "comment", "--comment", "a\nCOMMIT", "-j", "ACCEPT"], "control character"),
    (["-L", "--backend", "iptables"], "unknown backend"),
    (["-L", "-o", "yaml"], "unknown output format"),
    (["-L", "--bogus"], "unknown option '--bogus'"),
    (["--batch", "f", "-L"], "--batch takes its commands"),
    (["-A", "INPUT", "-j", "ACCEPT", "!"], "'!' at the end"),
])
def test_bad_argv(argv, msg):
    with pytest.raises(UsageError) as exc:
        parse_argv(argv)
    if msg:
        assert msg in exc.value.message
    assert "\n" not in exc.value.message


def test_batch_lines():
    inv = parse_argv(["--batch", "-", "-t", "nat"])
    cmds = parse_batch("# comment\n\n-A POSTROUTING -o eth0 -j MASQUERADE\n"
                       "iptables -t filter -D INPUT 3\n"
                       "-A INPUT -m comment --comment 'two words' -j ACCEPT\n", inv)
    assert [c.action for c in cmds] == ["append", "delete", "append"]
    assert [c.table for c in cmds] == ["nat", "filter", "nat"]
    assert cmds[2].rule == ("-m", "comment", "--comment", "two words", "-j", "ACCEPT")


@pytest.mark.parametrize("text, msg", [
    ("", "the batch is empty"),
    ("-A INPUT -j ACCEPT\n-L\n", "batch line 2: list in a batch"),
    ("-A INPUT -j ACCEPT\n-6 -A INPUT -j ACCEPT\n", "batch line 2: IPv6 command"),
    ("-A INPUT --comment 'open\n", "batch line 1"),
    ("--netns x -A INPUT -j ACCEPT\n", "not allowed inside a batch"),
])
def test_bad_batch(text, msg):
    with pytest.raises(UsageError, match=msg):
        parse_batch(text, parse_argv(["--batch", "-"]))


def test_tokens_round_trip_through_restore_quoting():
    assert format_rule_tokens(["-m", "comment", "--comment", 'a "b" c', "-j", "ACCEPT"]) == \
        '-m comment --comment "a \\"b\\" c" -j ACCEPT'
    assert format_rule_tokens(["--log-prefix", "drop: "]) == '--log-prefix "drop: "'


def test_format_command():
    _, c = one("-6", "-t", "nat", "-D", "POSTROUTING", "2")
    assert format_command(c) == "-6 -t nat -D POSTROUTING 2"


def test_bundled_flags_like_getopt():
    _, c = one("-nvL", "INPUT", "--line-numbers")
    assert (c.action, c.chain, c.numeric, c.verbose, c.line_numbers) == ("list", "INPUT", True, True, True)
    _, c = one("-t", "nat", "-vnxL")
    assert c.action == "list" and c.exact and c.table == "nat"
    _, c = one("-Ln")
    assert c.action == "list" and c.numeric and c.chain is None
    inv, c = one("-6nS")
    assert c.family == 6 and c.action == "list_rules" and c.numeric
    # inside a rule nothing is split
    _, c = one("-A", "INPUT", "-m", "comment", "--comment", "-nvL", "-j", "ACCEPT")
    assert c.rule == ("-m", "comment", "--comment", "-nvL", "-j", "ACCEPT")
    with pytest.raises(UsageError):
        one("-nvLS")
