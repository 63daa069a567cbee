"""ipdbg.btf against a recorded BTF blob and bpftool's own decoding of it.

tests/fixtures/btf/tiny.btf is the .BTF section of tiny.c compiled by clang 14
(regen.sh); tiny.bpftool.json is what bpftool v7.1.0 (libbpf 1.1) decodes from it: an
independent decoder, so a mistake in ours shows up as a difference.
ENUM64 and signed ENUM (kernel 6.0+) are not emitted by clang 14: those are tested
with a blob written byte by byte from include/uapi/linux/btf.h below.
"""

import json
import struct
from pathlib import Path

import pytest

from ipdbg.btf import BtfError, format_drop_reason, parse_btf, parse_header

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "btf"


@pytest.fixture(scope="module")
def tiny():
    return parse_btf((FIX / "tiny.btf").read_bytes())


@pytest.fixture(scope="module")
def expected():
    return json.loads((FIX / "tiny.bpftool.json").read_text())["types"]


def test_header(tiny):
    h = tiny.header
    assert (h.magic, h.version, h.hdr_len, h.type_off) == (0xEB9F, 1, 24, 0)
    assert h.str_off == h.type_len
    assert 24 + h.str_off + h.str_len == len((FIX / "tiny.btf").read_bytes())


def test_every_type_matches_bpftool(tiny, expected):
    assert tiny.count == len(expected)
    for exp in expected:
        t = tiny.type(exp["id"])
        assert t.kind == exp["kind"], exp
        assert (t.name or "(anon)") == exp["name"], exp
        k = exp["kind"]
        if k in ("PTR", "TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG", "FUNC", "VAR", "DECL_TAG"):
            assert t.type_id == exp["type_id"], exp
        if k == "INT":
            enc, off, bits = t.extra
            assert (t.size, off, bits) == (exp["size"], exp["bits_offset"], exp["nr_bits"])
            assert {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}[enc] == exp["encoding"]
        elif k == "ARRAY":
            assert t.extra == (exp["type_id"], exp["index_type_id"], exp["nr_elems"])
        elif k in ("STRUCT", "UNION"):
            assert t.size == exp["size"] and t.vlen == exp["vlen"]
            got = [
                {"name": m.name or "(anon)", "type_id": m.type_id, "bits_offset": m.bit_offset}
                | ({"bitfield_size": m.bitfield_size} if m.bitfield_size else {})
                for m in t.members
            ]
            assert got == exp["members"]
        elif k == "ENUM":
            # bpftool 7.1 prints unsigned 32-bit values sign-extended to 64 bits in JSON
            # (its text output says 4294967295): compare the low 32 bits.
            assert t.size == exp["size"]
            assert [(n, v & 0xFFFFFFFF) for n, v in t.members] == [
                (e["name"], e["val"] & 0xFFFFFFFF) for e in exp["values"]
            ]
        elif k == "FUNC_PROTO":
            assert t.type_id == exp["ret_type_id"]
            assert [(n or "(anon)", p) for n, p in t.members] == [(p["name"], p["type_id"]) for p in exp["params"]]
        elif k == "FUNC":
            assert {0: "static", 1: "global", 2: "extern"}[t.extra] == exp["linkage"]
        elif k == "VAR":
            assert {0: "static", 1: "global", 2: "extern"}[t.extra] == exp["linkage"]
        elif k == "DATASEC":
            assert t.members == tuple((v["type_id"], v["offset"], v["size"]) for v in exp["vars"])
        elif k == "DECL_TAG":
            assert t.extra == exp["component_idx"]
        elif k == "FWD":
            assert ("union" if t.kind_flag else "struct") == exp["fwd_kind"]
        elif k == "FLOAT":
            assert t.size == exp["size"]


def test_lookups(tiny):
    assert tiny.find("sk_buff", "STRUCT") == 2
    assert tiny.find("sk_buff", "UNION") is None
    assert tiny.find("sock", "FWD") == 10
    assert tiny.find("no_such_type", "STRUCT") is None
    assert tiny.find("buff", "STRUCT") is None  # a suffix of "sk_buff" is not a name
    assert tiny.find("sk", "STRUCT") is None  # member names are not type names
    assert tiny.find_all("u32") == [19]
    assert tiny.find_all("sock") == [10]
    assert tiny.find("nft_do_chain", "FUNC") == 30
    assert tiny.struct_size("sk_buff") == 88
    assert tiny.struct_size("nope") is None
    assert tiny.member_offset("sk_buff", "dev") == 32
    assert tiny.member_offset("sk_buff", "len") == 40
    assert tiny.member_offset("sk_buff", "protocol") == 46
    assert tiny.member_bit_offset("sk_buff", "pkt_type") == 354
    # members of anonymous unions/structs, as C reaches them
    assert tiny.member_offset("sk_buff", "prev") == 8
    assert tiny.member_offset("sk_buff", "rbnode") == 0
    assert tiny.member_offset("sk_buff", "nope") is None
    assert tiny.member_offset("nope", "len") is None


