"""why-dropped on INPUT, FORWARD, a user chain and a chain policy."""

from ipdbg import traffic
from why_lab import REMOTE, blocking, client_router_server, client_server, restore, run_why


def test_input_drop_on_the_server(lab):
    c, s = client_server(lab)
    restore(s, "*filter\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT\n")
    with traffic.start_listener(s.netns, "tcp", 80):
        rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe",
                                "--netns", c.netns, "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["netns_inode"] == s.inode
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("INPUT", 2)
    assert e["hook"] == "INPUT"
    assert e["fix"] == f"ipdbg rules --netns {s.netns} -t filter -D INPUT 2"


def test_forward_drop_on_a_router(lab):
    c, r, s = client_router_server(lab)
    restore(r, "*filter\n-A FORWARD -d 10.62.0.2/32 -p tcp --dport 80 -j DROP\nCOMMIT\n")
    with traffic.start_listener(s.netns, "tcp", 80):
        rc, exps, err = run_why("--dst", "10.62.0.2:80", "--probe",
                                "--netns", c.netns, "--netns", r.netns, "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["netns_inode"] == r.inode
    assert (e["rule"]["table"], e["rule"]["chain"], e["rule"]["line"]) == ("filter", "FORWARD", 1)
    assert e["tuple"]["src"] == "10.61.0.1"


def test_jump_into_a_user_chain(lab):
    c, s = client_server(lab)
    restore(s, "*filter\n:BLOCK - [0:0]\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -p tcp -j BLOCK\n"
               "-A BLOCK -p tcp --dport 22 -j ACCEPT\n-A BLOCK -p tcp --dport 80 -j DROP\nCOMMIT\n")
    rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                            "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("BLOCK", 2)
    steps = [(p["chain"], p["line"], p["verdict"]) for p in e["path"]]
    assert ("INPUT", 2, "jump") in steps and steps[-1] == ("BLOCK", 2, "drop")
    assert e["fix"].endswith("-t filter -D BLOCK 2")


def test_policy_drop(lab):
    c, s = client_server(lab)
    restore(s, "*filter\n:INPUT DROP [0:0]\n-A INPUT -p icmp -j ACCEPT\nCOMMIT\n")
    rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                            "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["rule"] is None
    assert e["path"][-1] == {**e["path"][-1], "table": "filter", "chain": "INPUT", "line": None,
                             "verdict": "drop", "type": "policy"}
    assert e["reason"] == "NETFILTER_DROP"
    assert e["fix"] == (f"ipdbg rules --netns {s.netns} -t filter -A INPUT -p tcp "
                        f"-s 10.60.0.1 -d {REMOTE} --dport 80 -j ACCEPT")


def test_reject_with_tcp_reset_and_with_icmp(lab):
    c, s = client_server(lab)
    restore(s, "*filter\n-A INPUT -p tcp --dport 80 -j REJECT --reject-with tcp-reset\n"
               "-A INPUT -p udp --dport 53 -j REJECT\nCOMMIT\n")
    rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                            "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["verdict"] == "rejected" and e["reply"] == "tcp-reset"
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("INPUT", 1)
    # ICMP: the reply is named from the icmp_send event tied to the dropped packet.
    s.run(["ip", "route", "add", "10.60.0.0/24", "dev", "eth0"], check=False)
    rc, exps, err = run_why("--dst", f"{REMOTE}:53", "--proto", "udp", "--probe",
                            "--netns", c.netns, "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert e["verdict"] == "rejected" and e["reply"] == "icmp port-unreachable"
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("INPUT", 2)


def test_narrower_rule_fix_lets_only_this_port_through(lab):
    import subprocess

    from why_lab import ipdbg_argv

    c, s = client_server(lab)
    restore(s, "*filter\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -p tcp -j DROP\nCOMMIT\n")
    with traffic.start_listener(s.netns, "tcp", 80), traffic.start_listener(s.netns, "tcp", 22):
        rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                                "--netns", s.netns)
        assert rc == 0, err
        (e,) = blocking(exps)
        assert e["fix"] == (f"ipdbg rules --netns {s.netns} -t filter -R INPUT 2 -p tcp "
                            "! --dport 80 -j DROP")
        assert e["fix_delete"] == f"ipdbg rules --netns {s.netns} -t filter -D INPUT 2"
        p = subprocess.run(ipdbg_argv(*e["fix"].split()[1:]), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert traffic.send_tcp_connect(c.netns, REMOTE, 80) == "connected"
        assert traffic.send_tcp_connect(c.netns, REMOTE, 22, timeout=0.3) == "timeout"


def test_iface_filter(lab):
    # Two links into the server; drops arrive on both, --iface keeps eth1's.
    c = lab.add_host("client")
    s = lab.add_host("server")
    lab.link(c, s, "10.63.0.1/24", "10.63.0.2/24")
    lab.link(c, s, "10.64.0.1/24", "10.64.0.2/24")
    restore(s, "*filter\n-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT\n")
    rc, exps, err = run_why("--dst", "10.64.0.2:80", "--iface", "eth1", "--probe",
                            "--netns", c.netns, "--netns", s.netns)
    assert rc == 0, err
    (e,) = blocking(exps)
    assert (e["rule"]["chain"], e["rule"]["line"]) == ("INPUT", 1)
    rc, exps, err = run_why("--dst", "10.63.0.2:80", "--iface", "eth1", "--probe",
                            "--netns", c.netns, "--netns", s.netns, "--timeout", "2")
    assert rc == 8 and not blocking(exps), exps
