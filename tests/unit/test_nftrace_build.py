"""The owned trace table batch (pure): checked by parsing it back with the kernel's layout."""

import struct

from ipdbg.filters import build_filter
from ipdbg.nftrace import build, nl


def msgs(data):
    return [(t, f, s, bytes(p)) for t, f, s, _pid, p in nl.parse_nlmsgs(data)]


def expr_names(rule_payload):
    a = nl.parse_attrs(rule_payload, 4)
    names = []
    # NFTA_LIST_ELEM repeats (parse_attrs keeps the last one): walk them by hand
    exprs = a[nl.NFTA_RULE_EXPRESSIONS]
    off = 0
    while off + 4 <= len(exprs):
        alen, _ = struct.unpack_from("=HH", exprs, off)
        e = nl.parse_attrs(exprs[off + 4:off + alen])
        names.append(nl.parse_str(e[nl.NFTA_EXPR_NAME]))
        off += (alen + 3) & ~3
    return names


def test_batch_shape_owner_flag_and_priority():
    data, acks = build.format_trace_batch("ipdbg_42", build_filter(dst="10.9.0.0/24", proto="icmp"))
    m = msgs(data)
    types = [t for t, *_ in m]
    sub = nl.NFNL_SUBSYS_NFTABLES << 8
    assert types == [nl.NFNL_MSG_BATCH_BEGIN, sub | nl.NFT_MSG_NEWTABLE, sub | nl.NFT_MSG_NEWCHAIN,
                     sub | nl.NFT_MSG_NEWRULE, sub | nl.NFT_MSG_NEWCHAIN, sub | nl.NFT_MSG_NEWRULE,
                     nl.NFNL_MSG_BATCH_END]
    assert acks == [s for t, f, s, p in m if f & nl.NLM_F_ACK]
    # batch begin names the nf_tables subsystem in res_id (big endian)
    assert struct.unpack_from("!H", m[0][3], 2)[0] == nl.NFNL_SUBSYS_NFTABLES
    table = nl.parse_attrs(m[1][3], 4)
    assert m[1][3][0] == nl.NFPROTO_INET
    assert nl.parse_str(table[nl.NFTA_TABLE_NAME]) == "ipdbg_42"
    assert nl.parse_be32(table[nl.NFTA_TABLE_FLAGS]) == nl.NFT_TABLE_F_OWNER  # not PERSIST
    for chain_msg, hook in ((m[2][3], nl.NF_INET_PRE_ROUTING), (m[4][3], nl.NF_INET_LOCAL_OUT)):
        c = nl.parse_attrs(chain_msg, 4)
        h = nl.parse_attrs(c[nl.NFTA_CHAIN_HOOK])
        assert nl.parse_be32(h[nl.NFTA_HOOK_HOOKNUM]) == hook
        assert struct.unpack("!i", bytes(h[nl.NFTA_HOOK_PRIORITY]))[0] == -2147483648
        assert nl.parse_be32(c[nl.NFTA_CHAIN_POLICY]) == nl.NF_ACCEPT


def test_rule_expressions_follow_the_filter():
    data, _ = build.format_trace_batch("t", build_filter(src="10.1.0.0/16", dst="198.51.100.80:80", proto="tcp"))
    rule = msgs(data)[3][3]
    # meta nfproto ipv4, meta l4proto tcp, ip saddr 10.1.0.0/16 (masked), ip daddr 198.51.100.80, tcp dport 80
    assert expr_names(rule) == ["meta", "cmp", "meta", "cmp", "payload", "bitwise", "cmp", "payload", "cmp",
                                "payload", "cmp", "immediate", "meta", "immediate"]


def test_ports_without_protocol_trace_tcp_and_udp_both_directions():
    flt = build_filter(dst=":53")
    assert [(m.proto, m.dport) for m in build.format_matches(flt)] == [(6, 53), (17, 53)]
    from dataclasses import replace
    both = replace(build_filter(dst="10.0.0.2", proto="udp"), both_directions=True)
    ms = build.format_matches(both)
    assert [(str(m.src), str(m.dst)) for m in ms] == [("None", "10.0.0.2/32"), ("10.0.0.2/32", "None")]


def test_no_filter_traces_everything_with_one_rule():
    data, _ = build.format_trace_batch("t", build_filter())
    rule = msgs(data)[3][3]
    assert expr_names(rule) == ["immediate", "meta", "immediate"]  # nftrace set 1, accept


def test_iface_uses_iifname_on_prerouting_and_oifname_on_output():
    data, _ = build.format_trace_batch("t", build_filter(iface="eth0"))
    m = msgs(data)
    for rule, key in ((m[3][3], nl.NFT_META_IIFNAME), (m[5][3], nl.NFT_META_OIFNAME)):
        assert expr_names(rule)[:2] == ["meta", "cmp"]
        assert struct.pack("!I", key) in rule
        assert b"eth0" + b"\0" * 12 in rule


def test_nflog_config_bind():
    raw = build.format_nflog_config(0, 2, nl.NFULNL_CFG_CMD_PF_BIND, 5)
    (t, f, s, p), = msgs(raw)
    assert t == (nl.NFNL_SUBSYS_ULOG << 8) | nl.NFULNL_MSG_CONFIG and s == 5
    assert p[0] == 2 and struct.unpack_from("!H", p, 2)[0] == 0
    assert bytes(nl.parse_attrs(p, 4)[nl.NFULA_CFG_CMD]) == bytes([nl.NFULNL_CFG_CMD_PF_BIND])
