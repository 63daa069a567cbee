"""Hidden entry point for tests, benchmarks and fixture recording.

    python -m ipdbg.nftrace.cli_debug --netns /proc/PID/ns/net --dst 10.0.0.2 --proto icmp \\
        [--legacy auto|yes|no] [--ready-file F] [--record F.jsonl] [--duration S] [--count] [--no-seen]

Prints one JSON line per event (with the rule it resolves to). ``--ready-file``
is written once tracing is armed; ``--record`` appends every raw netlink message
(hex) for tests/fixtures/nftrace; ``--count`` prints only the totals at the end.
SIGTERM and Ctrl-C end it cleanly (exit 130); SIGKILL leaves nothing either (see
docs/nftrace.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time

from ..errors import Interrupted, IpdbgError
from ..filters import build_filter
from .session import TraceSession


def format_event(ev, ref) -> str:
    d = dataclasses.asdict(ev)
    d["rule"] = dataclasses.asdict(ref) if dataclasses.is_dataclass(ref) else None
    return json.dumps(d, sort_keys=True)


_signalled: list[int] = []


def _term(signum, frame):
    # Remembered too: library code that swallows the exception (a broad except
    # around a subprocess, say) must not keep us tracing forever.
    _signalled.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted("terminated")


def _check_signalled() -> None:
    if _signalled:
        raise Interrupted("terminated")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ipdbg.nftrace.cli_debug")
    p.add_argument("--netns", action="append", default=[])
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--proto")
    p.add_argument("--iface")
    p.add_argument("--legacy", default="auto", choices=["auto", "yes", "no"])
    p.add_argument("--bridge", action="store_true")
    p.add_argument("--ready-file")
    p.add_argument("--record")
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--count", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--no-seen", action="store_true", help="no TRACE_SEEN events from our own chains")
    a = p.parse_args(argv)
    _signalled.clear()
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    flt = build_filter(src=a.src, dst=a.dst, proto=a.proto, iface=a.iface)
    legacy = {"auto": "auto", "yes": True, "no": False}[a.legacy]
    rec = open(a.record, "a") if a.record else None

    def record(kind, inode, mtype, raw):
        rec.write(json.dumps({"kind": kind, "type": mtype, "hex": raw.hex()}) + "\n")

    n = 0
    try:
        with TraceSession(a.netns or [None], flt, legacy=legacy, bridge=a.bridge, debug=a.debug,
                          record=record if rec else None, seen=not a.no_seen) as ts:
            _check_signalled()
            for w in ts.warnings:
                print(f"ipdbg: warning: {w}", file=sys.stderr, flush=True)
            if a.ready_file:
                with open(a.ready_file, "w") as f:
                    f.write("ready\n")
            end = time.monotonic() + a.duration if a.duration else None
            while end is None or time.monotonic() < end:
                _check_signalled()
                evs = ts.poll(100)
                n += len(evs)
                if not a.count:
                    for ev in evs:
                        print(format_event(ev, ts.resolve(ev)), flush=True)
            if a.count:
                print(json.dumps({"events": n, "lost": ts.lost}), flush=True)
    except (Interrupted, KeyboardInterrupt):
        return 130
    except IpdbgError as e:
        print(f"ipdbg: error: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    finally:
        if rec:
            rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
