"""``iptables -L`` rendered while ``iptables-save -c -t TABLE`` is still printing the
table (pure: ``ListStream`` is fed the text), and the column helpers it shares with
``ipdbg.rules.listing``.

Light on purpose: it imports only ``re`` and ``operator``. The renderer proper
(``listing``, with the extensions' printers and the dataclasses of ``model``,
10 - 20 ms to import) is imported only when a rule needs it, so that a chain of
rules of the commonest shape costs no CPU beyond its own lines; iptables-save
shares the machine with us while it fetches the rules.
"""

from __future__ import annotations

import re
from operator import itemgetter

_NUMERIC = 1
_VERBOSE = 2
_EXACT = 4
_LINES = 8

# extensions.STANDARD_TARGETS (iptables' verdicts: they print nothing after the rule)
_VERDICTS = frozenset(("ACCEPT", "DROP", "RETURN", "QUEUE"))


def format_num(n: int, exact: bool) -> str:
    """libxtables xtables_print_num() in a table (without its trailing space)."""
    if exact:
        return f"{n:8d}"
    if n <= 99999:
        return f"{n:5d}"
    for suffix in "KMG":
        n = _round_k(n)
        if n <= 9999:
            return f"{n:4d}{suffix}"
    return f"{_round_k(n):4d}T"


def _round_k(n: int) -> int:
    """(n + 500) / 1000 in uint64_t, wrap-around included (2^64-1 prints as 0K)."""
    return ((n + 500) & 0xFFFFFFFFFFFFFFFF) // 1000


def _num_notable(n: int, exact: bool) -> str:
    """xtables_print_num() with FMT_NOTABLE (chain headers): no padding."""
    if exact or n <= 99999:
        return str(n)
    for suffix in "KMG":
        n = _round_k(n)
        if n <= 9999:
            return f"{n}{suffix}"
    return f"{_round_k(n)}T"


def format_counters(packets: int, nbytes: int, exact) -> str:
    """The pkts and bytes columns of a rule line of `-L -v` (trailing space included)."""
    if exact:
        return f"{packets:8d} {nbytes:8d} "
    return (f"{packets:5d} " if packets <= 99999 else format_num(packets, False) + " ") + \
           (f"{nbytes:5d} " if nbytes <= 99999 else format_num(nbytes, False) + " ")


def format_chain_head(name: str, policy, packets: int, nbytes: int, refs, verbose, exact) -> str:
    """"Chain NAME (policy ...)" of a built-in chain, "(N references)" of a user chain."""
    if policy is None:
        return f"Chain {name} ({refs} references)"
    if verbose:
        return (f"Chain {name} (policy {policy} {_num_notable(packets, exact)} packets, "
                f"{_num_notable(nbytes, exact)} bytes)")
    return f"Chain {name} (policy {policy})"


def _header(flags: int) -> str:
    out = []
    if flags & _LINES:
        out.append("num  ")
    if flags & _VERBOSE:
        out.append("    pkts      bytes " if flags & _EXACT else " pkts bytes ")
    out.append("target     prot opt")
    if flags & _VERBOSE:
        out.append(" in     out    ")
    out.append(" source               destination         ")
    return "".join(out)


# A rule line of `iptables-save -c` of the commonest shape (listing._SIMPLE_RULE
# after "[PACKETS:BYTES] -A CHAIN "), newline included. Groups: packets, bytes,
# chain, source, destination, "tcp -m tcp" or "udp -m udp", sport, dport, target.
# No group takes a newline, so a match holds exactly one, at its end: findall()
# over a piece of save text with as many matches as newlines has parsed every line.
_SAVE_SIMPLE = {
    fam: re.compile(rf"\[(\d++):(\d++)\] -A ([^ \n\"]++) (?:-s ([0-9a-f.:]++)/{full} )?+"
                    rf"(?:-d ([0-9a-f.:]++)/{full} )?+-p (tcp -m tcp|udp -m udp) "
                    r"(?:--sport (\d++) )?+(?:--dport (\d++) )?+-j ([^ \"!\n-][^ \"\n]*+)\n")
    for fam, full in ((4, 32), (6, 128))
}
_PROTO_COLUMN = {"tcp -m tcp": "6   ", "udp -m udp": "17  "}
_PROTO_NAME = {"tcp -m tcp": "tcp", "udp -m udp": "udp"}
_CHAIN_OF, _TARGET_OF = itemgetter(2), itemgetter(8)


