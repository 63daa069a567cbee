"""read_snapshot against real iptables-nft, iptables-legacy and nft in a lab netns."""

import json

from ipdbg.rules.snapshot import read_snapshot

RULES4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:BLOCK - [0:0]
-A OUTPUT -p icmp -j ACCEPT
-A OUTPUT -d 198.51.100.80/32 -p tcp -j DROP
-A OUTPUT -j BLOCK
-A BLOCK -d 203.0.113.7/32 -j REJECT --reject-with icmp-port-unreachable
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -j MASQUERADE
COMMIT
"""

NATIVE = """table inet ipdbgtest {
  chain out { type filter hook output priority 10; policy accept;
    ip daddr 192.0.2.1 counter drop
    tcp dport { 22, 80 } accept comment "two ports"
  }
}
"""


def _handles(host, family, table, chain):
    out = host.run(["nft", "-j", "-a", "list", "chain", family, table, chain]).stdout
    return [o["rule"]["handle"] for o in json.loads(out)["nftables"] if "rule" in o]


def test_snapshot_maps_handles_lines_and_texts(lab):
    h = lab.add_host("snap")
    h.run(["iptables-nft-restore"], input=RULES4)
    h.run(["ip6tables-nft", "-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP"])
    h.run(["iptables-legacy", "-A", "FORWARD", "-s", "10.0.0.5", "-j", "DROP"])
    h.run(["iptables-legacy", "-A", "FORWARD", "-s", "10.0.0.6", "-j", "DROP"])
    h.run(["nft", "-f", "-"], input=NATIVE)

    snap = read_snapshot(h.netns)
    assert snap.backends_with_rules() == {"nft", "legacy", "nftables"}

    # iptables-nft: handle -> iptables line and iptables-save text, both ways
    handles = _handles(h, "ip", "filter", "OUTPUT")
    assert len(handles) == 3
    for line, handle in enumerate(handles, 1):
        ref = snap.by_nft_handle("ip", "filter", "OUTPUT", handle)
        assert ref is not None and ref.line == line and ref.backend == "nft"
        assert snap.lookup("filter", "OUTPUT", line) == ref
    ref = snap.by_nft_handle("ip", "filter", "OUTPUT", handles[1])
    assert ref.text == "-A OUTPUT -d 198.51.100.80/32 -p tcp -j DROP"
    assert ref.family == 4 and ref.table == "filter" and ref.chain == "OUTPUT"
    blk = _handles(h, "ip", "filter", "BLOCK")[0]
    assert snap.by_nft_handle("ip", "filter", "BLOCK", blk).text == \
        "-A BLOCK -d 203.0.113.7/32 -j REJECT --reject-with icmp-port-unreachable"
    nat = snap.lookup("nat", "POSTROUTING", 1)
    assert nat.text == "-A POSTROUTING -o eth0 -j MASQUERADE" and nat.handle is not None

    # ip6tables-nft
    h6 = _handles(h, "ip6", "filter", "INPUT")[0]
    r6 = snap.by_nft_handle("ip6", "filter", "INPUT", h6)
    assert r6.family == 6 and r6.line == 1 and r6.text == "-A INPUT -s 2001:db8::1/128 -j DROP"
    assert snap.lookup("filter", "INPUT", 1, family=6) == r6

    # legacy: lines and text, no handle
    leg = snap.lookup("filter", "FORWARD", 2, backend="legacy")
    assert leg.text == "-A FORWARD -s 10.0.0.6/32 -j DROP" and leg.handle is None
    assert snap.lookup("filter", "FORWARD", 3, backend="legacy") is None

    # native nft: position and nft text
    nh = _handles(h, "inet", "ipdbgtest", "out")
    a = snap.by_nft_handle("inet", "ipdbgtest", "out", nh[0])
    b = snap.by_nft_handle("inet", "ipdbgtest", "out", nh[1])
    assert a.backend == "nftables" and a.line == 1 and a.text == "ip daddr 192.0.2.1 counter drop"
    assert b.line == 2 and b.text == 'tcp dport { 22, 80 } accept comment "two ports"'
    assert snap.by_nft_handle("ip", "filter", "OUTPUT", 99999) is None


def test_snapshot_follows_changes(lab):
    h = lab.add_host("snap2")
    h.run(["iptables-nft", "-A", "INPUT", "-s", "10.0.0.1", "-j", "DROP"])
    first = read_snapshot(h.netns).lookup("filter", "INPUT", 1)
    h.run(["iptables-nft", "-I", "INPUT", "1", "-s", "10.0.0.2", "-j", "ACCEPT"])
    snap = read_snapshot(h.netns)
    assert snap.lookup("filter", "INPUT", 1).text == "-A INPUT -s 10.0.0.2/32 -j ACCEPT"
    moved = snap.by_nft_handle("ip", "filter", "INPUT", first.handle)
    assert moved.line == 2 and moved.text == first.text


def test_empty_netns(lab):
    h = lab.add_host("snap3")
    snap = read_snapshot(h.netns)
    assert snap.backends_with_rules() == set()
    assert snap.lookup("filter", "INPUT", 1) is None
