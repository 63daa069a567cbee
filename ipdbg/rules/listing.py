"""``iptables -L`` / ``-S`` output from a parsed ``Ruleset`` (pure), byte for byte.

Reimplements iptables 1.8.9's print path (iptables/xshared.c print_rule_details,
print_fragment, print_ifaces, print_header; iptables/iptables.c print_firewall;
libxtables xtables_print_num); the extensions' print functions are in extensions.py.
Both backends (iptables-nft and iptables-legacy) print the same way; what differs
between them shows up in their iptables-save output, which is our input.

An extension without a printer there, or with an option a printer does not know,
raises ``UnsupportedExtension``: the caller then runs the system's ``iptables -L``
for that listing, so the output is never wrong, only slower.

Name lookups (non-numeric listings) go through an injected resolver (see
``lookup.py``); pure code never touches the system itself.
"""

from __future__ import annotations

import re

from ..errors import NotFoundError
from .extensions import (
    MATCH_PRINTERS, STANDARD_TARGETS, TARGET_PRINTERS, PrintContext, UnsupportedExtension,
    format_address, proto_number,
)
from .fastlist import (_EXACT, _LINES, _NUMERIC, _VERBOSE, _header, format_chain_head, format_counters,
                       format_num)
from .model import Chain, Rule, RuleParts, Ruleset, Table
from .parse import _HEAD, gc_paused, parse_rule_spec

# The most common rule body after the head, in iptables-save's own form:
# "-m tcp|udp [[! ]--sport P] [[! ]--dport P] -j TARGET" with single ports and a
# target that prints nothing (a verdict or a chain). Its tail is rendered here
# without building the rule's parts (libxt_tcp.c/libxt_udp.c print_ports, as
# extensions._tcpudp_ports): chains of 20,000 rules with all-different ports
# would otherwise miss the per-text cache on every rule.
_PORTS_TAIL = re.compile(r"-m (tcp|udp) (?:(! )?--sport (\d+) )?(?:(! )?--dport (\d+) )?"
                         r"-j ([^ \"!-][^ \"]*)")

__all__ = ["UnsupportedExtension", "format_list", "format_rules_S", "format_rule_line",
           "format_num", "rule_to_json"]


# ---------------------------------------------------------------- -L


def _lookup(ruleset: Ruleset, table: str, chain: str | None) -> tuple[Table, list[Chain]]:
    if table in ruleset.incompatible:
        # iptables itself prints a warning line and what it can: let it.
        raise UnsupportedExtension("table", table, ruleset.incompatible[table])
    t = ruleset.tables.get(table)
    if t is None:
        cmd = "ip6tables" if ruleset.family == 6 else "iptables"
        raise NotFoundError(f"table {table!r} does not exist (or is empty)",
                            f"known tables: {', '.join(ruleset.tables) or 'none'}; "
                            f"`{cmd} -t {table} -L` loads it")
    if chain is None:
        return t, list(t.chains.values())
    c = t.chains.get(chain)
    if c is None:
        raise NotFoundError(f"chain {chain!r} does not exist in table {table}",
                            f"chains in {table}: {', '.join(t.chains)}")
    return t, [c]


def _rule_target(rule: Rule) -> str | None:
    """The rule's target, without splitting the whole spec when parts are not built."""
    parts = rule.__dict__.get("_parts")
    if parts is not None:
        return parts.target
    spec = rule.spec
    if "\\" in spec:
        return rule.parts.target
    # The one unquoted " -j "/" -g " (or a leading "-j "): the last one with an even
    # number of quotes before it.
    for key in (" -j ", " -g "):
        i = spec.rfind(key)
        while i >= 0 and spec.count('"', 0, i) % 2:
            i = spec.rfind(key, 0, i)
        if i >= 0:
            rest = spec[i + 4:]
            break
    else:
        if not spec.startswith(("-j ", "-g ")):
            return None
        rest = spec[3:]
    sp = rest.find(" ")
    return rest if sp < 0 else rest[:sp]


