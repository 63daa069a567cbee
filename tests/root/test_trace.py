"""ipdbg trace: one line per verdict and per drop, JSON and text."""

import json
import subprocess

from why_lab import REMOTE, client_server, ipdbg_argv, restore


def _trace(c, *extra):
    return subprocess.run(ipdbg_argv("trace", "--dst", f"{REMOTE}:80", "--netns", c.netns,
                                     "--probe", "--timeout", "1.5", *extra),
                          capture_output=True, text=True, timeout=30)


def test_trace_stream(lab):
    c, s = client_server(lab)
    restore(c, f"*filter\n:BLK - [0:0]\n-A OUTPUT -p tcp -j BLK\n"
               f"-A BLK -d {REMOTE}/32 -p tcp --dport 80 -j DROP\nCOMMIT\n")
    p = _trace(c, "-o", "json")
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    verdicts = [(e["chain"], e["verdict"], e.get("rule", {}).get("line"))
                for e in events if e["event"] == "trace"]
    assert ("OUTPUT", "jump", 1) in verdicts and ("BLK", "drop", 1) in verdicts
    drops = [e for e in events if e["event"] == "drop" and e["kind"] == "kfree_skb"]
    assert drops and drops[0]["reason_name"] == "NETFILTER_DROP"
    assert drops[0]["tuple"]["dport"] == 80 and drops[0]["netns"] == c.inode

    p = _trace(c, "--output-tuple")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["TIME", "SKB", "PROCESS", "NETNS", "EVENT"]
    blk = [line for line in lines if "filter/BLK rule line 1 DROP" in line]
    assert blk and f"-> {REMOTE}:80 tcp" in blk[0]
    assert any("kfree_skb NETFILTER_DROP" in line for line in lines)
