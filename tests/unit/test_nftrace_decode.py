"""nftrace / legacy TRACE decoding, from messages recorded on kernel 6.18 (tests/fixtures/nftrace)."""

import dataclasses
import json
import os

import pytest

from ipdbg.nftrace import nl
from ipdbg.nftrace.decode import DecodeError, decode_nflog, decode_ruleset_change, decode_trace, format_verdict

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "nftrace")


def load(name):
    with open(os.path.join(FIX, f"{name}.jsonl")) as f:
        return [json.loads(line) for line in f]


def decode_row(r):
    raw = bytes.fromhex(r["hex"])
    return decode_trace(raw) if r["kind"] == "trace" else decode_nflog(raw)


@pytest.mark.parametrize("name", ["iptnft_v4", "nft_inet", "legacy", "conntrack"])
def test_every_recorded_message_decodes_to_its_expected_value(name):
    rows = load(name)
    assert rows
    for r in rows:
        ev = decode_row(r)
        got = dataclasses.asdict(ev) if ev is not None else None
        assert got == r["expect"], r["hex"]


def events(name):
    return [e for e in (decode_row(r) for r in load(name)) if e is not None]


def test_iptables_nft_jump_reject_drop_return_match_the_ruleset():
    # iptnft_v4.ruleset: OUTPUT handle 7 "jump CHK" (tcp); CHK handle 9 reject, 10 drop, 11 return
    evs = [e for e in events("iptnft_v4") if e.table == "filter"]
    assert all(e.family == "ip" and e.nfproto == nl.NFPROTO_IPV4 for e in evs)
    jump = [e for e in evs if e.verdict == "jump"]
    assert {(e.chain, e.handle, e.jump_target) for e in jump} == {("OUTPUT", 7, "CHK"), ("OUTPUT", 8, "CHK")}
    drops = {(e.key.dport if e.key else None, e.handle) for e in evs if e.verdict == "drop"}
    assert {h for _, h in drops} == {9, 10}  # reject shows as drop: the rule tells them apart
    ret = [e for e in evs if e.verdict == "return"]
    assert [(e.chain, e.handle) for e in ret] == [("CHK", 11)]
    pol = [e for e in evs if e.type == "policy"]
    assert pol and all(e.handle is None and e.verdict == "" for e in pol)
    assert {e.policy for e in pol} == {"accept"}
    inp = [e for e in evs if e.chain == "INPUT" and e.verdict == "accept"]
    assert {e.handle for e in inp} == {5, 6}


def test_first_event_of_a_base_chain_carries_headers_and_interfaces():
    evs = [e for e in events("iptnft_v4") if e.table == "filter" and e.chain == "OUTPUT"]
    first = evs[0]
    assert first.key is not None and first.oif > 0
    assert first.key.src == "10.77.0.1" and first.key.dst == "10.77.0.2"
    later = [e for e in evs if e.trace_id == first.trace_id][1:]
    assert later and all(e.key is None and e.oif == 0 for e in later)


def test_end_of_chain_marker_on_6_18():
    # kernel-notes: a type=rule event with verdict continue and no handle precedes the policy
    evs = events("iptnft_v4")
    for i, e in enumerate(evs):
        if e.type == "policy":
            prev = evs[i - 1]
            assert (prev.type, prev.verdict, prev.handle, prev.chain) == ("rule", "continue", None, e.chain)


def test_native_nft_inet_vmap_and_ipv6():
    evs = [e for e in events("nft_inet") if e.table == "lab"]
    assert {e.family for e in evs} == {"inet"}
    assert {e.nfproto for e in evs} == {nl.NFPROTO_IPV4, nl.NFPROTO_IPV6}
    vmap = [e for e in evs if e.handle == 11]
    assert vmap and {(e.verdict, e.jump_target) for e in vmap} == {("jump", "v4")}
    v6 = [e for e in evs if e.key is not None and e.key.family == 6 and e.key.src == "fd00:78::2"]
    assert v6
    accept6 = [e for e in evs if e.handle == 9]
    assert accept6 and all(e.verdict == "accept" and e.chain == "icmpchk" for e in accept6)
    drop = [e for e in evs if e.verdict == "drop"]
    assert [(e.chain, e.handle, e.key.dport) for e in drop if e.key] == [("out", 13, 83)]


