"""`ipdbg trace`: live stream of what netfilter and the kernel do to matching packets.

One line per event, in the spirit of pwru: every chain verdict (nftrace, legacy
TRACE) and every drop or reply the kernel reports (kfree_skb, icmp_send,
tcp_send_reset). Same filters and netns options as why-dropped.
"""

from __future__ import annotations

import dataclasses
import select
import sys
import threading
import time

import click

from ..errors import Interrupted
from .why import build_probe, filter_options, read_watch_list


@click.command("trace")
@filter_options
@click.option("--output-tuple", is_flag=True, help="Show each packet's addresses and ports.")
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Stop after S seconds.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N events.")
@click.option("--probe", is_flag=True,
              help="Send one packet matching --dst from the first --netns once armed.")
@click.pass_context
def trace(ctx, dst, src, proto, iface, netns, pid, all_netns, output, ready_file,
          output_tuple, timeout, count, probe):
    """Live stream of netfilter verdicts and kernel drops for matching packets.

    \b
    Examples:
      ipdbg trace --dst 198.51.100.80 --output-tuple
      ipdbg trace --dst 198.51.100.80:80 --netns client --probe --timeout 2
      ipdbg trace --proto icmp --all-netns -o json
    """
    from contextlib import ExitStack

    from ..bpf.decode import MAX_NETNS
    from ..bpf.engine import DropMonitor
    from ..errors import UsageError
    from ..events import TRACE_RULE, DropEvent
    from ..filters import build_filter
    from ..investigate import enter_trace_session
    from ..privileges import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, require_caps
    from ..render import TRACE_HEADER, format_lost, format_trace_json, format_trace_line

    debug = bool(ctx.obj and ctx.obj.get("debug"))
    if not (dst or src or proto or iface):
        raise UsageError("give at least one of --dst, --src, --proto, --iface",
                         "e.g. ipdbg trace --dst 198.51.100.80 --output-tuple")
    flt = build_filter(src=src, dst=dst, proto=None if proto == "all" else proto, iface=iface)
    wl = read_watch_list(netns, pid, all_netns)
    probe_fn = None
    if probe:
        sender = wl.paths[0] if (netns or pid is not None) else None
        probe_fn = build_probe(flt, proto, src, sender, timeout=1.0)
    require_caps([CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN], "ipdbg trace")

    offset = time.time_ns() - time.monotonic_ns()
    out = sys.stdout
    n = 0
    inodes = [wl_inode for wl_inode in wl.labels]
    mon = session = None
    try:
        with ExitStack() as stack:
            bpf_inodes = inodes if len(inodes) <= MAX_NETNS else None
            mon = stack.enter_context(DropMonitor(flt, netns_inodes=bpf_inodes, debug=debug))
            notes: list[str] = []
            session = enter_trace_session(stack, wl.paths, flt, debug, notes)
            for note in notes:
                click.echo(f"ipdbg: note: {note}", err=True)
            if ready_file:
                import os

                with open(ready_file + ".tmp", "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.replace(ready_file + ".tmp", ready_file)
            if output == "text":
                out.write(TRACE_HEADER + "\n")
                out.flush()
            if probe_fn is not None:
                threading.Thread(target=probe_fn, daemon=True, name="ipdbg-probe").start()
            deadline = None if timeout is None else time.monotonic() + timeout
            fds = [mon.fileno()] + session.fds()
            watched = set(inodes)
            keys: dict = {}
            while True:
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                select.select(fds, [], [], min(wait, 1.0))
                # Verdicts first: the kernel sends a packet's trace messages before
                # it frees the packet (their timestamps are when we read them).
                events = session.poll(0)
                events += [e for e in mon.poll(0)
                           if bpf_inodes is not None or not e.netns or e.netns in watched]
                lines = []
                for ev in events:
                    rule = None
                    if not isinstance(ev, DropEvent):
                        # Headers come with a packet's first event per base chain:
                        # show the same tuple on its later events.
                        tid = (ev.netns, ev.source, ev.trace_id)
                        if ev.key is not None:
                            keys[tid] = ev.key
                            if len(keys) > 10000:
                                keys.clear()
                        elif tid in keys:
                            ev = dataclasses.replace(ev, key=keys[tid])
                        if ev.type == TRACE_RULE:
                            rule = session.resolve(ev)
                    label = wl.labels.get(ev.netns, "")
                    if output == "json":
                        lines.append(format_trace_json(ev, rule, label, offset))
                    else:
                        lines.append(format_trace_line(ev, rule, label, offset, output_tuple))
                    n += 1
                    if count and n >= count:
                        break
                if lines:
                    out.write("\n".join(lines) + "\n")
                    out.flush()
                if count and n >= count:
                    break
            lost = format_lost({"kernel (ring buffer)": mon.lost,
                                "trace (netlink)": int(session.lost or 0)})
            if lost:
                click.echo(f"ipdbg: {lost}", err=True)
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None
    finally:
        wl.close()
