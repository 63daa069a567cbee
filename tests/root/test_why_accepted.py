"""why-dropped when nothing drops: a netns with no ruleset at all still sees the packet."""

import subprocess

from ipdbg import traffic
from why_lab import REMOTE, client_server, ipdbg_argv, no_trace_tables, run_why


def test_no_rules_at_all_answers_accepted_and_where_seen(lab):
    c, s = client_server(lab)
    for h in (c, s):
        assert h.run(["nft", "list", "ruleset"]).stdout.strip() == ""
        assert h.run(["cat", "/proc/net/ip_tables_names"]).stdout.strip() == ""
    with traffic.start_listener(s.netns, "tcp", 80):
        rc, exps, err = run_why("--dst", f"{REMOTE}:80", "--probe", "--netns", c.netns,
                                "--netns", s.netns, "--timeout", "3")
        assert rc == 8, err
        assert "matching packets were seen but not dropped" in err
        assert exps and all(e["verdict"] == "accepted" for e in exps)
        by_ns = {e["netns_inode"]: e for e in exps}
        assert set(by_ns) == {c.inode, s.inode}
        for e in exps:
            assert e["tuple"]["src"] == "10.60.0.1" and e["tuple"]["dst"] == REMOTE
            assert e["tuple"]["dport"] == 80 and e["tuple"]["proto"] == "tcp"
            assert e["path"] == [] and e["rule"] is None and e["fix"] is None and e["count"] >= 1
        # The client sent it (OUTPUT), the server received it (PREROUTING).
        assert by_ns[c.inode]["hook"] == "OUTPUT"
        assert by_ns[c.inode]["note"].startswith("seen at OUTPUT (ipdbg's trace chain) and not dropped")
        assert by_ns[s.inode]["hook"] == "PREROUTING"
        assert by_ns[s.inode]["note"].startswith("seen at PREROUTING (ipdbg's trace chain) and not dropped")

        # The text answer says the same.
        p = subprocess.run(ipdbg_argv("why-dropped", "--dst", f"{REMOTE}:80", "--probe", "--netns",
                                      c.netns, "--timeout", "3"),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 8, p.stderr
        assert p.stdout.startswith("ACCEPTED 10.60.0.1:") and f"-> {REMOTE}:80 tcp" in p.stdout
        assert "  note     seen at OUTPUT (ipdbg's trace chain) and not dropped" in p.stdout
        assert "probe    " in p.stdout and ": connected" in p.stdout
    assert no_trace_tables(c) and no_trace_tables(s)
