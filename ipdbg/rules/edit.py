"""Commands + what was read -> one iptables-restore batch (pure).

Every edit becomes lines of one ``iptables-restore --noflush`` batch, so a change
is applied whole or not at all. Edits by line number (``-R CHAIN N``, ``-D CHAIN
N``) name the exact rule that was read at line N and make the batch itself fail
if, when iptables-restore applies it, line N holds anything else (docs/rules.md,
"Edit safety"). The trick, per rule to remove (old position p, text T):

    -N CHK                    a fresh, empty chain
    -I CHAIN p -j CHK         sentinel before the rule at p
    -I CHAIN p+2 -j CHK       sentinel after it
    -D CHAIN T                iptables deletes the FIRST rule matching T
    -D CHAIN p                 \\ both sentinels are deleted only if they are now
    -D CHAIN p                 / adjacent, i.e. the T deleted was the one at p
    -X CHK                    fails (EBUSY) while any rule still jumps to CHK

A chain cannot be deleted while a rule jumps to it (xt: "Too many links"; nft:
EBUSY), so the batch fails unless the first rule matching T sat exactly at p.
When k identical rules precede line N, the first k are checked and removed the
same way and put back at their old positions, with their counters, afterwards.

The state read is indexed here by splitting iptables-save's lines (no rule is
interpreted): edits only need each chain's rules as text, and this stays fast on
chains of tens of thousands of rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import NotFoundError, UsageError
from .argv import RulesCommand, format_rule_tokens

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}

_COUNTERS = re.compile(r"^\[(\d+):(\d+)\] ")


@dataclass
class ChainState:
    policy: str | None  # None for a user-defined chain
    # rule spec after "-A CHAIN " as iptables-save wrote it; None for a rule added
    # earlier in the same batch (its canonical text is not known before iptables runs)
    rules: list[str | None] = field(default_factory=list)
    counters: list[str | None] = field(default_factory=list)  # "[p:b]" per rule
    exact: bool = True  # False once an edit we cannot follow (-D by spec) touched it


@dataclass
class TableState:
    name: str
    chains: dict[str, ChainState] = field(default_factory=dict)


def parse_save_index(text: str, only_table: str | None = None) -> dict[str, TableState]:
    """iptables-save [-c] text -> {table: TableState}, rules kept as text."""
    tables: dict[str, TableState] = {}
    cur: TableState | None = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        c = line[0]
        if c == "*":
            name = line[1:].strip()
            cur = TableState(name) if only_table in (None, name) else None
            if cur is not None:
                tables[name] = cur
        elif cur is None:
            continue
        elif c == ":":
            parts = line[1:].split()
            name, pol = parts[0], (parts[1] if len(parts) > 1 else "-")
            cur.chains[name] = ChainState(None if pol == "-" else pol)
        elif c == "[" or c == "-":
            counters = None
            if c == "[":
                m = _COUNTERS.match(line)
                if not m:
                    continue
                counters = line[: m.end() - 1]
                line = line[m.end():]
            if not line.startswith("-A "):
                continue
            rest = line[3:]
            chain, _, spec = rest.partition(" ")
            st = cur.chains.get(chain)
            if st is None:
                st = cur.chains[chain] = ChainState(None)
            st.rules.append(spec)
            st.counters.append(counters)
    return tables


def empty_table(name: str) -> TableState:
    """A table iptables has not created yet: its built-in chains, empty."""
    return TableState(name, {c: ChainState("ACCEPT") for c in BUILTIN_CHAINS.get(name, ())})


@dataclass(frozen=True)
class BatchLine:
    table: str
    text: str
    cmd: int  # index of the command it belongs to
    role: str  # "user": the user's change; "check": a line of the line-number check


@dataclass
class Batch:
    lines: list[BatchLine]
    tables: list[str]
    commands: tuple[RulesCommand, ...]
    summary: list[str]  # one line per command: what it does, for --dry-run/-o json

    def format(self, tables: list[str] | None = None) -> str:
        """The exact text given to iptables-restore (of some tables only, if given)."""
        out = []
        for t in (self.tables if tables is None else tables):
            out.append(f"*{t}")
            out.extend(bl.text for bl in self.lines if bl.table == t)
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    def line_at(self, restore_line: int, tables: list[str] | None = None) -> BatchLine | None:
        """The batch line at iptables-restore's 1-based line number (None: a header)."""
        n = 0
        for t in (self.tables if tables is None else tables):
            n += 1  # *table
            for bl in self.lines:
                if bl.table != t:
                    continue
                n += 1
                if n == restore_line:
                    return bl
            n += 1  # COMMIT
        return None


