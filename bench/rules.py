"""Benchmark of `ipdbg rules` against the iptables CLI; writes the "rules" section of
bench/RESULTS.md.

Everything runs in lab namespaces (never the root namespace's rules), for both
backends, each measure interleaved (iptables, ipdbg, iptables, ipdbg, ...) in one
run; medians and ratios ipdbg / iptables:

1. `-L INPUT -n -v --line-numbers` of a 20,000-rule chain          target <= 1.0
2. insert, replace, delete at line 10,000 of that chain            target <= 1.2
3. 1,000 edits (400 -A, 300 -I N, 300 -D N) as one `--batch FILE`
   against 1,000 separate `iptables` calls (speed-up)             target >= 20

Both sides run through `nsenter --net=...` (ipdbg does so for --netns) and both
print to a pipe that is read. Final chains of the batch measure are compared.

    sudo .venv/bin/python bench/rules.py [--rounds 7] [--batch-rounds 3] [--no-write] [--only-list]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ipdbg.lab import Lab  # noqa: E402
from common import write_section  # noqa: E402

IPDBG = [os.path.join(ROOT, ".venv", "bin", "ipdbg")]
if not os.path.exists(IPDBG[0]):
    IPDBG = [sys.executable, "-m", "ipdbg.cli"]
PYTHON = os.path.join(os.path.dirname(IPDBG[0]), "python") if IPDBG[0].endswith("ipdbg") else sys.executable
BIG = 20_000
LINE = 10_000
BACKENDS = ("nft", "legacy")


# ipdbg runs as an installed tool would: with its bytecode cached (this work tree's
# environment sets PYTHONDONTWRITEBYTECODE=1, which would recompile every module at
# every start); the cache goes to a temporary directory, not the work tree.
PYCACHE = tempfile.mkdtemp(prefix="ipdbg-bench-pycache-")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = PYCACHE


def timed(argv, input=None) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=ENV)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr}")
    return dt


def big_chain() -> str:
    lines = ["*filter"]
    for i in range(BIG):
        lines.append(f"-A INPUT -s 10.{i // 65536 + 64}.{(i // 256) % 256}.{i % 256}/32 -p tcp "
                     f"-m tcp --dport {i % 60000 + 1} -j ACCEPT")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ipt(host, backend, *args):
    return host.argv([f"iptables-{backend}", "-w", *args])


def ipd(host, backend, *args):
    return IPDBG + ["rules", "--netns", host.netns, "--backend", backend, *args]


def bench_big(host, backend, rounds, only_list=False):
    host.run([f"iptables-{backend}-restore"], input=big_chain())
    res = {k: ([], []) for k in ("list", "insert", "replace", "delete")}
    res["startup"] = []  # ipdbg's interpreter alone: `python -c pass`, the floor of any command
    rule = ["-s", "10.250.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", "4242", "-j", "DROP"]
    rule2 = ["-s", "10.250.0.2/32", "-j", "ACCEPT"]
    flags = ["-L", "INPUT", "-n", "-v", "--line-numbers"]
    # same output first
    a = subprocess.run(ipt(host, backend, *flags), capture_output=True, text=True).stdout
    b = subprocess.run(ipd(host, backend, *flags), capture_output=True, text=True, env=ENV).stdout
    same_output = a == b
    for _ in range(rounds):
        res["startup"].append(timed([PYTHON, "-c", "pass"]))
        for side, mk in ((0, ipt), (1, ipd)):
            res["list"][side].append(timed(mk(host, backend, *flags)))
        if only_list:
            continue
        for side, mk in ((0, ipt), (1, ipd)):
            res["insert"][side].append(timed(mk(host, backend, "-I", "INPUT", str(LINE), *rule)))
        for side, mk in ((0, ipt), (1, ipd)):
            res["replace"][side].append(timed(mk(host, backend, "-R", "INPUT", str(LINE), *rule2)))
        for side, mk in ((0, ipt), (1, ipd)):
            res["delete"][side].append(timed(mk(host, backend, "-D", "INPUT", str(LINE))))
    n = len([ln for ln in host.run([f"iptables-{backend}-save"]).stdout.splitlines()
             if ln.startswith("-A INPUT")])
    assert n == BIG, f"{backend}: chain has {n} rules after the edits, expected {BIG}"
    host.run([f"iptables-{backend}", "-F", "INPUT"])
    return res, same_output


def batch_commands(chain: str, seed: int = 7) -> list[list[str]]:
    rnd = random.Random(seed)
    cmds, size = [], 0
    for i in range(1000):
        kind = "A" if i < 100 else rnd.choice("AAAAIIIDDD")
        if kind == "D" and size < 2:
            kind = "A"
        if kind == "A":
            cmds.append(["-A", chain, "-s", f"10.{100 + i // 250}.{i % 250}.1/32", "-j", "ACCEPT"])
            size += 1
        elif kind == "I":
            cmds.append(["-I", chain, str(rnd.randint(1, size + 1)), "-d",
                         f"203.0.113.{i % 250}/32", "-j", "DROP"])
            size += 1
        else:
            cmds.append(["-D", chain, str(rnd.randint(1, size))])
            size -= 1
    return cmds


def bench_batch(host, backend, rounds):
    seq, one = [], []
    finals = []
    for r in range(rounds):
        for side in (0, 1):
            chain = "BENCHA" if side == 0 else "BENCHB"
            host.run([f"iptables-{backend}", "-N", chain])
            cmds = batch_commands(chain)
            if side == 0:
                t = time.perf_counter()
                for c in cmds:
                    p = subprocess.run(ipt(host, backend, *c), capture_output=True)
                    if p.returncode:
                        raise SystemExit(f"iptables {' '.join(c)} failed: {p.stderr}")
                seq.append(time.perf_counter() - t)
            else:
                with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
                    f.write("\n".join(" ".join(c) for c in cmds) + "\n")
                try:
                    one.append(timed(ipd(host, backend, "--batch", f.name)))
                finally:
                    os.unlink(f.name)
            rules = [ln.split(" ", 2)[2] for ln in host.run([f"iptables-{backend}-save"]).stdout.splitlines()
                     if ln.startswith(f"-A {chain} ")]
            finals.append(rules)
            host.run([f"iptables-{backend}", "-F", chain])
            host.run([f"iptables-{backend}", "-X", chain])
    same = all(f == finals[0] for f in finals)
    return seq, one, same


def md(x):
    return statistics.median(x)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch-rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only-list", action="store_true",
                    help="measure only -L (no edits, no batch); implies --no-write")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/rules.py needs root (it builds network namespaces)", file=sys.stderr)
        return 4
    rows, brow = [], []
    with Lab(prefix="brules") as lab:
        for backend in BACKENDS:
            host = lab.add_host(f"big{backend}")
            res, same = bench_big(host, backend, args.rounds, args.only_list)
            for k, target in (("list", 1.0), ("insert", 1.2), ("replace", 1.2), ("delete", 1.2)):
                if args.only_list and k != "list":
                    continue
                a, b = md(res[k][0]), md(res[k][1])
                rows.append((backend, k, a, b, b / a, target, same if k == "list" else None,
                             (md(res["startup"]) + a) / a))
            if args.only_list:
                continue
            bhost = lab.add_host(f"batch{backend}")
            seq, one, fsame = bench_batch(bhost, backend, args.batch_rounds)
            brow.append((backend, md(seq), md(one), md(seq) / md(one), fsame))
            print(f"{backend}: done", file=sys.stderr)
    what = {"list": f"-L INPUT -n -v --line-numbers ({BIG:,} rules)",
            "insert": f"-I INPUT {LINE:,} RULE", "replace": f"-R INPUT {LINE:,} RULE",
            "delete": f"-D INPUT {LINE:,}"}
    lines = [
        "## rules",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S')} by `bench/rules.py`, kernel {os.uname().release}, "
        f"iptables 1.8.9; {args.rounds} interleaved rounds (iptables, ipdbg, iptables, ...), medians; "
        "both through `nsenter --net` into a lab netns; ipdbg with its bytecode cached "
        "(as installed; not recompiled at each start).",
        "",
        "\"start-up floor\": (Python's start-up alone, `python -c pass` of ipdbg's venv, measured "
        "in the same rounds, + the iptables command) / the iptables command: what a Python tool "
        "that had no work of its own left would still cost.",
        "",
        "| backend | command | iptables | ipdbg | ratio ipdbg/iptables | target | met | start-up floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, k, a, b, r, target, same, floor in rows:
        note = "" if same is None else (" (output identical)" if same else " (OUTPUT DIFFERS)")
        lines.append(f"| {backend} | `{what[k]}`{note} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | "
                     f"{r:.2f} | <= {target} | {'yes' if r <= target else 'no'} | {floor:.2f} |")
    lines += ["", f"1,000 edits (400 -A, 300 -I N, 300 -D N; {args.batch_rounds} interleaved rounds):", "",
              "| backend | 1,000 iptables calls | one `ipdbg rules --batch` | speed-up | target | met | same final chain |",
              "|---|---|---|---|---|---|---|"]
    for backend, s, o, sp, fsame in brow:
        lines.append(f"| {backend} | {s:.2f} s | {o * 1000:.0f} ms | {sp:.1f}x | >= 20 | "
                     f"{'yes' if sp >= 20 else 'no'} | {'yes' if fsame else 'NO'} |")
    text = "\n".join(lines) + "\n"
    shutil.rmtree(PYCACHE, ignore_errors=True)
    print(text)
    if not (args.no_write or args.only_list):
        write_section("rules", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
