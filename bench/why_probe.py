"""Benchmark: time from `ipdbg why-dropped --probe` starting to its printed verdict.

The demo's lab (client 10.77.0.1, server 198.51.100.80:80, the seed OUTPUT DROP
rule in the client). Each round runs the CLI as a fresh process, as a user does,
and measures (1) wall time from spawn until the verdict is on stdout (the
process exits right after printing it), (2) the time ipdbg reports itself
(--debug: engines armed, verdict). Target: verdict within 2 s of start.
Appends a "why-dropped --probe" section to bench/RESULTS.md.

    sudo .venv/bin/python bench/why_probe.py [--rounds 10] [--no-write] [--baseline DIR]

--baseline DIR: also run the ipdbg of another source tree (e.g. an export of an
earlier commit, with its BPF object built), interleaved round by round with
this one, and print both side by side.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ipdbg import traffic  # noqa: E402
from ipdbg.commands.demo import PORT, SEED_RULES, SERVER_IP, build_demo_lab  # noqa: E402
from ipdbg.lab import Lab  # noqa: E402
from common import write_section  # noqa: E402

TARGET_S = 2.0
DEBUG_LINE = re.compile(r"engines ready after ([\d.]+) s, verdict after ([\d.]+) s")


def one_round(client, tree: str | None = None) -> dict:
    args = ["--debug", "why-dropped", "--dst", f"{SERVER_IP}:{PORT}", "--probe", "--netns", client.netns]
    env = None
    if tree is None:
        argv = [os.path.join(ROOT, ".venv", "bin", "ipdbg")] + args
    else:  # the same interpreter, that tree's package first on the path
        argv = [os.path.join(ROOT, ".venv", "bin", "python"), "-m", "ipdbg.cli"] + args
        env = dict(os.environ, PYTHONPATH=tree)
    with tempfile.TemporaryFile("w+") as errf:  # --debug writes libbpf's log: not a pipe
        t0 = time.monotonic()
        # (cwd: `python -m` puts the current directory before PYTHONPATH)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True, env=env, cwd=tree)
        first = p.stdout.readline()  # the DROPPED line
        t_line = time.monotonic() - t0
        rest = p.stdout.read()
        p.wait(timeout=30)
        t_exit = time.monotonic() - t0
        errf.seek(0)
        err = errf.read()
    m = DEBUG_LINE.search(err)
    return {"ok": p.returncode == 0 and first.startswith("DROPPED") and "rule     filter/OUTPUT line 1" in rest,
            "line": t_line, "exit": t_exit,
            "ready": float(m.group(1)) if m else float("nan"),
            "verdict": float(m.group(2)) if m else float("nan")}


ENTER_SNIPPET = """
import statistics, sys, time
from ipdbg.bpf.engine import DropMonitor
from ipdbg.filters import build_filter
ts = []
for _ in range(10):
    t = time.perf_counter()
    with DropMonitor(build_filter(dst="203.0.113.7:7")):
        ts.append(time.perf_counter() - t)
print(statistics.median(ts), ts[0])
"""


def measure_enter(tree: str | None) -> tuple[float, float]:
    """(median, first) of 10 DropMonitor.__enter__ in one fresh process of ``tree``
    (matching nothing: 203.0.113.7:7 is never sent to)."""
    env = dict(os.environ, PYTHONPATH=tree or ROOT)
    out = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c", ENTER_SNIPPET],
                         cwd=tree or ROOT, env=env, capture_output=True, text=True, check=True)
    med, first = out.stdout.split()
    return float(med), float(first)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--baseline", metavar="DIR", help="another source tree to run interleaved")
    ap.add_argument("--baseline-label", metavar="TEXT", help="what the baseline is, for the report")
    args = ap.parse_args()
    base: list[dict] = []
    with Lab(prefix="bwp") as lab:
        client, server = build_demo_lab(lab)
        with traffic.start_listener(server.netns, "tcp", PORT):
            client.run(["iptables-restore"], input=SEED_RULES)
            if args.baseline:
                one_round(client, args.baseline)  # compiles its bytecode once
            rounds = []
            for _ in range(args.rounds):
                rounds.append(one_round(client))
                if args.baseline:
                    base.append(one_round(client, args.baseline))
    ok = sum(r["ok"] for r in rounds)
    med = {k: statistics.median(r[k] for r in rounds) for k in ("line", "exit", "ready", "verdict")}
    worst = max(r["line"] for r in rounds)
    lines = [
        "## why-dropped --probe time to verdict (bench/why_probe.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S')}, kernel {os.uname().release}, {args.rounds} rounds "
        f"(a fresh `ipdbg` process each), {ok}/{args.rounds} named filter/OUTPUT line 1.",
        "",
        "| measure | median | worst | target | median / target |",
        "|---|---|---|---|---|",
        f"| spawn -> DROPPED line on stdout | {med['line']:.3f} s | {worst:.3f} s | <= {TARGET_S:g} s "
        f"| {med['line'] / TARGET_S:.2f} |",
        f"| spawn -> exit | {med['exit']:.3f} s | {max(r['exit'] for r in rounds):.3f} s | | |",
        f"| in-process: engines armed | {med['ready']:.3f} s | {max(r['ready'] for r in rounds):.3f} s | | |",
        f"| in-process: verdict | {med['verdict']:.3f} s | {max(r['verdict'] for r in rounds):.3f} s | | |",
        "",
    ]
    enters = [measure_enter(None)]
    if args.baseline:
        enters.append(measure_enter(args.baseline))
        enters.append(measure_enter(None))
        enters.append(measure_enter(args.baseline))
    mine = [e for i, e in enumerate(enters) if i % 2 == 0]
    theirs = [e for i, e in enumerate(enters) if i % 2 == 1]
    lines.append(f"`DropMonitor.__enter__` (bench/why_probe.py `measure_enter`: 10 in one process, median; "
                 f"first of the process): this tree {statistics.median(m for m, _ in mine) * 1e3:.0f} ms "
                 f"(first {statistics.median(f for _, f in mine) * 1e3:.0f} ms)"
                 + (f", baseline {statistics.median(m for m, _ in theirs) * 1e3:.0f} ms "
                    f"(first {statistics.median(f for _, f in theirs) * 1e3:.0f} ms)" if theirs else "")
                 + ".")
    lines.append("")
    if base:
        bmed = {k: statistics.median(r[k] for r in base) for k in ("line", "exit", "ready", "verdict")}
        lines += [
            f"Side by side with `--baseline` ({args.baseline_label or args.baseline}), rounds "
            "interleaved, medians; "
            f"baseline {sum(r['ok'] for r in base)}/{len(base)} named the rule:",
            "",
            "| measure | baseline | this tree | this / baseline |",
            "|---|---|---|---|",
        ]
        for k, label in (("line", "spawn -> DROPPED line"), ("ready", "in-process: engines armed"),
                         ("verdict", "in-process: verdict")):
            lines.append(f"| {label} | {bmed[k]:.3f} s | {med[k]:.3f} s | {med[k] / bmed[k]:.2f} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("why_probe", text)
    return 0 if ok == args.rounds and worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
