"""iptables-nft edits by line number as one nf_tables transaction (ipdbg.rules.nftedit).

Each edit is made twice from the same ruleset: by `iptables-nft` in one lab netns
and by `ipdbg rules` in another. The results must be the same for iptables
(`iptables-nft-save`) and for nf_tables (`nft list table`, every expression), and
ipdbg must have taken the netlink path (its JSON says "netlink", not "batch").
"""

import json
import os
import subprocess
import sys

import pytest

from ipdbg import errors
from ipdbg.commands import rules as rules_cmd
from ipdbg.rules import nftedit, nftmsg

BASE4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
:WEB - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443 -m comment --comment "web in" -j WEB
-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -m limit --limit 5/sec -j ACCEPT
-A INPUT -j LOGDROP
-A LOGDROP -j LOG --log-prefix "drop: "
-A LOGDROP -j DROP
-A WEB -m mark --mark 0x1/0xff -j RETURN
-A WEB -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:8080
-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE
COMMIT
"""

BASE6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT
-A INPUT -s 2001:db8::1/128 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j DROP
COMMIT
"""

EDITS4 = [
    ["-D", "INPUT", "1"],
    ["-D", "INPUT", "5"],  # the second of two identical rules
    ["-D", "INPUT", "7"],  # the last
    ["-D", "LOGDROP", "1"],
    ["-t", "nat", "-D", "POSTROUTING", "1"],
    ["-R", "INPUT", "3", "-s", "10.0.0.9", "-p", "udp", "-m", "multiport", "--dports", "53,5353",
     "-m", "comment", "--comment", "dns here", "-j", "WEB"],
    ["-R", "INPUT", "1", "!", "-p", "tcp", "-i", "eth0", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
    ["-R", "INPUT", "2", "-m", "conntrack", "--ctstate", "NEW", "-m", "mark", "!", "--mark", "0x2", "-g", "LOGDROP"],
    ["-R", "WEB", "2", "-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN", "-j", "LOG", "--log-level", "4"],
    ["-t", "nat", "-R", "PREROUTING", "1", "-d", "192.0.2.11", "-p", "udp", "--dport", "53", "-j",
     "DNAT", "--to-destination", "10.0.0.6"],
    ["-I", "INPUT", "-s", "198.51.100.0/24", "-j", "DROP"],
    ["-I", "INPUT", "4", "-p", "sctp", "-j", "ACCEPT"],
    ["-I", "INPUT", "8", "-d", "10.1.0.0/16", "-j", "RETURN"],  # one past the end: appended
    ["-I", "LOGDROP", "2", "-m", "comment", "--comment", "last word", "-j", "ACCEPT"],
    ["-t", "nat", "-I", "POSTROUTING", "1", "-o", "eth1", "-j", "SNAT", "--to-source", "203.0.113.1"],
]

EDITS6 = [
    ["-D", "INPUT", "2"],
    ["-R", "INPUT", "3", "-s", "2001:db8::/64", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT"],
    ["-I", "INPUT", "2", "-p", "ipv6-icmp", "--icmpv6-type", "135", "-j", "ACCEPT"],
]


def ipdbg(host, *args):
    return subprocess.run(
        [sys.executable, "-m", "ipdbg.cli", "rules", "--netns", host.netns, "--backend", "nft", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})


def state(host, family):
    save = "iptables-nft-save" if family == 4 else "ip6tables-nft-save"
    nft_family = "ip" if family == 4 else "ip6"
    saved = [ln for ln in host.run([save]).stdout.splitlines() if not ln.startswith("#")]
    tables = []
    for t in ("filter", "nat"):
        p = host.run(["nft", "list", "table", nft_family, t], check=False)
        tables.append(p.stdout)
    return saved, tables


@pytest.fixture
def pair(lab):
    return lab.add_host("ipt"), lab.add_host("ipd")


@pytest.mark.parametrize("family,base,edit", [(4, BASE4, e) for e in EDITS4] +
                         [(6, BASE6, e) for e in EDITS6],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else str(v)[:3])
def test_same_result_as_iptables_nft(pair, family, base, edit):
    ref, ours = pair
    binary = "iptables-nft" if family == 4 else "ip6tables-nft"
    for h in pair:
        h.run([f"{binary}-restore"], input=base)
    assert state(ref, family) == state(ours, family)
    ref.run([binary, "-w"] + edit)
    fam = [] if family == 4 else ["-6"]
    r = ipdbg(ours, *fam, "-o", "json", *edit)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "netlink" in out and "batch" not in out, out  # the transaction path, not the fallback
    assert out["netlink"]["op"] in ("delete", "replace", "insert", "append")
    assert state(ours, family) == state(ref, family)


def test_a_stale_generation_is_refused_and_changes_nothing(lab):
    """The guarantee the path rests on: a transaction tagged with an old generation
    is refused whole (ERESTART) by the running kernel."""
    host = lab.add_host("gen")
    host.run(["iptables-nft-restore"], input=BASE4)
    before = state(host, 4)
    cmd = rules_cmd.rargv.parse_argv(["-D", "INPUT", "1"]).commands[0]
    sock, genid, handle, _ident = nftedit._read_line(cmd, host.netns, 1, want_append=False)
    try:
        host.run(["iptables-nft", "-A", "OUTPUT", "-j", "ACCEPT"])  # any change moves the generation
        after_race = state(host, 4)
        batch, seq = nftmsg.format_edit_batch("delete", 4, "filter", "INPUT", genid, seq=10, handle=handle)
        assert nftedit._send_batch(sock, batch, begin_seq=10, edit_seq=seq) == 85  # ERESTART
    finally:
        sock.close()
    assert state(host, 4) == after_race != before


def test_a_change_elsewhere_is_retried_and_the_edit_applied(lab, monkeypatch):
    """ERESTART from a change that leaves line N holding the rule read: read again, apply."""
    host = lab.add_host("retry")
    host.run(["iptables-nft-restore"], input=BASE4)
    real, sends = nftedit._send_batch, []

    def race(*a, **kw):
        if not sends:
            host.run(["iptables-nft", "-A", "OUTPUT", "-j", "ACCEPT"])
        sends.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(nftedit, "_send_batch", race)
    rules_cmd.run(["--netns", host.netns, "--backend", "nft", "-D", "INPUT", "3"])
    assert len(sends) == 2
    saved = state(host, 4)[0]
    assert "-A OUTPUT -j ACCEPT" in saved
    assert sum(ln.startswith("-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22") for ln in saved) == 1


def test_a_rule_replaced_in_place_is_a_conflict(lab, monkeypatch):
    """A rule replaced in place keeps its handle: the rule's expressions tell it apart."""
    host = lab.add_host("inplace")
    host.run(["iptables-nft-restore"], input=BASE4)
    real, seen = nftedit._send_batch, {}

    def race(*a, **kw):
        if not seen:
            host.run(["iptables-nft", "-R", "INPUT", "1", "-i", "lo", "-j", "DROP"])
            seen["after"] = state(host, 4)
        return real(*a, **kw)

    monkeypatch.setattr(nftedit, "_send_batch", race)
    with pytest.raises(errors.ConflictError) as exc:
        rules_cmd.run(["--netns", host.netns, "--backend", "nft", "-D", "INPUT", "1"])
    assert "no longer the one read" in exc.value.message
    assert state(host, 4) == seen["after"]


def test_rules_the_throwaway_netns_cannot_make_take_the_restore_path(lab):
    """-m set needs the set of the target netns: iptables-restore applies it there."""
    host = lab.add_host("ipset")
    host.run(["iptables-nft-restore"], input=BASE4)
    host.run(["ipset", "create", "ipdbg-t-allow", "hash:ip"])
    try:
        r = ipdbg(host, "-o", "json", "-R", "INPUT", "3", "-m", "set", "--match-set", "ipdbg-t-allow",
                  "src", "-j", "ACCEPT")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert "batch" in out and "netlink" not in out
        assert "-A INPUT -m set --match-set ipdbg-t-allow src -j ACCEPT" in state(host, 4)[0]
    finally:
        host.run(["iptables-nft", "-F"], check=False)
        host.run(["ipset", "destroy", "ipdbg-t-allow"], check=False)


@pytest.mark.parametrize("args,code", [
    (["-D", "INPUT", "99"], errors.EXIT_USAGE),
    (["-R", "NOPE", "1", "-j", "ACCEPT"], errors.EXIT_NOT_FOUND),
    (["-I", "INPUT", "20", "-j", "ACCEPT"], errors.EXIT_USAGE),
    (["-R", "INPUT", "1", "-j", "NO-SUCH-CHAIN"], errors.EXIT_USAGE),
    (["-R", "INPUT", "1", "-p", "tcp", "--dport", "99999", "-j", "ACCEPT"], errors.EXIT_USAGE),
    (["-t", "nat", "-I", "POSTROUTING", "1", "-j", "DNAT", "--to-destination", "10.0.0.1"], errors.EXIT_USAGE),
])
def test_bad_edits_change_nothing_and_say_why(lab, args, code):
    host = lab.add_host("bad")
    host.run(["iptables-nft-restore"], input=BASE4)
    before = state(host, 4)
    r = ipdbg(host, *args)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.startswith("ipdbg: error: ") and "Traceback" not in r.stderr
    assert state(host, 4) == before
