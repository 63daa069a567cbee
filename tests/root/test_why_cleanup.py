"""Nothing why-dropped or the demo adds survives them, SIGKILL included."""

import os
import signal
import subprocess
import time

from why_lab import REMOTE, Background, client_server, ipdbg_argv, no_trace_tables, restore


def test_sigkill_leaves_no_trace_table(lab, tmp_path):
    c, s = client_server(lab)
    restore(s, "*filter\n-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT\n", legacy=True)
    before = s.run(["cat", "/proc/sys/net/netfilter/nf_log/2"]).stdout
    bg = Background(tmp_path, "--dst", f"{REMOTE}:80", "--netns", c.netns, "--netns", s.netns,
                    "--timeout", "30")
    bg.wait_ready()
    assert not no_trace_tables(c) and not no_trace_tables(s)  # armed: the tables exist
    os.kill(bg.proc.pid, signal.SIGKILL)
    bg.proc.wait()
    assert no_trace_tables(c) and no_trace_tables(s)
    # The nf_log binding for legacy TRACE is put back by ipdbg's guard process.
    for _ in range(100):
        if s.run(["cat", "/proc/sys/net/netfilter/nf_log/2"]).stdout == before:
            break
        time.sleep(0.05)
    assert s.run(["cat", "/proc/sys/net/netfilter/nf_log/2"]).stdout == before


def test_demo_runs_and_cleans_up():
    p = subprocess.run(ipdbg_argv("demo"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "  rule     filter/OUTPUT line 1: -A OUTPUT -d 198.51.100.80/32" in p.stdout
    assert "$ ipdbg rules --netns client -t filter -D OUTPUT 1" in p.stdout
    # The lab (ipdbg.lab: namespaces held by PDEATHSIG children) is gone at the end.
    assert p.stdout.rstrip().endswith("connected\nlab removed")