def _where(cmd: RulesCommand, backend: str) -> str:
    return f"table {cmd.table} (IPv{cmd.family}, {backend})"


def needs_state(commands) -> bool:
    """Whether the batch needs the rules read: line-number -R/-D name the rule read;
    iptables-nft accepts -Z CHAIN N for any N, so its range is checked by us."""
    return any(c.action in ("replace", "delete", "zero") and c.line is not None for c in commands)


def format_batch(commands: tuple[RulesCommand, ...] | list[RulesCommand],
                 tables: dict[str, TableState] | None, *, backend: str = "nft",
                 tag: str = "0") -> Batch:
    """Validate the commands against the state read and build the restore batch.

    ``tables`` is changed in place to the state after the batch (as far as known).
    ``tables=None``: nothing was read (allowed when not ``needs_state``); the
    lines are built unchecked and iptables-restore is the judge.
    ``tag`` makes the check chains' names unique (the caller passes its pid).
    Raises UsageError / NotFoundError (nothing has been applied then).
    """
    if tables is None:
        if needs_state(commands):
            raise ValueError("line-number -R/-D need the rules read")
        return _format_unchecked(commands)
    lines: list[BatchLine] = []
    order: list[str] = []
    summary: list[str] = []
    nchk = 0

    for ci, cmd in enumerate(commands):
        t = cmd.table
        if t not in tables:
            tables[t] = empty_table(t)
        if t not in order:
            order.append(t)
        ts = tables[t]

        def emit(text: str, role: str = "user") -> None:
            lines.append(BatchLine(t, text, ci, role))

        def chain_of(name: str) -> ChainState:
            st = ts.chains.get(name)
            if st is None:
                raise NotFoundError(
                    f"chain {name!r} does not exist in {_where(cmd, backend)}",
                    f"list the chains with `ipdbg rules -t {t} -S`" +
                    ("" if cmd.family == 4 else " -6"))
            return st

        def line_in_range(st: ChainState, n: int, extra: int = 0) -> None:
            if n > len(st.rules) + extra:
                have = len(st.rules)
                raise UsageError(
                    f"line {n} is out of range: {t}/{cmd.chain} has {have} rule"
                    f"{'' if have == 1 else 's'}",
                    f"list them with `ipdbg rules -t {t} -L {cmd.chain} --line-numbers`")

        def checked_remove(name: str, st: ChainState, n: int) -> list[tuple[int, str, str | None]]:
            """Lines removing the rule at line n after checking it; returns the
            identical rules before it that were removed too (to put back)."""
            nonlocal nchk
            spec = st.rules[n - 1]
            if spec is None or not st.exact:
                # added earlier in this batch, or after an edit we cannot follow:
                # its position is fixed by the batch itself
                emit(f"-D {name} {n}")
                return []
            dupes = [i for i in range(n - 1) if st.rules[i] == spec]
            steps = dupes + [n - 1]
            removed = 0
            for p0 in steps:
                pos = p0 - removed + 1
                chk = f"IPDBG-{tag}-{nchk}"[:28]
                nchk += 1
                emit(f"-N {chk}", "check")
                emit(f"-I {name} {pos} -j {chk}", "check")
                emit(f"-I {name} {pos + 2} -j {chk}", "check")
                emit(f"-D {name} {spec}", "check")
                emit(f"-D {name} {pos}", "check")
                emit(f"-D {name} {pos}", "check")
                emit(f"-X {chk}", "check")
                removed += 1
            return [(i, st.rules[i], st.counters[i]) for i in dupes]

        def put_back(name: str, dupes) -> None:
            for i, spec, counters in dupes:
                prefix = f"{counters} " if counters else ""
                emit(f"{prefix}-I {name} {i + 1} {spec}", "check")

        a = cmd.action
        spec_text = format_rule_tokens(cmd.rule) if cmd.rule else ""
        if a == "append":
            st = chain_of(cmd.chain)
            emit(f"-A {cmd.chain} {spec_text}")
            st.rules.append(None)
            st.counters.append(None)
            summary.append(f"append to {t}/{cmd.chain} at line {len(st.rules)}: {spec_text}")
        elif a == "insert":
            st = chain_of(cmd.chain)
            n = cmd.line or 1
            line_in_range(st, n, extra=1)
            emit(f"-I {cmd.chain} {n} {spec_text}")
            st.rules.insert(n - 1, None)
            st.counters.insert(n - 1, None)
            summary.append(f"insert into {t}/{cmd.chain} at line {n}: {spec_text}")
        elif a == "replace":
            st = chain_of(cmd.chain)
            n = cmd.line
            line_in_range(st, n)
            old = st.rules[n - 1]
            dupes = checked_remove(cmd.chain, st, n)
            emit(f"-I {cmd.chain} {n - len(dupes)} {spec_text}")
            put_back(cmd.chain, dupes)
            st.rules[n - 1] = None
            st.counters[n - 1] = None
            summary.append(f"replace {t}/{cmd.chain} line {n} "
                           f"({'-A ' + cmd.chain + ' ' + old if old else 'a rule added in this batch'})"
                           f" with: {spec_text}")
        elif a == "delete":
            st = chain_of(cmd.chain)
            if cmd.line is not None:
                n = cmd.line
                line_in_range(st, n)
                old = st.rules[n - 1]
                dupes = checked_remove(cmd.chain, st, n)
                put_back(cmd.chain, dupes)
                del st.rules[n - 1]
                del st.counters[n - 1]
                summary.append(f"delete {t}/{cmd.chain} line {n}: "
                               f"{'-A ' + cmd.chain + ' ' + old if old else '(a rule added in this batch)'}")
            else:
                emit(f"-D {cmd.chain} {spec_text}")
                if spec_text in st.rules:  # given exactly as iptables-save writes it
                    i = st.rules.index(spec_text)
                    del st.rules[i]
                    del st.counters[i]
                else:
                    st.exact = False
                summary.append(f"delete from {t}/{cmd.chain} the first rule matching: {spec_text}")
        elif a == "new_chain":
            if cmd.chain in ts.chains:
                raise UsageError(f"chain {cmd.chain!r} already exists in {_where(cmd, backend)}",
                                 "pick another name, or use it as it is")
            emit(f"-N {cmd.chain}")
            ts.chains[cmd.chain] = ChainState(None)
            summary.append(f"create chain {t}/{cmd.chain}")
        elif a == "delete_chain":
            if cmd.chain is None:
                emit("-X")
                for name in [c for c, s in ts.chains.items() if s.policy is None]:
                    del ts.chains[name]
                summary.append(f"delete every empty user-defined chain of table {t}")
            else:
                st = chain_of(cmd.chain)
                if st.policy is not None:
                    raise UsageError(f"{cmd.chain} is a built-in chain of table {t}; it cannot be deleted",
                                     f"empty it with `ipdbg rules -t {t} -F {cmd.chain}`")
                emit(f"-X {cmd.chain}")
                del ts.chains[cmd.chain]
                summary.append(f"delete chain {t}/{cmd.chain}")
        elif a == "flush":
            if cmd.chain is None:
                emit("-F")
                for st in ts.chains.values():
                    st.rules.clear()
                    st.counters.clear()
                    st.exact = True
                summary.append(f"flush every chain of table {t}")
            else:
                st = chain_of(cmd.chain)
                emit(f"-F {cmd.chain}")
                st.rules.clear()
                st.counters.clear()
                st.exact = True
                summary.append(f"flush {t}/{cmd.chain}")
        elif a == "zero":
            if cmd.chain is None:
                emit("-Z")
                summary.append(f"zero the counters of table {t}")
            else:
                st = chain_of(cmd.chain)
                if cmd.line is not None:
                    line_in_range(st, cmd.line)
                    emit(f"-Z {cmd.chain} {cmd.line}")
                    summary.append(f"zero the counters of {t}/{cmd.chain} line {cmd.line}")
                else:
                    emit(f"-Z {cmd.chain}")
                    summary.append(f"zero the counters of {t}/{cmd.chain}")
        elif a == "policy":
            st = chain_of(cmd.chain)
            if st.policy is None:
                raise UsageError(f"{cmd.chain} is a user-defined chain: only built-in chains have a policy",
                                 f"end {cmd.chain} with a rule instead: -A {cmd.chain} -j {cmd.target}")
            emit(f"-P {cmd.chain} {cmd.target}")
            st.policy = cmd.target
            summary.append(f"set the policy of {t}/{cmd.chain} to {cmd.target}")
        elif a == "rename_chain":
            st = chain_of(cmd.chain)
            if st.policy is not None:
                raise UsageError(f"{cmd.chain} is a built-in chain; it cannot be renamed")
            if cmd.target in ts.chains:
                raise UsageError(f"chain {cmd.target!r} already exists in {_where(cmd, backend)}")
            emit(f"-E {cmd.chain} {cmd.target}")
            ts.chains[cmd.target] = ts.chains.pop(cmd.chain)
            summary.append(f"rename {t}/{cmd.chain} to {cmd.target}")
        else:  # pragma: no cover - argv.py only makes the actions above
            raise UsageError(f"{a.replace('_', ' ')} is not an edit")
    batch = Batch(lines=lines, tables=order, commands=tuple(commands), summary=summary)
    _policy_after_zero(batch)
    return batch