def _references(t: Table) -> dict[str, int]:
    refs = dict.fromkeys(t.chains, 0)
    for c in t.chains.values():
        for r in c.rules:
            target = _rule_target(r)
            if target in refs:
                refs[target] += 1
    return refs


def _tail_text(p: RuleParts, ctx: PrintContext, chains) -> str:
    """What follows the destination column: [goto], matches, target (print_firewall)."""
    out = ["[goto] " if p.target_kind == "goto" else ""]
    ctx.parts = p
    for m in p.matches:
        printer = MATCH_PRINTERS.get(m.name)
        if printer is None:
            raise UnsupportedExtension("match", m.name)
        try:
            out.append(printer(m, ctx))
        except (ValueError, KeyError, IndexError) as e:
            raise UnsupportedExtension("match", m.name, f"cannot render: {e}") from None
    if p.target is not None and p.target not in STANDARD_TARGETS and p.target not in chains:
        printer = TARGET_PRINTERS.get(p.target)
        if printer is None:
            raise UnsupportedExtension("target", p.target)
        try:
            out.append(printer(p, ctx))
        except (ValueError, KeyError, IndexError) as e:
            raise UnsupportedExtension("target", p.target, f"cannot render: {e}") from None
    return "".join(out)


def _line(rule: Rule, num: int, ctx: PrintContext, flags: int, target: str, proto, pneg: bool,
          frag, src, sneg: bool, dst, dneg: bool, iif, ineg: bool, oif, oneg: bool,
          tail: str) -> str:
    """The fixed columns (xshared.c print_rule_details and friends) plus ``tail``.

    Runs once per rule of chains with tens of thousands of rules: one f-string for
    the columns, per-listing caches for addresses and protocol numbers.
    """
    numeric = ctx.numeric
    if flags & _VERBOSE:
        prefix = format_counters(rule.packets, rule.bytes, flags & _EXACT)
        any_if = "*" if numeric else "any"
        iif = ("!" if ineg else "") + (iif or any_if)
        oif = ("!" if oneg else "") + (oif or any_if)
        via = f" {iif:<6s} {oif:<6s} "
    else:
        prefix = via = ""
    if flags & _LINES:
        prefix = f"{num:<4d} " + prefix
    if target == "NOTRACK":
        target = "CT"  # libxt_CT.c: NOTRACK is an alias of CT revision 0
    if proto is None:
        proto = "0" if numeric else "all"
    elif numeric:
        num_text = ctx.protos.get(proto)
        if num_text is None:
            num_text = ctx.protos[proto] = str(proto_number(proto, ctx.resolver))
        proto = num_text
    if ctx.family == 4:
        opt = "-- " if frag is None else ("-f " if frag else "!f ")
    else:
        opt = "-- "
    addrs = ctx.addrs
    s = addrs.get(src)
    if s is None:
        s = addrs[src] = format_address(src, ctx.family, numeric, ctx.resolver)
    d = addrs.get(dst)
    if d is None:
        d = addrs[dst] = format_address(dst, ctx.family, numeric, ctx.resolver)
    return (f"{prefix}{target:<9s} {'!' if pneg else ' '}{proto:<4s} {opt}{via}"
            f"{'!' if sneg else ' '}{s:<19s} {'!' if dneg else ' '}{d:<19s} {tail}")


def format_rule_line(rule: Rule, num: int, ctx: PrintContext, flags: int, chains) -> str:
    """One rule of ``iptables -L`` (iptables.c print_firewall), without the newline."""
    p = rule.parts
    return _line(rule, num, ctx, flags, p.target or "", p.protocol, p.protocol_negated,
                 p.fragment, p.source, p.source_negated, p.destination, p.destination_negated,
                 p.in_interface, p.in_negated, p.out_interface, p.out_negated,
                 _tail_text(p, ctx, chains))


