"""Parse ``iptables-save [-c]`` / ``ip6tables-save [-c]`` text into a ``Ruleset`` (pure).

The save format (iptables 1.8.9, iptables/iptables-save.c and xshared.c):

    # comment
    *TABLE
    :CHAIN POLICY [PACKETS:BYTES]        POLICY is "-" for user-defined chains
    [PACKETS:BYTES] -A CHAIN SPEC        "[..] " only with -c
    COMMIT

SPEC is ``[! -s A] [! -d A] [! -i IF] [! -o IF] [! -p P] [! -f] (-m M OPTS)* [-j|-g T OPTS]``
with strings quoted by xtables_save_string(): double quotes, and a backslash before
``"``, ``\\`` and ``'`` inside them.
"""

from __future__ import annotations

import contextlib
import gc
import re

from ..errors import UsageError
from .model import Chain, Match, Option, Rule, RuleParts, Ruleset, Table

# Protocols whose options may follow "-p P" without "-m P" on a command line.
_IMPLICIT_MATCH = {"tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6",
                   "ipv6-icmp", "esp", "ah", "mh", "ipv6-mh"}


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')
_UNESCAPE = re.compile(r"\\(.)")


def split_spec(spec: str) -> tuple[list[str], list[bool]]:
    """Split a save-format spec into tokens, undoing xtables_save_string() quoting.

    Returns the tokens and, for each, whether it was quoted (a quoted "-j" is a
    value, not an option). iptables-save quotes whole values only, so a token is
    either entirely quoted or not quoted at all.
    """
    if '"' not in spec:
        toks = spec.split()
        return toks, [False] * len(toks)
    if "\\" not in spec:
        # No escapes: the pieces between quotes alternate outside / inside.
        pieces = spec.split('"')
        if len(pieces) % 2 == 0:
            raise UsageError(f"unterminated quote in rule: {spec}")
        toks, quoted = [], []
        for k, piece in enumerate(pieces):
            if k % 2:
                toks.append(piece)
                quoted.append(True)
            else:
                words = piece.split()
                toks.extend(words)
                quoted.extend([False] * len(words))
        return toks, quoted
    toks = _TOKEN.findall(spec)
    quoted = [False] * len(toks)
    for i, t in enumerate(toks):
        if t[0] == '"':
            if len(t) < 2 or t[-1] != '"':
                raise UsageError(f"unterminated quote in rule: {spec}")
            toks[i] = _UNESCAPE.sub(r"\1", t[1:-1])
            quoted[i] = True
    return toks, quoted


# Token kinds for the dispatch in parse_rule_spec (one dict lookup per token).
_NOT, _SRC, _DST, _IN, _OUT, _PROTO, _FRAG, _MATCH, _JUMP, _GOTO, _COUNTERS = range(11)
_KINDS = {
    "!": _NOT, "-s": _SRC, "--source": _SRC, "--src": _SRC,
    "-d": _DST, "--destination": _DST, "--dst": _DST,
    "-i": _IN, "--in-interface": _IN, "-o": _OUT, "--out-interface": _OUT,
    "-p": _PROTO, "--protocol": _PROTO, "-f": _FRAG, "--fragment": _FRAG,
    "-m": _MATCH, "--match": _MATCH, "-j": _JUMP, "--jump": _JUMP,
    "-g": _GOTO, "--goto": _GOTO, "-c": _COUNTERS, "--set-counters": _COUNTERS,
}


# The head of a saved rule (iptables/xshared.c save_rule_details, 1.8.9 order).
_HEAD = re.compile(r"(?:(! )?-s ([^ !\"-][^ \"]*) )?(?:(! )?-d ([^ !\"-][^ \"]*) )?"
                   r"(?:(! )?-i ([^ !\"-][^ \"]*) )?(?:(! )?-o ([^ !\"-][^ \"]*) )?"
                   r"(?:(! )?-p ([^ !\"-][^ \"]*) )?(?:(! )?(-f) )?")


