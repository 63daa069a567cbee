"""Guard process: put back the nf_log loggers of one netns when ipdbg goes away.

Usage (internal): ``python -m ipdbg.nftrace.nflog_guard NSFD PF=NAME...``.
It prints "ready", then waits for EOF on stdin: ipdbg's end of the pipe closes
when ipdbg exits for any reason, SIGKILL included. It then restores each
``PF`` to ``NAME`` if nfnetlink_log is still bound there. It ignores SIGINT,
SIGTERM and SIGHUP (and runs in its own session) so that a Ctrl-C or a kill of
ipdbg's process group does not take it away before it has done its job.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    nsfd = int(argv[0])
    saved = {int(pf): name for pf, name in (a.split("=", 1) for a in argv[1:])}
    from ..netns import setns  # light import: ctypes only

    setns(nsfd)  # a single-threaded process: the whole guard lives in that netns now
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(4096):
        pass
    for pf, name in saved.items():
        try:
            with open(f"/proc/sys/net/netfilter/nf_log/{pf}") as f:
                current = f.read().strip()
            if current == "nfnetlink_log" and name != "nfnetlink_log":
                with open(f"/proc/sys/net/netfilter/nf_log/{pf}", "w") as f:
                    f.write(name)
        except OSError as e:
            sys.stderr.write(f"ipdbg nflog guard: could not restore nf_log/{pf} to {name}: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