# iptables-save's form of the commonest rule: [-s HOST] [-d HOST] -p tcp|udp -m tcp|udp
# [--sport P] [--dport P] -j TARGET (HOST: /32 or /128, printed without the mask)
_SIMPLE_RULE = {
    fam: re.compile(rf"(?:-s ([0-9a-f.:]+)/{full} )?(?:-d ([0-9a-f.:]+)/{full} )?-p (tcp|udp) "
                    r"-m (tcp|udp) (?:--sport (\d+) )?(?:--dport (\d+) )?-j ([^ \"!-][^ \"]*)")
    for fam, full in ((4, 32), (6, 128))
}


def _format_rules(rules: list[Rule], ctx: PrintContext, flags: int, chains, out: list[str],
                  start: int = 1, tails: dict | None = None) -> None:
    """All rule lines of a chain.

    Rules whose parts are not built yet are read straight from the spec: the head
    (addresses, interfaces, protocol, -f) with parse._HEAD, and the rest rendered
    once per distinct (protocol, rest) in this listing; big chains repeat the same
    matches and target a lot (blocklists, kube-proxy services). The columns are
    ``_line``'s, written out in the loop (it runs 20,000 times for a big chain).
    ``start``: the line number of ``rules[0]``; ``tails``: that cache, kept by a
    caller that renders a chain in pieces (``fastlist.ListStream``).
    """
    if tails is None:
        tails = {}
    head_re = _HEAD
    family = ctx.family
    v6 = family == 6
    numeric = ctx.numeric
    resolver = ctx.resolver
    addrs = ctx.addrs
    protos = ctx.protos
    verbose = bool(flags & _VERBOSE)
    exact = bool(flags & _EXACT)
    lines = bool(flags & _LINES)
    any_if = "*" if numeric else "any"
    all_proto = "0" if numeric else "all"
    append = out.append
    ports_tail = _PORTS_TAIL.fullmatch
    services: dict = {}

    def service(port: str, proto: str) -> str:
        key = (port, proto)
        name = services.get(key)
        if name is None:
            name = services[key] = resolver.lookup_service(int(port), proto) or port
        return name

    # numeric host addresses (/32, /128) print without the mask: no cache entry each
    any_addr = "0.0.0.0/0" if family == 4 else "::/0"
    host_mask = ("/32" if family == 4 else "/128") if numeric else None
    host_cut = -len(host_mask) if numeric else 0
    # -n: whole rules of the commonest shape (host addresses, -p tcp|udp with its
    # match and single ports, a target that prints nothing) in one regex
    simple = _SIMPLE_RULE[family].fullmatch if numeric else None
    for n, rule in enumerate(rules, start):
        if rule.__dict__.get("_parts") is not None:
            append(format_rule_line(rule, n, ctx, flags, chains))
            continue
        spec = rule.spec
        if simple is not None:
            sm = simple(spec)
            if sm is not None:
                src, dst, proto, m, sport, dport, target = sm.groups()
                if proto == m and (target in STANDARD_TARGETS or target in chains):
                    if verbose:
                        prefix = format_counters(rule.packets, rule.bytes, exact)
                        via = " *      *      "
                    else:
                        prefix = via = ""
                    if lines:
                        prefix = f"{n:<4d} " + prefix
                    tail = " " + proto
                    if sport is not None:
                        tail += " spt:" + sport
                    if dport is not None:
                        tail += " dpt:" + dport
                    append(f"{prefix}{target:<9s}  {'6   ' if proto == 'tcp' else '17  '} -- {via} "
                           f"{src or any_addr:<19s}  {dst or any_addr:<19s} {tail}")
                    continue
        hm = head_re.match(spec + " ")
        g = hm.groups()
        if v6 and g[11] is not None:
            append(format_rule_line(rule, n, ctx, flags, chains))  # raises UsageError
            continue
        proto = g[9]
        rest = spec[hm.end():]
        key = (proto, rest)
        hit = tails.get(key)
        if hit is None and proto is not None and rest[:3] == "-m ":
            pm = ports_tail(rest)
            if pm is not None and pm.group(1) == proto and (
                    pm.group(6) in STANDARD_TARGETS or pm.group(6) in chains):
                _, sneg, sport, dneg, dport, target = pm.groups()
                tail = " " + proto
                if sport is not None:
                    tail += (" spt:!" if sneg else " spt:") + (
                        sport if numeric else service(sport, proto))
                if dport is not None:
                    tail += (" dpt:!" if dneg else " dpt:") + (
                        dport if numeric else service(dport, proto))
                hit = (f"{target:<9s} ", tail)
        if hit is None:
            p = rule.parts = parse_rule_spec(spec, family, _head=hm)
            if (p.source, p.destination, p.in_interface, p.out_interface, p.protocol) == \
                    (g[1], g[3], g[5], g[7], proto) and (p.fragment is None) == (g[11] is None):
                target = p.target or ""
                if target == "NOTRACK":
                    target = "CT"  # libxt_CT.c: NOTRACK is an alias of CT revision 0
                hit = tails[key] = (f"{target:<9s} ", _tail_text(p, ctx, chains))
            else:  # address options after the matches: not iptables-save's order
                hit = tails[key] = False
        if hit is False:
            append(format_rule_line(rule, n, ctx, flags, chains))
            continue
        # the columns, as _line() writes them
        if verbose:
            prefix = format_counters(rule.packets, rule.bytes, exact)
            iif = ("!" if g[4] else "") + (g[5] or any_if)
            oif = ("!" if g[6] else "") + (g[7] or any_if)
            via = f" {iif:<6s} {oif:<6s} "
        else:
            prefix = via = ""
        if lines:
            prefix = f"{n:<4d} " + prefix
        if proto is None:
            proto = all_proto
        elif numeric:
            text = protos.get(proto)
            if text is None:
                text = protos[proto] = str(proto_number(proto, resolver))
            proto = text
        if v6 or g[11] is None:
            opt = "-- "
        else:
            opt = "!f " if g[10] else "-f "
        src, dst = g[1], g[3]
        if host_mask is not None and src is not None and src.endswith(host_mask):
            s = src[:host_cut]
        else:
            s = addrs.get(src)
            if s is None:
                s = addrs[src] = format_address(src, family, numeric, resolver)
        if host_mask is not None and dst is not None and dst.endswith(host_mask):
            d = dst[:host_cut]
        else:
            d = addrs.get(dst)
            if d is None:
                d = addrs[dst] = format_address(dst, family, numeric, resolver)
        append(f"{prefix}{hit[0]}{'!' if g[8] else ' '}{proto:<4s} {opt}{via}"
               f"{'!' if g[0] else ' '}{s:<19s} {'!' if g[2] else ' '}{d:<19s} {hit[1]}")


