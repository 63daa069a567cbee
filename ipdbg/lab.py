"""Namespace labs for the demo, the scenario runner and the tests.

Each lab host is a network namespace held by a ``sleep`` process that was
unshared into it and dies with us (PR_SET_PDEATHSIG=SIGKILL): the namespace has
no bind mount under /run/netns, so when the holder dies (normal exit, Ctrl-C,
SIGKILL of ipdbg) the kernel frees it with its interfaces and rules. Nothing of
a lab can outlive the process that built it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import signal
import subprocess
import time

from .errors import SystemToolError, UsageError

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_counter = itertools.count()


def _become_lab_host():  # runs in the child between fork and exec
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(120)
    if _libc.unshare(CLONE_NEWNET) != 0:
        os._exit(121)


class Host:
    """One lab host: a network namespace, reachable as /proc/PID/ns/net."""

    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self.holder = subprocess.Popen(
            ["sleep", "infinity"], preexec_fn=_become_lab_host,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.pid = self.holder.pid
        self.netns = f"/proc/{self.pid}/ns/net"
        # Wait until the child has unshared (its netns differs from ours).
        ours = os.stat("/proc/self/ns/net").st_ino
        for _ in range(500):
            try:
                if os.stat(self.netns).st_ino != ours:
                    break
            except FileNotFoundError:
                pass
            if self.holder.poll() is not None:
                raise SystemToolError(f"lab host {name}: could not create a network namespace")
            time.sleep(0.002)
        self.inode = os.stat(self.netns).st_ino
        self.run(["ip", "link", "set", "lo", "up"])

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.netns}", "--"] + list(argv)

    def run(self, argv: list[str], check: bool = True, input: str | None = None,
            timeout: float | None = 60, **kw) -> subprocess.CompletedProcess:
        """Run a command inside this host's netns and wait for it."""
        proc = subprocess.run(self.argv(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise SystemToolError(
                f"{self.name}: `{' '.join(argv)}` failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ''}"
            )
        return proc

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a command inside this host's netns; the lab stops it on close."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.argv(argv), **kw)
        self.lab._procs.append(proc)
        return proc

    def sysctl(self, key: str, value) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns})"


class Lab:
    """A set of hosts and veth links; ``close()`` (or the ``with`` block) removes all."""

    def __init__(self, prefix: str = "ipdbg"):
        self.prefix = f"{prefix}{os.getpid() % 10000}{next(_counter)}"
        self.hosts: dict[str, Host] = {}
        self._procs: list[subprocess.Popen] = []
        self._links = itertools.count()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        if name in self.hosts:
            raise UsageError(f"lab host {name!r} defined twice")
        host = Host(self, name)
        self.hosts[name] = host
        return host

    def link(self, a: Host, b: Host, a_addr: str | list[str] | None = None,
             b_addr: str | list[str] | None = None, a_if: str | None = None,
             b_if: str | None = None) -> tuple[str, str]:
        """A veth pair between two hosts, up, with optional addresses (CIDR)."""
        n = next(self._links)
        a_if = a_if or f"eth{sum(1 for _ in self._ifaces(a))}"
        b_if = b_if or f"eth{sum(1 for _ in self._ifaces(b))}"
        tmp_a, tmp_b = f"{self.prefix}a{n}"[:15], f"{self.prefix}b{n}"[:15]
        # Created in our netns with temporary names, moved and renamed at once.
        subprocess.run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b],
                       check=True, capture_output=True)
        try:
            subprocess.run(["ip", "link", "set", tmp_a, "netns", str(a.pid)], check=True,
                           capture_output=True)
            subprocess.run(["ip", "link", "set", tmp_b, "netns", str(b.pid)], check=True,
                           capture_output=True)
        except subprocess.CalledProcessError:
            subprocess.run(["ip", "link", "del", tmp_a], capture_output=True)
            raise
        for host, tmp, ifname, addrs in ((a, tmp_a, a_if, a_addr), (b, tmp_b, b_if, b_addr)):
            host.run(["ip", "link", "set", tmp, "name", ifname])
            for addr in ([addrs] if isinstance(addrs, str) else (addrs or [])):
                extra = ["nodad"] if ":" in addr else []
                host.run(["ip", "addr", "add", addr, "dev", ifname] + extra)
            host.run(["ip", "link", "set", ifname, "up"])
        return a_if, b_if

    @staticmethod
    def _ifaces(host: Host):
        out = host.run(["ip", "-o", "link", "show"]).stdout
        return [line for line in out.splitlines() if ": eth" in line]

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for host in self.hosts.values():
            if host.holder.poll() is None:
                host.holder.kill()
            host.holder.wait()
        self.hosts.clear()
        self._procs.clear()
