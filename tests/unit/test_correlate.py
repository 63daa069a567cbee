"""The join of drops and trace verdicts (ipdbg.correlate), from event values.

Event values are shaped like the engines' output (recorded runs are replayed in
test_correlate_recorded.py); here each case isolates one rule of the join.
"""

from ipdbg.correlate import Correlator, correlate, format_fix, format_reason_note
from ipdbg.events import DropEvent, PacketKey, TraceEvent
from ipdbg.filters import build_filter
from ipdbg.render import format_explanation
from ipdbg.rules.snapshot import RuleRef

NS_C, NS_R = 4026532246, 4026532315
MS = 1_000_000


def Rule(family, backend, table, chain, line, text, handle=None):
    return RuleRef(family, backend, table, chain, line, text, handle)


RULES = {
    ("filter", "OUTPUT", 2): Rule(4, "nft", "filter", "OUTPUT", 1,
                                  "-A OUTPUT -d 198.51.100.80/32 -p tcp -m tcp --dport 80 -j DROP", 2),
    ("filter", "OUTPUT", 3): Rule(4, "nft", "filter", "OUTPUT", 2,
                                  "-A OUTPUT -d 198.51.100.80/32 -p tcp -m tcp --dport 81 -j DROP", 3),
    ("filter", "INPUT", 4): Rule(4, "nft", "filter", "INPUT", 1,
                                 "-A INPUT -p udp -j REJECT --reject-with icmp-port-unreachable", 4),
}


def resolve(ev):
    return RULES.get((ev.table, ev.chain, ev.handle))


def key(sport=49066, dport=80, ident=34244, seq=1482661773, dst="198.51.100.80", proto=6):
    return PacketKey(4, proto, "10.41.0.1", dst, sport, dport, ident, seq)


def drop(k, ts, netns=NS_C, reason="NETFILTER_DROP", loc="nft_do_chain+0x46f", kind="kfree_skb",
         skb=0xffff888100001000, **kw):
    return DropEvent(kind, ts, 1, skb, 8681, "python", netns, 0, k, 2 if k and k.proto == 6 else 0,
                     12 if reason == "NETFILTER_DROP" else 3, reason, 1, loc, **kw)


def trace_out(k, ts, tid, handle=2, netns=NS_C):
    return [
        TraceEvent("nftrace", netns, tid, "ip", "raw", "OUTPUT", "policy", "accept",
                   policy="accept", ts_ns=ts, key=k),
        TraceEvent("nftrace", netns, tid, "ip", "filter", "OUTPUT", "rule", "drop",
                   handle=handle, ts_ns=ts + 1000, key=k),
    ]


def test_output_drop_joined_to_its_rule():
    k = key()
    exps = correlate(trace_out(k, 1000 * MS, 0xaa) + [drop(k, 1000 * MS + 5000)], resolve)
    assert len(exps) == 1
    e = exps[0].to_json()
    assert e["verdict"] == "dropped" and e["count"] == 1
    assert e["rule"]["line"] == 1 and e["rule"]["table"] == "filter" and e["rule"]["backend"] == "nft"
    assert e["tuple"] == {"src": "10.41.0.1", "dst": "198.51.100.80", "sport": 49066,
                          "dport": 80, "proto": "tcp"}
    assert [(p["table"], p["chain"], p["verdict"]) for p in e["path"]] == [
        ("raw", "OUTPUT", "accept"), ("filter", "OUTPUT", "drop")]
    assert e["reason"] == "NETFILTER_DROP" and e["location"] == "nft_do_chain+0x46f"
    assert e["hook"] == "OUTPUT"
    assert e["fix"] == "ipdbg rules -t filter -D OUTPUT 1"
    text = format_explanation(exps[0])
    assert text.splitlines()[0].startswith("DROPPED  10.41.0.1:49066 -> 198.51.100.80:80 tcp SYN")
    assert "  rule     filter/OUTPUT line 1: -A OUTPUT" in text
    assert "  path     raw/OUTPUT policy ACCEPT -> filter/OUTPUT rule 1 DROP" in text
    assert "  kernel   NETFILTER_DROP at nft_do_chain+0x46f (hook OUTPUT)" in text
    assert "  fix      ipdbg rules -t filter -D OUTPUT 1" in text


def test_busy_flows_are_not_mixed_up():
    # Two flows dropped by two rules, interleaved; a third drop whose packet no
    # trace saw (other ident) must stay unattributed.
    k80, k81 = key(), key(sport=50000, dport=81, ident=1, seq=7)
    stray = key(sport=50000, dport=81, ident=2, seq=7)
    t = 1000 * MS
    events = (trace_out(k80, t, 1, handle=2) + trace_out(k81, t + 10, 2, handle=3)
              + [drop(k81, t + 20), drop(k80, t + 30), drop(stray, t + 40)])
    exps = {(e.key.dport, e.key.ident): e for e in correlate(events, resolve)}
    assert exps[(80, 34244)].rule.line == 1
    assert exps[(81, 1)].rule.line == 2
    assert exps[(81, 2)].rule is None
    assert "no rule" in exps[(81, 2)].note


