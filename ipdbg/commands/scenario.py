"""`ipdbg scenario run|check|list`: replay YAML firewall scenarios in namespaces."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from tabulate import tabulate

from ..errors import NotFoundError, ScenarioFailed, UsageError


def find_scenario_dir() -> Path:
    """scenarios/ of the checkout this package runs from ($IPDBG_SCENARIOS first)."""
    env = os.environ.get("IPDBG_SCENARIOS")
    candidates = [Path(env)] if env else []
    pkg = Path(__file__).resolve().parent.parent  # ipdbg/
    candidates += [pkg.parent / "scenarios", pkg / "scenarios", Path.cwd() / "scenarios"]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.yaml")):
            return c
    raise NotFoundError("no scenarios directory found",
                        "run from the ipdbg checkout, or set IPDBG_SCENARIOS=DIR")


def all_scenario_files() -> list[Path]:
    return sorted(find_scenario_dir().glob("*.yaml"))


def read_scenarios(paths):
    """Parse every file first: one bad file stops the run before any lab is built."""
    from ..scenario.schema import parse_scenario

    out = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise NotFoundError(f"{path}: {exc.strerror}",
                                "check the path; `ipdbg scenario list` shows the shipped ones") from None
        out.append(parse_scenario(text, str(path)))
    return out


def _files(files, all_) -> list:
    if all_ and files:
        raise UsageError("give scenario files or --all, not both")
    if all_:
        return all_scenario_files()
    if not files:
        raise UsageError("no scenario given", "give FILE... or --all (see `ipdbg scenario list`)")
    return list(files)


@click.group()
def scenario():
    """Replay firewall scenarios (YAML) in network namespaces.

    \b
    Examples:
      ipdbg scenario list
      ipdbg scenario check scenarios/output-drop-by-dst.yaml
      ipdbg scenario run scenarios/output-drop-by-dst.yaml
      ipdbg scenario run --all -o json
    The format: docs/scenarios.md.
    """


@scenario.command("list")
def list_cmd():
    """List the scenarios shipped in scenarios/ with what each reproduces."""
    rows = []
    for sc in read_scenarios(all_scenario_files()):
        rows.append((Path(sc.filename).name, sc.description.splitlines()[0] if sc.description else ""))
    click.echo(tabulate(rows, headers=["file", "reproduces"], tablefmt="plain"))


@scenario.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--all", "all_", is_flag=True, help="Every scenarios/*.yaml.")
def check_cmd(files, all_):
    """Validate scenario files without building anything."""
    scs = read_scenarios(_files(files, all_))
    for sc in scs:
        click.echo(f"ok  {sc.filename}  ({sc.name}: {len(sc.hosts)} hosts, "
                   f"{len(sc.traffic)} traffic)")


@scenario.command("run")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--all", "all_", is_flag=True, help="Run every scenarios/*.yaml.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Show every explanation and attempt.")
@click.pass_context
def run_cmd(ctx, files, all_, output, verbose):
    """Build each scenario's lab, send its traffic, check the verdicts.

    Exits 9 when any expectation is not met. Each lab is removed afterwards,
    also on Ctrl-C.
    """
    from ..privileges import CAP_NET_ADMIN, CAP_SYS_ADMIN, require_caps
    from ..scenario.runner import run_scenario

    scs = read_scenarios(_files(files, all_))
    require_caps([CAP_NET_ADMIN, CAP_SYS_ADMIN], "scenario run (namespaces, rules, tracing)")
    debug = bool((ctx.obj or {}).get("debug"))
    results = []
    progress = output == "text" and sys.stderr.isatty()
    for n, sc in enumerate(scs, 1):
        if progress:
            click.echo(f"[{n}/{len(scs)}] {sc.name} ...", err=True, nl=False)
        res = run_scenario(sc, debug=debug)
        results.append(res)
        if progress:
            click.echo(f" {'pass' if res.ok else 'FAIL'} ({res.seconds:.1f}s)", err=True)
        if output == "text" and verbose:
            click.echo(format_details(res))
    if output == "json":
        click.echo(json.dumps([r.to_json() for r in results], indent=2, default=str))
    else:
        click.echo(format_summary(results))
    failed = [r for r in results if not r.ok]
    if failed:
        raise ScenarioFailed(f"{len(failed)} of {len(results)} scenario(s) failed: "
                             + ", ".join(r.scenario.name for r in failed))


def format_summary(results) -> str:
    """One row per traffic item; the reasons for failures below the table."""
    rows, notes = [], []
    for r in results:
        if r.error is not None or not r.items:
            rows.append((r.scenario.name, "", "", "", "FAIL", f"{r.seconds:.1f}s"))
            notes.append(f"FAIL {r.scenario.name}: {r.error or 'no traffic was run'}")
            continue
        for n, item in enumerate(r.items):
            rows.append((r.scenario.name if n == 0 else "", item.traffic.describe(),
                         item.traffic.expect.describe(),
                         item.seen.describe() if item.seen else "-",
                         "pass" if item.ok else "FAIL",
                         f"{r.seconds:.1f}s" if n == 0 else ""))
            for p in item.problems:
                notes.append(f"FAIL {r.scenario.name} ({item.traffic.describe()}, "
                             f"{r.scenario.filename}:{item.traffic.line}): {p}")
    passed = sum(1 for r in results if r.ok)
    total_time = sum(r.seconds for r in results)
    table = tabulate(rows, headers=["scenario", "traffic", "expected", "seen", "result", "time"],
                     tablefmt="simple")
    out = [table, ""]
    out += notes + ([""] if notes else [])
    out.append(f"{passed}/{len(results)} scenarios passed in {total_time:.1f}s")
    return "\n".join(out)


def format_details(res) -> str:
    lines = [f"== {res.scenario.name} ({res.scenario.filename})"]
    for item in res.items:
        lines.append(f"  {item.traffic.describe()}: sent {', '.join(item.sent)}; "
                     f"through={item.through}")
        for e in item.explanations:
            lines.append("    " + json.dumps(e, default=str))
        for e in item.ignored:
            lines.append("    (ignored) " + json.dumps(e, default=str))
    if res.error:
        lines.append(f"  error: {res.error}")
    return "\n".join(lines)