class ListStream:
    """``listing.format_list`` of one table, rendered while ``iptables-save -c -t
    TABLE`` is still printing it.

    ``feed(text)`` takes any number of whole lines; ``finish()`` returns exactly
    ``format_list(parse_save(all the text), ...)``, or None when the listing must
    take that path instead: no such table or chain (the error to report), an
    extension iptables renders itself, or text that is not plain iptables-save
    output. The caller keeps the text for that case. Run it with the cyclic GC
    paused (``parse.gc_paused``), as format_list is.

    With -n, runs of rules of the commonest shape (see ``_SAVE_SIMPLE``) are parsed
    with one ``findall`` per piece of text and rendered with one %-format each,
    without a ``Rule``: under 1 us a rule, less than iptables-nft-save takes to
    print one, so the listing is done soon after iptables-save is. Other rules go
    to ``listing._format_rules`` (imported then), a piece of text at a time.
    """

    def __init__(self, family: int, table: str, chain: str | None = None, *, numeric=False,
                 verbose=False, exact=False, line_numbers=False, resolver=None):
        self.family, self.table, self.chain = family, table, chain
        self.numeric, self.verbose, self.exact = numeric, verbose, exact
        self.resolver = resolver
        self.flags = ((_NUMERIC if numeric else 0) | (_VERBOSE if verbose else 0) |
                      (_EXACT if exact else 0) | (_LINES if line_numbers else 0))
        self.failed = False
        self.state = 0            # 0 before "*TABLE", 1 in it (chains), 2 rules, 3 after COMMIT
        self.chains: dict[str, tuple] = {}       # name -> (policy or None, packets, bytes)
        self.listed: dict[str, list[str]] = {}   # chain -> its rule lines so far, in blocks
        self.pending: dict[str, list] = {}       # chain -> Rules not rendered yet
        self.count: dict[str, int] = {}          # chain -> rules seen
        self.refs: dict[str, int] | None = None  # only when a user chain is listed
        self.allowed: frozenset = _VERDICTS
        self.simple = _SAVE_SIMPLE[family] if numeric else None
        self.any_addr = "0.0.0.0/0" if family == 4 else "::/0"
        # the columns of listing._format_rules' simple path; "%.0s" takes a value
        # and prints nothing
        self.fmt = (("%-4d " if line_numbers else "%.0s") +
                    (("%8s %8s " if exact else "%5s %5s ") if verbose else "%.0s%.0s") +
                    "%-9s  %s -- " + (" *      *      " if verbose else "") +
                    " %-19s  %-19s  %s%s%s")
        self._listing = None  # listing module, PrintContext, tails cache: on first need
        # set by the caller: stop (fail, with needs_general set) instead of
        # importing listing when a rule needs it
        self.no_general = False
        self.needs_general = False

    def _renderer(self):
        if self._listing is None:
            if self.no_general:
                self.needs_general = True
                raise LookupError("a rule needs ipdbg.rules.listing")
            from . import listing
            from .extensions import PrintContext

            resolver = self.resolver
            if resolver is None and not self.numeric:
                # as format_list: libc lookups, built only for non-numeric listings
                from .lookup import SystemResolver
                resolver = SystemResolver()
            self._listing = (listing, PrintContext(self.numeric, self.family, resolver), {})
        return self._listing

    # -- feeding

    def feed(self, text: str) -> None:
        if self.failed or not text:
            return
        try:
            self._feed(text)
            for name, rules in self.pending.items():
                if rules:  # rendered now, while iptables-save goes on printing
                    self._flush(name)
        except Exception:  # noqa: BLE001 - the caller's path reports it precisely
            self.failed = True

    def _feed(self, text: str) -> None:
        simple = self.simple
        if simple is not None:
            if self.state < 2 and text[0] != "[":
                # the lines before the first rule one by one, the rules in one go
                cut = text.find("\n[") + 1
                if not cut:
                    self._lines(text)
                    return
                self._lines(text[:cut])
                text = text[cut:]
            if text[0] == "[" and self.state in (1, 2):
                if self.state == 1:
                    self._rules_start()
                res = simple.findall(text)
                if res and len(res) == text.count("\n") and text[-1] == "\n" and self._bulk(res):
                    return
        self._lines(text)

    def _lines(self, text: str) -> None:
        """Line by line: rules of the simple shape rendered at once, the others
        gathered for _format_rules."""
        simple = self.simple
        match = simple.match if simple is not None else None
        pos, n = 0, len(text)
        while pos < n:
            if match is not None and self.state == 2:
                m = match(text, pos)
                if m is not None:
                    g = m.groups()
                    if g[2] in self.listed and g[8] in self.allowed:
                        self._render((g,))
                        pos = m.end()
                        continue
            end = text.find("\n", pos)
            if end < 0:
                end = n
            self._line(text[pos:end])
            pos = end + 1

    def _bulk(self, res) -> bool:
        """``res``, every line of a piece of text, all of the simple shape: render
        them if they are rules of one listed chain with targets that print nothing."""
        name = res[0][2]
        if name not in self.listed:
            return False
        if len(res) > 1:
            if set(map(_CHAIN_OF, res)) != {name} or not set(map(_TARGET_OF, res)) <= self.allowed:
                return False
        elif res[0][8] not in self.allowed:
            return False
        self._render(res)
        return True

    def _render(self, res) -> None:
        """Lines for rules of the simple shape (tuples of _SAVE_SIMPLE's groups), all
        of one chain; the columns as listing._format_rules' simple path writes them."""
        name = res[0][2]
        if self.pending[name]:
            self._flush(name)
        start = self.count[name] + 1
        self.count[name] += len(res)
        refs = self.refs
        if refs is not None:
            for g in res:
                if g[8] in refs:
                    refs[g[8]] += 1
        fmt, any_addr, pcol, pname = self.fmt, self.any_addr, _PROTO_COLUMN, _PROTO_NAME
        if self.exact:
            num = str
        else:
            def num(s):
                return format_num(int(s), False)
        self.listed[name].append("\n".join([
            fmt % (n, pk if len(pk) < 6 else num(pk), by if len(by) < 6 else num(by), target,
                   pcol[pm], src or any_addr, dst or any_addr, pname[pm],
                   " spt:" + sport if sport else "", " dpt:" + dport if dport else "")
            for n, (pk, by, _, src, dst, pm, sport, dport, target) in enumerate(res, start)]))

    def _flush(self, name: str) -> None:
        rules = self.pending[name]
        if rules:
            self.pending[name] = []
            listing, ctx, tails = self._renderer()
            lines: list[str] = []
            listing._format_rules(rules, ctx, self.flags, self.chains, lines,
                                  self.count[name] - len(rules) + 1, tails)
            self.listed[name].append("\n".join(lines))

    def _line(self, line: str) -> None:
        """One line that is not a rule of the simple shape (parse_save's cases)."""
        if not line or line[0] == "#":
            if line.startswith("# Table `"):
                raise ValueError(line)  # incompatible: iptables lists it (format_list)
            return
        c = line[0]
        if c == "[" or c == "-":
            if self.state == 1:
                self._rules_start()
            if self.state != 2:
                raise ValueError(line)
            packets = nbytes = 0
            if c == "[":
                close = line.find("] ")
                p, _, b = line[1:close].partition(":")
                if close < 0 or not (p.isdigit() and b.isdigit()):
                    raise ValueError(line)
                packets, nbytes = int(p), int(b)
                line = line[close + 2:]
            if not line.startswith("-A "):
                raise ValueError(line)
            sp = line.find(" ", 3)
            name, spec = (line[3:], "") if sp < 0 else (line[3:sp], line[sp + 1:])
            if name not in self.chains:
                raise ValueError(line)
            listed, refs = name in self.listed, self.refs
            if listed or refs is not None:
                listing = self._renderer()[0]
                rule = listing.Rule(spec, packets, nbytes, None, self.family)
                if listed:
                    self.pending[name].append(rule)
                    self.count[name] += 1
                if refs is not None:
                    target = listing._rule_target(rule)
                    if target in refs:
                        refs[target] += 1
        elif c == ":":
            if self.state != 1:
                raise ValueError(line)
            fields = line[1:].split(" ")
            name, policy = fields[0], fields[1]
            packets = nbytes = 0
            if len(fields) > 2:
                f = fields[2]
                p, _, b = f[1:-1].partition(":")
                if f[:1] != "[" or f[-1:] != "]" or not (p.isdigit() and b.isdigit()):
                    raise ValueError(line)
                packets, nbytes = int(p), int(b)
            self.chains[name] = (None if policy == "-" else policy, packets, nbytes)
        elif c == "*":
            if self.state != 0 or line[1:].strip() != self.table:
                raise ValueError(line)
            self.state = 1
        elif line.startswith("COMMIT"):
            if self.state == 1:
                self._rules_start()
            if self.state != 2:
                raise ValueError(line)
            self.state = 3
        else:
            raise ValueError(line)

    def _rules_start(self) -> None:
        """The chains are all declared (iptables-save prints them before the rules)."""
        if self.chain is not None and self.chain not in self.chains:
            raise ValueError(self.chain)  # format_list's error
        names = list(self.chains) if self.chain is None else [self.chain]
        for name in names:
            self.listed[name] = []
            self.pending[name] = []
            self.count[name] = 0
        if any(self.chains[name][0] is None for name in names):
            self.refs = dict.fromkeys(self.chains, 0)
        self.allowed = _VERDICTS | frozenset(self.chains)
        self.state = 2

    # -- the listing

    def finish(self) -> str | None:
        if self.failed or self.state != 3:
            return None
        try:
            for name in self.listed:
                self._flush(name)
        except Exception:  # noqa: BLE001 - as in feed()
            return None
        verbose, exact = self.verbose, self.exact
        header = _header(self.flags)
        out = []
        for i, (name, blocks) in enumerate(self.listed.items()):
            policy, packets, nbytes = self.chains[name]
            if i:
                out.append("")
            out.append(format_chain_head(name, policy, packets, nbytes,
                                         None if policy is not None else self.refs[name], verbose, exact))
            out.append(header)
            out.extend(b for b in blocks if b)
        out.append("")
        return "\n".join(out)
