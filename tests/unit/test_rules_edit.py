"""edit.py: commands + a recorded iptables-save -> the restore batch.

The batch is checked two ways: its text for the simple cases, and its effect
through a small model of iptables-restore's semantics (first-match delete by spec,
positions, a chain cannot be deleted while a rule jumps to it). The model lets the
test change the chain between "read" and "apply" in every way and check that the
batch either removes exactly the rule that was read at line N or fails.
tests/root/test_rules_edit.py checks the same against the real iptables.
"""

import shlex
from pathlib import Path

import pytest

from ipdbg.errors import NotFoundError, UsageError
from ipdbg.rules.argv import parse_argv
from ipdbg.rules.edit import format_batch, parse_save_index

FIX = Path(__file__).parent.parent / "fixtures" / "rules_edit"
SAVE = (FIX / "filter_dupes.save").read_text()


def cmds(*lines):
    return tuple(parse_argv(shlex.split(line)).commands[0] for line in lines)


def batch_for(*lines, save=SAVE):
    return format_batch(cmds(*lines), parse_save_index(save), tag="T")


class RestoreFailed(Exception):
    pass


def simulate(batch_text, chains):
    """Apply a restore batch to {chain: [spec, ...]} like iptables-restore would."""
    chains = {k: list(v) for k, v in chains.items()}
    for raw in batch_text.splitlines():
        if raw.startswith(("*", "COMMIT")):
            continue
        line = raw.split("] ", 1)[1] if raw.startswith("[") else raw
        op, _, rest = line.partition(" ")
        chain, _, arg = rest.partition(" ")
        if op == "-N":
            if chain in chains:
                raise RestoreFailed(raw)
            chains[chain] = []
            continue
        if op == "-X":
            if any(r == f"-j {chain}" for rs in chains.values() for r in rs) or chains.get(chain):
                raise RestoreFailed(raw)  # EBUSY / ENOTEMPTY
            del chains[chain]
            continue
        rules = chains[chain]
        first, _, spec = arg.partition(" ")
        if op == "-A":
            rules.append(arg)
        elif op == "-I":
            n = int(first)
            if n > len(rules) + 1:
                raise RestoreFailed(raw)
            rules.insert(n - 1, spec)
        elif op == "-D" and first.isdigit() and not spec:
            n = int(first)
            if n > len(rules):
                raise RestoreFailed(raw)
            del rules[n - 1]
        elif op == "-D":
            if arg not in rules:
                raise RestoreFailed(raw)
            rules.remove(arg)  # the first match, like iptables
        else:
            raise AssertionError(f"not modelled: {raw}")
    return chains


def test_index_reads_the_recorded_save():
    t = parse_save_index(SAVE)["filter"]
    assert list(t.chains) == ["INPUT", "FORWARD", "OUTPUT", "LOGDROP"]
    assert t.chains["FORWARD"].policy == "DROP" and t.chains["LOGDROP"].policy is None
    assert t.chains["INPUT"].rules[3] == '-p tcp -m tcp --dport 80 -m comment --comment "web \\"front\\"" -j ACCEPT'
    assert t.chains["INPUT"].counters[0] == "[0:0]"
    assert len(t.chains["INPUT"].rules) == 6


def test_append_and_insert_are_plain_lines():
    b = batch_for("-A INPUT -p tcp --dport 443 -j ACCEPT", "-I OUTPUT 2 -d 10.0.0.9 -j DROP")
    assert b.format() == ("*filter\n-A INPUT -p tcp --dport 443 -j ACCEPT\n"
                          "-I OUTPUT 2 -d 10.0.0.9 -j DROP\nCOMMIT\n")


