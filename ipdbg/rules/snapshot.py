"""A snapshot of every rule in a netns, for naming the rule behind a verdict.

``read_snapshot`` runs, in parallel, ``{ip,ip6}tables-{nft,legacy}-save -c`` and
``nft -a list ruleset`` and indexes the result:

* iptables-nft tables: the nft chain lists rules in evaluation order, which is
  the iptables ``--line-numbers`` order (kernel-notes.md, "Rule position"), so the
  i-th rule with a handle in ``nft -a list`` is line i of iptables-nft-save's
  chain. A table is iptables-nft's when ``iptables-nft-save`` (``ip`` family) or
  ``ip6tables-nft-save`` (``ip6``) lists it. (nft 1.0.6 warns "table ip filter
  is managed by iptables-nft, do not touch!" on stderr only when a rule of the
  table uses an xt extension it cannot show, e.g. ``-m comment`` or ``-j LOG``;
  a table of plain ``-s/-d/-j DROP`` rules gets no warning, so that is no test.
  iptables-nft-save also lists a native ``table ip filter`` whose rules it can
  translate: such rules are named in iptables syntax.)
* native nft tables (``backend="nftables"``): position in the chain and the rule
  as ``nft -a list`` prints it, without the ``# handle N`` comment and with
  ``counter packets N bytes M`` shortened to ``counter``.
* iptables-legacy tables: line and iptables-save text (no handle).

``family`` of a RuleRef is 4 or 6; native tables of the families inet, arp,
bridge and netdev have family 0 (look them up with ``by_nft_handle``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from ..netns import nsenter_argv
from ..errors import SystemToolError
from .backend import find_binary

NFT_FAMILY = {"ip": 4, "ip6": 6}


@dataclass(frozen=True)
class RuleRef:
    family: int  # 4 or 6 (0: a native nft table of family inet/arp/bridge/netdev)
    backend: str  # "nft" (iptables-nft), "legacy" (iptables-legacy), "nftables" (native nft)
    table: str
    chain: str
    line: int | None  # iptables --line-numbers position; native nft: 1-based position
    text: str  # "-A OUTPUT -d 198.51.100.80/32 -p tcp -j DROP", or nft syntax
    handle: int | None  # nft rule handle (nft and nftables backends)


@dataclass
class Snapshot:
    # (family, backend, table, chain) -> rules in order
    chains: dict[tuple[int, str, str, str], list[RuleRef]] = field(default_factory=dict)
    # (nft_family, table, chain, handle) -> rule
    handles: dict[tuple[str, str, str, int], RuleRef] = field(default_factory=dict)
    # raw iptables-save texts, (family, backend) -> text (for parse_save when needed)
    saves: dict[tuple[int, str], str] = field(default_factory=dict)
    netns: str | None = None

    def lookup(self, table: str, chain: str, line: int, family: int = 4,
               backend: str | None = None) -> RuleRef | None:
        for b in ((backend,) if backend else ("nft", "legacy", "nftables")):
            rules = self.chains.get((family, b, table, chain))
            if rules and line is not None and 1 <= line <= len(rules):
                return rules[line - 1]
        return None

    def by_nft_handle(self, nft_family: str, table: str, chain: str, handle: int) -> RuleRef | None:
        return self.handles.get((nft_family, table, chain, int(handle)))

    def backends_with_rules(self) -> set[str]:
        return {b for (_, b, _, _), rules in self.chains.items() if rules}

    def chain_rules(self, family: int, backend: str, table: str, chain: str) -> list[RuleRef]:
        return list(self.chains.get((family, backend, table, chain), ()))

    def ruleset(self, family: int, backend: str):
        """The full parsed Ruleset (ipdbg.rules.parse) of one family and backend."""
        from .parse import parse_save

        return parse_save(self.saves.get((family, backend), ""), family)


_COUNTERS = re.compile(r"^\[\d+:\d+\] ")


def parse_save_rules(text: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save text -> {table: {chain: ["-A CHAIN ...", ...]}} (counters dropped)."""
    out: dict[str, dict[str, list[str]]] = {}
    cur = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if line[0] == "*":
            cur = out.setdefault(line[1:].strip(), {})
        elif cur is None:
            continue
        elif line[0] == ":":
            cur.setdefault(line[1:].split(" ", 1)[0], [])
        else:
            m = _COUNTERS.match(line)
            if m:
                line = line[m.end():]
            if line.startswith("-A "):
                chain = line[3:].split(" ", 1)[0]
                cur.setdefault(chain, []).append(line)
    return out


_COUNTER_VALUES = re.compile(r"\bcounter packets \d+ bytes \d+")
_HANDLE = re.compile(r"^(.*?)\s*# handle (\d+)$")


