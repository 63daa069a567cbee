"""`ipdbg rules`: iptables' own syntax, iptables' own output, safe line-number edits.

Kept lean on purpose: `ipdbg rules ...` runs without click (ipdbg.cli calls
``run`` directly; the click command below is built only for `--help` and for the
click group), and imports only ipdbg.rules.* and the standard library.
"""

from __future__ import annotations

import os
import sys

from .. import errors
from ..rules import argv as rargv

HELP = """List and edit iptables rules with iptables' own syntax and output.

\b
Everything iptables takes works the same way:
  -t filter|nat|mangle|raw|security       table (default filter)
  -L [CHAIN]  -S [CHAIN]                  list (iptables -L / -S output, byte for byte)
  -A CHAIN RULE   -I CHAIN [N] RULE       append / insert at line N (default 1)
  -R CHAIN N RULE  -D CHAIN N             replace / delete line N (checked, see below)
  -D CHAIN RULE                           delete the first rule matching RULE
  -N CHAIN  -X [CHAIN]  -F [CHAIN]  -Z [CHAIN [N]]  -P CHAIN ACCEPT|DROP  -E OLD NEW
  --line-numbers  -n  -v  -x              listing flags
  -4 | -6                                 iptables (default) or ip6tables
and a few options of ipdbg's own:
  --backend auto|nft|legacy   auto: what the system's `iptables` is (Debian 12: nft)
  --netns NAME|PATH           work in that network namespace (`ip netns` name or path)
  -o text|json                json: every rule with table, chain, line, counters,
                              iptables-save text and its parsed parts
                              (-o after -A/-I/-R/-D is iptables' --out-interface)
  --dry-run                   print the exact iptables-restore batch; change nothing
  --batch FILE|-              one iptables-style command per line, applied as ONE
                              iptables-restore batch (all or nothing)

\b
Every change is one `iptables-restore --noflush -w` batch. -R CHAIN N and -D CHAIN N
name the rule read at line N: if the chain changed so that line N holds another
rule when the batch runs, nothing changes and the exit code is 5 (docs/rules.md).

\b
Examples:
  ipdbg rules -t nat -L POSTROUTING --line-numbers -n -v
  ipdbg rules -I INPUT 3 -p tcp --dport 20 -j ACCEPT
  ipdbg rules -R INPUT 3 -j DROP
  ipdbg rules -D OUTPUT 1 --netns client
  ipdbg rules -6 -S INPUT -o json
  ipdbg rules --dry-run -D INPUT 2
  printf -- '-A INPUT -s 10.0.0.1 -j ACCEPT\\n-D INPUT 1\\n' | ipdbg rules --batch -

\b
Exit codes: 0 ok, 2 bad input, 3 no such chain/rule/netns, 4 not root,
5 the chain changed meanwhile (nothing changed), 6 iptables missing or failed.
"""


