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

from ..errors import NotFoundError, UsageError
from .argv import RulesCommand, format_rule_tokens

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}



class ChainState:
    """One chain as read. ``rules``: the spec after "-A CHAIN " as iptables-save
    wrote it, None for a rule added earlier in the same batch (its canonical text
    is not known before iptables runs); ``counters``: "[p:b]" per rule; ``exact``
    is False once an edit we cannot follow (-D by spec) touched the chain."""

    __slots__ = ("policy", "rules", "counters", "exact")

    def __init__(self, policy: str | None, rules=None, counters=None, exact: bool = True):
        self.policy = policy  # None for a user-defined chain
        self.rules: list[str | None] = [] if rules is None else rules
        self.counters: list[str | None] = [] if counters is None else counters
        self.exact = exact


class TableState:
    __slots__ = ("name", "chains")

    def __init__(self, name: str, chains: dict[str, ChainState] | None = None):
        self.name = name
        self.chains: dict[str, ChainState] = {} if chains is None else chains


def parse_save_index(text: str, only_table: str | None = None) -> dict[str, TableState]:
    """iptables-save [-c] text -> {table: TableState}, rules kept as text."""
    tables: dict[str, TableState] = {}
    cur: TableState | None = None
    last_name = rules = counts = None
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        c = line[0]
        if c == "*":
            last_name = None
            name = line[1:].strip()
            cur = TableState(name) if only_table in (None, name) else None
            if cur is not None:
                tables[name] = cur
        elif cur is None:
            continue
        elif c == ":":
            last_name = None
            parts = line[1:].split()
            name, pol = parts[0], (parts[1] if len(parts) > 1 else "-")
            cur.chains[name] = ChainState(None if pol == "-" else pol)
        elif c == "[" or c == "-":
            # "[p:b] -A CHAIN SPEC" or "-A CHAIN SPEC"; str methods only (fast on big chains)
            if c == "[":
                counters, _, line = line.partition("] ")
                counters += "]"
            else:
                counters = None
            if line[:3] != "-A ":
                continue
            chain, _, spec = line[3:].partition(" ")
            if chain != last_name:
                st = cur.chains.get(chain)
                if st is None:
                    st = cur.chains[chain] = ChainState(None)
                last_name, rules, counts = chain, st.rules, st.counters
            rules.append(spec)
            counts.append(counters)
    return tables


def empty_table(name: str) -> TableState:
    """A table iptables has not created yet: its built-in chains, empty."""
    return TableState(name, {c: ChainState("ACCEPT") for c in BUILTIN_CHAINS.get(name, ())})


class BatchLine:
    """One line of the batch; ``cmd``: index of the command it belongs to; ``role``:
    "user" (the user's change) or "check" (a line of the line-number check)."""

    __slots__ = ("table", "text", "cmd", "role")

    def __init__(self, table: str, text: str, cmd: int, role: str):
        self.table, self.text, self.cmd, self.role = table, text, cmd, role

    def __repr__(self):
        return f"BatchLine({self.table!r}, {self.text!r}, {self.cmd}, {self.role!r})"


class Batch:
    """The restore batch; ``summary``: one line per command (--dry-run -o json)."""

    def __init__(self, lines: list[BatchLine], tables: list[str], commands, summary: list[str]):
        self.lines, self.tables, self.commands, self.summary = lines, tables, commands, summary

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
    plans: dict[tuple[str, str], _Plan] = {}
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

        def plan(name: str) -> _Plan:
            key = (t, name)
            if key not in plans:
                plans[key] = _Plan(t, name, chain_of(name))
            return plans[key]

        def flush(_name: str | None = None) -> None:
            """Emit the pending rule edits of every chain of t: a chain command may
            depend on them (-X Y after deleting the rule that jumps to Y)."""
            nonlocal nchk
            for key in [k for k in plans if k[0] == t]:
                nchk = plans.pop(key).emit(lines, tag, nchk)

        a = cmd.action
        spec_text = format_rule_tokens(cmd.rule) if cmd.rule else ""
        if a in ("append", "insert", "replace") or a == "delete" and cmd.line is not None:
            pl = plan(cmd.chain)
            have = len(pl.items)
            n = cmd.line or (have + 1 if a == "append" else 1)
            if n > have + (1 if a in ("append", "insert") else 0):
                raise UsageError(
                    f"line {n} is out of range: {t}/{cmd.chain} has {have} rule"
                    f"{'' if have == 1 else 's'}",
                    f"list them with `ipdbg rules -t {t} -L {cmd.chain} --line-numbers`")
            new = ("n", spec_text, ci)
            if a == "append":
                pl.items.append(new)
                summary.append(f"append to {t}/{cmd.chain} at line {n}: {spec_text}")
            elif a == "insert":
                pl.items.insert(n - 1, new)
                summary.append(f"insert into {t}/{cmd.chain} at line {n}: {spec_text}")
            else:
                old = pl.items[n - 1]
                if type(old) is int:
                    pl.deleted[old] = ci
                was = pl.describe(old)
                if a == "replace":
                    pl.items[n - 1] = new
                    summary.append(f"replace {t}/{cmd.chain} line {n} ({was}) with: {spec_text}")
                else:
                    del pl.items[n - 1]
                    summary.append(f"delete {t}/{cmd.chain} line {n}: {was}")
        elif a == "delete":  # by spec: iptables picks the first match
            flush(cmd.chain)
            st = chain_of(cmd.chain)
            emit(f"-D {cmd.chain} {spec_text}")
            if spec_text in st.rules:  # given exactly as iptables-save writes it
                i = st.rules.index(spec_text)
                del st.rules[i]
                del st.counters[i]
            else:
                st.exact = False
            summary.append(f"delete from {t}/{cmd.chain} the first rule matching: {spec_text}")
        elif a == "new_chain":
            flush()
            if cmd.chain in ts.chains:
                raise UsageError(f"chain {cmd.chain!r} already exists in {_where(cmd, backend)}",
                                 "pick another name, or use it as it is")
            emit(f"-N {cmd.chain}")
            ts.chains[cmd.chain] = ChainState(None)
            summary.append(f"create chain {t}/{cmd.chain}")
        elif a == "delete_chain":
            flush(cmd.chain)
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
            flush(cmd.chain)
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
            flush(cmd.chain)
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
            flush()
            st = chain_of(cmd.chain)
            if st.policy is None:
                raise UsageError(f"{cmd.chain} is a user-defined chain: only built-in chains have a policy",
                                 f"end {cmd.chain} with a rule instead: -A {cmd.chain} -j {cmd.target}")
            emit(f"-P {cmd.chain} {cmd.target}")
            st.policy = cmd.target
            summary.append(f"set the policy of {t}/{cmd.chain} to {cmd.target}")
        elif a == "rename_chain":
            flush(cmd.chain)
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
    for (t, name) in list(plans):
        nchk = plans.pop((t, name)).emit(lines, tag, nchk)
    batch = Batch(lines=lines, tables=order, commands=tuple(commands), summary=summary)
    _policy_after_zero(batch)
    return batch


