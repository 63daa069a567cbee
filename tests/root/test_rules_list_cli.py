"""`ipdbg rules -L` through the command line against the real `iptables -L`, for
chains big enough that iptables-save's text reaches ipdbg in many pieces of a real
pipe (iptables-nft: rendered while it prints, ipdbg.rules.fastlist; legacy:
iptables-legacy prints it), and for a small table (all at once)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

BACKENDS = ("nft", "legacy")


def ipdbg(host, backend, *args):
    return subprocess.run(
        [sys.executable, "-m", "ipdbg.cli", "rules", "--netns", host.netns,
         "--backend", backend, *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()})


def mixed_table(n: int, seed: int) -> str:
    """Mostly rules of the simple shape, with every kind of exception among them."""
    rnd = random.Random(seed)
    lines = ["*filter", ":INPUT ACCEPT [7:700]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":USER - [0:0]"]
    for i in range(n):
        chain = rnd.choice(("INPUT",) * 8 + ("USER", "OUTPUT"))
        src = f"-s 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32 " if rnd.random() < 0.8 else ""
        proto = rnd.choice(("tcp", "udp"))
        target = rnd.choice(("ACCEPT", "DROP", "USER", "RETURN"))
        if chain == "USER" and target == "USER":
            target = "ACCEPT"
        kind = rnd.random()
        if kind < 0.9:
            spec = f"{src}-p {proto} -m {proto} --dport {rnd.randrange(1, 65536)} -j {target}"
        elif kind < 0.95:
            spec = f"{src}-m conntrack --ctstate ESTABLISHED -j {target}"
        else:
            spec = f'{src}-p tcp -m tcp --dport 80 -m comment --comment "c {i}" -j {target}'
        counters = rnd.choice(("0:0", "3:180", "123456:98765432"))
        lines.append(f"[{counters}] -A {chain} {spec}")
    return "\n".join(lines + ["COMMIT", ""])


FLAGS = [["-L", "INPUT", "-n", "-v", "--line-numbers"], ["-L", "-n", "-v", "-x"],
         ["-L", "USER", "-n"], ["-L", "OUTPUT", "-n", "--line-numbers"]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", (4000, 12))
def test_listing_matches_iptables(lab, backend, n):
    host = lab.add_host(f"lst{n}")
    host.run([f"iptables-{backend}-restore", "-c"], input=mixed_table(n, seed=n))
    for flags in FLAGS:
        r = ipdbg(host, backend, *flags)
        assert r.returncode == 0, r.stderr
        assert r.stdout == host.run([f"iptables-{backend}", "-w"] + flags).stdout, flags
    r = ipdbg(host, backend, "-L", "NOSUCH", "-n")
    assert r.returncode == 3 and "chain 'NOSUCH' does not exist" in r.stderr
