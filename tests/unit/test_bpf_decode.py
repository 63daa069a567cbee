"""Ring-buffer records recorded from real drops (tests/fixtures/bpf/drops_records.json,
made by tests/fixtures/bpf/record_drops.py on 6.18) decode to what the packets were;
the Python twins of drops.h match the compiled object's BTF."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import struct
from pathlib import Path

import pytest

from ipdbg.bpf import decode
from ipdbg.bpf.decode import EventDecoder, decode_drop_event, pack_config, parse_reason_names
from ipdbg.events import DropEvent, PacketKey
from ipdbg.commands.drops import Summary, format_drop_json, format_drop_text, format_tuple
from ipdbg.filters import build_filter
from ipdbg.kallsyms import parse_kallsyms

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bpf"
OBJECT = Path(decode.__file__).parent / "drops.bpf.o"
HEADER = Path(decode.__file__).parent / "drops.h"


def fixture():
    return json.loads((FIXTURES / "drops_records.json").read_text())


def decoder(fx):
    names = {int(k): v for k, v in fx["reason_names"].items()}
    return EventDecoder(names, parse_kallsyms("\n".join(fx["kallsyms"])).symbolize)


def test_recorded_records_decode_to_expected_events():
    fx = fixture()
    dec = decoder(fx)
    assert len(fx["records"]) >= 10
    for rec in fx["records"]:
        ev = dec.decode(bytes.fromhex(rec["hex"]))
        assert dataclasses.asdict(ev) == rec["expected"]
        # the fast path builds the same objects as the dataclass constructors
        exp = dict(rec["expected"], key=PacketKey(**rec["expected"]["key"]))
        assert ev == DropEvent(**exp) and hash(ev.key) == hash(exp["key"])
        assert repr(ev) == repr(DropEvent(**exp))


def test_batch_decode_equals_one_by_one():
    fx = fixture()
    raw = [bytes.fromhex(r["hex"]) for r in fx["records"]]
    names = {int(k): v for k, v in fx["reason_names"].items()}
    one = [decode_drop_event(r, names) for r in raw]
    assert [(e.key, e.reason_name) for e in decoder(fx).decode_many(raw)] == [(e.key, e.reason_name) for e in one]
    many = decoder(fx).decode_many(raw)
    assert [dataclasses.asdict(e) for e in many] == [r["expected"] for r in fx["records"]]


def test_reply_events_name_the_dropped_skb():
    fx = fixture()
    evs = decoder(fx).decode_many(bytes.fromhex(r["hex"]) for r in fx["records"])
    by = {(e.kind, e.key.dport): e for e in evs}
    assert by[("tcp_send_reset", 81)].skb == by[("kfree_skb", 81)].skb
    assert by[("icmp_send", 9998)].skb == by[("kfree_skb", 9998)].skb
    assert (by[("icmp_send", 9998)].icmp_type, by[("icmp_send", 9998)].icmp_code) == (3, 3)
    assert by[("kfree_skb", 81)].tcp_flags == 0x02  # SYN
    assert by[("kfree_skb", 9996)].key.family == 6
    # no IP header yet: the tuple came from the socket, and there is no IP id
    out = by[("kfree_skb", 8085)]
    assert out.reason_name == "IP_OUTNOROUTES" and out.key.ident == 0 and out.key.src == "10.91.0.1"


def test_unknown_reason_and_no_symbols():
    fx = fixture()
    raw = bytes.fromhex(fx["records"][0]["hex"])
    ev = decode_drop_event(raw)  # no names, no kallsyms (not root)
    assert ev.reason_name == "reason 12"
    assert ev.location_sym == ""
    assert ev.location == fx["records"][0]["expected"]["location"]


def test_non_ip_record_has_no_key():
    fx = fixture()
    raw = bytearray(bytes.fromhex(fx["records"][0]["hex"]))
    off = struct.calcsize("=QQQIIIIIIIHHBB") - 1  # family
    raw[off] = 0
    assert decode_drop_event(bytes(raw)).key is None


def test_reason_names_from_btf_enum():
    enum = {"SKB_NOT_DROPPED_YET": 0, "SKB_CONSUMED": 1, "SKB_DROP_REASON_NOT_SPECIFIED": 2,
            "SKB_DROP_REASON_NO_SOCKET": 3, "SKB_DROP_REASON_MAX": 130}
    assert parse_reason_names(enum) == {0: "SKB_NOT_DROPPED_YET", 1: "SKB_CONSUMED",
                                        2: "NOT_SPECIFIED", 3: "NO_SOCKET"}


# -- the Python twins of drops.h against the compiled object's BTF -----------------

def parse_elf_section(data: bytes, name: str) -> bytes:
    """A section's bytes from a little-endian ELF64 file."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sec(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)

    strtab = sec(shstrndx)
    names = data[strtab[4]:strtab[4] + strtab[5]]
    for i in range(shnum):
        s = sec(i)
        if names[s[0]:names.index(b"\0", s[0])].decode() == name:
            return data[s[4]:s[4] + s[5]]
    raise KeyError(name)