def test_delete_by_line_names_the_rule_and_checks_its_place():
    b = batch_for("-D INPUT 2")
    assert b.format() == (
        "*filter\n-N IPDBG-T-0\n-I INPUT 2 -j IPDBG-T-0\n-I INPUT 4 -j IPDBG-T-0\n"
        "-D INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        "-D INPUT 2\n-D INPUT 2\n-X IPDBG-T-0\nCOMMIT\n")


def _input():
    return {"INPUT": list(parse_save_index(SAVE)["filter"].chains["INPUT"].rules)}


@pytest.mark.parametrize("line", range(1, 7))
def test_delete_each_line_unchanged_chain(line):
    expected = _input()["INPUT"]
    del expected[line - 1]
    got = simulate(batch_for(f"-D INPUT {line}").format(), _input())
    assert got == {"INPUT": expected}


@pytest.mark.parametrize("line", range(1, 7))
def test_replace_each_line_unchanged_chain(line):
    expected = _input()["INPUT"]
    expected[line - 1] = "-j DROP"
    got = simulate(batch_for(f"-R INPUT {line} -j DROP").format(), _input())
    assert got == {"INPUT": expected}


def _changes(rules):
    """Every chain reachable by one change: insert, delete, move, replace a rule."""
    extra = "-s 10.0.0.99/32 -j ACCEPT"
    for i in range(len(rules) + 1):
        yield f"insert at {i + 1}", rules[:i] + [extra] + rules[i:]
    for i in range(len(rules)):
        yield f"delete {i + 1}", rules[:i] + rules[i + 1:]
        yield f"replace {i + 1}", rules[:i] + [extra] + rules[i + 1:]
        for j in range(len(rules)):
            if i != j:
                moved = rules[:i] + rules[i + 1:]
                moved.insert(j, rules[i])
                yield f"move {i + 1} to {j + 1}", moved
    # a duplicate of the rule at 3 and 5 appears above them
    yield "duplicate above", [rules[2]] + rules


@pytest.mark.parametrize("line", range(1, 7))
def test_changed_chain_fails_or_removes_the_rule_read(line):
    """Whatever changed in between: the batch fails, or line `line` still holds
    the rule read (same text, same number of identical rules before it)."""
    read = _input()["INPUT"]
    batch = batch_for(f"-D INPUT {line}").format()
    spec = read[line - 1]
    k = read[: line - 1].count(spec)
    for what, now in _changes(read):
        try:
            got = simulate(batch, {"INPUT": now})["INPUT"]
        except RestoreFailed:
            continue
        # it applied: the rule at `line` now had the text read, with k copies before it
        assert now[line - 1] == spec and now[: line - 1].count(spec) == k, what
        assert got == now[: line - 1] + now[line:], what


def test_duplicates_before_the_line_are_checked_and_put_back_with_counters():
    save = SAVE.replace("[0:0] -A INPUT -s 10.0.0.1/32", "[7:420] -A INPUT -s 10.0.0.1/32", 1)
    b = batch_for("-D INPUT 5", save=save)
    text = b.format()
    assert text.count("-D INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT") == 2
    assert "[7:420] -I INPUT 3 -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT" in text


def test_batch_follows_positions_of_earlier_commands():
    b = batch_for("-I INPUT 1 -j ACCEPT", "-D INPUT 1", "-D INPUT 1")
    lines = b.format().splitlines()
    # the first -D removes the rule this batch inserted: by position, nothing to check
    assert lines[2] == "-D INPUT 1"
    # the second removes the rule read at line 1 (-i lo), checked
    assert "-D INPUT -i lo -j ACCEPT" in lines
    got = simulate(b.format(), _input())["INPUT"]
    assert got == _input()["INPUT"][1:]


def test_line_out_of_range_is_usage_error():
    with pytest.raises(UsageError, match="line 7 is out of range: filter/INPUT has 6 rules"):
        batch_for("-D INPUT 7")
    with pytest.raises(UsageError, match="out of range"):
        batch_for("-I INPUT 8 -j ACCEPT")
    batch_for("-I INPUT 7 -j ACCEPT")  # one past the end is an append


def test_unknown_chain_is_not_found():
    with pytest.raises(NotFoundError, match="chain 'NOPE' does not exist in table filter"):
        batch_for("-A NOPE -j ACCEPT")


def test_chain_commands():
    with pytest.raises(UsageError, match="already exists"):
        batch_for("-N LOGDROP")
    with pytest.raises(UsageError, match="built-in chain"):
        batch_for("-X INPUT")
    with pytest.raises(UsageError, match="user-defined chain"):
        batch_for("-P LOGDROP DROP")
    b = batch_for("-N NEW", "-A NEW -j RETURN", "-P INPUT DROP", "-F LOGDROP", "-Z", "-E NEW NEWER")
    assert b.format() == ("*filter\n-N NEW\n-A NEW -j RETURN\n-P INPUT DROP\n-F LOGDROP\n-Z\n"
                          "-E NEW NEWER\n-P INPUT DROP\nCOMMIT\n")


def test_tables_missing_from_the_save_have_their_builtin_chains():
    b = batch_for("-t nat -A POSTROUTING -o eth0 -j MASQUERADE")
    assert b.format() == "*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"


def test_restore_line_numbers_map_to_commands():
    b = batch_for("-A INPUT -j ACCEPT", "-t nat -A OUTPUT -j ACCEPT", "-D INPUT 1")
    # *filter(1) -A(2) then the check lines of -D ... COMMIT, *nat, -A OUTPUT
    assert b.line_at(1) is None
    assert b.line_at(2).cmd == 0 and b.line_at(2).role == "user"
    assert b.line_at(3).cmd == 2 and b.line_at(3).role == "check"
    n_filter = 2 + sum(1 for bl in b.lines if bl.table == "filter")
    assert b.line_at(n_filter) is None  # COMMIT
    assert b.line_at(n_filter + 2).cmd == 1
