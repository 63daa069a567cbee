"""`ipdbg rules` edits against the real iptables-nft and iptables-legacy in a lab netns."""

import os
import subprocess
import sys

import pytest

from ipdbg import errors
from ipdbg.commands import rules as rules_cmd
from ipdbg.rules import backend as rb
from ipdbg.rules import nftedit

BACKENDS = ["nft", "legacy"]

BASE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m comment --comment "web \\"front\\" door" -j ACCEPT
-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j LOGDROP
-A LOGDROP -j LOG --log-prefix "drop: "
-A LOGDROP -j DROP
COMMIT
"""


def ipdbg(host, backend, *args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "ipdbg.cli", "rules", "--netns", host.netns,
         "--backend", backend, *args],
        capture_output=True, text=True, input=input, timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()})


def race_before_write(monkeypatch, fn):
    """Run ``fn`` just before ipdbg writes: before its iptables-restore batch, and on
    iptables-nft before its nf_tables transaction (the line-number path)."""
    real_restore, real_send = rb.apply_restore, nftedit._send_batch

    def racing_restore(*a, **kw):
        if not kw.get("test"):
            fn()
        return real_restore(*a, **kw)

    def racing_send(*a, **kw):
        fn()
        return real_send(*a, **kw)

    monkeypatch.setattr(rb, "apply_restore", racing_restore)
    monkeypatch.setattr(nftedit, "_send_batch", racing_send)


def chain(host, backend, name, family=4):
    save = "iptables" if family == 4 else "ip6tables"
    out = host.run([f"{save}-{backend}-save", "-t", "filter"]).stdout
    return [ln for ln in out.splitlines() if ln.startswith(f"-A {name} ")]


@pytest.fixture
def host(lab):
    return lab.add_host("edit")


def setup(host, backend):
    host.run([f"iptables-{backend}-restore"], input=BASE)
    return chain(host, backend, "INPUT")


@pytest.mark.parametrize("backend", BACKENDS)
def test_insert_replace_delete_by_line(host, backend):
    before = setup(host, backend)
    r = ipdbg(host, backend, "-I", "INPUT", "2", "-p", "tcp", "--dport", "20", "-j", "ACCEPT")
    assert r.returncode == 0, r.stderr
    now = chain(host, backend, "INPUT")
    assert now == before[:1] + ["-A INPUT -p tcp -m tcp --dport 20 -j ACCEPT"] + before[1:]

    r = ipdbg(host, backend, "-R", "INPUT", "2", "-s", "10.0.0.9", "-j", "DROP")
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == before[:1] + ["-A INPUT -s 10.0.0.9/32 -j DROP"] + before[1:]

    r = ipdbg(host, backend, "-D", "INPUT", "2")
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == before
    assert r.stdout == "" and r.stderr == ""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("line", [2, 4])
def test_delete_and_replace_one_of_two_identical_rules(host, backend, line):
    before = setup(host, backend)
    assert before[1] == before[3]
    r = ipdbg(host, backend, "-D", "INPUT", str(line))
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == before[: line - 1] + before[line:]
    setup_again = host.run([f"iptables-{backend}", "-F", "INPUT"])
    assert setup_again.returncode == 0
    before = setup(host, backend)[:5]
    r = ipdbg(host, backend, "-R", "INPUT", str(line), "-j", "RETURN")
    assert r.returncode == 0, r.stderr
    expected = list(before)
    expected[line - 1] = "-A INPUT -j RETURN"
    assert chain(host, backend, "INPUT")[:5] == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_quoted_comment_rule_deleted_by_line(host, backend):
    before = setup(host, backend)
    r = ipdbg(host, backend, "-D", "INPUT", "3")
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == before[:2] + before[3:]
    r = ipdbg(host, backend, "-I", "INPUT", "3", "-p", "tcp", "--dport", "80", "-m", "comment",
              "--comment", 'web "front" door', "-j", "ACCEPT")
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_dry_run_prints_the_batch_and_changes_nothing(host, backend):
    before = setup(host, backend)
    save_before = host.run([f"iptables-{backend}-save"]).stdout.split("\n", 1)[1]
    r = ipdbg(host, backend, "--dry-run", "-D", "INPUT", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("*filter\n-N IPDBG-") and r.stdout.endswith("COMMIT\n")
    assert host.run([f"iptables-{backend}-save"]).stdout.split("\n", 1)[1].split("\n# Completed")[0] == \
        save_before.split("\n# Completed")[0]
    # the printed batch is exactly what applying does
    host.run([f"iptables-{backend}-restore", "--noflush", "-w", "-c"], input=r.stdout)
    assert chain(host, backend, "INPUT") == before[:3] + before[4:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_from_stdin_and_file(host, backend, tmp_path):
    before = setup(host, backend)
    text = ("# one batch\n-A INPUT -s 10.1.0.1 -j ACCEPT\n-D INPUT 1\n"
            "-N EXTRA\n-A EXTRA -j RETURN\n-I INPUT 1 -j EXTRA\n"
            "-t nat -A POSTROUTING -o eth0 -j MASQUERADE\n")
    r = ipdbg(host, backend, "--batch", "-", input=text)
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == (["-A INPUT -j EXTRA"] + before[1:] +
                                             ["-A INPUT -s 10.1.0.1/32 -j ACCEPT"])
    assert chain(host, backend, "EXTRA") == ["-A EXTRA -j RETURN"]
    nat = host.run([f"iptables-{backend}-save", "-t", "nat"]).stdout
    assert "-A POSTROUTING -o eth0 -j MASQUERADE" in nat
    f = tmp_path / "b.txt"
    f.write_text("-D INPUT 1\n-F EXTRA\n-X EXTRA\n-P FORWARD DROP\n-Z\n")
    r = ipdbg(host, backend, "--batch", str(f))
    assert r.returncode == 0, r.stderr
    save = host.run([f"iptables-{backend}-save"]).stdout
    assert ":FORWARD DROP" in save and "EXTRA" not in save


@pytest.mark.parametrize("backend", BACKENDS)
def test_failing_batch_line_changes_nothing(host, backend):
    setup(host, backend)
    save_before = host.run([f"iptables-{backend}-save", "-t", "filter"]).stdout
    r = ipdbg(host, backend, "--batch", "-", input="-A INPUT -j ACCEPT\n-A INPUT -p tcp --dport 70 --nope -j DROP\n")
    assert r.returncode == errors.EXIT_USAGE, r.stderr
    assert "batch command 2" in r.stderr
    strip = lambda s: [ln for ln in s.splitlines() if not ln.startswith("#")]  # noqa: E731
    assert strip(host.run([f"iptables-{backend}-save", "-t", "filter"]).stdout) == strip(save_before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv6(host, backend):
    host.run([f"ip6tables-{backend}", "-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP"])
    r = ipdbg(host, backend, "-6", "-I", "INPUT", "1", "-s", "2001:db8::2", "-j", "ACCEPT")
    assert r.returncode == 0, r.stderr
    r = ipdbg(host, backend, "-6", "-D", "INPUT", "2")
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT", family=6) == ["-A INPUT -s 2001:db8::2/128 -j ACCEPT"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change", [
    ["-I", "INPUT", "1", "-s", "10.7.7.7", "-j", "ACCEPT"],  # a rule above: line 4 moves
    ["-D", "INPUT", "1"],  # a rule above goes
    ["-R", "INPUT", "4", "-s", "10.0.0.1", "-p", "tcp", "--dport", "23", "-j", "ACCEPT"],
    ["-D", "INPUT", "2"],  # the identical rule above line 4 goes
])
def test_conflict_when_the_chain_changes_between_read_and_apply(host, backend, change, monkeypatch):
    """Another process edits the chain after ipdbg read it: exit 5, nothing changed."""
    setup(host, backend)
    seen = {}

    def race():
        if "after_race" not in seen:
            host.run([f"iptables-{backend}", "-w"] + change)
            seen["after_race"] = chain(host, backend, "INPUT")

    race_before_write(monkeypatch, race)
    with pytest.raises(errors.ConflictError) as exc:
        rules_cmd.run(["--netns", host.netns, "--backend", backend, "-D", "INPUT", "4"])
    assert "no longer the one read" in exc.value.message
    # the racing edit happened, ipdbg's did not
    assert chain(host, backend, "INPUT") == seen["after_race"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_replace_conflict_leaves_the_race_winner(host, backend, monkeypatch):
    before = setup(host, backend)
    raced = []

    def race():
        if not raced:
            raced.append(host.run([f"iptables-{backend}", "-w", "-D", "INPUT", "1"]))

    race_before_write(monkeypatch, race)
    with pytest.raises(errors.ConflictError):
        rules_cmd.run(["--netns", host.netns, "--backend", backend, "-R", "INPUT", "3", "-j", "DROP"])
    assert chain(host, backend, "INPUT") == before[1:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_over_two_tables_is_put_back_when_the_second_conflicts(host, backend, monkeypatch,
                                                                     tmp_path):
    """iptables-restore commits table by table: when the nat part conflicts after
    the filter part was committed, filter is put back as it was read."""
    setup(host, backend)
    host.run([f"iptables-{backend}", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"])
    strip = lambda s: [ln for ln in s.splitlines() if not ln.startswith("#")]  # noqa: E731
    filter_before = strip(host.run([f"iptables-{backend}-save", "-c", "-t", "filter"]).stdout)
    real = rb.apply_restore
    seen = {}

    def racing(*a, **kw):
        if not kw.get("test"):
            host.run([f"iptables-{backend}", "-w", "-t", "nat", "-I", "POSTROUTING", "1", "-j", "RETURN"])
            seen["nat"] = strip(host.run([f"iptables-{backend}-save", "-t", "nat"]).stdout)
        return real(*a, **kw)

    monkeypatch.setattr(rb, "apply_restore", racing)
    with pytest.raises(errors.ConflictError):
        f = tmp_path / "two-tables.batch"
        f.write_text("-A INPUT -j ACCEPT\n-t nat -D POSTROUTING 1\n")
        rules_cmd.run(["--netns", host.netns, "--backend", backend, "--batch", str(f)])
    assert strip(host.run([f"iptables-{backend}-save", "-c", "-t", "filter"]).stdout) == filter_before
    assert strip(host.run([f"iptables-{backend}-save", "-t", "nat"]).stdout) == seen["nat"]



@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flags", [["-L", "-n", "-v", "--line-numbers"], ["-L", "INPUT", "-n"],
                                   ["-S"], ["-S", "INPUT", "-v"], ["-L", "-n", "-v", "-x"],
                                   ["-L", "INPUT", "2", "-n"], ["-S", "INPUT", "3"]])
def test_listing_is_iptables_own(host, backend, flags):
    setup(host, backend)
    host.run([f"iptables-{backend}", "-A", "OUTPUT", "-d", "198.51.100.80", "-p", "tcp", "-j", "DROP"])
    r = ipdbg(host, backend, *flags)
    assert r.returncode == 0, r.stderr
    assert r.stdout == host.run([f"iptables-{backend}", "-w"] + flags).stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_json_listing(host, backend):
    import json

    setup(host, backend)
    r = ipdbg(host, backend, "-S", "INPUT", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["backend"] == backend and doc["table"] == "filter"
    rules = doc["chains"][0]["rules"]
    assert [x["line"] for x in rules] == [1, 2, 3, 4, 5]
    assert rules[1]["rule"] == "-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT"
    assert rules[1]["parts"]["source"] == "10.0.0.1/32" and rules[1]["parts"]["target"] == "ACCEPT"
    assert {"packets", "bytes", "table", "chain"} <= set(rules[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_inserting_at_lines_it_adds(host, backend):
    """-I N where line N is a rule added earlier in the same batch (iptables-nft-restore
    alone fails on that: RULE_INSERT ENOENT)."""
    before = setup(host, backend)
    text = ("-A INPUT -s 10.5.0.1 -j ACCEPT\n-I INPUT 6 -s 10.5.0.2 -j ACCEPT\n"
            "-I INPUT 7 -s 10.5.0.3 -j ACCEPT\n")
    r = ipdbg(host, backend, "--batch", "-", input=text)
    assert r.returncode == 0, r.stderr
    assert chain(host, backend, "INPUT") == before + [
        "-A INPUT -s 10.5.0.2/32 -j ACCEPT", "-A INPUT -s 10.5.0.3/32 -j ACCEPT",
        "-A INPUT -s 10.5.0.1/32 -j ACCEPT"]


def test_named_netns_and_auto_backend(host):
    """--netns NAME (an `ip netns` name) and --backend auto (the system's iptables)."""
    import json

    name = f"ipdbg-rules-t{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "iptables-nft", "-A", "INPUT", "-s",
                        "10.6.0.1", "-j", "DROP"], check=True)
        r = subprocess.run([sys.executable, "-m", "ipdbg.cli", "rules", "--netns", name,
                            "-S", "INPUT", "-o", "json"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=60)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        real = os.path.realpath("/usr/sbin/iptables")
        assert doc["backend"] == ("legacy" if "legacy" in real else "nft")
        if doc["backend"] == "nft":
            assert doc["chains"][0]["rules"][0]["rule"] == "-A INPUT -s 10.6.0.1/32 -j DROP"
    finally:
        subprocess.run(["ip", "netns", "del", name])
