"""Nothing of ipdbg's tracing survives it: normal exit, Ctrl-C, SIGTERM, SIGKILL at any moment.

A tracing process (python -m ipdbg.nftrace.cli_debug) is killed at random moments
(during set-up, once armed, while events flow) at least 20 times; after each, the
lab netns's ruleset (nft, iptables-nft, iptables-legacy, IPv4 and IPv6) and its
nf_log bindings must be what they were before, and no ipdbg table may remain.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IPT = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:USR - [0:0]
-A OUTPUT -p icmp -j USR
-A USR -d 10.61.0.9/32 -j DROP
COMMIT
"""
LEGACY = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p udp --dport 9 -j DROP
COMMIT
"""
NFT = """table inet mine {
  chain c { type filter hook input priority 10; policy accept;
    tcp dport 22 accept
  }
}
"""

_COUNTERS = re.compile(r"\[\d+:\d+\]|counter packets \d+ bytes \d+")


def state(host) -> str:
    """Everything ipdbg could leave behind in ``host``, with traffic counters blanked."""
    parts = []
    for argv in (["nft", "list", "ruleset"], ["iptables-nft-save"], ["ip6tables-nft-save"],
                 ["iptables-legacy-save"], ["ip6tables-legacy-save"],
                 ["cat", "/proc/sys/net/netfilter/nf_log/2", "/proc/sys/net/netfilter/nf_log/10"]):
        out = host.run(argv).stdout
        # iptables-save's comment lines carry the date; counters move with the traffic we send
        lines = [_COUNTERS.sub("[counters]", l) for l in out.splitlines() if not l.startswith("#")]
        parts.append(" ".join(argv) + "\n" + "\n".join(lines))
    return "\n".join(parts)


def start_tracer(host, ready, dst="10.61.0.0/24"):
    argv = [sys.executable, "-m", "ipdbg.nftrace.cli_debug", "--netns", host.netns, "--dst", dst,
            "--legacy", "yes", "--ready-file", ready]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_exit(p, what: str) -> int:
    """The tracer's exit status; it must exit within 10 s of a signal (well under 1 s here)."""
    try:
        return p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()  # do not leave it tracing behind the failed test
        p.wait()
        raise AssertionError(f"{what}: the tracer did not exit within 10 s of the signal") from None


def reading_rules(pid: int) -> bool:
    """Is ``pid`` reading the rules (one of its iptables-save / nft list children alive)?"""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return False
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                cmd = f.read()  # empty for a zombie
        except OSError:
            continue
        if b"-save\0" in cmd or b"list\0ruleset" in cmd:
            return True
    return False


def wait_state(host, want, timeout=5.0):
    end = time.monotonic() + timeout
    got = state(host)
    while got != want and time.monotonic() < end:
        time.sleep(0.05)
        got = state(host)
    return got


def test_killed_at_random_moments_leaves_nothing(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.61.0.1/24", "10.61.0.2/24")
    a.run(["iptables-nft-restore"], input=IPT)
    a.run(["iptables-legacy-restore"], input=LEGACY)
    a.run(["nft", "-f", "-"], input=NFT)
    before = state(a)
    assert "nf_log_ipv4" in before and "ipdbg" not in before
    # Matching traffic all along, so that some kills land while events flow.
    a.popen(["ping", "-q", "-i", "0.01", "10.61.0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seed = int(os.environ.get("IPDBG_TEST_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    sigs = [signal.SIGKILL] * 14 + [signal.SIGTERM] * 4 + [signal.SIGINT] * 4 + [None] * 2
    rnd.shuffle(sigs)
    phases = {"setup": 0, "armed": 0}
    t_ready = None  # how long set-up takes here, measured by the first (armed) runs
    for i, sig in enumerate(sigs):
        ready = str(tmp_path / f"ready{i}")
        t0 = time.monotonic()
        p = start_tracer(a, ready)
        if sig is None or i % 2 == 0 or t_ready is None:  # armed: wait until tracing is on, then a bit
            end = time.monotonic() + 10
            while not os.path.exists(ready) and time.monotonic() < end and p.poll() is None:
                time.sleep(0.002)
            assert os.path.exists(ready), f"seed {seed}: tracer never armed: {p.stderr.read().decode()}"
            t_ready = min(t_ready or 1e9, time.monotonic() - t0)
            if sig is not None:
                assert "ipdbg_" in a.run(["nft", "list", "tables"]).stdout
            time.sleep(rnd.uniform(0, 0.4))
        else:  # anywhere in set-up: python start, guard start, nf_log bind, table creation
            time.sleep(rnd.uniform(0, t_ready))
        phases["armed" if os.path.exists(ready) else "setup"] += 1
        if sig is None:
            p.send_signal(signal.SIGTERM)  # the "normal exit" path of the tool: clean shutdown
        else:
            p.send_signal(sig)
        wait_exit(p, f"seed {seed}, kill {i} with {sig}")
        after = wait_state(a, before)
        assert after == before, f"seed {seed}, kill {i} with {sig}: state changed"
    assert phases["setup"] >= 4 and phases["armed"] >= 10, (seed, phases)


def test_normal_exit_after_duration_leaves_nothing(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.62.0.1/24", "10.62.0.2/24")
    a.run(["iptables-legacy-restore"], input=LEGACY)
    before = state(a)
    p = subprocess.run([sys.executable, "-m", "ipdbg.nftrace.cli_debug", "--netns", a.netns, "--proto", "udp",
                        "--duration", "0.3", "--count"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert '"lost": 0' in p.stdout
    assert state(a) == before  # our own restore, synchronous: no waiting


@pytest.mark.parametrize("phase", ["setup", "armed"])
def test_sigterm_while_reading_rules_ends_it(lab, tmp_path, phase):
    """SIGTERM raises Interrupted, an IpdbgError: it was swallowed as "cannot read its
    rules" (set-up) or as a failed snapshot refresh (armed: about once a second while
    legacy TRACE records come in), and the tracer ran on forever."""
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.63.0.1/24", "10.63.0.2/24")
    a.run(["iptables-legacy-restore"], input=LEGACY)
    before = state(a)
    a.popen(["ping", "-q", "-i", "0.01", "10.63.0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hits = 0  # signals sent while a read of the wanted phase ran (a read lasts a few ms)
    for i in range(10):
        ready = str(tmp_path / f"ready{i}")
        p = start_tracer(a, ready, "10.63.0.0/24")
        end = time.monotonic() + 10
        if phase == "armed":
            while not os.path.exists(ready) and time.monotonic() < end and p.poll() is None:
                time.sleep(0.002)
            assert os.path.exists(ready), p.stderr.read().decode()
        while not (reading := reading_rules(p.pid)) and time.monotonic() < end and p.poll() is None:
            time.sleep(0.0002)
        assert reading, f"run {i}: the tracer never read the rules"
        hits += os.path.exists(ready) == (phase == "armed")  # else a refresh: signal it all the same
        p.send_signal(signal.SIGTERM)
        assert wait_exit(p, f"{phase} run {i}") == 130, p.stderr.read().decode()
        assert wait_state(a, before) == before, f"{phase} run {i}: state changed"
        if hits == 3:
            break
    assert hits == 3, f"{phase}: only {hits} signals landed in a read of that phase"
