"""why-dropped on the seed case: a client's OUTPUT rule drops its connection."""

import subprocess

from ipdbg import traffic
from why_lab import REMOTE, blocking, client_server, ipdbg_argv, no_trace_tables, restore, run_why

SEED = f"*filter\n-A OUTPUT -d {REMOTE}/32 -p tcp --dport 80 -j DROP\nCOMMIT\n"


def test_output_drop_named_with_fix(lab):
    c, s = client_server(lab)
    with traffic.start_listener(s.netns, "tcp", 80):
        restore(c, SEED)
        rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns)
        assert rc == 0, err
        (e,) = blocking(exps)
        assert e["verdict"] == "dropped"
        assert e["tuple"]["src"] == "10.60.0.1" and e["tuple"]["dst"] == REMOTE
        assert e["tuple"]["dport"] == 80 and e["tuple"]["proto"] == "tcp"
        assert e["netns_inode"] == c.inode
        assert {k: e["rule"][k] for k in ("table", "chain", "line", "backend")} == {
            "table": "filter", "chain": "OUTPUT", "line": 1, "backend": "nft"}
        assert "-j DROP" in e["rule"]["text"]
        assert e["path"][-1] == {**e["path"][-1], "table": "filter", "chain": "OUTPUT",
                                 "line": 1, "verdict": "drop"}
        assert e["reason"] == "NETFILTER_DROP"
        assert e["hook"] == "OUTPUT"
        assert e["fix"] == f"ipdbg rules --netns {c.netns} -t filter -D OUTPUT 1"
        assert no_trace_tables(c)
        # The fix, run as printed, lets the connection through.
        p = subprocess.run(ipdbg_argv(*e["fix"].split()[1:]), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert traffic.send_tcp_connect(c.netns, REMOTE, 80) == "connected"


def test_text_answer_shape(lab):
    c, s = client_server(lab)
    restore(c, SEED)
    p = subprocess.run(ipdbg_argv("why-dropped", "--dst", f"{REMOTE}:80", "--probe",
                                  "--netns", c.netns), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("DROPPED  10.60.0.1:") and f"-> {REMOTE}:80 tcp SYN" in lines[0]
    assert "  rule     filter/OUTPUT line 1: -A OUTPUT -d 198.51.100.80/32" in p.stdout
    assert "  kernel   NETFILTER_DROP at " in p.stdout and "(hook OUTPUT)" in p.stdout
    assert "  fix      ipdbg rules --netns " in p.stdout


def test_nothing_dropped_exits_8_and_says_what_was_seen(lab):
    c, s = client_server(lab)
    restore(c, "*filter\n-A OUTPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n")
    with traffic.start_listener(s.netns, "tcp", 80):
        rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                                "--timeout", "3")
    assert rc == 8, err
    assert exps and all(e["verdict"] == "accepted" for e in exps)
    assert exps[0]["tuple"]["dport"] == 80 and exps[0]["count"] >= 1
    assert exps[0]["path"][-1]["chain"] == "OUTPUT"
    assert exps[0]["path"][-1]["verdict"] == "accept" and exps[0]["path"][-1]["type"] == "policy"
    assert "nothing matching was dropped" in err
    # Nothing at all matching: "unseen".
    rc, exps, err = run_why("--dst", "198.51.100.81:80", "--netns", c.netns, "--timeout", "0.5")
    assert rc == 8 and [e["verdict"] for e in exps] == ["unseen"]
