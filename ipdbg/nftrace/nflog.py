"""Legacy TRACE through nfnetlink_log: bind the logger of a netns, put the old one back.

ip_tables/ip6_tables log ``TRACE: table:chain:type:N`` with nf_log_trace()
(net/netfilter/nf_log.c), which calls the logger bound to the protocol family
in that netns (/proc/sys/net/netfilter/nf_log/<pf>; nf_log_ipv4/nf_log_ipv6
from nf_log_syslog by default, and they print only from the initial netns).
NFULNL_CFG_CMD_PF_BIND (nfnetlink_log.c, nfulnl_recv_config) binds
nfnetlink_log instead; ip_tables passes a NF_LOG_TYPE_LOG loginfo, so
nfnetlink_log uses its default loginfo: group 0.

The binding is per netns and outlives our socket, so before binding we start a
guard process (``python -m ipdbg.nftrace.nflog_guard``) that holds the netns and
puts the previous logger back as soon as our end of its pipe closes, which the
kernel does when we exit, even on SIGKILL.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..errors import KernelError
from ..netns import enter_netns

NFULNL_LOGGER = "nfnetlink_log"


def read_nf_log(netns: str | None, pf: int) -> str:
    """The logger bound for ``pf`` in ``netns`` ("NONE" when none)."""
    with enter_netns(netns):
        # /proc/sys/net resolves against the calling thread's netns.
        with open(f"/proc/sys/net/netfilter/nf_log/{pf}") as f:
            return f.read().strip()


def apply_nf_log(netns: str | None, pf: int, name: str) -> None:
    with enter_netns(netns):
        with open(f"/proc/sys/net/netfilter/nf_log/{pf}", "w") as f:
            f.write(name)


def restore_nf_log(netns_fd_path: str, pf: int, previous: str) -> bool:
    """Put ``previous`` back if nfnetlink_log is still bound (someone else's change stays)."""
    if read_nf_log(netns_fd_path, pf) != NFULNL_LOGGER or previous == NFULNL_LOGGER:
        return False
    apply_nf_log(netns_fd_path, pf, previous)
    return True


class NflogGuard:
    """The guard process for one netns: started before binding, told 'done' at the end."""

    def __init__(self, netns: str | None, saved: dict[int, str]):
        nsfd = os.open(netns or "/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            args = [f"{pf}={name}" for pf, name in saved.items()]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ipdbg.nftrace.nflog_guard", str(nsfd)] + args,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                pass_fds=(nsfd,), start_new_session=True, close_fds=True,
            )
        finally:
            os.close(nsfd)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.kill()
            self.proc.wait()
            raise KernelError("could not start the nf_log guard process",
                              "legacy TRACE needs it; run with --legacy no to skip legacy tables")

    def close(self) -> None:
        """Our own restore is done: let the guard check once more and exit."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
