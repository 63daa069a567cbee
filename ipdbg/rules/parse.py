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

import re

from ..errors import UsageError
from .model import Chain, Match, Option, Rule, RuleParts, Ruleset, Table

_ADDR_OPTS = {
    "-s": "source", "--source": "source", "--src": "source",
    "-d": "destination", "--destination": "destination", "--dst": "destination",
    "-i": "in_interface", "--in-interface": "in_interface",
    "-o": "out_interface", "--out-interface": "out_interface",
    "-p": "protocol", "--protocol": "protocol",
}
_NEG_FIELD = {
    "source": "source_negated", "destination": "destination_negated",
    "in_interface": "in_negated", "out_interface": "out_negated",
    "protocol": "protocol_negated",
}
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
    toks = _TOKEN.findall(spec)
    quoted = [False] * len(toks)
    for i, t in enumerate(toks):
        if t[0] == '"':
            if len(t) < 2 or t[-1] != '"':
                raise UsageError(f"unterminated quote in rule: {spec}")
            toks[i] = _UNESCAPE.sub(r"\1", t[1:-1])
            quoted[i] = True
    return toks, quoted


def parse_rule_spec(spec: str | list[str], family: int) -> RuleParts:
    """Split the tokens after ``-A CHAIN`` into ``RuleParts``.

    ``spec`` is save text (quoted as iptables-save quotes) or an argv list.
    """
    if isinstance(spec, str):
        toks, quoted = split_spec(spec)
    else:
        toks, quoted = list(spec), [False] * len(spec)
    parts = RuleParts()
    opts: list[Option] | None = None  # where the next --option goes
    neg = False
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        if quoted[i]:
            raise UsageError(f"unexpected value {t!r} in rule: {_show(toks)}")
        if t == "!":
            if neg:
                raise UsageError(f"double negation in rule: {_show(toks)}")
            neg = True
            i += 1
            continue
        if t in _ADDR_OPTS:
            if i + 1 >= n:
                raise UsageError(f"option {t} needs a value")
            name = _ADDR_OPTS[t]
            setattr(parts, name, toks[i + 1])
            setattr(parts, _NEG_FIELD[name], neg)
            i += 2
        elif t in ("-f", "--fragment"):
            if family == 6:
                raise UsageError("-f (fragment) is IPv4 only", "use -m frag with ip6tables")
            parts.fragment = not neg
            i += 1
        elif t in ("-m", "--match"):
            if neg or i + 1 >= n:
                raise UsageError(f"bad -m in rule: {_show(toks)}")
            match = Match(toks[i + 1], [])
            parts.matches.append(match)
            opts = match.options
            i += 2
        elif t in ("-j", "--jump", "-g", "--goto"):
            if neg or i + 1 >= n:
                raise UsageError(f"bad {t} in rule: {_show(toks)}")
            if parts.target is not None:
                raise UsageError(f"two targets in rule: {_show(toks)}")
            parts.target = toks[i + 1]
            parts.target_kind = "goto" if t in ("-g", "--goto") else "jump"
            opts = parts.target_options
            i += 2
        elif t in ("-c", "--set-counters"):
            i += 3  # counters inside a spec (iptables -S -v style): not part of the rule
        elif t.startswith("-") and len(t) > 1:
            if opts is None:
                proto = parts.protocol
                if proto in _IMPLICIT_MATCH and not parts.protocol_negated:
                    match = Match(proto, [])
                    parts.matches.append(match)
                    opts = match.options
                else:
                    raise UsageError(f"unknown option {t!r} in rule: {_show(toks)}",
                                     "options of a module follow its -m NAME")
            j = i + 1
            while j < n and (quoted[j] or not (toks[j] == "!" or
                                                (toks[j].startswith("-") and len(toks[j]) > 1
                                                 and not toks[j][1].isdigit()))):
                j += 1
            opts.append(Option(t, toks[i + 1:j], neg))
            i = j
        else:
            raise UsageError(f"unexpected {t!r} in rule: {_show(toks)}")
        neg = False
    if neg:
        raise UsageError(f"dangling '!' in rule: {_show(toks)}")
    return parts


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


def parse_save(text: str, family: int) -> Ruleset:
    """Parse the output of ``iptables-save -c`` (or without -c) into a ``Ruleset``."""
    if family not in (4, 6):
        raise UsageError(f"family must be 4 or 6, not {family!r}")
    ruleset = Ruleset(family=family)
    table: Table | None = None
    chains: dict[str, Chain] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            continue
        c = line[0]
        if c == "[" or c == "-":
            if table is None:
                raise UsageError(f"line {lineno}: rule outside a table: {line}")
            packets = nbytes = 0
            if c == "[":
                close = line.find("] ")
                if close < 0:
                    raise UsageError(f"line {lineno}: bad counters: {line}")
                packets, nbytes = _counters(line[:close + 1], f"line {lineno}")
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
            chain.rules.append(Rule(spec, packets, nbytes, parse_rule_spec(spec, family)))
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
