"""Helpers for the why-dropped root tests: labs and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REMOTE = "198.51.100.80"


def ipdbg_argv(*args) -> list[str]:
    return [sys.executable, "-m", "ipdbg.cli", *args]


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def parse_json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_why(*args, timeout: float = 30) -> tuple[int, list[dict], str]:
    """why-dropped -o json as a subprocess: (exit code, explanations, stderr)."""
    p = subprocess.run(ipdbg_argv("why-dropped", *args, "-o", "json"), capture_output=True,
                       text=True, timeout=timeout, env=_env())
    return p.returncode, parse_json_lines(p.stdout), p.stderr


class Background:
    """why-dropped started in the background; traffic goes once its ready file exists."""

    def __init__(self, tmp_path, *args, output: str = "json"):
        self.ready = str(tmp_path / "ready")
        self.proc = subprocess.Popen(
            ipdbg_argv("why-dropped", *args, "-o", output, "--ready-file", self.ready),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                raise AssertionError("why-dropped exited before ready: " + self.proc.stderr.read())
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("why-dropped never became ready")
            time.sleep(0.02)

    def result(self, timeout: float = 30) -> tuple[int, list[dict], str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, parse_json_lines(out), err


def client_server(lab, server_addrs=(f"{REMOTE}/32",), v6: bool = False):
    """client 10.60.0.1 --veth-- server 10.60.0.2 (+ the 'remote' 198.51.100.80)."""
    c = lab.add_host("client")
    s = lab.add_host("server")
    a = ["10.60.0.1/24"] + (["2001:db8:60::1/64"] if v6 else [])
    b = ["10.60.0.2/24"] + (["2001:db8:60::2/64"] if v6 else [])
    lab.link(c, s, a, b)
    for addr in server_addrs:
        s.run(["ip", "addr", "add", addr, "dev", "eth0"])
    c.run(["ip", "route", "add", "198.51.100.0/24", "via", "10.60.0.2"])
    return c, s


def client_router_server(lab):
    """client 10.61.0.1 -- router 10.61.0.254 | 10.62.0.254 -- server 10.62.0.2."""
    c = lab.add_host("client")
    r = lab.add_host("router")
    s = lab.add_host("server")
    lab.link(c, r, "10.61.0.1/24", "10.61.0.254/24")
    lab.link(r, s, "10.62.0.254/24", "10.62.0.2/24")
    r.sysctl("net.ipv4.ip_forward", 1)
    c.run(["ip", "route", "add", "default", "via", "10.61.0.254"])
    s.run(["ip", "route", "add", "default", "via", "10.62.0.254"])
    return c, r, s


def restore(host, text: str, legacy: bool = False, v6: bool = False) -> None:
    tool = ("ip6tables" if v6 else "iptables") + ("-legacy" if legacy else "") + "-restore"
    host.run([tool], input=text)


def blocking(exps: list[dict]) -> list[dict]:
    return [e for e in exps if e["verdict"] in ("dropped", "rejected")]


def no_trace_tables(host) -> bool:
    out = host.run(["nft", "list", "tables"], check=False).stdout
    return "ipdbg_" not in out
