"""The iptables ruleset as plain dataclasses (pure).

Mirrors what ``iptables-save -c`` prints: tables, chains in save order, rules as
their save text (``spec``) plus counters, and ``RuleParts``, the spec split into
iptables' own fields (addresses as iptables-save writes them, matches with their
options, target with its options).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}


@dataclass(slots=True)
class Option:
    """One option of a match or target, e.g. ``! --dport 80`` -> ("--dport", ["80"], True)."""

    name: str
    values: list[str] = field(default_factory=list)
    negated: bool = False


@dataclass(slots=True)
class Match:
    """One ``-m NAME`` module with its options (``-p tcp`` saves as ``-m tcp`` too)."""

    name: str
    options: list[Option] = field(default_factory=list)

    def option(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@dataclass(slots=True)
class RuleParts:
    """A rule spec split into iptables' fields (values as iptables-save writes them)."""

    protocol: str | None = None
    protocol_negated: bool = False
    source: str | None = None
    source_negated: bool = False
    destination: str | None = None
    destination_negated: bool = False
    in_interface: str | None = None
    in_negated: bool = False
    out_interface: str | None = None
    out_negated: bool = False
    fragment: bool | None = None  # True: -f, False: ! -f, None: neither (IPv4 only)
    matches: list[Match] = field(default_factory=list)
    target: str | None = None
    target_kind: str = "none"  # "jump" (-j), "goto" (-g) or "none"
    target_options: list[Option] = field(default_factory=list)

    def negations(self) -> list[str]:
        """Names of the negated fields and options, e.g. ["source", "conntrack --ctstate"]."""
        out = [name for name, neg in (
            ("protocol", self.protocol_negated), ("source", self.source_negated),
            ("destination", self.destination_negated), ("in_interface", self.in_negated),
            ("out_interface", self.out_negated), ("fragment", self.fragment is False),
        ) if neg]
        for m in self.matches:
            out.extend(f"{m.name} {o.name}" for o in m.options if o.negated)
        return out


@dataclass
class Rule:
    """One rule: ``spec`` is the text iptables-save writes after ``-A CHAIN `` (no counters).

    ``parts`` is computed from ``spec`` on first use when not given (``parse_save``
    leaves it to then: listing 20,000 rules by line number, or with -S, never needs
    it). A spec that does not parse raises ``UsageError`` at that point. A copy with
    another spec needs ``parts=None`` (``dataclasses.replace(rule, spec=s, parts=None)``).
    """

    spec: str
    packets: int = 0
    bytes: int = 0
    parts: RuleParts = None  # type: ignore[assignment]  # see _rule_parts below
    family: int = field(default=4, repr=False, compare=False)


def _rule_parts(self: Rule) -> RuleParts:
    parts = self.__dict__.get("_parts")
    if parts is None:
        from .parse import parse_rule_spec  # parse imports model

        parts = self.__dict__["_parts"] = parse_rule_spec(self.spec, self.family)
    return parts


def _set_rule_parts(self: Rule, parts: RuleParts | None) -> None:
    self.__dict__["_parts"] = parts


# A property over the dataclass field: the generated __init__ assigns through it.
Rule.parts = property(_rule_parts, _set_rule_parts)  # type: ignore[assignment]


@dataclass
class Chain:
    name: str
    policy: str | None = None  # None for user-defined chains
    packets: int = 0
    bytes: int = 0
    rules: list[Rule] = field(default_factory=list)

    @property
    def builtin(self) -> bool:
        return self.policy is not None


@dataclass
class Table:
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)  # in iptables-save order


@dataclass
class Ruleset:
    family: int  # 4 or 6
    tables: dict[str, Table] = field(default_factory=dict)
    # iptables-nft-save's "# Table `T' ... use 'nft' tool" lines: tables that hold
    # rules or base chains iptables cannot show (listing them falls back to iptables).
    incompatible: dict[str, str] = field(default_factory=dict)
