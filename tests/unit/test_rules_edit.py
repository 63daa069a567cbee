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
    """Apply a restore batch to {chain: [spec, ...]} like iptables-nft-restore would.

    Like iptables-nft-restore 1.8.9, -I N fails when the rule at line N was added by
    the same batch (it is placed by that rule's kernel handle, which it lacks yet).
    """
    chains = {k: [(r, False) for r in v] for k, v in chains.items()}
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
        if op == "-F":
            chains[chain] = []
            continue
        if op == "-X":
            if any(r == f"-j {chain}" for rs in chains.values() for r, _ in rs) or chains.get(chain):
                raise RestoreFailed(raw)  # EBUSY / ENOTEMPTY
            del chains[chain]
            continue
        rules = chains[chain]
        first, _, spec = arg.partition(" ")
        if op == "-A":
            rules.append((arg, True))
        elif op == "-I":
            n = int(first)
            if n > len(rules) + 1:
                raise RestoreFailed(raw)
            if n <= len(rules) and rules[n - 1][1]:
                raise RestoreFailed(raw + "  (RULE_INSERT: no handle)")
            rules.insert(n - 1, (spec, True))
        elif op == "-D" and first.isdigit() and not spec:
            n = int(first)
            if n > len(rules):
                raise RestoreFailed(raw)
            del rules[n - 1]
        elif op == "-D":
            specs = [r for r, _ in rules]
            if arg not in specs:
                raise RestoreFailed(raw)
            del rules[specs.index(arg)]  # the first match, like iptables
        else:
            raise AssertionError(f"not modelled: {raw}")
    return {k: [r for r, _ in v] for k, v in chains.items()}


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
                          "-A OUTPUT -d 10.0.0.9 -j DROP\nCOMMIT\n")  # line 2 of 1 rule: the end


def test_new_rules_are_placed_by_rules_that_exist():
    """iptables-nft-restore places -I N by the rule now at line N, which must not be
    one added by the same batch: new rules go in lowest line first."""
    b = batch_for("-A INPUT -s 10.0.0.50 -j ACCEPT", "-I INPUT 7 -s 10.0.0.51 -j ACCEPT",
                  "-I INPUT 2 -s 10.0.0.52 -j ACCEPT", "-I INPUT 1 -s 10.0.0.53 -j ACCEPT")
    assert b.format().splitlines()[1:-1] == [
        "-I INPUT 1 -s 10.0.0.53 -j ACCEPT", "-I INPUT 3 -s 10.0.0.52 -j ACCEPT",
        "-A INPUT -s 10.0.0.51 -j ACCEPT", "-A INPUT -s 10.0.0.50 -j ACCEPT"]
    got = simulate(b.format(), _input())["INPUT"]
    read = _input()["INPUT"]
    assert got == (["-s 10.0.0.53 -j ACCEPT", read[0], "-s 10.0.0.52 -j ACCEPT"] + read[1:] +
                   ["-s 10.0.0.51 -j ACCEPT", "-s 10.0.0.50 -j ACCEPT"])


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
    text = b.format()
    # the first -D removes the rule this batch inserted: the two cancel out
    assert "-j ACCEPT\n" not in text.replace("-i lo -j ACCEPT\n", "")
    # the second removes the rule read at line 1 (-i lo), checked
    assert "-D INPUT -i lo -j ACCEPT" in text
    assert simulate(text, _input())["INPUT"] == _input()["INPUT"][1:]


def _sequential(cmds_, rules):
    """What running the commands one by one (iptables) does to the chain."""
    rules = list(rules)
    for c in cmds_:
        spec = " ".join(c.rule)
        n = c.line
        if c.action == "append":
            rules.append(spec)
        elif c.action == "insert":
            rules.insert((n or 1) - 1, spec)
        elif c.action == "replace":
            rules[n - 1] = spec
        elif c.action == "delete":
            del rules[n - 1]
    return rules


def test_many_mixed_edits_equal_running_them_one_by_one():
    import random

    rnd = random.Random(3)
    for trial in range(40):
        size, lines = 6, []
        for i in range(rnd.randint(1, 30)):
            kind = rnd.choice("AIRD") if size else rnd.choice("AI")
            if kind == "A":
                lines.append(f"-A INPUT -s 10.1.{trial}.{i} -j ACCEPT")
                size += 1
            elif kind == "I":
                lines.append(f"-I INPUT {rnd.randint(1, size + 1)} -s 10.2.{trial}.{i} -j ACCEPT")
                size += 1
            elif kind == "R":
                lines.append(f"-R INPUT {rnd.randint(1, size)} -s 10.3.{trial}.{i} -j DROP")
            else:
                lines.append(f"-D INPUT {rnd.randint(1, size)}")
                size -= 1
        c = cmds(*lines)
        b = format_batch(c, parse_save_index(SAVE), tag="T")
        got = simulate(b.format(), _input())["INPUT"]
        assert got == _sequential(c, _input()["INPUT"]), lines


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


def test_chain_commands_come_after_the_rule_edits_before_them():
    b = batch_for("-D INPUT 6", "-F LOGDROP", "-X LOGDROP")
    got = simulate(b.format(), {"INPUT": _input()["INPUT"], "LOGDROP": ["-j DROP"]})
    assert got == {"INPUT": _input()["INPUT"][:5]}


def test_tables_missing_from_the_save_have_their_builtin_chains():
    b = batch_for("-t nat -A POSTROUTING -o eth0 -j MASQUERADE")
    assert b.format() == "*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"


def test_restore_line_numbers_map_to_commands():
    b = batch_for("-A INPUT -j ACCEPT", "-t nat -A OUTPUT -j ACCEPT", "-D INPUT 1")
    # *filter(1), the check lines of -D INPUT 1 (2-8), -A INPUT (9), COMMIT, *nat, -A OUTPUT
    assert b.line_at(1) is None
    assert b.line_at(2).cmd == 2 and b.line_at(2).role == "check"
    assert b.line_at(9).cmd == 0 and b.line_at(9).role == "user"
    assert b.line_at(10) is None and b.line_at(11) is None  # COMMIT, *nat
    assert b.line_at(12).cmd == 1