@pytest.fixture(scope="module")
def obj_btf():
    if not OBJECT.exists():
        pytest.skip("ipdbg/bpf/drops.bpf.o is not built (make setup builds it)")
    from ipdbg.btf import parse_btf

    return parse_btf(parse_elf_section(OBJECT.read_bytes(), ".BTF"))


def _offsets(fmt: str, fields) -> dict[str, int]:
    # one struct code per field ("16I" and "16s" are one field each)
    codes = re.findall(r"\d*[a-zA-Z]", fmt[1:])
    codes = [c for c in codes if not c.endswith("x")]
    assert len(codes) == len(fields)
    out, prefix = {}, fmt[0]
    for name, code in zip(fields, codes):
        out[name] = struct.calcsize(prefix)
        prefix += code
    return out


def test_event_struct_matches_btf(obj_btf):
    assert obj_btf.struct_size("drop_event") == decode.EVENT_SIZE == 112
    for name, off in _offsets(decode.EVENT_FORMAT, decode.EVENT_FIELDS).items():
        assert obj_btf.member_offset("drop_event", name) == off, name


def test_config_struct_matches_btf(obj_btf):
    assert obj_btf.struct_size("drops_config") == decode.CONFIG_SIZE
    for name, off in _offsets(decode.CONFIG_FORMAT, decode.CONFIG_FIELDS).items():
        outer, _, inner = name.partition(".")
        got = obj_btf.member_offset("drops_config", outer)
        if inner:
            got += obj_btf.member_offset("drops_cidr", inner)
        assert got == off, name
    # `cfg` is the only .rodata variable, at offset 0: the loader writes it there
    sec = obj_btf.type(obj_btf.find(".rodata", "DATASEC"))
    assert [(obj_btf.type(v).name, off) for v, off, _ in sec.members] == [("cfg", 0)]


def test_header_kinds_and_limits_match():
    text = HEADER.read_text()
    for kind_id, name in decode.KINDS.items():
        assert re.search(rf"#define DROP_KIND_{name.upper()} {kind_id}\b", text)
    assert f"#define DROPS_MAX_NETNS {decode.MAX_NETNS}" in text
    assert f"#define DROPS_MAX_REASONS {decode.MAX_REASONS}" in text


# -- the packed config --------------------------------------------------------------

def unpack_config(raw: bytes) -> dict:
    vals = decode.CONFIG.unpack(raw)
    return {"reasons": vals[0:16], "src_net": vals[16], "src_mask": vals[17],
            "dst_net": vals[18], "dst_mask": vals[19], "ifname": vals[20], "n_netns": vals[21],
            "n_reasons": vals[22], "sport": vals[23], "dport": vals[24], "has_src": vals[25],
            "has_dst": vals[26], "family": vals[27], "proto": vals[28], "both": vals[29],
            "ports_need_l4": vals[30], "has_ifname": vals[31]}


def test_pack_config_v4_cidr_port_proto():
    c = unpack_config(pack_config(build_filter(src="10.1.2.0/23", dst="198.51.100.80:80", proto="tcp"),
                                  [4026531840, 4026532001, 4026531840], [12, 3]))
    assert c["has_src"] and c["has_dst"] and c["family"] == 4 and c["proto"] == 6
    assert c["src_net"][:4] == ipaddress.ip_address("10.1.2.0").packed
    assert c["src_mask"][:4] == bytes([255, 255, 254, 0]) and c["src_mask"][4:] == bytes(12)
    assert c["dst_mask"][:4] == b"\xff" * 4 and c["dport"] == 80 and c["sport"] == 0
    assert c["n_netns"] == 2  # the inodes themselves go into the netns_filter map
    assert decode.pack_netns_keys([4026531840, 4026532001, 4026531840]) == [
        struct.pack("=I", 4026531840), struct.pack("=I", 4026532001)]
    assert c["n_reasons"] == 2 and c["reasons"][:2] == (12, 3)
    assert not c["ports_need_l4"] and not c["both"]
    assert not c["has_ifname"] and c["ifname"] == bytes(16)


def test_pack_config_any_and_v6_and_ports_without_proto():
    c = unpack_config(pack_config(build_filter()))
    assert not any([c["has_src"], c["has_dst"], c["family"], c["proto"], c["n_netns"], c["n_reasons"]])
    c = unpack_config(pack_config(dataclasses.replace(build_filter(dst="[2001:db8::1]:443"),
                                                      both_directions=True)))
    assert c["family"] == 6 and c["dst_net"] == ipaddress.ip_address("2001:db8::1").packed
    assert c["dst_mask"] == b"\xff" * 16 and c["dport"] == 443
    assert c["ports_need_l4"] and c["both"]