def test_legacy_trace_records():
    evs = [e for e in events("legacy") if e.source == "legacy"]
    assert evs
    v4 = [e for e in evs if e.family == "ip"]
    v6 = [e for e in evs if e.family == "ip6"]
    # legacy.ruleset: v4 OUTPUT line 2 is the --dport 84 DROP; v6 OUTPUT line 1 the REJECT
    assert [(e.table, e.chain, e.type, e.rulenum, e.key.dport) for e in v4] == [("filter", "OUTPUT", "rule", 2, 84)]
    assert [(e.table, e.chain, e.type, e.rulenum, e.key.dport) for e in v6] == [("filter", "OUTPUT", "rule", 1, 85)]
    assert v4[0].trace_id >= 1 << 32 and v4[0].handle is None and v4[0].oif > 0
    assert v6[0].key.src == "fd00:79::1"


def test_nflog_without_trace_prefix_is_ignored():
    # A LOG-target record: nfgenmsg(AF_INET) + NFULA_PREFIX "hello"
    raw = nl.nfgenmsg(2) + nl.nla_str(nl.NFULA_PREFIX, "hello ")
    assert decode_nflog(raw) is None


def test_truncated_messages_raise():
    with pytest.raises(DecodeError):
        decode_trace(b"\x02\x00")
    with pytest.raises(DecodeError):
        decode_trace(nl.nfgenmsg(2) + nl.nla_str(nl.NFTA_TRACE_TABLE, "x"))


def test_verdict_names():
    assert format_verdict(0) == "drop"
    assert format_verdict(1) == "accept"
    assert format_verdict((3 << 16) | 3) == "queue"  # NF_QUEUE_NR(3)
    assert format_verdict(-3) == "jump" and format_verdict(-1) == "continue"


def test_ruleset_change_names_the_table():
    raw = nl.nfgenmsg(2) + nl.nla_str(nl.NFTA_RULE_TABLE, "filter") + nl.nla_str(nl.NFTA_RULE_CHAIN, "INPUT")
    assert decode_ruleset_change((10 << 8) | nl.NFT_MSG_NEWRULE, raw) == (nl.NFT_MSG_NEWRULE, "filter")
    assert decode_ruleset_change((10 << 8) | nl.NFT_MSG_TRACE, raw) is None
    assert decode_ruleset_change((10 << 8) | nl.NFT_MSG_NEWGEN, raw) is None


@pytest.mark.parametrize("name", ["iptnft_v4", "nft_inet"])
def test_memoised_header_decode_equals_the_shared_parser(name):
    from ipdbg.events import parse_packet_headers
    from ipdbg.nftrace.decode import decode_headers

    n = 0
    for r in load(name):
        a = nl.parse_attrs(bytes.fromhex(r["hex"]), 4)
        if nl.NFTA_TRACE_NETWORK_HEADER in a:
            net = bytes(a[nl.NFTA_TRACE_NETWORK_HEADER])
            tr = bytes(a.get(nl.NFTA_TRACE_TRANSPORT_HEADER, b""))
            assert decode_headers(net, tr) == parse_packet_headers(net, tr)
            n += 1
    assert n > 5


def test_fast_event_equals_the_dataclass_constructor():
    ev = decode_row(load("iptnft_v4")[0])
    again = type(ev)(**dataclasses.asdict(ev) | {"key": ev.key})
    assert ev == again and hash(ev) == hash(again)


def test_conntrack_attributes_6_16():
    # conntrack.ruleset: output handle 3 "ct state new counter", input handle 4 "ct state established,related accept"
    evs = [e for e in events("conntrack") if e.table == "conn"]
    new = [e for e in evs if e.handle == 3]
    est = [e for e in evs if e.handle == 4]
    assert len(new) == 1 and len(est) == 1
    assert new[0].ct["state"] == ["new"] and new[0].ct["direction"] == "original"
    assert est[0].ct["state"] == ["established"] and est[0].ct["direction"] == "reply"
    assert new[0].ct["id"] == est[0].ct["id"]  # the echo and its reply: one conntrack entry
    assert est[0].ct["status"] & 0x8  # IPS_CONFIRMED
    assert all(e.ct == {} for e in evs if e.handle is None)  # only rule events carry them here
