"""Pure nf_tables messages of the iptables-nft line-number edit path (ipdbg.rules.nftmsg).

Fixtures (tests/fixtures/rules_nftmsg/): real GETRULE dumps of chain INPUT of
`iptables-nft-restore`'s table (kernel 6.18, iptables 1.8.9), the same three rules
twice: input-dump-a.bin with counters 7 packets / 420 bytes on rule 2,
input-dump-b.bin after `iptables-nft -Z INPUT 2`. input-nft-list.txt and
input-save.txt are `nft -a list chain` and `iptables-nft-save` of the second state.
"""

import os
import socket
import struct

import pytest

from ipdbg.nftrace import nl
from ipdbg.rules import nftmsg

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "rules_nftmsg")


def fixture(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def handles_in_nft_list():
    text = fixture("input-nft-list.txt").decode()
    return [int(ln.rsplit("# handle ", 1)[1]) for ln in text.splitlines()
            if "# handle" in ln and "chain" not in ln and "table" not in ln]


def test_scan_finds_the_handle_of_every_line_as_nft_lists_them():
    scan = nftmsg.RuleScan(2, 1 << 30)
    scan.feed(fixture("input-dump-a.bin"))
    assert scan.done and scan.complete and not scan.error
    assert scan.handles == handles_in_nft_list() == [3, 4, 5]


@pytest.mark.parametrize("line", [1, 2, 3])
def test_scan_stops_at_the_line_asked_and_keeps_its_message(line):
    buf = fixture("input-dump-a.bin")
    scan = nftmsg.RuleScan(2, line)
    scan.feed(buf)
    assert scan.done and not scan.complete
    assert scan.handles == [3, 4, 5][:line]
    assert nftmsg.parse_rule_body(scan.last)[0][0] == scan.handles[-1]


def test_scan_fed_in_pieces_as_datagrams_arrive():
    msgs = list(nl.parse_nlmsgs(fixture("input-dump-a.bin")))
    assert len(msgs) == 4  # three rules and NLMSG_DONE
    scan = nftmsg.RuleScan(2, 1 << 30)
    for mtype, flags, seq, pid, payload in msgs:
        scan.feed(nl.nlmsg(mtype, flags, seq, bytes(payload), pid))
    assert scan.handles == [3, 4, 5] and scan.complete


def test_scan_ignores_other_sequence_numbers_and_reports_errors():
    scan = nftmsg.RuleScan(9, 1)
    scan.feed(fixture("input-dump-a.bin"))  # seq 2
    assert scan.handles == [] and not scan.done
    err = nl.nlmsg(nl.NLMSG_ERROR, 0, 9, struct.pack("=i", -2) + b"\0" * 16)
    scan.feed(err)
    assert scan.done and scan.error == 2


def test_rule_bodies_and_expression_names():
    rules = nftmsg.parse_rule_body(fixture("input-dump-a.bin"))
    assert [r[0] for r in rules] == [3, 4, 5]
    assert all(r[1] == nl.NFPROTO_IPV4 for r in rules)
    names = [nftmsg.parse_expr_names(r[2]) for r in rules]
    assert names[0] == ["payload", "cmp", "counter", "immediate"]
    # -p tcp -m tcp --dport 22: native meta/payload/cmp; multiport and comment: xt compat
    assert names[1] == ["meta", "cmp", "payload", "cmp", "payload", "cmp", "counter", "immediate"]
    assert names[2] == ["meta", "cmp", "match", "match", "counter", "immediate"]
    assert not nftmsg.REFERENCING.intersection(sum(names, []))


def test_identity_ignores_counters_but_not_the_rule():
    a = nftmsg.parse_rule_body(fixture("input-dump-a.bin"))
    b = nftmsg.parse_rule_body(fixture("input-dump-b.bin"))
    assert a[1][2] != b[1][2]  # the counter values differ in the raw bytes
    msgs_a = [bytes(m) for m in _messages(fixture("input-dump-a.bin"))]
    msgs_b = [bytes(m) for m in _messages(fixture("input-dump-b.bin"))]
    ids_a = [nftmsg.parse_rule_identity(m) for m in msgs_a]
    ids_b = [nftmsg.parse_rule_identity(m) for m in msgs_b]
    assert ids_a == ids_b
    assert len(set(ids_a)) == 3


def _messages(buf):
    off = 0
    while off + 16 <= len(buf):
        length, mtype = struct.unpack_from("=IH", buf, off)
        if mtype == (nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_NEWRULE:
            yield buf[off:off + length]
        off += (length + 3) & ~3


@pytest.mark.parametrize("op,flags,msg", [
    ("delete", nl.NLM_F_REQUEST | nl.NLM_F_ACK, nl.NFT_MSG_DELRULE),
    ("replace", nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_REPLACE, nl.NFT_MSG_NEWRULE),
    ("insert", nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE, nl.NFT_MSG_NEWRULE),
    ("append", nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_APPEND, nl.NFT_MSG_NEWRULE),
])
def test_edit_batch_is_one_transaction_tagged_with_the_generation(op, flags, msg):
    body = nftmsg.parse_rule_body(fixture("input-dump-a.bin"))[1][2] + nftmsg.format_compat(6, False)
    batch, seq = nftmsg.format_edit_batch(op, 6, "filter", "INPUT", genid=0x01020304, seq=40,
                                          handle=None if op == "append" else 4, body=body)
    msgs = list(nl.parse_nlmsgs(batch))
    assert [m[0] for m in msgs] == [nl.NFNL_MSG_BATCH_BEGIN, (nl.NFNL_SUBSYS_NFTABLES << 8) | msg,
                                    nl.NFNL_MSG_BATCH_END]
    assert [m[2] for m in msgs] == [40, 41, 42] and seq == 41
    begin = msgs[0][4]
    assert struct.unpack_from("!H", begin, 2)[0] == nl.NFNL_SUBSYS_NFTABLES  # res_id
    assert nl.parse_be32(nl.parse_attrs(begin, 4)[nftmsg.NFNL_BATCH_GENID]) == 0x01020304
    mtype, mflags, _s, _p, payload = msgs[1]
    assert mflags == flags and payload[0] == nl.NFPROTO_IPV6
    attrs = nl.parse_attrs(payload, 4)
    assert nl.parse_str(attrs[nl.NFTA_RULE_TABLE]) == "filter"
    assert nl.parse_str(attrs[nl.NFTA_RULE_CHAIN]) == "INPUT"
    if op in ("delete", "replace"):
        assert nl.parse_be64(attrs[nl.NFTA_RULE_HANDLE]) == 4
        assert nftmsg.NFTA_RULE_POSITION not in attrs
    elif op == "insert":
        assert nl.parse_be64(attrs[nftmsg.NFTA_RULE_POSITION]) == 4
        assert nl.NFTA_RULE_HANDLE not in attrs
    else:
        assert nftmsg.NFTA_RULE_POSITION not in attrs and nl.NFTA_RULE_HANDLE not in attrs
    if op == "delete":
        assert nl.NFTA_RULE_EXPRESSIONS not in attrs
    else:
        compat = nl.parse_attrs(attrs[nftmsg.NFTA_RULE_COMPAT], 0)
        assert nl.parse_be32(compat[nftmsg.NFTA_RULE_COMPAT_PROTO]) == 6
        assert nl.parse_be32(compat[nftmsg.NFTA_RULE_COMPAT_FLAGS]) == 0
        assert nftmsg.parse_expr_names(
            nl.nla_nested(nl.NFTA_RULE_EXPRESSIONS, bytes(attrs[nl.NFTA_RULE_EXPRESSIONS]))
        )[-2:] == ["counter", "immediate"]


def test_getgen_answer():
    payload = nl.nfgenmsg(socket.AF_UNSPEC) + nl.nla_be32(nftmsg.NFTA_GEN_ID, 77)
    ans = nl.nlmsg((nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_NEWGEN, 0, 5, payload)
    assert nftmsg.parse_gen(ans, 5) == 77
    assert nftmsg.parse_gen(ans, 6) is None
    err = nl.nlmsg(nl.NLMSG_ERROR, 0, 5, struct.pack("=i", -1) + b"\0" * 16)
    with pytest.raises(OSError):
        nftmsg.parse_gen(err, 5)
    req = nftmsg.format_getgen(3)
    assert list(nl.parse_nlmsgs(req))[0][:3] == ((nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_GETGEN,
                                                 nl.NLM_F_REQUEST, 3)


@pytest.mark.parametrize("tokens,want", [
    ([], (0, False)),
    (["-s", "10.0.0.1", "-j", "ACCEPT"], (0, False)),
    (["-p", "tcp", "--dport", "22"], (6, False)),
    (["!", "-p", "udp"], (17, True)),
    (["-p", "!", "udp"], (17, True)),
    (["--protocol", "ICMP"], (1, False)),
    (["-p", "ipv6-icmp"], (58, False)),
    (["-p", "all"], (0, False)),
    (["-p", "47"], (47, False)),
    (["-p", "300"], None),
    (["-p", "gre"], None),  # not one of iptables' built-in names: left to iptables-restore
])
def test_rule_protocol_for_the_compat_attribute(tokens, want):
    assert nftmsg.parse_rule_proto(tokens) == want
