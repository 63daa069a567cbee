"""why-dropped across NAT, on iptables-legacy, native nftables, IPv6 and a closed port."""

from ipdbg import traffic
from why_lab import REMOTE, blocking, client_router_server, client_server, restore, run_why


def test_dnat_then_forward_drop(lab):
    c, r, s = client_router_server(lab)
    restore(r, "*nat\n-A PREROUTING -d 203.0.113.10/32 -p tcp --dport 80 "
               "-j DNAT --to-destination 10.62.0.2:8080\nCOMMIT\n"
               "*filter\n-A FORWARD -d 10.62.0.2/32 -p tcp --dport 8080 -j DROP\nCOMMIT\n")
    c.run(["ip", "route", "add", "203.0.113.0/24", "via", "10.61.0.254"])
    rc, exps, err = run_why("--dst", "203.0.113.10:80", "--probe", "--netns", c.netns,
                            "--netns", r.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["netns_inode"] == r.inode
    assert (e["rule"]["table"], e["rule"]["chain"], e["rule"]["line"]) == ("filter", "FORWARD", 1)
    assert e["nat"]["before"]["dst"] == "203.0.113.10" and e["nat"]["before"]["dport"] == 80
    assert e["nat"]["after"]["dst"] == "10.62.0.2" and e["nat"]["after"]["dport"] == 8080
    assert ("nat", "PREROUTING") in [(p["table"], p["chain"]) for p in e["path"]]
    # The kernel's drop event (after DNAT, outside --dst) is joined too.
    assert e["reason"] == "NETFILTER_DROP" and e["location"].startswith("nft_do_chain")
    assert e["note"] is None


def test_iptables_legacy(lab):
    c, s = client_server(lab)
    restore(s, "*filter\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT\n",
            legacy=True)
    rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                            "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["rule"]["backend"] == "legacy"
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("INPUT", 2)
    assert e["fix"] == f"ipdbg rules --netns {s.netns} --backend legacy -t filter -D INPUT 2"


def test_native_nft_table(lab):
    c, s = client_server(lab)
    s.run(["nft", "-f", "-"], input=(
        "table inet fw {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        "  icmp type echo-request accept\n  tcp dport 80 counter drop\n }\n}\n"))
    handle = [line for line in s.run(["nft", "-a", "list", "chain", "inet", "fw", "input"]).stdout
              .splitlines() if "dport 80" in line][0].split("# handle ")[1].strip()
    rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                            "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["rule"]["backend"] == "nftables"
    assert (e["rule"]["table"], e["rule"]["chain"]) == ("fw", "input")
    assert e["rule"]["handle"] == int(handle)
    assert "dport 80" in e["rule"]["text"]
    assert e["fix"] == f"nsenter --net={s.netns} nft delete rule inet fw input handle {handle}"


def test_ipv6_output_drop(lab):
    c, s = client_server(lab, server_addrs=(), v6=True)
    restore(c, "*filter\n-A OUTPUT -d 2001:db8:60::2/128 -p tcp --dport 80 -j DROP\nCOMMIT\n",
            v6=True)
    rc, exps, err = run_why("--dst", "[2001:db8:60::2]:80", "--probe", "--netns", c.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["tuple"]["src"] == "2001:db8:60::1" and e["tuple"]["dst"] == "2001:db8:60::2"
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("OUTPUT", 1)
    assert e["fix"] == f"ipdbg rules --netns {c.netns} -6 -t filter -D OUTPUT 1"


def test_closed_port_explained_without_a_rule(lab):
    c, s = client_server(lab)
    s.run(["ip", "route", "add", "10.60.0.0/24", "dev", "eth0"], check=False)
    rc, exps, err = run_why("--dst", f"{REMOTE}:8080", "--probe", "--netns", c.netns,
                            "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["rule"] is None and e["reason"] == "NO_SOCKET"
    assert e["netns_inode"] == s.inode
    assert e["note"] == f"nothing listens on {REMOTE}:8080 (the peer answered RST)"
    assert e["fix"] is None


def test_retransmissions_grouped_and_udp_closed_port(lab, tmp_path):
    from why_lab import Background

    c, s = client_server(lab)
    restore(c, f"*filter\n-A OUTPUT -d {REMOTE}/32 -p tcp --dport 80 -j DROP\nCOMMIT\n")
    bg = Background(tmp_path, "--dst", f"{REMOTE}:80", "--netns", c.netns, "--count", "5",
                    "--timeout", "2.5")
    bg.wait_ready()
    # One connect: its SYN and the retransmission 1 s later, one flow.
    assert traffic.send_tcp_connect(c.netns, REMOTE, 80, timeout=1.6) == "timeout"
    rc, exps, err = bg.result()
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["count"] == 2 and (e["rule"]["chain"], e["rule"]["line"]) == ("OUTPUT", 1)

    rc, exps, err = run_why("--dst", f"{REMOTE}:5353", "--proto", "udp", "--probe",
                            "--netns", c.netns, "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["reason"] == "NO_SOCKET" and e["rule"] is None
    assert e["note"] == (f"nothing listens on {REMOTE}:5353 "
                         "(the peer answered ICMP port unreachable)")
    assert e["reply"] == "icmp port-unreachable"


NFLOG_HOLDER = r"""
import socket, sys
from ipdbg.nftrace import build, nl, sock
s = sock.open_nfnl(None)
sock.talk(s, build.format_nflog_config(0, socket.AF_UNSPEC, nl.NFULNL_CFG_CMD_BIND, 1), [1], "bind group 0")
print("ready", flush=True)
sys.stdin.read()
"""


def test_nflog_held_in_one_netns_legacy_named_in_the_other(lab):
    import os
    import subprocess
    import sys

    c, s = client_server(lab)
    restore(c, "*filter\n-A OUTPUT -p udp --dport 9 -j ACCEPT\nCOMMIT\n", legacy=True)
    restore(s, "*filter\n-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT\n", legacy=True)
    holder = c.popen([sys.executable, "-c", NFLOG_HOLDER], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == b"ready"
        rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                                "--netns", s.netns)
        assert rc == 0, err
        (e,) = blocking(exps)
        assert e["netns_inode"] == s.inode and e["rule"]["backend"] == "legacy"
        assert (e["rule"]["chain"], e["rule"]["line"]) == ("INPUT", 1)
        assert (f"ipdbg: note: legacy TRACE unavailable in netns {c.netns}: nfnetlink_log is "
                "held by another process") in err
        assert s.netns not in err
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
