"""A busy lab: other flows dropped by other rules at the same time; none misattributed.
And --all-netns finds the drop in a namespace nobody named."""

import threading
import time

from ipdbg import traffic
from why_lab import REMOTE, Background, blocking, client_server, restore

RULES = ("*filter\n-A INPUT -p icmp -j DROP\n"
         "-A INPUT -p tcp --dport 81 -j DROP\n"
         "-A INPUT -p tcp --dport 82 -j DROP\n"
         "-A INPUT -p tcp --dport 83 -j REJECT --reject-with tcp-reset\n"
         "-A INPUT -p udp -j DROP\nCOMMIT\n")
LINE = {81: 2, 82: 3, 83: 4}


def _load(c, stop):
    """Flows to every port at once, and noise matching the address filter."""
    def flood(port):
        while not stop.is_set():
            traffic.send_tcp_connect(c.netns, REMOTE, port, timeout=0.05)
            time.sleep(0.005)
    def noise():
        while not stop.is_set():
            traffic.send_udp(c.netns, REMOTE, 5353, count=5)
            traffic.send_icmp_echo(c.netns, REMOTE, timeout=0.02)
    threads = [threading.Thread(target=flood, args=(p,), daemon=True) for p in LINE]
    threads.append(threading.Thread(target=noise, daemon=True))
    for t in threads:
        t.start()
    return threads


def test_busy_lab_no_misattribution(lab, tmp_path):
    c, s = client_server(lab)
    restore(s, RULES)
    bg = Background(tmp_path, "--dst", REMOTE, "--proto", "tcp", "--netns", s.netns,
                    "--count", "10", "--timeout", "8")
    bg.wait_ready()
    stop = threading.Event()
    threads = _load(c, stop)
    try:
        rc, exps, err = bg.result()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    assert rc == 0, err
    found = blocking(exps)
    assert len(found) == 10 and len({e["tuple"]["sport"] for e in found}) == 10
    for e in found:
        # Every flow named, each by its own rule (no ICMP/UDP noise, no mix-up).
        assert e["tuple"]["proto"] == "tcp" and e["rule"] is not None, e
        assert e["rule"]["line"] == LINE[e["tuple"]["dport"]], e
        assert e["verdict"] == ("rejected" if e["tuple"]["dport"] == 83 else "dropped")


def test_all_netns(lab, tmp_path):
    c, s = client_server(lab)
    restore(c, f"*filter\n-A OUTPUT -d {REMOTE}/32 -p tcp --dport 80 -j DROP\nCOMMIT\n")
    bg = Background(tmp_path, "--dst", f"{REMOTE}:80", "--all-netns", "--timeout", "8")
    bg.wait_ready(timeout=30)
    time.sleep(0.05)
    assert traffic.send_tcp_connect(c.netns, REMOTE, 80, timeout=0.5) == "timeout"
    rc, exps, err = bg.result()
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["netns_inode"] == c.inode
    assert e["rule"] is not None, (exps, err)
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("OUTPUT", 1)
    assert e["fix"].startswith("ipdbg rules --netns /proc/")