def _click_command():
    import click

    @click.command(
        "rules",
        help=HELP,
        short_help="List and edit iptables rules by line number (iptables syntax).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                          "help_option_names": ["-h", "--help"]},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def rules(args):
        run(list(args))

    return rules


def __getattr__(name):
    # `rules`, the click command, is built on first use (ipdbg.cli's click group)
    if name == "rules":
        cmd = globals()["rules"] = _click_command()
        return cmd
    raise AttributeError(name)


def run(args: list[str], out=None) -> None:
    out = out or sys.stdout
    inv = rargv.parse_argv(args)
    if inv.batch is not None:
        text = _read_batch(inv.batch)
        cmds = rargv.parse_batch(text, inv)
        inv = inv.replace(commands=cmds)

    from ..privileges import CAP_NET_ADMIN, CAP_NET_RAW, require_caps
    from ..rules import backend as rb

    family = inv.commands[0].family
    backend = rb.pick_backend(inv.backend, family)
    # iptables-legacy opens a raw socket for its getsockopt/setsockopt calls.
    caps = [CAP_NET_ADMIN] + ([CAP_NET_RAW] if backend == "legacy" else [])
    require_caps(caps, f"ipdbg rules (iptables-{backend})")
    netns = None
    if inv.netns:
        from ..netns import resolve_netns

        netns = resolve_netns(inv.netns)

    if len(inv.commands) == 1 and inv.commands[0].read_only:
        _list(inv.commands[0], inv, backend, netns, out)
    else:
        _edit(inv, backend, netns, out)


def _json(obj, indent=2) -> str:
    import json  # only for -o json

    return json.dumps(obj, indent=indent)


def _read_batch(spec: str) -> str:
    if spec == "-":
        return sys.stdin.read()
    try:
        with open(spec) as f:
            return f.read()
    except FileNotFoundError:
        raise errors.NotFoundError(f"batch file {spec!r} does not exist",
                                   "give a file with one iptables-style command per line, or - for stdin") from None
    except OSError as exc:
        raise errors.UsageError(f"cannot read batch file {spec!r}: {exc.strerror}") from None


# ---------------------------------------------------------------- listings

def _list(cmd, inv, backend, netns, out) -> None:
    from ..rules import backend as rb

    text_list = cmd.action == "list" and inv.output != "json"
    if text_list and backend == "legacy" and cmd.table in rb.read_legacy_tables(cmd.family, netns):
        # iptables-legacy -L is C over the table it gets in one getsockopt: faster
        # than any read, parse and render here, whatever the size (a 20,000-rule
        # chain: 33 ms, its save alone 21 ms), and byte-identical by construction.
        # Its text goes straight to our stdout.
        _system_list_to(cmd, backend, netns, out)
        return
    job = None
    if text_list and cmd.line is None:
        # rendered while iptables-save prints it (nft: it prints in the last 25 ms
        # of its 145 ms for 20,000 rules; the renderer is imported meanwhile)
        stream = rb.start_read_save_stream(cmd.family, backend, netns, cmd.table)
        text = "" if stream is None else _stream_list(stream, cmd, backend, netns, out)
        if text is None:
            return
    else:
        # iptables-save runs while the parser and renderer are imported
        job = rb.start_read_save(cmd.family, backend, netns, table=cmd.table, counters=True)
    try:
        from ..rules import listing, parse
    except ImportError:  # the pure renderer is not there: iptables renders
        if job is not None:
            job.result()
        out.write(_system_list(cmd, backend, netns))
        return
    if job is not None:
        text = job.result()
    if not text.strip():
        text = _empty_table_save(cmd.table)
    ruleset = parse.parse_save(text, cmd.family)
    table = ruleset.tables.get(cmd.table)
    if table is None:
        ruleset = parse.parse_save(_empty_table_save(cmd.table), cmd.family)
        table = ruleset.tables[cmd.table]
    if cmd.chain is not None and cmd.chain not in table.chains:
        raise _no_such_chain(cmd, backend)
    if inv.output == "json":
        out.write(_json(_json_listing(listing, cmd, table, backend), indent=2) + "\n")
        return
    if cmd.action == "list" and cmd.line is not None:  # `-L CHAIN N`: iptables prints that rule alone
        out.write(_system_list(cmd, backend, netns))
        return
    try:
        if cmd.action == "list":
            text = listing.format_list(ruleset, cmd.table, cmd.chain, numeric=cmd.numeric,
                                       verbose=cmd.verbose, exact=cmd.exact,
                                       line_numbers=cmd.line_numbers)
        else:
            text = listing.format_rules_S(ruleset, cmd.table, cmd.chain, verbose=cmd.verbose)
            if cmd.line is not None:
                text = _nth_rule(text, cmd)
    except getattr(listing, "UnsupportedExtension", ()):  # iptables renders it itself
        text = _system_list(cmd, backend, netns)
    out.write(text)


def _stream_list(stream, cmd, backend, netns, out) -> str | None:
    """Render `-L` from iptables-save's text as it arrives and print it: None. Or,
    when ListStream leaves this listing to the general path (an error to report,
    an extension iptables renders), the whole save text, read to the end."""
    import gc

    pieces = []
    try:
        from ..rules.fastlist import ListStream
    except ImportError:
        for piece in stream.chunks():
            pieces.append(piece)
        return "".join(pieces)
    ls = ListStream(cmd.family, cmd.table, cmd.chain, numeric=cmd.numeric, verbose=cmd.verbose,
                    exact=cmd.exact, line_numbers=cmd.line_numbers)
    was = gc.isenabled()
    gc.disable()  # as parse.gc_paused(): tens of thousands of small objects, no cycles
    try:
        chunks = stream.chunks()
        for piece in chunks:
            pieces.append(piece)
            if len(pieces) == 1 and "\nCOMMIT\n" in piece and piece.count("\n") < SMALL_TABLE:
                # All of a small table at once. If a rule needs the general renderer,
                # importing it (12 - 19 ms) costs more than iptables' own -L (3 ms
                # for 100 rules): let iptables print it, byte-identical by construction.
                ls.no_general = True
                ls.feed(piece)
                if ls.needs_general and (cmd.chain is None or cmd.chain in ls.chains):
                    for _ in chunks:  # iptables-save's end, and its exit status
                        pass
                    _system_list_to(cmd, backend, netns, out)
                    return None
                ls.no_general = False
                continue
            ls.feed(piece)
        text = ls.finish()
    finally:
        if was:
            gc.enable()
    if text is None:
        return "".join(pieces)
    out.write(text)
    return None


# A table whose save text comes whole in the first read and has fewer lines than
# this is printed by iptables -L when a rule needs ipdbg.rules.listing (_stream_list).
SMALL_TABLE = 1000


def _no_such_chain(cmd, backend) -> Exception:
    return errors.NotFoundError(
        f"chain {cmd.chain!r} does not exist in table {cmd.table} (IPv{cmd.family}, {backend})",
        f"list the chains with `ipdbg rules -t {cmd.table} -S`")


def _nth_rule(text: str, cmd) -> str:
    rules_ = [ln for ln in text.splitlines() if ln.startswith("-A ")]
    if cmd.line > len(rules_):
        raise errors.UsageError(
            f"line {cmd.line} is out of range: {cmd.table}/{cmd.chain} has {len(rules_)} rules",
            f"list them with `ipdbg rules -t {cmd.table} -L {cmd.chain} --line-numbers`")
    return rules_[cmd.line - 1] + "\n"


def _list_argv(cmd) -> list[str]:
    """The arguments of the system's `iptables` that print this listing."""
    tail = ["-t", cmd.table, "-L" if cmd.action == "list" else "-S"]
    if cmd.chain:
        tail.append(cmd.chain)
        if cmd.line is not None:
            tail.append(str(cmd.line))
    for flag, on in (("-n", cmd.numeric), ("-v", cmd.verbose), ("-x", cmd.exact),
                     ("--line-numbers", cmd.line_numbers)):
        if on and (cmd.action == "list" or flag == "-v"):
            tail.append(flag)
    return tail


def _system_list(cmd, backend, netns) -> str:
    from ..rules import backend as rb

    return rb.read_list(cmd.family, backend, netns, _list_argv(cmd))


def _system_list_to(cmd, backend, netns, out) -> None:
    """The system's iptables prints the listing to ``out`` (our stdout directly)."""
    from ..rules import backend as rb

    if not rb.read_list_to(out, cmd.family, backend, netns, _list_argv(cmd)):
        raise _no_such_chain(cmd, backend)


def _empty_table_save(table: str) -> str:
    from ..rules.edit import BUILTIN_CHAINS

    chains = "".join(f":{c} ACCEPT [0:0]\n" for c in BUILTIN_CHAINS.get(table, ()))
    return f"*{table}\n{chains}COMMIT\n"


def _json_listing(listing, cmd, table, backend) -> dict:
    chains = []
    for name, chain in table.chains.items():
        if cmd.chain is not None and name != cmd.chain:
            continue
        rules_ = [listing.rule_to_json(cmd.family, cmd.table, name, i, r)
                  for i, r in enumerate(chain.rules, 1)]
        if cmd.line is not None:
            rules_ = [r for i, r in enumerate(rules_, 1) if i == cmd.line]
        chains.append({"chain": name, "policy": chain.policy, "packets": chain.packets,
                       "bytes": chain.bytes, "rules": rules_})
    return {"family": cmd.family, "backend": backend, "table": cmd.table, "chains": chains}


# ---------------------------------------------------------------- edits

def _edit(inv, backend, netns, out) -> None:
    from ..rules import backend as rb
    from ..rules.edit import format_batch, needs_state, parse_save_index

    family = inv.commands[0].family
    tables_needed = []
    for c in inv.commands:
        if c.table not in tables_needed:
            tables_needed.append(c.table)
    state = {}
    texts = {}

    def read_state():
        for t in tables_needed:
            texts[t] = rb.read_save(family, backend, netns, table=t, counters=True)
            state.update(parse_save_index(texts[t], only_table=t))
        return state

    if (backend == "nft" and not inv.dry_run and inv.batch is None and len(inv.commands) == 1
            and inv.commands[0].action in ("replace", "delete", "insert")
            and (inv.commands[0].line is not None or inv.commands[0].action == "insert")):
        # one nf_tables transaction tagged with the generation read (docs/rules.md)
        from ..rules.nftedit import apply_line_edit

        done = apply_line_edit(inv.commands[0], netns)
        if done is not None:
            if inv.output == "json":
                out.write(_json({"applied": True, "backend": backend, "family": family,
                                 "summary": [rargv.format_command(inv.commands[0])],
                                 "netlink": done.to_json(inv.commands[0])}) + "\n")
            return

    first_read = None
    if (not inv.dry_run and inv.batch is None and len(inv.commands) == 1
            and inv.commands[0].line is not None
            and inv.commands[0].action in ("replace", "delete")):
        first_read = _edit_line_only(inv, backend, netns, out)
        if first_read is True:
            return

    # Only line-number -R/-D need the rules read (to name the rule at that line);
    # a multi-table batch needs them to put tables back. Anything else goes straight
    # to iptables-restore, and is checked against a fresh read only if it fails.
    # (A batch is always read: its -I N may name a line that an earlier line adds.)
    fast = not (inv.dry_run or len(inv.commands) > 1 or needs_state(inv.commands))
    if not fast:
        read_state()
    if isinstance(first_read, str):
        # _edit_line_only read line N as first_read and its batch failed: go on only
        # if line N still holds that rule (identical rules above it need this path)
        cmd = inv.commands[0]
        now = state.get(cmd.table)
        now = now.chains.get(cmd.chain) if now is not None else None
        if now is None or cmd.line > len(now.rules) or now.rules[cmd.line - 1] != first_read:
            raise rb.restore_error("", "check", rargv.format_command(cmd))
    batch = format_batch(inv.commands, None if fast else state, backend=backend,
                         tag=str(os.getpid()))
    batch_text = batch.format()
    counters = any(bl.text.startswith("[") for bl in batch.lines)
    if inv.dry_run:
        if inv.output == "json":
            out.write(_json({"dry_run": True, "backend": backend, "family": family,
                             "restore_argv": _restore_argv(family, backend, counters),
                             "batch": batch_text, "summary": batch.summary}) + "\n")
        else:
            out.write(batch_text)
        return
    if backend == "legacy":
        # a legacy table is created by the first restore that names it, even one
        # that fails: try the batch on new tables in a throw-away netns first
        missing = [t for t in batch.tables if t not in rb.read_legacy_tables(family, netns)]
        if missing:
            proc = rb.apply_restore_scratch(batch.format(missing), family, backend)
            if proc.returncode != 0:
                if fast:
                    format_batch(inv.commands, read_state(), backend=backend, tag=str(os.getpid()))
                raise _edit_error(proc.stderr, batch, inv, backend, netns, texts, missing)
    if len(batch.tables) > 1:
        # iptables-restore commits each table at its COMMIT: parse all first
        proc = rb.apply_restore(batch_text, family, backend, netns, counters=counters, test=True)
        if proc.returncode != 0:
            raise _edit_error(proc.stderr, batch, inv, backend, netns, texts)
    proc = rb.apply_restore(batch_text, family, backend, netns, counters=counters)
    if proc.returncode != 0:
        if fast:  # the precise reason (line out of range, no such chain, ...) from a read
            format_batch(inv.commands, read_state(), backend=backend, tag=str(os.getpid()))
        err = _edit_error(proc.stderr, batch, inv, backend, netns, texts)
        _put_back_committed(proc.stderr, batch, family, backend, netns, texts, err)
        raise err
    if inv.output == "json":
        out.write(_json({"applied": True, "backend": backend, "family": family,
                         "batch": batch_text, "summary": batch.summary}) + "\n")


def _edit_line_only(inv, backend, netns, out):
    """-R CHAIN N / -D CHAIN N reading line N only (`iptables -S CHAIN N`), not the table.

    The batch is the checked one of "Edit safety", built as if no rule above line N
    had the same text (k = 0): iptables-restore applies it only if line N holds
    that text and no rule above does, which is the guarantee for k = 0. Returns
    True when applied; the text read at line N when the batch failed (the caller
    then reads the table, goes on only if line N still holds that text, and
    reports any error from there); None when line N could not be read this way.
    """
    from ..rules import backend as rb
    from ..rules.edit import ChainState, TableState, format_batch

    cmd = inv.commands[0]
    spec = rb.read_rule_at(cmd.family, backend, netns, cmd.table, cmd.chain, cmd.line)
    if spec is None:
        return None
    n = cmd.line
    # rules other than line N are unknown (None); one more below it, so that a
    # replacement is inserted at line N (-I CHAIN N also appends when N is past
    # the end, in iptables-restore of both backends)
    st = ChainState(None, [None] * (n - 1) + [spec, None], [None] * (n + 1))
    batch = format_batch(inv.commands, {cmd.table: TableState(cmd.table, {cmd.chain: st})},
                         backend=backend, tag=str(os.getpid()))
    batch_text = batch.format()
    proc = rb.apply_restore(batch_text, cmd.family, backend, netns)
    if proc.returncode != 0:
        return spec
    if inv.output == "json":
        out.write(_json({"applied": True, "backend": backend, "family": cmd.family,
                         "batch": batch_text, "summary": batch.summary}) + "\n")
    return True


def _put_back_committed(stderr, batch, family, backend, netns, texts, err) -> None:
    """A batch over several tables failed in a later table: the earlier tables were
    committed already; restore them from what was read (whole table, counters)."""
    from ..rules import backend as rb

    n = rb.failed_line(stderr)
    bl = batch.line_at(n) if n is not None else None
    if bl is None or len(batch.tables) < 2:
        return
    done = batch.tables[: batch.tables.index(bl.table)]
    failed = []
    for t in done:
        text = texts.get(t) or _empty_table_save(t)
        if rb.apply_table_text(text, t, family, backend, netns).returncode != 0:
            failed.append(t)
    if failed:
        err.message += (f"; tables {', '.join(done)} were applied before the failure and "
                        f"could not be put back: {', '.join(failed)}")
        err.hint = f"check them with `ipdbg rules -t {failed[0]} -S`"


def _restore_argv(family, backend, counters) -> list[str]:
    base = "iptables" if family == 4 else "ip6tables"
    return [f"{base}-{backend}-restore", "--noflush", "-w"] + (["-c"] if counters else [])


def _edit_error(stderr, batch, inv, backend, netns, texts, tables=None) -> Exception:
    from ..rules import backend as rb
    from ..rules.edit import parse_save_index

    n = rb.failed_line(stderr)
    bl = batch.line_at(n, tables) if n is not None else None
    if bl is None:
        # nft resolves jump targets at COMMIT, so the error names that line
        msg = rb.first_message(stderr) or "iptables-restore failed"
        what = (rargv.format_command(batch.commands[0]) if len(batch.commands) == 1
                else "the batch")
        if "does not exist" in msg or "Couldn't load" in msg:
            return rb.restore_error(stderr, None, what)
        return errors.SystemToolError(f"{what}: iptables-restore ({backend}) failed: {msg}")
    cmd = batch.commands[bl.cmd]
    what = rargv.format_command(cmd)
    if inv.batch is not None:
        what = f"batch command {bl.cmd + 1} ({what})"
    if bl.role == "check":
        # Changed meanwhile, or a rule iptables cannot match by its own save text?
        fam = cmd.family
        now = parse_save_index(rb.read_save(fam, backend, netns, table=cmd.table), cmd.table)
        before = parse_save_index(texts[cmd.table], cmd.table)
        b, a = before.get(cmd.table), now.get(cmd.table)
        same = (b is not None and a is not None and cmd.chain in b.chains and cmd.chain in a.chains
                and b.chains[cmd.chain].rules == a.chains[cmd.chain].rules)
        if same:
            return errors.SystemToolError(
                f"{what}: iptables-{backend} could not find the rule at line {cmd.line} "
                "by the text iptables-save gives for it; nothing was changed",
                "this extension does not round-trip through iptables-save; use the system's "
                "iptables for this edit")
        return rb.restore_error(stderr, "check", what)
    import re

    msg = rb.first_message(stderr)
    m = re.fullmatch(r"\S*restore: line \d+ failed(?:: (.*))?", msg)
    if m and not m.group(1):
        # iptables-legacy-restore says only "line N failed": name the likely cause
        cause, cls = {
            "delete": ("no rule matches that spec", errors.NotFoundError),
            "delete_chain": ("the chain is not empty or a rule still jumps to it", errors.UsageError),
            "new_chain": ("the chain already exists (or the name is a target's)", errors.UsageError),
            "rename_chain": ("the new name is taken or the chain is in use", errors.UsageError),
        }.get(cmd.action, ("iptables rejected it", errors.UsageError))
        return cls(f"{what}: {cause}", "check it with `ipdbg rules -S` (iptables-legacy gives no reason)")
    if m:
        stderr = m.group(1)
    return rb.restore_error(stderr, bl.role, what)
