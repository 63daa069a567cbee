"""Bad input to `ipdbg rules`: one clear line, a documented exit code, and the
ruleset byte-identical (iptables-save of both backends, both families, before and
after). The CLI runs as a subprocess against a lab netns.
"""

import os
import subprocess
import sys

import pytest

from ipdbg import errors
from ipdbg.lab import Lab

USAGE, NOT_FOUND, PRIV = errors.EXIT_USAGE, errors.EXIT_NOT_FOUND, errors.EXIT_PRIVILEGE

RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j LOGDROP
-A LOGDROP -j LOG --log-prefix "drop: "
-A LOGDROP -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -j MASQUERADE
COMMIT
"""
RULES6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s 2001:db8::1/128 -j DROP
COMMIT
"""

# (argv after `ipdbg rules --netns NS --backend B`, stdin, exit code)
CASES = [
    (["-t", "bogus", "-L"], None, USAGE),
    (["-t", "bogus", "-A", "INPUT", "-j", "ACCEPT"], None, USAGE),
    (["-L", "NOCHAIN"], None, NOT_FOUND),
    (["-S", "NOCHAIN"], None, NOT_FOUND),
    (["-A", "NOCHAIN", "-j", "ACCEPT"], None, NOT_FOUND),
    (["-I", "NOCHAIN", "1", "-j", "ACCEPT"], None, NOT_FOUND),
    (["-t", "raw", "-A", "INPUT", "-j", "ACCEPT"], None, NOT_FOUND),
    (["-D", "INPUT", "99"], None, USAGE),
    (["-R", "INPUT", "4", "-j", "DROP"], None, USAGE),
    (["-I", "INPUT", "5", "-j", "DROP"], None, USAGE),
    (["-D", "INPUT", "0"], None, USAGE),
    (["-D", "INPUT", "-1"], None, USAGE),
    (["-R", "INPUT", "abc", "-j", "DROP"], None, USAGE),
    (["-R", "INPUT", "1"], None, USAGE),
    (["-I", "INPUT", "1"], None, USAGE),
    (["-A", "INPUT"], None, USAGE),
    (["-D", "INPUT", "1", "2"], None, USAGE),
    (["-A", "INPUT", "-j", "NOPE"], None, USAGE),
    (["-A", "INPUT", "-g", "NOCHAIN"], None, USAGE),
    (["-A", "INPUT", "-m", "nope", "-j", "ACCEPT"], None, USAGE),
    (["-A", "INPUT", "-p", "tcp", "--dport", "99999", "-j", "ACCEPT"], None, USAGE),
    (["-A", "INPUT", "-p", "tcp", "--dport", "80:99999", "-j", "ACCEPT"], None, USAGE),
    (["-A", "INPUT", "-p", "udp", "--sport", "-1", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-s", "10.0.0.300", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-s", "10.0.0.0/33", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-d", "not_an_address", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP"], None, USAGE),
    (["-6", "-A", "INPUT", "-s", "10.0.0.1", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-p", "nosuchproto", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "--bogus", "-j", "ACCEPT"], None, USAGE),
    (["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT", "extra"], None, USAGE),
    (["-A", "INPUT", "-j", "REJECT", "--reject-with", "nope"], None, USAGE),
    (["-A", "INPUT", "-m", "conntrack", "--ctstate", "BOGUS", "-j", "ACCEPT"], None, USAGE),
    (["-A", "INPUT", "-p", "tcp", "--tcp-flags", "BOGUS", "SYN", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-j", "LOG", "--log-level", "99"], None, USAGE),
    (["-A", "INPUT", "-m", "limit", "--limit", "5/fortnight", "-j", "ACCEPT"], None, USAGE),
    (["-t", "mangle", "-A", "INPUT", "-j", "MARK", "--set-mark", "nope"], None, USAGE),
    (["-t", "nat", "-A", "POSTROUTING", "-j", "DROP"], None, USAGE),
    (["-A", "INPUT", "-i"], None, USAGE),
    (["-A", "INPUT", "-j", "ACCEPT", "!"], None, USAGE),
    (["-A", "INPUT", "-m", "comment", "--comment", "a\nCOMMIT", "-j", "ACCEPT"], None, USAGE),
    (["-P", "INPUT", "REJECT"], None, USAGE),
    (["-P", "NOCHAIN", "DROP"], None, NOT_FOUND),
    (["-P", "LOGDROP", "DROP"], None, USAGE),
    (["-N", "INPUT"], None, USAGE),
    (["-N", "LOGDROP"], None, USAGE),
    (["-N", "bad name"], None, USAGE),
    (["-N", "A" * 29], None, USAGE),
    (["-X", "INPUT"], None, USAGE),
    (["-X", "NOCHAIN"], None, NOT_FOUND),
    (["-X", "LOGDROP"], None, USAGE),  # still referenced and not empty
    (["-F", "NOCHAIN"], None, NOT_FOUND),
    (["-Z", "NOCHAIN"], None, NOT_FOUND),
    (["-Z", "INPUT", "9"], None, USAGE),
    (["-E", "NOCHAIN", "X"], None, NOT_FOUND),
    (["-E", "LOGDROP", "INPUT"], None, USAGE),
    (["-D", "INPUT", "-s", "10.9.9.9", "-j", "DROP"], None, NOT_FOUND),
    (["-L", "INPUT", "-D", "INPUT", "1"], None, USAGE),
    ([], None, USAGE),
    (["-L", "--bogus"], None, USAGE),
    (["--netns", "/nonexistent/netns", "-L"], None, NOT_FOUND),
    (["--netns", "ipdbg-no-such-netns", "-L"], None, NOT_FOUND),
    (["--backend", "bogus", "-L"], None, USAGE),
    (["-o", "yaml", "-L"], None, USAGE),
    (["--batch", "/nonexistent/batch.txt"], None, NOT_FOUND),
    (["--batch", "-"], "-A INPUT -j ACCEPT\n-A INPUT -j NOPE\n", USAGE),
    (["--batch", "-"], "-A INPUT -j ACCEPT\n-L\n", USAGE),
    (["--batch", "-"], "-A INPUT -j ACCEPT\n-D INPUT 99\n", USAGE),
    (["--batch", "-"], "-A INPUT -j ACCEPT\n-A INPUT -s 1.2.3 -j DROP\n", USAGE),
    (["--batch", "-"], "-I INPUT 1 -j ACCEPT\n-t nat -A POSTROUTING -p tcp --nope\n", USAGE),
    (["--batch", "-"], "-A INPUT -m comment --comment 'unclosed\n", USAGE),
    (["--batch", "-"], "# nothing\n\n", USAGE),
    (["--batch", "-", "-A", "INPUT", "-j", "ACCEPT"], "-A INPUT -j ACCEPT\n", USAGE),
    (["-6", "-A", "INPUT", "-s", "2001:db8::/129", "-j", "DROP"], None, USAGE),
    (["-6", "-D", "INPUT", "2"], None, USAGE),
    (["-6", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP"], None, USAGE),
]

SAVES = [f"{fam}-{b}-save" for fam in ("iptables", "ip6tables") for b in ("nft", "legacy")]


def _id(case):
    argv, stdin, _ = case
    return (" ".join(argv) + (" <" + stdin.replace("\n", "|") if stdin else ""))[:60] or "(none)"


@pytest.fixture(scope="module")
def host():
    with Lab(prefix="tbad") as lab:
        h = lab.add_host("bad")
        for b in ("nft", "legacy"):
            h.run([f"iptables-{b}-restore"], input=RULES)
            h.run([f"ip6tables-{b}-restore"], input=RULES6)
        yield h


def read_all(host):
    out = {}
    for save in SAVES:
        text = host.run([save, "-c"]).stdout
        # iptables-save's "# Generated ... on DATE" lines carry the time
        out[save] = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    return out


def run_ipdbg(argv, stdin=None, user=None):
    cmd = [sys.executable, "-m", "ipdbg.cli", "rules"] + argv
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def check_one_error(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("ipdbg: error: ") and len(lines[0]) > len("ipdbg: error: ") + 5
    assert lines[1].startswith("  hint: ") and len(lines[1]) > len("  hint: ") + 5
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_at_least_50_bad_inputs():
    assert len(CASES) >= 50


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_input(host, backend, case):
    argv, stdin, code = case
    before = read_all(host)
    netns = [] if any(a == "--netns" for a in argv) else ["--netns", host.netns]
    r = run_ipdbg(netns + ["--backend", backend] + argv, stdin)
    check_one_error(r, code)
    assert read_all(host) == before


def test_without_root_names_the_missing_capability(host):
    before = read_all(host)
    for backend, caps in (("nft", "CAP_NET_ADMIN"), ("legacy", "CAP_NET_ADMIN, CAP_NET_RAW")):
        r = run_ipdbg(["--backend", backend, "-D", "INPUT", "1"], user="65534")
        check_one_error(r, PRIV)
        assert f"needs {caps} (missing)" in r.stderr
    assert read_all(host) == before