def test_identical_packets_with_different_rules_are_not_guessed():
    k = key()
    t = 1000 * MS
    events = trace_out(k, t, 1, handle=2) + trace_out(k, t + 10, 2, handle=3) + [drop(k, t + 20)]
    exps = correlate(events, resolve)
    dropped = [e for e in exps if e.key == k and e.rule is None]
    assert dropped and "not attributing" in dropped[0].note


def test_trace_too_far_in_time_is_not_joined():
    k = key()
    exps = correlate(trace_out(k, 1000 * MS, 1) + [drop(k, 3000 * MS)], resolve)
    joined = [e for e in exps if e.rule is not None and e.pid]
    assert not joined


def test_netns_must_match():
    k = key()
    exps = correlate(trace_out(k, 1000 * MS, 1, netns=NS_R) + [drop(k, 1000 * MS + 50)], resolve)
    by_ns = {e.netns: e for e in exps}
    assert by_ns[NS_C].rule is None  # the drop in the client: no trace there
    assert by_ns[NS_R].rule is not None and by_ns[NS_R].pid == 0  # trace-only


def test_retransmissions_grouped():
    t = 1000 * MS
    events = []
    for i in range(3):
        k = key(ident=100 + i)  # same flow, same seq, new IP id each time
        events += trace_out(k, t + i * 1000 * MS, 10 + i) + [drop(k, t + i * 1000 * MS + 5)]
    exps = correlate(events, resolve)
    assert len(exps) == 1 and exps[0].count == 3
    assert format_explanation(exps[0]).splitlines()[0].endswith("x3")


def test_reject_with_icmp_reply():
    k = key(sport=34745, dport=53, ident=59413, seq=0, proto=17)
    t = 1000 * MS
    tr = [TraceEvent("nftrace", NS_R, 5, "ip", "filter", "INPUT", "rule", "drop", handle=4,
                     ts_ns=t, key=k)]
    reply = drop(k, t + 100, netns=NS_R, kind="icmp_send", reason="", loc="",
                 icmp_type=3, icmp_code=3)
    exps = correlate(tr + [reply, drop(k, t + 200, netns=NS_R)], resolve)
    e = exps[0].to_json()
    assert e["verdict"] == "rejected" and e["reply"] == "icmp port-unreachable"
    assert e["rule"]["line"] == 1
    assert e["tuple"]["proto"] == "udp"


def test_no_socket_in_plain_words():
    k = key(dport=81)
    t = 1000 * MS
    rst = drop(k, t, netns=NS_R, kind="tcp_send_reset", reason="", loc="")
    exps = correlate([rst, drop(k, t + 10, netns=NS_R, reason="NO_SOCKET", loc="tcp_v4_rcv+0x99")])
    e = exps[0]
    assert e.rule is None and e.reason == "NO_SOCKET"
    text = format_explanation(e)
    assert "NO_SOCKET at tcp_v4_rcv+0x99: nothing listens on 198.51.100.80:81 " \
           "(the peer answered RST)" in text


def test_nat_before_and_after():
    before = PacketKey(4, 6, "10.41.0.1", "203.0.113.10", 40000, 80, 9, 99)
    after = PacketKey(4, 6, "10.41.0.1", "10.42.0.2", 40000, 8080, 9, 99)
    t = 1000 * MS
    tr = [TraceEvent("nftrace", NS_R, 7, "ip", "nat", "PREROUTING", "rule", "accept", handle=9,
                     ts_ns=t, key=before),
          TraceEvent("nftrace", NS_R, 7, "ip", "filter", "FORWARD", "policy", "drop",
                     policy="drop", ts_ns=t + 5, key=after)]
    exps = correlate(tr + [drop(after, t + 10, netns=NS_R)], resolve,
                     netns_specs={NS_R: "/proc/42/ns/net"})
    e = exps[0].to_json()
    assert e["nat"] == {"before": {"src": "10.41.0.1", "dst": "203.0.113.10", "sport": 40000,
                                   "dport": 80, "proto": "tcp"},
                        "after": {"src": "10.41.0.1", "dst": "10.42.0.2", "sport": 40000,
                                  "dport": 8080, "proto": "tcp"}}
    assert e["rule"] is None and e["path"][-1]["type"] == "policy"
    assert e["fix"] == ("ipdbg rules --netns /proc/42/ns/net -t filter -A FORWARD -p tcp "
                        "-s 10.41.0.1 -d 10.42.0.2 --dport 8080 -j ACCEPT")


def test_accepted_and_unseen():
    k = key(dport=22)
    tr = [TraceEvent("nftrace", NS_C, 3, "ip", "filter", "OUTPUT", "policy", "accept",
                     policy="accept", ts_ns=1000 * MS, key=k)]
    exps = correlate(tr)
    assert [e.verdict for e in exps] == ["accepted"]
    assert exps[0].path[0].verdict == "accept"
    flt = build_filter(dst="198.51.100.80:443", proto="tcp")
    exps = correlate([], flt=flt, netns_labels={NS_C: "client"}, watched=[NS_C])
    assert [e.verdict for e in exps] == ["unseen"]
    assert "--dst 198.51.100.80:443 --proto tcp" in format_explanation(exps[0])