def test_enum_values_and_drop_reason(tiny):
    reasons = tiny.enum_values("skb_drop_reason")
    assert reasons["SKB_DROP_REASON_NETFILTER_DROP"] == 12
    assert reasons["SKB_DROP_REASON_NO_SOCKET"] == 3
    assert len(reasons) == 6
    assert tiny.enum_values("nope") == {}
    assert format_drop_reason(12, reasons) == "NETFILTER_DROP"
    assert format_drop_reason(1, reasons) == "SKB_CONSUMED"
    assert format_drop_reason(999, reasons) == "reason 999"


def test_func_proto_params(tiny):
    assert tiny.func_proto_params("nft_do_chain") == [("pkt", "struct sk_buff *"), ("priv", "void *")]
    # btf_trace_<tp> typedef: void (*)(void *ctx, args...); 6.11+ adds rx_sk
    assert tiny.func_proto_params("btf_trace_kfree_skb") == [
        ("", "void *"),
        ("", "struct sk_buff *"),
        ("", "void *"),
        ("", "enum skb_drop_reason"),
        ("", "struct sock *"),
    ]
    assert tiny.func_proto_params("nope") == []


def test_type_names(tiny):
    cvp = next(m for m in tiny.type(2).members if m.name == "cvp").type_id
    assert tiny.type_name(cvp) == "restrict const volatile u32 *"
    user = next(m for m in tiny.type(2).members if m.name == "user_ptr").type_id
    assert tiny.type_name(user) == "char *"
    assert tiny.type_name(7) == "u64[3]"
    assert tiny.type_name(21) == "union fwd_union"
    assert tiny.type_name(35) == (
        "void (*)(void *, struct sk_buff *, void *, enum skb_drop_reason, struct sock *) *"
    )
    assert tiny.resolve(19) == 12


# -- hand-written blobs (include/uapi/linux/btf.h) -----------------------------


def _blob(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def _t(name_off, kind, vlen, size_type, kflag=0):
    return struct.pack("<III", name_off, (kflag << 31) | (kind << 24) | vlen, size_type)


def test_enum64_and_signed_enum():
    strs = b"\0big\0A\0B\0sig\0M\0"
    types = (
        _t(1, 19, 2, 8, kflag=0)  # ENUM64 'big' unsigned
        + struct.pack("<III", 5, 0xFFFFFFFF, 0x1)  # A = 0x1ffffffff
        + struct.pack("<III", 7, 0, 0x80000000)  # B = 1 << 63
        + _t(9, 6, 1, 4, kflag=1)  # ENUM 'sig' signed (6.0+ kind_flag)
        + struct.pack("<Ii", 13, -5)
    )
    b = parse_btf(_blob(types, strs))
    assert b.type(1).kind == "ENUM64"
    assert b.enum_values("big") == {"A": 0x1FFFFFFFF, "B": 1 << 63}
    assert b.find("big", "ENUM") == 1  # ENUM look-ups also accept ENUM64
    assert b.enum_values("sig") == {"M": -5}


def test_split_btf_ids_continue_after_base(tiny):
    # A module's BTF: ids and string offsets continue after the base's.
    base_strs = tiny.header.str_len
    strs = b"\0mod_struct\0x\0"
    types = _t(base_strs + 1, 4, 1, 4) + struct.pack("<III", base_strs + 12, 12, 0)
    mod = parse_btf(_blob(types, strs), base=tiny)
    assert mod.start_id == tiny.count + 1
    assert mod.find("mod_struct", "STRUCT") == tiny.count + 1
    assert mod.find("sk_buff", "STRUCT") == 2
    assert mod.member_offset("mod_struct", "x") == 0
    assert mod.type_name(mod.type(tiny.count + 1).members[0].type_id) == "unsigned int"


def test_big_endian_blob():
    strs = b"\0u\0"
    types = struct.pack(">III", 1, (1 << 24), 4) + struct.pack(">I", 32)
    hdr = struct.pack(">HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    b = parse_btf(hdr + types + strs)
    t = b.type(b.find("u", "INT"))
    assert (t.size, t.extra) == (4, (0, 0, 32))


@pytest.mark.parametrize(
    "data,msg",
    [
        (b"\x00" * 10, "too short"),
        (b"\x12\x34" + b"\x00" * 30, "magic"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 100, 100, 4), "truncated"),
        (_blob(_t(0, 25, 0, 0), b"\0"), "unknown BTF kind"),
        (_blob(_t(0, 4, 2, 8), b"\0"), "overruns"),
    ],
)
def test_bad_input(data, msg):
    with pytest.raises(BtfError, match=msg):
        parse_header(data) if len(data) < 24 else parse_btf(data)