def format_list(ruleset: Ruleset, table: str, chain: str | None = None, *, numeric=False,
                verbose=False, exact=False, line_numbers=False, resolver=None) -> str:
    """The text of ``iptables -t TABLE -L [CHAIN] [-n] [-v] [-x] [--line-numbers]``.

    ``ip6tables`` when ``ruleset.family`` is 6. Raises ``NotFoundError`` for an
    unknown table or chain and ``UnsupportedExtension`` for a match or target we
    do not render (the caller then runs the system's iptables -L).
    """
    with gc_paused():
        return _format_list(ruleset, table, chain, numeric, verbose, exact, line_numbers,
                            resolver)


def _format_list(ruleset, table, chain, numeric, verbose, exact, line_numbers, resolver) -> str:
    t, chains = _lookup(ruleset, table, chain)
    if resolver is None and not numeric:
        # The default resolver does what iptables does (libc lookups); it is only
        # built on demand so that numeric listings stay free of effects.
        from .lookup import SystemResolver
        resolver = SystemResolver()
    flags = ((_NUMERIC if numeric else 0) | (_VERBOSE if verbose else 0) |
             (_EXACT if exact else 0) | (_LINES if line_numbers else 0))
    ctx = PrintContext(numeric, ruleset.family, resolver)
    # reference counts read every rule of the table: only for user chains listed
    refs = _references(t) if any(c.policy is None for c in chains) else {}
    header = _header(flags)
    out = []
    for i, c in enumerate(chains):
        if i:
            out.append("")
        out.append(format_chain_head(c.name, c.policy, c.packets, c.bytes,
                                     None if c.policy is not None else refs[c.name], verbose, exact))
        out.append(header)
        _format_rules(c.rules, ctx, flags, t.chains, out)
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- -S