# iptables-nft's built-in chains (iptables 1.8.9 nft-chain.c / xtables.c tables)
_IPT_CHAINS = {
    "filter": {"INPUT", "FORWARD", "OUTPUT"},
    "nat": {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
    "mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
    "raw": {"PREROUTING", "OUTPUT"},
    "security": {"INPUT", "FORWARD", "OUTPUT"},
}


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def parse_nft_native_marks(text: str) -> set[tuple[str, str]]:
    """(family, table) of `nft -a list ruleset` tables that iptables-nft did not make.

    iptables-nft-save 1.8.9 also lists a native `table ip filter` and translates
    what it can: `ip saddr @blocked drop` comes out as `-A INPUT -j DROP`, silently
    wrong. iptables-nft 1.8.9 never creates named sets, maps or flowtables, never
    writes set lookups (`@name`) or anonymous sets (`{ ... }`) in a rule, and its base
    chains carry the built-in names: any of these marks a table as native.
    """
    marks: set[tuple[str, str]] = set()
    fam = table = None
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if depth == 0 and line.startswith("table "):
            parts = line.split()
            fam, table, depth = parts[1], parts[2], 1
            continue
        if depth == 1:
            if line.startswith(("set ", "map ", "flowtable ", "ct ", "quota ", "counter ", "limit ",
                                "secmark ", "synproxy ")):
                marks.add((fam, table))
            if line.startswith("chain "):
                chain, depth = line.split()[1], 2
            elif line == "}":
                depth = 0
            elif "{" in line and "}" not in line:
                depth = 3
            continue
        if depth == 3:
            if line == "}":
                depth = 1
            continue
        if depth == 2:
            if line == "}":
                depth = 1
            elif line.startswith("type ") and " hook " in line:
                if chain not in _IPT_CHAINS.get(table, ()):
                    marks.add((fam, table))
            elif "# handle" in line:
                bare = _QUOTED.sub('""', line)  # a comment may hold anything
                if "@" in bare or "{ " in bare:
                    marks.add((fam, table))
    return marks


def parse_nft_list(text: str) -> list[tuple[str, str, str, int, int, str]]:
    """`nft -a list ruleset` text -> [(family, table, chain, position, handle, rule text)]."""
    out = []
    family = table = chain = None
    pos = 0
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if depth == 0 and line.startswith("table "):
            parts = line.split()
            family, table = parts[1], parts[2]
            depth = 1
            continue
        if depth == 1:
            if line.startswith("chain "):
                chain = line.split()[1]
                pos = 0
                depth = 2
            elif line.endswith("{") or "{" in line and "}" not in line:
                depth = 3  # set, map, flowtable, ...: skip its body
            elif line == "}":
                depth = 0
            continue
        if depth == 3:
            if line == "}":
                depth = 1
            continue
        if depth == 2:
            if line == "}":
                depth = 1
                chain = None
                continue
            m = _HANDLE.match(line)
            if m:
                pos += 1
                # counter values change with every packet: keep the rule's text stable
                text = _COUNTER_VALUES.sub("counter", m.group(1))
                out.append((family, table, chain, pos, int(m.group(2)), text))
    return out


def _save_argv(family: int, backend: str) -> list[str]:
    base = "iptables" if family == 4 else "ip6tables"
    return [find_binary(f"{base}-{backend}-save"), "-c"]


def read_snapshot(netns: str | None = None) -> Snapshot:
    """Every rule of both families and both iptables backends, and native nft, in netns.

    The reads run in parallel. If the iptables-nft and nft views disagree (the
    ruleset changed between them), they are read again, up to 3 times.
    """
    for _ in range(3):
        snap, consistent = _read_once(netns)
        if consistent:
            return snap
    return snap


def _read_once(netns: str | None) -> tuple[Snapshot, bool]:
    jobs = {}
    for family in (4, 6):
        for backend in ("nft", "legacy"):
            try:
                argv = _save_argv(family, backend)
            except (SystemToolError, OSError):  # not installed; never a signal's Interrupted
                continue
            jobs[(family, backend)] = subprocess.Popen(
                nsenter_argv(netns, argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL, text=True)
    nft = None
    try:
        nft = subprocess.Popen(nsenter_argv(netns, [find_binary("nft"), "-a", "list", "ruleset"]),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, text=True)
    except (SystemToolError, OSError):
        nft = None
    saves = {}
    for key, proc in jobs.items():
        out, _ = proc.communicate()
        saves[key] = out if proc.returncode == 0 else ""
    nft_text = nft.communicate()[0] if nft is not None else ""
    return index_snapshot(saves, nft_text, netns)


def index_snapshot(saves: dict[tuple[int, str], str], nft_text: str,
                   netns: str | None = None) -> tuple[Snapshot, bool]:
    """Texts read -> (Snapshot, whether the iptables-nft and nft views agree) (pure).

    ``saves``: (family, "nft"|"legacy") -> `iptables-save -c` text;
    ``nft_text``: `nft -a list ruleset`.
    """
    snap = Snapshot(netns=netns)
    snap.saves = dict(saves)
    consistent = True
    native = parse_nft_native_marks(nft_text)
    managed: set[tuple[str, str]] = set()  # (nft family, table) owned by iptables-nft
    for (family, backend), text in saves.items():
        for table, chains in parse_save_rules(text).items():
            if backend == "nft":
                key = ("ip" if family == 4 else "ip6", table)
                if key in native:
                    continue  # listed by iptables-nft-save, but not its own: see above
                managed.add(key)
            for chain, lines in chains.items():
                snap.chains[(family, backend, table, chain)] = [
                    RuleRef(family, backend, table, chain, i, text_, None)
                    for i, text_ in enumerate(lines, 1)]

    for fam, table, chain, pos, handle, text_ in parse_nft_list(nft_text):
        if (fam, table) in managed:
            family = NFT_FAMILY[fam]
            rules = snap.chains.get((family, "nft", table, chain))
            if rules is None or pos > len(rules):
                consistent = False
                continue
            old = rules[pos - 1]
            ref = RuleRef(family, "nft", table, chain, pos, old.text, handle)
            rules[pos - 1] = ref
        else:
            ref = RuleRef(NFT_FAMILY.get(fam, 0), "nftables", table, chain, pos, text_, handle)
            # family-0 tables (inet, bridge, ...) are keyed "FAMILY TABLE" to keep them apart
            key_table = table if fam in NFT_FAMILY else f"{fam} {table}"
            snap.chains.setdefault((ref.family, "nftables", key_table, chain), []).append(ref)
        snap.handles[(fam, table, chain, handle)] = ref
    # every iptables-nft rule must have got its handle
    for (family, backend, table, chain), rules in snap.chains.items():
        if backend == "nft" and any(r.handle is None for r in rules):
            consistent = False
    return snap, consistent
