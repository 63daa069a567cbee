import struct

from ipdbg.events import PacketKey, format_tcp_flags, parse_packet_headers


def test_ipv4_tcp_key():
    ip = bytes.fromhex("4500003c1c4640004006b1e60a0000016433500a")
    tcp = struct.pack("!HHIIBBHHH", 33248, 80, 123456, 0, 0xA0, 0x02, 64240, 0, 0)
    key = parse_packet_headers(ip, tcp)
    assert key == PacketKey(4, 6, "10.0.0.1", "100.51.80.10", 33248, 80, 0x1C46, 123456)
    # same, transport taken from after the IP header
    assert parse_packet_headers(ip + tcp) == key


def test_ipv6_udp_key_uses_flow_label():
    hdr = struct.pack("!IHBB", (6 << 28) | 0xABCDE, 8, 17, 64)
    hdr += bytes.fromhex("20010db8000000000000000000000001") + bytes.fromhex("20010db8000000000000000000000002")
    udp = struct.pack("!HHHH", 5353, 53, 8, 0)
    key = parse_packet_headers(hdr, udp)
    assert key.family == 6 and key.proto == 17 and key.ident == 0xABCDE
    assert (key.src, key.dst, key.sport, key.dport) == ("2001:db8::1", "2001:db8::2", 5353, 53)


def test_garbage_is_none():
    assert parse_packet_headers(b"") is None
    assert parse_packet_headers(b"\x10" * 30) is None


def test_tcp_flags():
    assert format_tcp_flags(0x12) == "SYN,ACK"
