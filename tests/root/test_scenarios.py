"""CI replay of the scenario library: every scenarios/*.yaml, end to end, as root.

Each file is one case: the lab is built, the rules applied, the traffic sent and
the verdicts checked with why-dropped's machinery (ipdbg.investigate). A failing
expectation fails the case with the runner's own explanation.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipdbg.scenario.runner import run_scenario
from ipdbg.scenario.schema import parse_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _children(pid: int) -> set[int]:
    out = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario(path):
    sc = parse_scenario(path.read_text(), str(path))
    before = _children(os.getpid())
    res = run_scenario(sc)
    # The lab is gone: no namespace holder of ours is left behind.
    assert _children(os.getpid()) <= before
    lines = [f"{path.name}: {res.error}"] if res.error else []
    for item in res.items:
        for problem in item.problems:
            lines.append(f"{path.name}:{item.traffic.line}: {item.traffic.describe()}: {problem}")
    assert res.ok, "\n".join(lines)


FAILING = """\
# Reproduces: nothing; a scenario whose expectation is wrong on purpose.
name: wrong-expectation
hosts:
  client: {addr: 10.98.0.2/24}
  server: {addr: 10.98.0.10/24, listen: [tcp/80]}
links: [[client, server]]
traffic: {from: client, to: server, proto: tcp, port: 80}
expect: {verdict: dropped}
"""


def test_failed_expectation_exits_9_with_a_table(tmp_path):
    f = tmp_path / "wrong.yaml"
    f.write_text(FAILING)
    proc = subprocess.run([sys.executable, "-m", "ipdbg.cli", "scenario", "run", str(f)],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 9, proc.stdout + proc.stderr
    assert "wrong-expectation" in proc.stdout and "FAIL" in proc.stdout
    assert "expected dropped, seen delivered" in proc.stdout
    assert "ipdbg: error: 1 of 1 scenario(s) failed" in proc.stderr


SLOW = """\
# Reproduces: nothing; 20 dropped connects (0.5 s each) to be interrupted.
name: slow
hosts:
  client: {addr: 10.98.1.2/24}
  server: {addr: 10.98.1.10/24}
links: [[client, server]]
rules:
  server: |
    *filter
    -A INPUT -p tcp -j DROP
    COMMIT
traffic: {from: client, to: server, proto: tcp, port: 80, count: 20}
expect: {verdict: dropped}
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_tears_the_lab_down(tmp_path, sig):
    # A long scenario, stopped by a signal while its lab exists: every host goes.
    f = tmp_path / "slow.yaml"
    f.write_text(SLOW)
    proc = subprocess.Popen([sys.executable, "-m", "ipdbg.cli", "scenario", "run", str(f)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    holders: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(holders) < 2:
        holders = {c for c in _children(proc.pid)
                   if open(f"/proc/{c}/cmdline").read().startswith("sleep")}
        time.sleep(0.05)
    assert len(holders) == 2, "the lab was never built"
    time.sleep(1.0)  # inside the traffic/trace phase
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    for pid in holders:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_refused_rules_fail_the_scenario_at_their_line(tmp_path):
    f = tmp_path / "badrules.yaml"
    f.write_text(FAILING.replace("traffic:", "rules:\n  server:\n    backend: legacy\n"
                                 "    iptables: |\n      *filter\n"
                                 "      -A INPUT -j NOSUCHTARGET\n      COMMIT\ntraffic:"))
    proc = subprocess.run([sys.executable, "-m", "ipdbg.cli", "scenario", "run", str(f)],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 9, proc.stdout + proc.stderr
    # line 12 of the file is "-A INPUT -j NOSUCHTARGET"
    assert f.read_text().splitlines()[11].strip() == "-A INPUT -j NOSUCHTARGET"
    assert f"{f}:12: rules for server: `iptables-legacy-restore` refused" in proc.stdout
