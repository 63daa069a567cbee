"""TraceSession names the right rule (real nf_tables, iptables-nft, iptables-legacy, IPv4/IPv6)."""

import time

import pytest

from ipdbg import traffic
from ipdbg.filters import build_filter
from ipdbg.nftrace import TraceSession
from ipdbg.nftrace.path import build_paths


def trace_until(ts, pred, send, timeout=5.0):
    """Send, then poll until a PacketPath satisfies ``pred``; returns (path, events)."""
    events = []
    send()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        events += ts.poll(100)
        for p in build_paths(events, ts.resolve).values():
            if pred(p):
                return p, events
    pytest.fail(f"no matching path; got: {[p.format() for p in build_paths(events, ts.resolve).values()]}")


def final(verdict, dport=None, proto=None):
    def pred(p):
        return (p.verdict == verdict and p.key is not None and (dport is None or p.key.dport == dport)
                and (proto is None or p.key.proto == proto))
    return pred


IPT_NFT = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:WEB - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A OUTPUT -p tcp -j WEB
-A WEB -p tcp --dport 80 -j RETURN
-A WEB -p tcp --dport 81 -j REJECT --reject-with tcp-reset
-A WEB -p tcp --dport 82 -j DROP
COMMIT
"""


@pytest.mark.parametrize("family", [4, 6])
def test_iptables_nft_user_chain_reject_drop_return_and_policy(lab, family):
    a, b = lab.add_host("a"), lab.add_host("b")
    if family == 4:
        lab.link(a, b, "10.71.0.1/24", "10.71.0.2/24")
        peer_b, peer_a, restore = "10.71.0.2", "10.71.0.1", "iptables-nft-restore"
    else:
        lab.link(a, b, "fd00:71::1/64", "fd00:71::2/64")
        peer_b, peer_a, restore = "fd00:71::2", "fd00:71::1", "ip6tables-nft-restore"
    a.run([restore], input=IPT_NFT)
    fam = "ip" if family == 4 else "ip6"
    with TraceSession([a.netns], build_filter(proto="tcp"), legacy=False) as ts:
        p, _ = trace_until(ts, final("reject", 81), lambda: traffic.send_tcp_connect(a.netns, peer_b, 81))
        ref = p.decided_by.rule
        assert (ref.table, ref.chain, ref.line, ref.backend) == ("filter", "WEB", 2, "nft")
        assert "-j REJECT" in ref.text and p.decided_by.family == fam
        assert p.format().startswith("filter/OUTPUT rule 1 JUMP WEB -> filter/WEB rule 2 REJECT")

        p, _ = trace_until(ts, final("drop", 82), lambda: traffic.send_tcp_connect(a.netns, peer_b, 82, timeout=0.3))
        assert (p.decided_by.rule.chain, p.decided_by.rule.line) == ("WEB", 3)
        assert p.decided_by.rule.text == "-A WEB -p tcp -m tcp --dport 82 -j DROP"

        # dport 80: WEB rule 1 returns, OUTPUT's policy accepts
        p, _ = trace_until(ts, lambda p: p.key and p.key.dport == 80 and p.verdict == "accept",
                           lambda: traffic.send_tcp_connect(a.netns, peer_b, 80, timeout=0.3))
        assert p.format() == "filter/OUTPUT rule 1 JUMP WEB -> filter/WEB rule 1 RETURN -> filter/OUTPUT policy ACCEPT"
        assert p.decided_by.type == "policy"

        # policy drop: b connects to a; a's INPUT drops the SYN by policy
        p, _ = trace_until(ts, lambda p: p.verdict == "drop" and p.key and p.key.dport == 5555,
                           lambda: traffic.send_tcp_connect(b.netns, peer_a, 5555, timeout=0.3))
        assert p.decided_by.type == "policy" and p.decided_by.chain == "INPUT"


NFT_NATIVE = """table inet lab {
  chain in {
    type filter hook input priority 0; policy accept;
    meta l4proto { icmp, ipv6-icmp } jump icmpchk
    udp dport vmap { 7001 : jump u1, 7002 : drop }
  }
  chain icmpchk {
    ip saddr 10.72.0.2 counter
    ip6 saddr fd00:72::2 drop
  }
  chain u1 {
    udp dport 7001 reject
  }
}
"""


def test_native_nft_inet_user_chains_and_verdict_map(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, ["10.72.0.1/24", "fd00:72::1/64"], ["10.72.0.2/24", "fd00:72::2/64"])
    a.run(["nft", "-f", "-"], input=NFT_NATIVE)
    with TraceSession([a.netns], build_filter(), legacy=False) as ts:
        p, _ = trace_until(ts, lambda p: p.verdict == "drop" and p.key and p.key.proto == 58 and p.key.src == "fd00:72::2",
                           lambda: traffic.send_icmp_echo(b.netns, "fd00:72::1", timeout=0.3))
        ref = p.decided_by.rule
        assert (ref.backend, ref.table, ref.chain, ref.line) == ("nftables", "lab", "icmpchk", 2)
        assert ref.text == "ip6 saddr fd00:72::2 drop"
        assert p.format() == "lab/in rule 1 JUMP icmpchk -> lab/icmpchk rule 2 DROP"

        p, _ = trace_until(ts, final("drop", 7002), lambda: traffic.send_udp(b.netns, "10.72.0.1", 7002))
        assert (p.decided_by.rule.chain, p.decided_by.rule.line) == ("in", 2)
        assert "vmap" in p.decided_by.rule.text

        p, _ = trace_until(ts, final("reject", 7001), lambda: traffic.send_udp(b.netns, "10.72.0.1", 7001))
        assert p.format() == "lab/in rule 2 JUMP u1 -> lab/u1 rule 1 REJECT"

        # IPv4 ping: counter rule (continue), implicit return, policy accept
        p, _ = trace_until(ts, lambda p: p.verdict == "accept" and p.key and p.key.src == "10.72.0.2" and p.key.proto == 1,
                           lambda: traffic.send_icmp_echo(b.netns, "10.72.0.1", timeout=0.3))
        assert p.format() == "lab/in rule 1 JUMP icmpchk -> lab/icmpchk return -> lab/in policy ACCEPT"


LEGACY4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:L - [0:0]
-A OUTPUT -p udp -j L
-A L -p udp --dport 6001 -j RETURN
-A L -p udp --dport 6002 -j DROP
COMMIT
"""
LEGACY6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p udp --dport 6003 -j ACCEPT
-A OUTPUT -p udp --dport 6004 -j REJECT
COMMIT
"""


def test_iptables_legacy_ipv4_and_ipv6(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, ["10.73.0.1/24", "fd00:73::1/64"], ["10.73.0.2/24", "fd00:73::2/64"])
    a.run(["iptables-legacy-restore"], input=LEGACY4)
    a.run(["ip6tables-legacy-restore"], input=LEGACY6)
    before = a.run(["cat", "/proc/sys/net/netfilter/nf_log/2", "/proc/sys/net/netfilter/nf_log/10"]).stdout
    with TraceSession([a.netns], build_filter(proto="udp"), legacy="auto") as ts:
        during = a.run(["cat", "/proc/sys/net/netfilter/nf_log/2", "/proc/sys/net/netfilter/nf_log/10"]).stdout
        assert during.split() == ["nfnetlink_log", "nfnetlink_log"]
        p, _ = trace_until(ts, final("drop", 6002), lambda: traffic.send_udp(a.netns, "10.73.0.2", 6002))
        ref = p.decided_by.rule
        assert (ref.backend, ref.chain, ref.line) == ("legacy", "L", 2)
        assert p.source == "legacy" and p.format() == "filter/OUTPUT rule 1 JUMP L -> filter/L rule 2 DROP"
        p, _ = trace_until(ts, final("reject", 6004), lambda: traffic.send_udp(a.netns, "fd00:73::2", 6004))
        assert (p.decided_by.rule.family, p.decided_by.rule.line) == (6, 2)
        p, evs = trace_until(ts, lambda p: p.key and p.key.dport == 6001 and any(s.verdict == "return" for s in p.steps),
                             lambda: traffic.send_udp(a.netns, "10.73.0.2", 6001))
        assert p.format().startswith("filter/OUTPUT rule 1 JUMP L -> filter/L rule 1 RETURN")
        # the TRACE record does not give the policy: the ruleset does
        p, _ = trace_until(ts, lambda p: p.key and p.key.dport == 6001 and p.verdict == "accept",
                           lambda: traffic.send_udp(a.netns, "10.73.0.2", 6001))
        assert p.decided_by.type == "policy" and p.decided_by.verdict == "accept"
        a.run(["iptables-legacy", "-P", "OUTPUT", "DROP"])
        time.sleep(1.1)  # legacy has no change notifications: the snapshot is re-read when 1 s old
        p, _ = trace_until(ts, lambda p: p.key and p.key.dport == 6001 and p.verdict == "drop",
                           lambda: traffic.send_udp(a.netns, "10.73.0.2", 6001))
        assert (p.decided_by.type, p.decided_by.chain) == ("policy", "OUTPUT")
        a.run(["iptables-legacy", "-P", "OUTPUT", "ACCEPT"])
        # a legacy rule inserted after start shifts the lines: named by the fresh snapshot
        # (no waiting: the entry count of the table changed, IPT_SO_GET_INFO shows it at once)
        a.run(["iptables-legacy", "-I", "L", "1", "-p", "udp", "--dport", "6005", "-j", "DROP"])
        p, _ = trace_until(ts, final("drop", 6002), lambda: traffic.send_udp(a.netns, "10.73.0.2", 6002))
        assert (p.decided_by.rule.line, p.decided_by.rulenum) == (3, 3)
        assert p.decided_by.rule.text == "-A L -p udp -m udp --dport 6002 -j DROP"
    after = a.run(["cat", "/proc/sys/net/netfilter/nf_log/2", "/proc/sys/net/netfilter/nf_log/10"]).stdout
    assert after == before


def test_rule_added_after_start_and_deleted_after_the_packet(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.74.0.1/24", "10.74.0.2/24")
    a.run(["iptables-nft-restore"], input="*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp --dport 1 -j ACCEPT\nCOMMIT\n")
    with TraceSession([a.netns], build_filter(proto="udp"), legacy=False) as ts:
        ts.poll(50)
        a.run(["iptables-nft", "-I", "OUTPUT", "1", "-p", "udp", "--dport", "6100", "-j", "DROP"])
        p, _ = trace_until(ts, final("drop", 6100), lambda: traffic.send_udp(a.netns, "10.74.0.2", 6100))
        assert p.decided_by.rule.line == 1 and "--dport 6100 -j DROP" in p.decided_by.rule.text
        # delete the rule right after the packet, before we look at the events
        events = []
        traffic.send_udp(a.netns, "10.74.0.2", 6100)
        a.run(["iptables-nft", "-D", "OUTPUT", "1"])
        end = time.monotonic() + 3
        while time.monotonic() < end:
            events += ts.poll(100)
        drops = [p for p in build_paths(events, ts.resolve).values() if p.verdict == "drop"]
        assert drops and "--dport 6100 -j DROP" in drops[0].decided_by.rule.text


def test_several_namespaces_at_once(lab):
    a, b, c = lab.add_host("a"), lab.add_host("b"), lab.add_host("c")
    lab.link(a, b, "10.75.0.1/24", "10.75.0.2/24")
    lab.link(c, b, "10.75.1.1/24", "10.75.1.2/24")
    rules = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp --dport 6200 -j DROP\nCOMMIT\n"
    b.run(["iptables-nft-restore"], input=rules)
    a.run(["nft", "add table ip t; add chain ip t o { type filter hook output priority 0; }; add rule ip t o udp dport 6201 drop"])
    c.run(["nft", "add table ip t; add chain ip t o { type filter hook output priority 0; }; add rule ip t o udp dport 6202 accept"])
    with TraceSession([a.netns, b.netns, c.netns], build_filter(proto="udp"), legacy=False) as ts:
        for h in (a, b, c):
            assert "ipdbg_" in h.run(["nft", "list", "tables"]).stdout
        p, _ = trace_until(ts, lambda p: p.netns == b.inode and p.verdict == "drop",
                           lambda: traffic.send_udp(a.netns, "10.75.0.2", 6200))
        assert (p.decided_by.rule.chain, p.decided_by.rule.line) == ("INPUT", 1)
        p, _ = trace_until(ts, lambda p: p.netns == a.inode and p.verdict == "drop",
                           lambda: traffic.send_udp(a.netns, "10.75.0.2", 6201))
        assert (p.decided_by.rule.table, p.decided_by.rule.chain) == ("t", "o")
        p, _ = trace_until(ts, lambda p: p.netns == c.inode and p.verdict == "accept",
                           lambda: traffic.send_udp(c.netns, "10.75.1.2", 6202))
        assert (p.decided_by.rule.table, p.decided_by.rule.line, p.key.dport) == ("t", 1, 6202)
        assert ts.lost == 0
    for h in (a, b, c):
        assert "ipdbg_" not in h.run(["nft", "list", "tables"]).stdout


def test_only_matching_packets_are_traced(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.76.0.1/24", "10.76.0.2/24")
    a.run(["iptables-nft-restore"], input="*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp -j ACCEPT\nCOMMIT\n")
    with TraceSession([a.netns], build_filter(dst="10.76.0.2:6301", proto="udp"), legacy=False) as ts:
        traffic.send_udp(a.netns, "10.76.0.2", 6300)
        traffic.send_udp(a.netns, "10.76.0.2", 6301)
        events = []
        end = time.monotonic() + 1
        while time.monotonic() < end:
            events += ts.poll(100)
        ports = {e.key.dport for e in events if e.key}
        assert ports == {6301}


def test_netlink_overruns_are_counted_as_lost(lab, monkeypatch):
    from ipdbg.nftrace import sock

    monkeypatch.setattr(sock, "RCVBUF", 4096)  # a tiny buffer: the kernel must drop messages
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.77.9.1/24", "10.77.9.2/24")
    a.run(["iptables-nft-restore"], input="*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp -j ACCEPT\nCOMMIT\n")
    # debug: our own table's events are returned too, so every message is in ``events`` or lost
    with TraceSession([a.netns], build_filter(proto="udp"), legacy=False, debug=True) as ts:
        assert ts.lost == 0
        traffic.send_udp(a.netns, "10.77.9.2", 6400, count=500)  # 1000 messages, none read meanwhile
        events = []
        end = time.monotonic() + 1
        while time.monotonic() < end:
            events += ts.poll(50)
        assert 0 < len(events) < 1000
        # per packet: our rule's event and the user's rule's event; each one received or counted
        assert ts.lost + len(events) == 1000


def test_bridge_family_traces_bridged_packets(lab):
    a, sw, c = lab.add_host("a"), lab.add_host("sw"), lab.add_host("c")
    lab.link(a, sw, "10.78.5.1/24", None)
    lab.link(c, sw, "10.78.5.3/24", None)
    sw.run(["ip", "link", "add", "br0", "type", "bridge"])
    for port in ("eth0", "eth1"):
        sw.run(["ip", "link", "set", port, "master", "br0"])
    sw.run(["ip", "link", "set", "br0", "up"])
    sw.run(["nft", "-f", "-"], input="""table bridge f {
  chain fw { type filter hook forward priority 0; policy accept;
    ip daddr 10.78.5.3 udp dport 6500 drop
  }
}
""")
    with TraceSession([sw.netns], build_filter(dst="10.78.5.3", proto="udp"), bridge=True, legacy=False) as ts:
        assert "table bridge ipdbg_" in sw.run(["nft", "list", "tables"]).stdout
        p, _ = trace_until(ts, final("drop", 6500), lambda: traffic.send_udp(a.netns, "10.78.5.3", 6500))
        ref = p.decided_by.rule
        assert (p.decided_by.family, ref.table, ref.chain, ref.line) == ("bridge", "f", "fw", 1)
        assert ref.text == "ip daddr 10.78.5.3 udp dport 6500 drop"


def test_seen_at_hook_in_a_netns_without_any_ruleset(lab):
    from ipdbg.nftrace.decode import TRACE_SEEN

    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "10.79.0.1/24", "10.79.0.2/24")
    for h in (a, b):
        assert h.run(["nft", "list", "ruleset"]).stdout.strip() == ""
    with TraceSession([a.netns, b.netns], build_filter(dst="10.79.0.2:6700", proto="udp"), legacy=False) as ts:
        traffic.send_udp(a.netns, "10.79.0.2", 6700, count=50)
        traffic.send_udp(a.netns, "10.79.0.2", 6701, count=5)  # not matching: not seen
        events = []
        end = time.monotonic() + 1
        while time.monotonic() < end:
            events += ts.poll(100)
        # No chain of the user's anywhere: only our chains' "seen" marks, one per hook and netns.
        assert events and all(e.type == TRACE_SEEN for e in events)
        assert {(e.netns, e.chain) for e in events} == {(a.inode, "output"), (b.inode, "prerouting")}
        assert all(e.key.dport == 6700 and e.verdict == "" and e.handle is None for e in events)
        assert all(e.table.startswith("ipdbg_") for e in events)
        # at most one per (trace id, hook) a second: 50 packets give at most 100 marks
        assert len(events) <= 100 and ts.seen_skipped == 0 and ts.lost == 0
        for p in build_paths(events, ts.resolve).values():
            assert p.steps == [] and p.verdict == "" and p.seen_at in (["output"], ["prerouting"])
    with TraceSession([a.netns], build_filter(dst="10.79.0.2:6700", proto="udp"), legacy=False,
                      seen=False) as ts:
        traffic.send_udp(a.netns, "10.79.0.2", 6700, count=5)
        events = []
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            events += ts.poll(100)
        assert events == []


NFLOG_HOLDER = r"""
import socket, sys
from ipdbg.nftrace import build, nl, sock
s = sock.open_nfnl(None)
sock.talk(s, build.format_nflog_config(0, socket.AF_UNSPEC, nl.NFULNL_CFG_CMD_BIND, 1), [1], "bind group 0")
sock.talk(s, build.format_nflog_config(0, socket.AF_INET, nl.NFULNL_CFG_CMD_PF_BIND, 2), [2], "bind AF_INET")
print("ready", flush=True)
sys.stdin.read()
"""


def test_nflog_held_in_one_netns_skips_legacy_there_only(lab):
    import os
    import subprocess
    import sys

    a, b, c = lab.add_host("a"), lab.add_host("b"), lab.add_host("c")
    lab.link(a, b, "10.79.2.1/24", "10.79.2.2/24")
    lab.link(c, b, "10.79.3.1/24", "10.79.3.2/24")
    legacy = "*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp --dport {} -j DROP\nCOMMIT\n"
    a.run(["iptables-legacy-restore"], input=legacy.format(6801))
    c.run(["iptables-legacy-restore"], input=legacy.format(6802))
    a.run(["iptables-nft-restore"], input="*filter\n:OUTPUT ACCEPT [0:0]\n"
                                          "-A OUTPUT -p udp --dport 6803 -j DROP\nCOMMIT\n")
    # Another program holds nfnetlink_log group 0 (and the AF_INET logger) in a.
    holder = a.popen([sys.executable, "-c", NFLOG_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == b"ready"
        with TraceSession([a.netns, c.netns], build_filter(proto="udp"), legacy="auto") as ts:
            assert list(ts.legacy_unavailable) == [a.inode]
            (w,) = ts.warnings
            assert w.startswith(f"legacy TRACE unavailable in netns {a.netns}: "
                                "nfnetlink_log is held by another process")
            # c: the legacy rule is named
            p, _ = trace_until(ts, lambda p: p.netns == c.inode and p.verdict == "drop",
                               lambda: traffic.send_udp(c.netns, "10.79.3.2", 6802))
            ref = p.decided_by.rule
            assert p.source == "legacy" and (ref.backend, ref.chain, ref.line) == ("legacy", "OUTPUT", 1)
            # a: nftables is still traced there
            p, _ = trace_until(ts, lambda p: p.netns == a.inode and p.verdict == "drop",
                               lambda: traffic.send_udp(a.netns, "10.79.2.2", 6803))
            ref = p.decided_by.rule
            assert (ref.backend, ref.chain, ref.line) == ("nft", "OUTPUT", 1)
            assert c.run(["cat", "/proc/sys/net/netfilter/nf_log/2"]).stdout.strip() == "nfnetlink_log"
        # the other program's binding in a is left as it was; c's is put back
        assert a.run(["cat", "/proc/sys/net/netfilter/nf_log/2"]).stdout.strip() == "nfnetlink_log"
        assert c.run(["cat", "/proc/sys/net/netfilter/nf_log/2"]).stdout.strip() == "nf_log_ipv4"
        assert holder.poll() is None
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