class _Plan:
    """The rule edits (-A, -I, -R N, -D N) of one chain, applied in one go.

    ``items`` is the chain as the commands so far leave it: an int i is rule i as
    read, ("n", spec, cmd) a rule this batch adds. Emitting it: first remove every
    rule read that goes (checked, see the module docstring), then insert the new
    rules (and identical rules removed only for the check) at their final lines,
    lowest first. iptables-nft-restore 1.8.9 places -I N by the handle of the rule
    now at line N, so that rule must be one that exists in the kernel: inserting
    lowest line first guarantees it (everything above is final, everything at or
    below is a rule read, or the end of the chain, where -A is used).
    """

    def __init__(self, table: str, chain: str, st: ChainState):
        self.table, self.chain, self.st = table, chain, st
        self.items: list = list(range(len(st.rules)))
        self.deleted: dict[int, int] = {}  # rule index as read -> command index

    def describe(self, item) -> str:
        if type(item) is int and self.st.rules[item] is not None:
            return f"-A {self.chain} {self.st.rules[item]}"
        return "a rule added earlier in this batch"

    def emit(self, lines: list[BatchLine], tag: str, nchk: int) -> int:
        st, name, t = self.st, self.chain, self.table
        known = st.exact and all(st.rules[i] is not None for i in self.deleted)
        removed: dict[int, int] = {}  # index as read -> command index (for errors)
        if known:
            # to delete rule i by its text, the identical rules above it go first
            for i, ci in self.deleted.items():
                removed[i] = min(ci, removed.get(i, ci))
                for j in range(i):
                    if st.rules[j] == st.rules[i] and j not in removed:
                        removed[j] = ci
            gone = 0
            for i in sorted(removed):
                pos = i - gone + 1
                chk = f"IPDBG-{tag}-{nchk}"[:28]
                nchk += 1
                ci = removed[i]
                for text in (f"-N {chk}", f"-I {name} {pos} -j {chk}",
                             f"-I {name} {pos + 2} -j {chk}", f"-D {name} {st.rules[i]}",
                             f"-D {name} {pos}", f"-D {name} {pos}", f"-X {chk}"):
                    lines.append(BatchLine(t, text, ci, "check"))
                gone += 1
        else:
            # after an edit we cannot follow (-D by spec that did not match a rule
            # read as text): positions only, highest first so none moves
            for i in sorted(self.deleted, reverse=True):
                lines.append(BatchLine(t, f"-D {name} {i + 1}", self.deleted[i], "user"))
                removed[i] = self.deleted[i]
        length = len(st.rules) - len(removed)
        for q, item in enumerate(self.items, 1):
            if type(item) is int and item not in removed:
                continue  # still in place
            if type(item) is int:
                i = item
                text = (f"{st.counters[i]} " if st.counters[i] else "") + "%s " + st.rules[i]
                ci, role = removed[i], "check"
            else:
                text, ci, role = "%s " + item[1], item[2], "user"
            op = f"-A {name}" if q == length + 1 else f"-I {name} {q}"
            if text.startswith("["):
                counters, rest = text.split(" ", 1)
                line = f"{counters} {rest % op}"
            else:
                line = text % op
            lines.append(BatchLine(t, line, ci, role))
            length += 1
        # the chain as the batch leaves it
        rules, counters = st.rules, st.counters
        st.rules = [rules[it] if type(it) is int else None for it in self.items]
        st.counters = [counters[it] if type(it) is int else None for it in self.items]
        return nchk


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
