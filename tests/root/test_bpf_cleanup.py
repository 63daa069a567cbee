"""No BPF link outlives ipdbg: normal exit, an exception, SIGKILL.

Links are fds, so the kernel detaches them when the process dies; these tests
check it with `bpftool link show id N` for the exact link ids the child made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ipdbg.bpf.engine import DropMonitor
from ipdbg.filters import build_filter

CHILD = r"""
import sys, time
from ipdbg.bpf.engine import DropMonitor
from ipdbg.filters import build_filter
mode = sys.argv[1]
with DropMonitor(build_filter(dst="203.0.113.7:7")) as mon:
    print(" ".join(str(i) for i in mon.link_ids), flush=True)
    if mode == "raise":
        raise RuntimeError("boom")
    if mode == "hang":
        time.sleep(600)
"""


def link_exists(link_id: int) -> bool:
    return subprocess.run(["bpftool", "link", "show", "id", str(link_id)],
                          capture_output=True).returncode == 0


def wait_gone(ids: list[int], seconds: float = 10.0) -> list[int]:
    """Link ids still present after waiting (the kernel frees them asynchronously)."""
    deadline = time.monotonic() + seconds
    left = list(ids)
    while left and time.monotonic() < deadline:
        left = [i for i in left if link_exists(i)]
        if left:
            time.sleep(0.1)
    return left


def run_child(mode: str) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    ids = [int(x) for x in line.split()]
    assert len(ids) == 3, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, ids


def test_links_exist_while_attached_and_go_on_exit():
    with DropMonitor(build_filter(dst="203.0.113.7:7")) as mon:
        ids = mon.link_ids
        assert len(ids) == 3 and all(link_exists(i) for i in ids)
    assert wait_gone(ids) == []


def test_links_go_after_exception_in_block():
    ids = []
    try:
        with DropMonitor(build_filter(dst="203.0.113.7:7")) as mon:
            ids = mon.link_ids
            raise ValueError("inside")
    except ValueError:
        pass
    assert ids and wait_gone(ids) == []


def test_child_normal_exit():
    proc, ids = run_child("exit")
    assert proc.wait(timeout=30) == 0
    assert wait_gone(ids) == []


def test_child_exception():
    proc, ids = run_child("raise")
    assert proc.wait(timeout=30) == 1
    assert "boom" in proc.stderr.read()
    assert wait_gone(ids) == []


def test_child_sigkill():
    proc, ids = run_child("hang")
    assert all(link_exists(i) for i in ids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert wait_gone(ids) == []


def test_cli_sigkill_leaves_no_links(tmp_path):
    ready = tmp_path / "ready"
    before = set(_all_link_ids())
    proc = subprocess.Popen([sys.executable, "-m", "ipdbg.cli", "drops", "--dst", "203.0.113.7:7",
                             "--ready-file", str(ready)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    # ours are the links created since `before` whose program is one of ours
    ours = [i for i in set(_all_link_ids()) - before if _link_prog_name(i).startswith("ipdbg_")]
    assert len(ours) >= 1
    proc.kill()
    proc.wait(timeout=30)
    assert wait_gone(ours) == []


def _all_link_ids() -> list[int]:
    import json

    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True).stdout
    return [d["id"] for d in json.loads(out or "[]")]


def _link_prog_name(link_id: int) -> str:
    import json

    out = subprocess.run(["bpftool", "-j", "link", "show", "id", str(link_id)],
                         capture_output=True, text=True).stdout
    if not out:
        return ""
    prog = json.loads(out).get("prog_id")
    pout = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog)],
                          capture_output=True, text=True).stdout
    return json.loads(pout).get("name", "") if pout else ""