def test_pack_config_iface():
    c = unpack_config(pack_config(build_filter(), iface="eth1"))
    assert c["has_ifname"] == 1 and c["ifname"] == b"eth1" + bytes(12)


def test_pack_config_limits():
    from ipdbg.errors import UsageError

    pack_config(build_filter(), list(range(1, decode.MAX_NETNS + 1)))  # more than 16 is fine now
    with pytest.raises(UsageError):
        pack_config(build_filter(), list(range(1, decode.MAX_NETNS + 2)))
    with pytest.raises(UsageError):
        pack_config(build_filter(), [], list(range(17)))
    for bad in ("a" * 16, "a/b"):
        with pytest.raises(UsageError):
            pack_config(build_filter(), iface=bad)


# -- rendering of decoded events ------------------------------------------------------

def test_text_and_json_rendering():
    fx = fixture()
    evs = decoder(fx).decode_many(bytes.fromhex(r["hex"]) for r in fx["records"])
    by = {(e.kind, e.key.dport): e for e in evs}
    names = {by[("kfree_skb", 81)].netns: "server"}
    line = format_drop_text(by[("kfree_skb", 81)], names, 0.0)
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{6}  server  python\(\d+\)  "
                     r"tcp 10\.91\.0\.1:41003 -> 10\.91\.0\.2:81 \[SYN\]  NO_SOCKET  tcp_v4_rcv\+0x99$", line)
    assert format_tuple(by[("kfree_skb", 9996)]) == "udp [fd00:91::1]:41004 -> [fd00:91::2]:9996"
    assert "ICMP_ERROR type=3 code=3" in format_drop_text(by[("icmp_send", 9998)], {}, 0.0)
    j = format_drop_json(by[("kfree_skb", 9999)], {}, 0.0)
    assert (j["reason"], j["reason_code"], j["location"], j["dport"]) == ("NETFILTER_DROP", 12, "nft_do_chain+0x46f", 9999)
    s = Summary()
    for e in evs:
        s.add(e)
    summ = s.to_json(lost=5)["summary"]
    assert summ["drops"] == 7 and summ["lost"] == 5
    assert summ["by_reason"]["NETFILTER_DROP"] == 3
    assert summ["replies"] == {"icmp_send": 2, "tcp_send_reset": 1}
    assert s.format_text(5).splitlines()[0] == "-- 7 drops, 5 events lost, 2 icmp_send, 1 tcp_send_reset"
    assert s.format_text(0, unread=3).splitlines()[0].startswith("-- 7 drops, 0 events lost, 3 unread at exit")
    assert s.to_json(0, unread=3)["summary"]["unread"] == 3


# -- ring-buffer batches (the kernel's record framing, kernel/bpf/ringbuf.c) ----------

def _framed(payload: bytes, flags: int = 0) -> bytes:
    pad = (-(len(payload) + 8)) % 8
    return struct.pack("=II", len(payload) | flags, 0) + payload + b"\0" * pad


def test_ring_batch_of_recorded_records():
    fx = fixture()
    raw = [bytes.fromhex(r["hex"]) for r in fx["records"]]
    buf = b"".join(_framed(r) for r in raw)
    recs, used = decode.parse_ring_records(buf)
    assert used == len(buf) == len(raw) * 120
    assert recs == [(i * 120 + 8, 112) for i in range(len(raw))]
    evs = decoder(fx).decode_buffer(buf, recs)
    assert [dataclasses.asdict(e) for e in evs] == [r["expected"] for r in fx["records"]]


def test_ring_batch_stops_at_busy_and_cut_records_and_skips_discarded():
    fx = fixture()
    a, b, c = (bytes.fromhex(r["hex"]) for r in fx["records"][:3])
    # a committed, b discarded (consumed, not returned), c still being written
    buf = _framed(a) + _framed(b, decode.RINGBUF_DISCARD) + _framed(c, decode.RINGBUF_BUSY)
    recs, used = decode.parse_ring_records(buf)
    assert recs == [(8, 112)] and used == 240
    # a record cut by the end of the slice waits for the next read
    recs, used = decode.parse_ring_records(_framed(a) + _framed(c)[:60])
    assert recs == [(8, 112)] and used == 120
    assert decode.parse_ring_records(b"") == ([], 0)
    # odd sizes are padded to 8 bytes
    recs, used = decode.parse_ring_records(_framed(b"xyz") + _framed(a))
    assert recs == [(8, 3), (24, 112)] and used == 16 + 120
    # a short record is skipped by the decoder, not misread
    assert decoder(fx).decode_buffer(_framed(b"xyz") + _framed(a), recs)[0].key.dport == 9999