def _rule_S(chain: str, rule: Rule, verbose: bool) -> str:
    if not verbose:
        return f"-A {chain} {rule.spec}" if rule.spec else f"-A {chain}"
    counters = f"-c {rule.packets} {rule.bytes}"
    if _rule_target(rule) is None:
        return f"-A {chain} {rule.spec} {counters}" if rule.spec else f"-A {chain} {counters}"
    cut = _target_offset(rule.spec)
    head = rule.spec[:cut]
    return f"-A {chain} {head}{counters} {rule.spec[cut:]}"


def _target_offset(spec: str) -> int:
    """Offset of the unquoted " -j "/" -g " (or leading "-j ") that starts the target."""
    if spec.startswith(("-j ", "-g ")):
        return 0
    if "\\" not in spec:
        # The first " -j "/" -g " with an even number of quotes before it.
        best = -1
        for key in (" -j ", " -g "):
            i = spec.find(key)
            while i >= 0 and spec.count('"', 0, i) % 2:
                i = spec.find(key, i + 1)
            if i >= 0 and (best < 0 or i < best):
                best = i
        if best < 0:
            raise ValueError(spec)
        return best + 1
    in_quote = False
    i, n = 0, len(spec)
    while i < n:
        c = spec[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif not in_quote and c == " " and spec.startswith(("-j ", "-g "), i + 1):
            return i + 1
        i += 1
    raise ValueError(spec)


def format_rules_S(ruleset: Ruleset, table: str, chain: str | None = None, *,
                   verbose=False) -> str:
    """The text of ``iptables -t TABLE -S [CHAIN] [-v]``."""
    t, chains = _lookup(ruleset, table, chain)
    out = []
    for c in chains:
        if c.policy is not None:
            out.append(f"-P {c.name} {c.policy}" +
                       (f" -c {c.packets} {c.bytes}" if verbose else ""))
        else:
            out.append(f"-N {c.name}")
    for c in chains:
        for rule in c.rules:
            out.append(_rule_S(c.name, rule, verbose))
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- JSON


def rule_to_json(family: int, table: str, chain: str, line: int, rule: Rule) -> dict:
    """A rule as a JSON-ready dict (the ``-o json`` shape of ``ipdbg rules``)."""
    p = rule.parts
    return {
        "family": family,
        "table": table,
        "chain": chain,
        "line": line,
        "packets": rule.packets,
        "bytes": rule.bytes,
        "rule": f"-A {chain} {rule.spec}" if rule.spec else f"-A {chain}",
        "parts": {
            "protocol": p.protocol,
            "source": p.source,
            "destination": p.destination,
            "in_interface": p.in_interface,
            "out_interface": p.out_interface,
            "fragment": p.fragment,
            "matches": [{"name": m.name,
                         "options": [{"name": o.name, "values": list(o.values),
                                      "negated": o.negated} for o in m.options]}
                        for m in p.matches],
            "target": p.target,
            "target_kind": p.target_kind,
            "target_options": [{"name": o.name, "values": list(o.values),
                                "negated": o.negated} for o in p.target_options],
            "negations": p.negations(),
        },
    }