def _policy_after_zero(batch: Batch) -> None:
    lines = batch.lines
    # iptables-nft 1.8.9 restore: a -Z after a -P in one batch puts the old policy
    # back (the zeroed chain is sent again with the policy of its cache). Set the
    # policy once more at the end of the table's section.
    for t in batch.tables:
        last_p: dict[str, BatchLine] = {}
        zero_after = set()
        for bl in lines:
            if bl.table != t:
                continue
            if bl.text.startswith("-P "):
                last_p[bl.text.split()[1]] = bl
                zero_after.discard(bl.text.split()[1])
            elif bl.text.startswith("-Z"):
                zero_after.update(last_p)
        for name in zero_after:
            bl = last_p[name]
            lines.append(BatchLine(t, bl.text, bl.cmd, "user"))


def _format_unchecked(commands) -> Batch:
    lines, order, summary = [], [], []
    for ci, cmd in enumerate(commands):
        if cmd.table not in order:
            order.append(cmd.table)
        spec = format_rule_tokens(cmd.rule) if cmd.rule else ""
        opt = {"append": "-A", "insert": "-I", "delete": "-D", "new_chain": "-N",
               "delete_chain": "-X", "flush": "-F", "zero": "-Z", "policy": "-P",
               "rename_chain": "-E"}[cmd.action]
        if cmd.action == "insert":
            parts = [opt, cmd.chain, str(cmd.line or 1), spec]
        else:
            parts = [opt, cmd.chain, None if cmd.line is None else str(cmd.line), cmd.target, spec]
        text = " ".join(p for p in parts if p)
        lines.append(BatchLine(cmd.table, text, ci, "user"))
        summary.append(text if cmd.table == "filter" else f"-t {cmd.table} {text}")
    batch = Batch(lines=lines, tables=order, commands=tuple(commands), summary=summary)
    _policy_after_zero(batch)
    return batch
