"""ipdbg.traffic between two lab hosts: each word it returns, IPv4 and IPv6."""

from ipdbg import traffic


def _pair(lab):
    c = lab.add_host("client")
    s = lab.add_host("server")
    lab.link(c, s, ["10.31.0.1/24", "fd00:31::1/64"], ["10.31.0.2/24", "fd00:31::2/64"])
    return c, s


def test_tcp_udp_icmp_v4_v6(lab):
    c, s = _pair(lab)
    with traffic.start_listener(s.netns, "tcp", 80) as tcp, \
            traffic.start_listener(s.netns, "udp", 53) as udp:
        for dst in ("10.31.0.2", "fd00:31::2"):
            assert traffic.send_tcp_connect(c.netns, dst, 80) == "connected"
            assert traffic.send_tcp_connect(c.netns, dst, 81) == "refused"
            assert traffic.send_udp(c.netns, dst, 53, count=2) == "sent"
            assert traffic.send_icmp_echo(c.netns, dst) == "reply"
        assert tcp.port == 80 and udp.port == 53
    assert traffic.send_tcp_connect(c.netns, "10.31.0.2", 80, src="10.31.0.1") == "refused"


def test_dropped_and_blocked(lab):
    c, s = _pair(lab)
    with traffic.start_listener(s.netns, "tcp", 80):
        s.run(["iptables-restore"], input="*filter\n-A INPUT -p tcp --dport 80 -j DROP\n"
              "-A INPUT -p icmp -j DROP\nCOMMIT\n")
        assert traffic.send_tcp_connect(c.netns, "10.31.0.2", 80, timeout=0.3) == "timeout"
        assert traffic.send_icmp_echo(c.netns, "10.31.0.2", timeout=0.3) == "timeout"
        c.run(["iptables-restore"], input="*filter\n-A OUTPUT -p udp -j DROP\nCOMMIT\n")
        assert traffic.send_udp(c.netns, "10.31.0.2", 53) == "blocked"
        s.run(["iptables-restore"], input="*filter\n-A INPUT -p icmp -j REJECT "
              "--reject-with icmp-host-prohibited\nCOMMIT\n")
        assert traffic.send_icmp_echo(c.netns, "10.31.0.2", timeout=0.5) == "unreachable"