def _is_value(tok: str) -> bool:
    """Whether an unquoted token is an option's value (not "!" nor "--opt"/"-x")."""
    return tok != "!" and not (tok[0] == "-" and len(tok) > 1 and not tok[1].isdigit())


def parse_rule_spec(spec: str | list[str], family: int, _head=None) -> RuleParts:
    """Split the tokens after ``-A CHAIN`` into ``RuleParts``.

    ``spec`` is save text (quoted as iptables-save quotes) or an argv list.
    Written as one flat loop: it runs once per rule of a 20,000-rule chain.
    """
    fields = [None, None, None, None, None]  # src, dst, in, out, proto
    negs = [False, False, False, False, False]
    fragment = None
    if isinstance(spec, str):
        # iptables-save writes the address part in one fixed order: take it with
        # one regex, and tokenize only the rest (matches and target).
        head = _head or _HEAD.match(spec + " ")  # _head: the caller already matched it
        if head.end():
            g = head.groups()
            for k in range(5):
                if g[2 * k + 1] is not None:
                    fields[k] = g[2 * k + 1]
                    negs[k] = g[2 * k] is not None
            if g[11] is not None:
                if family == 6:
                    raise UsageError("-f (fragment) is IPv4 only", "use -m frag with ip6tables")
                fragment = g[10] is None
            spec = spec[head.end():]
        toks, quoted = split_spec(spec)
        anyq = quoted and True in quoted
    else:
        toks, quoted, anyq = list(spec), None, False
    matches: list[Match] = []
    target = None
    kind_name = "none"
    target_options: list[Option] = []
    opts: list[Option] | None = None
    neg = False
    i, n = 0, len(toks)
    kinds = _KINDS
    while i < n:
        t = toks[i]
        if anyq and quoted[i]:
            raise UsageError(f"unexpected value {t!r} in rule: {_show(toks)}")
        k = kinds.get(t)
        if k is None:
            if t[:1] != "-" or len(t) < 2:
                raise UsageError(f"unexpected {t!r} in rule: {_show(toks)}")
            if opts is None:
                proto = fields[4]
                if proto in _IMPLICIT_MATCH and not negs[4]:
                    match = Match(proto, [])
                    matches.append(match)
                    opts = match.options
                else:
                    raise UsageError(f"unknown option {t!r} in rule: {_show(toks)}",
                                     "options of a module follow its -m NAME")
            j = i + 1
            while j < n:  # the values: up to the next "!" or "--option" (_is_value inline)
                v = toks[j]
                if (anyq and quoted[j]) or (v != "!" and (v[0] != "-" or len(v) == 1
                                                           or v[1].isdigit())):
                    j += 1
                else:
                    break
            opts.append(Option(t, toks[i + 1:j], neg))
            neg = False
            i = j
            continue
        if k == _NOT:
            if neg:
                raise UsageError(f"double negation in rule: {_show(toks)}")
            neg = True
            i += 1
            continue
        if k <= _PROTO:
            if i + 1 >= n:
                raise UsageError(f"option {t} needs a value")
            fields[k - 1] = toks[i + 1]
            negs[k - 1] = neg
            i += 2
        elif k == _MATCH:
            if neg or i + 1 >= n:
                raise UsageError(f"bad -m in rule: {_show(toks)}")
            match = Match(toks[i + 1], [])
            matches.append(match)
            opts = match.options
            i += 2
        elif k == _JUMP or k == _GOTO:
            if neg or i + 1 >= n:
                raise UsageError(f"bad {t} in rule: {_show(toks)}")
            if target is not None:
                raise UsageError(f"two targets in rule: {_show(toks)}")
            target = toks[i + 1]
            kind_name = "goto" if k == _GOTO else "jump"
            opts = target_options
            i += 2
        elif k == _FRAG:
            if family == 6:
                raise UsageError("-f (fragment) is IPv4 only", "use -m frag with ip6tables")
            fragment = not neg
            i += 1
        else:  # counters inside a spec (iptables -S -v style): not part of the rule
            i += 3
        neg = False
    if neg:
        raise UsageError(f"dangling '!' in rule: {_show(toks)}")
    return RuleParts(fields[4], negs[4], fields[0], negs[0], fields[1], negs[1],
                     fields[2], negs[2], fields[3], negs[3], fragment, matches,
                     target, kind_name, target_options)