def test_drop_waits_for_late_trace():
    k = key()
    c = Correlator(resolve)
    c.add_drop(drop(k, 1000 * MS))
    assert c.poll(1000 * MS + 10 * MS) == []  # not settled yet
    for ev in trace_out(k, 1000 * MS + 20 * MS, 1):  # netlink read after the ring buffer
        c.add_trace(ev)
    out = c.poll(1000 * MS + 200 * MS)
    assert len(out) == 1 and out[0].rule.line == 1


def test_fix_forms():
    nft = Rule(0, "nftables", "fw", "input", 3, "tcp dport 80 drop", 17)
    assert format_fix(nft, key()) == "nft delete rule inet fw input handle 17"
    assert format_fix(nft, key(), "lab1") == "ip netns exec lab1 nft delete rule inet fw input handle 17"
    leg6 = Rule(6, "legacy", "filter", "INPUT", 4, "-A INPUT -j DROP")
    assert format_fix(leg6, key(), "/proc/9/ns/net") == \
        "ipdbg rules --netns /proc/9/ns/net --backend legacy -6 -t filter -D INPUT 4"


def test_narrower_rule_when_it_fits():
    k = key(dport=80)
    wide = Rule(4, "nft", "filter", "INPUT", 3, '-A INPUT -s 10.0.0.0/8 -p tcp -m comment '
                '--comment "no web" -j REJECT --reject-with tcp-reset')
    assert format_fix(wide, k) == ("ipdbg rules -t filter -R INPUT 3 -s 10.0.0.0/8 -p tcp -m "
                                   "comment --comment 'no web' ! --dport 80 -j REJECT "
                                   "--reject-with tcp-reset")
    assert format_fix(wide, k, narrow=False) == "ipdbg rules -t filter -D INPUT 3"
    for text in ("-A INPUT -p tcp -m tcp --dport 80 -j DROP", "-A INPUT -j DROP",
                 "-A INPUT -p udp -j DROP", "-A INPUT ! -p tcp -j DROP",
                 "-A INPUT -p tcp -m multiport --dports 80,443 -j DROP"):
        assert " -D INPUT 3" in format_fix(Rule(4, "nft", "filter", "INPUT", 3, text), k), text


def test_reason_notes():
    k = key()
    assert "rp_filter" in format_reason_note("IP_RPFILTER", k)
    assert format_reason_note("IP_OUTNOROUTES", k) == "no route from this host to 198.51.100.80:80"
    assert format_reason_note("SOMETHING_NEW", k) == "the kernel dropped it (SOMETHING_NEW)"


def test_seen_only_by_our_trace_chain_is_accepted_not_unseen():
    # A netns with no ruleset: only ipdbg's own trace chain saw the packet
    # (TRACE_SEEN at output), no drop followed -> "accepted" at OUTPUT, empty path.
    from ipdbg.nftrace.decode import TRACE_SEEN

    k = key()
    seen = TraceEvent("nftrace", NS_C, 0xbb, "inet", "ipdbg_1", "output", TRACE_SEEN,
                      ts_ns=1000 * MS, key=k)
    exps = correlate([seen], resolve, flt=build_filter(dst="198.51.100.80:80"), watched=[NS_C])
    assert len(exps) == 1
    e = exps[0].to_json()
    assert e["verdict"] == "accepted" and e["rule"] is None and e["path"] == []
    assert "OUTPUT" in (e.get("hook") or "") + (e.get("note") or "")
    # and with nothing at all: unseen
    exps = correlate([], resolve, flt=build_filter(dst="198.51.100.80:80"), watched=[NS_C])
    assert [x.to_json()["verdict"] for x in exps] == ["unseen"]


def test_rst_freed_by_the_tcp_stack_is_not_a_drop_but_a_rule_dropping_it_is():
    # Seen on 6.18: a probe that closes with RST has its RST freed with NOT_SPECIFIED
    # at tcp_v4_rcv; that is the stack consuming it, not a lost packet.
    from dataclasses import replace as dc_replace

    from ipdbg.correlate import TCP_RST

    k = key(seq=1482661774)
    rst = dc_replace(drop(k, 1000 * MS, reason="NOT_SPECIFIED", loc="tcp_v4_rcv+0x99"),
                     tcp_flags=TCP_RST | 0x10)
    c = Correlator(resolve)
    c.add(rst)
    assert c.finish(None, []) == [] and c.rst_consumed == 1
    # the same RST dropped by a rule is a drop
    exps = correlate(trace_out(k, 2000 * MS, 0xcc) +
                     [dc_replace(drop(k, 2000 * MS + 5000), tcp_flags=TCP_RST)], resolve)
    assert [e.to_json()["verdict"] for e in exps] == ["dropped"]
