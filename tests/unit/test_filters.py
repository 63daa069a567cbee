import pytest

from ipdbg.errors import UsageError
from ipdbg.events import PacketKey
from ipdbg.filters import build_filter, match_key, parse_endpoint


def test_endpoints():
    assert str(parse_endpoint("198.51.100.80:80").net) == "198.51.100.80/32"
    assert parse_endpoint("198.51.100.80:80").port == 80
    e = parse_endpoint("[2001:db8::1]:443")
    assert (str(e.net), e.port) == ("2001:db8::1/128", 443)
    assert parse_endpoint("2001:db8::/32").port is None
    assert parse_endpoint(":53").net is None and parse_endpoint(":53").port == 53
    for bad in ("1.2.3.4:0", "1.2.3.4:70000", "foo:80", "1.2.3.999", "[::1]:x"):
        with pytest.raises(UsageError):
            parse_endpoint(bad)


def test_match():
    f = build_filter(dst="198.51.100.80:80", proto="tcp")
    k = PacketKey(4, 6, "10.0.0.1", "198.51.100.80", 40000, 80)
    assert match_key(f, k)
    assert not match_key(f, PacketKey(4, 17, "10.0.0.1", "198.51.100.80", 40000, 80))
    assert not match_key(f, PacketKey(4, 6, "10.0.0.1", "198.51.100.81", 40000, 80))
    rev = PacketKey(4, 6, "198.51.100.80", "10.0.0.1", 80, 40000)
    assert not match_key(f, rev)
    from dataclasses import replace
    assert match_key(replace(f, both_directions=True), rev)
    with pytest.raises(UsageError):
        build_filter(src="10.0.0.1", dst="2001:db8::1")
