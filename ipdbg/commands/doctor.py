"""`ipdbg doctor`: what this machine allows ipdbg to do, and which engine it would run.

The facts come from ``ipdbg.probe`` (real syscalls, never guesses); this module only
assembles and renders them. Other areas add their own sections through
``SECTION_PROVIDERS`` (see ``register_section``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import click
from tabulate import tabulate

from .. import probe
from ..errors import IpdbgError

# -- extra sections ----------------------------------------------------------
#
# A section provider is ``fn(facts: probe.HostFacts) -> list[dict]`` returning rows
# {"item", "status", "detail"} (status: ok / missing / refused / warning). It is called
# after the core probes; an IpdbgError it raises becomes one "warning" row.
# Example (e.g. from ipdbg/commands/drops.py or the engine):
#
#     from ipdbg.commands.doctor import register_section
#     register_section("attached drop programs", read_attached_drop_rows)
#
# Providers listed in BUILTIN_SECTIONS ("title", "module:function") are imported
# lazily, so doctor does not pay for modules it does not need.


@dataclass(frozen=True)
class SectionProvider:
    title: str
    fn: Callable[[probe.HostFacts], list[dict]]


SECTION_PROVIDERS: list[SectionProvider] = []
BUILTIN_SECTIONS: list[tuple[str, str]] = [
    ("drop programs (ipdbg drops)", "ipdbg.bpf.engine:read_drop_program_rows"),
]


def register_section(title: str, fn: Callable[[probe.HostFacts], list[dict]]) -> None:
    SECTION_PROVIDERS.append(SectionProvider(title, fn))


def _providers() -> list[SectionProvider]:
    import importlib

    out = list(SECTION_PROVIDERS)
    for title, target in BUILTIN_SECTIONS:
        module, _, attr = target.partition(":")
        out.append(SectionProvider(title, getattr(importlib.import_module(module), attr)))
    return out


def read_sections(facts: probe.HostFacts) -> dict[str, list[dict]]:
    sections = {}
    for p in _providers():
        try:
            sections[p.title] = p.fn(facts)
        except IpdbgError as exc:
            sections[p.title] = [{"item": p.title, "status": probe.WARNING, "detail": exc.message}]
    return sections


# -- pure: report and rendering ----------------------------------------------


TIER_TEXT = {
    "kprobe": "kprobe: exact skb join, path trace (kprobes + tp_btf)",
    "fentry": "fentry: exact skb join (fentry + tp_btf)",
    "tracepoint": "tracepoint: tp_btf/kfree_skb + nftrace netlink, joined on the packet key",
}


def build_doctor_report(facts: probe.HostFacts, sections: dict[str, list[dict]] | None = None) -> dict:
    """The whole report as plain data (this is also the JSON output)."""
    tier = probe.select_tier(facts.probes)
    if tier is None:
        if any(r.step == "privileges" for r in facts.probes.values()):
            why = "not probed without CAP_BPF/CAP_PERFMON: run as root"
        else:
            why = "no tier available: needs BTF and tp_btf programs (kernel 5.5+)"
    else:
        why = TIER_TEXT[tier]
    p = facts.privileges
    return {
        "tier": tier,
        "tier_detail": why,
        "kernel": facts.kernel_release,
        "root": bool(p and p.is_root),
        "capabilities": dict(p.caps) if p else {},
        "items": probe.build_report_rows(facts),
        "probes": {name: r.to_dict() for name, r in facts.probes.items()},
        "btf": {
            "present": facts.btf_present,
            "types": facts.btf_types,
            "parse_seconds": facts.btf_parse_seconds,
            "drop_reasons": facts.drop_reasons,
            "netfilter_drop": facts.netfilter_drop_reason,
            "kfree_skb": facts.kfree_skb,
        },
        "iptables": {
            "version": facts.iptables_version,
            "backend": facts.iptables_backend,
            "rule_counts": facts.rule_counts,
        },
        "nft_version": facts.nft_version,
        "libbpf_version": facts.libbpf_version,
        "libnftables": facts.libnftables,
        "nf_log": facts.nf_log,
        "sections": sections or {},
    }


def format_doctor_text(report: dict) -> str:
    lines = [f"engine tier: {report['tier'] or 'none'}  ({report['tier_detail']})", ""]
    table = [(r["item"], r["status"], r["detail"]) for r in report["items"]]
    lines.append(tabulate(table, headers=["item", "status", "detail"], tablefmt="simple"))
    for title, rows in report["sections"].items():
        lines += ["", f"{title}:"]
        if rows:
            lines.append(tabulate([(r["item"], r["status"], r["detail"]) for r in rows],
                                  headers=["item", "status", "detail"], tablefmt="simple"))
        else:
            lines.append("  (none)")
    return "\n".join(lines)


# -- command -----------------------------------------------------------------


@click.command("doctor")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Human table or JSON.")
def doctor(output):
    """Show what this machine allows ipdbg to do, and which engine tier it would use.

    Loads and attaches a do-nothing BPF program for each mechanism (tp_btf, raw_tp,
    tracepoint, fentry, kprobe) and removes it at once; reads versions of iptables,
    nft, libbpf and libnftables. Without root it still runs and says what it could
    not probe.

    \b
    Examples:
      ipdbg doctor
      ipdbg doctor -o json | jq .tier
    """
    facts = probe.read_host_facts()
    report = build_doctor_report(facts, read_sections(facts))
    if output == "json":
        click.echo(json.dumps(report, indent=2, sort_keys=False))
    else:
        click.echo(format_doctor_text(report))