def _show(toks: list[str]) -> str:
    return " ".join(toks)


def _counters(text: str, where: str) -> tuple[int, int]:
    """ "[P:B]" -> (P, B)."""
    if len(text) < 5 or text[0] != "[" or text[-1] != "]" or ":" not in text:
        raise UsageError(f"bad counters {text!r} at {where}")
    p, _, b = text[1:-1].partition(":")
    try:
        return int(p), int(b)
    except ValueError:
        raise UsageError(f"bad counters {text!r} at {where}") from None


@contextlib.contextmanager
def gc_paused():
    """No cyclic GC while building or rendering tens of thousands of small objects.

    None of them form cycles; CPython would otherwise run a collection every 700
    allocations, and full ones as the heap grows (a fifth of the time of a
    20,000-rule listing). The previous state comes back whatever happens.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_save(text: str, family: int) -> Ruleset:
    """Parse the output of ``iptables-save -c`` (or without -c) into a ``Ruleset``.

    Rule specs are split into ``RuleParts`` on first use of ``Rule.parts``.
    """
    with gc_paused():
        return _parse_save(text, family)


def _parse_save(text: str, family: int) -> Ruleset:
    if family not in (4, 6):
        raise UsageError(f"family must be 4 or 6, not {family!r}")
    ruleset = Ruleset(family=family)
    table: Table | None = None
    chains: dict[str, Chain] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            if line.startswith("# Table `") and "'" in line[9:]:
                # iptables-nft-save: "# Table `filter' contains incompatible base-chains,
                # use 'nft' tool to list them." (or "is incompatible, use 'nft' tool.")
                name = line[9:line.index("'", 9)]
                ruleset.incompatible[name] = line[2:]
            continue
        c = line[0]
        if c == "[" or c == "-":
            if table is None:
                raise UsageError(f"line {lineno}: rule outside a table: {line}")
            packets = nbytes = 0
            if c == "[":
                close = line.find("] ")
                p, colon, b = line[1:close].partition(":")
                if close < 0 or not (p.isdigit() and b.isdigit()):
                    raise UsageError(f"line {lineno}: bad counters: {line}")
                packets, nbytes = int(p), int(b)
                line = line[close + 2:]
            if not line.startswith("-A "):
                raise UsageError(f"line {lineno}: expected -A CHAIN: {line}")
            sp = line.find(" ", 3)
            if sp < 0:
                name, spec = line[3:], ""
            else:
                name, spec = line[3:sp], line[sp + 1:]
            chain = chains.get(name)
            if chain is None:
                raise UsageError(f"line {lineno}: rule for undeclared chain {name!r}")
            chain.rules.append(Rule(spec, packets, nbytes, None, family))
        elif c == ":":
            if table is None:
                raise UsageError(f"line {lineno}: chain outside a table: {line}")
            fields = line[1:].split(" ")
            if len(fields) < 2:
                raise UsageError(f"line {lineno}: bad chain line: {line}")
            name, policy = fields[0], fields[1]
            packets, nbytes = _counters(fields[2], f"line {lineno}") if len(fields) > 2 else (0, 0)
            chain = Chain(name, None if policy == "-" else policy, packets, nbytes, [])
            chains[name] = chain
        elif c == "*":
            table = Table(line[1:].strip(), {})
            chains = table.chains
            ruleset.tables[table.name] = table
        elif line.startswith("COMMIT"):
            table = None
        else:
            raise UsageError(f"line {lineno}: not iptables-save output: {line}")
    return ruleset
