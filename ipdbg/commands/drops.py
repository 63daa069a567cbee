"""`ipdbg drops`: every packet the kernel drops, live, with its reason and place.

The formatting functions (``format_*``) are pure; ``drops`` wires the
DropMonitor (ipdbg/bpf/engine.py) to them.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections import Counter
from datetime import datetime

import click

from ..errors import Interrupted, UsageError
from ..events import DropEvent, format_tcp_flags


# -- pure formatting -------------------------------------------------------------

def format_endpoint(addr: str, port: int, family: int, with_port: bool) -> str:
    host = f"[{addr}]" if family == 6 and with_port else addr
    return f"{host}:{port}" if with_port else host


def format_tuple(ev: DropEvent) -> str:
    k = ev.key
    if k is None:
        return "(not IP)"
    if k.proto in (6, 17):
        s = format_endpoint(k.src, k.sport, k.family, True)
        d = format_endpoint(k.dst, k.dport, k.family, True)
        text = f"{k.proto_name} {s} -> {d}"
        if k.proto == 6 and ev.tcp_flags:
            text += f" [{format_tcp_flags(ev.tcp_flags)}]"
        return text
    if k.proto in (1, 58):
        return f"{k.proto_name} {k.src} -> {k.dst} id={k.sport} seq={k.dport}"
    return f"{k.proto_name} {k.src} -> {k.dst}"


def format_what(ev: DropEvent) -> str:
    """The reason column: the drop reason, or the reply the packet caused."""
    if ev.kind == "icmp_send":
        return f"ICMP_ERROR type={ev.icmp_type} code={ev.icmp_code}"
    if ev.kind == "tcp_send_reset":
        return "TCP_RESET_SENT"
    return ev.reason_name or f"reason {ev.reason}"


def format_location(ev: DropEvent) -> str:
    if ev.location_sym:
        return ev.location_sym
    return f"{ev.location:#x}" if ev.location else "-"


def format_time(ts_ns: int, mono_to_wall: float) -> str:
    wall = ts_ns / 1e9 + mono_to_wall
    return datetime.fromtimestamp(wall).strftime("%H:%M:%S.%f")


def format_netns(inode: int, names: dict[int, str]) -> str:
    return names.get(inode) or (str(inode) if inode else "?")


def format_drop_text(ev: DropEvent, names: dict[int, str], mono_to_wall: float) -> str:
    where = format_location(ev) if ev.kind == "kfree_skb" else "-"
    return (f"{format_time(ev.ts_ns, mono_to_wall)}  {format_netns(ev.netns, names)}  "
            f"{ev.comm or '?'}({ev.pid})  {format_tuple(ev)}  {format_what(ev)}  {where}")


def format_drop_json(ev: DropEvent, names: dict[int, str], mono_to_wall: float) -> dict:
    k = ev.key
    out = {
        "time": datetime.fromtimestamp(ev.ts_ns / 1e9 + mono_to_wall).isoformat(timespec="microseconds"),
        "ts_ns": ev.ts_ns,
        "kind": ev.kind,
        "netns": ev.netns,
        "netns_name": names.get(ev.netns, ""),
        "ifindex": ev.ifindex,
        "pid": ev.pid,
        "comm": ev.comm,
        "cpu": ev.cpu,
        "skb": f"{ev.skb:#x}",
    }
    if k is not None:
        out.update(family=k.family, proto=k.proto_name, src=k.src, dst=k.dst, sport=k.sport,
                   dport=k.dport, ident=k.ident)
        if k.proto == 6:
            out.update(seq=k.seq, tcp_flags=format_tcp_flags(ev.tcp_flags))
    if ev.kind == "kfree_skb":
        out.update(reason=ev.reason_name, reason_code=ev.reason, location=format_location(ev),
                   location_addr=f"{ev.location:#x}")
    elif ev.kind == "icmp_send":
        out.update(icmp_type=ev.icmp_type, icmp_code=ev.icmp_code)
    return out


class Summary:
    """Counts by reason and by (reason, location); replies counted apart."""

    def __init__(self):
        self.drops = 0
        self.by_reason: Counter = Counter()
        self.by_place: Counter = Counter()
        self.replies: Counter = Counter()

    def add(self, ev: DropEvent) -> None:
        if ev.kind == "kfree_skb":
            self.drops += 1
            self.by_reason[ev.reason_name or str(ev.reason)] += 1
            self.by_place[(ev.reason_name or str(ev.reason), format_location(ev))] += 1
        else:
            self.replies[ev.kind] += 1

    def to_json(self, lost: int, unread: int = 0) -> dict:
        return {"summary": {
            "drops": self.drops,
            "lost": lost,
            "unread": unread,
            "by_reason": dict(self.by_reason.most_common()),
            "by_location": [{"reason": r, "location": loc, "count": n}
                            for (r, loc), n in self.by_place.most_common()],
            "replies": dict(self.replies),
        }}

    def format_text(self, lost: int, unread: int = 0) -> str:
        """``lost``: the ring buffer was full; ``unread``: still in it when we stopped."""
        lines = [f"-- {self.drops} drops, {lost} events lost"
                 + (f", {unread} unread at exit" if unread else "")
                 + "".join(f", {n} {k}" for k, n in sorted(self.replies.items()))]
        for (reason, loc), n in self.by_place.most_common():
            lines.append(f"{n:>9}  {reason}  {loc}")
        return "\n".join(lines)


def format_hex_record(rec: bytes) -> str:
    return rec.hex()


# -- command ---------------------------------------------------------------------

@click.command("drops")
@click.option("--src", metavar="HOST[:PORT]|CIDR", help="Source address/network and port ([IPv6]:PORT).")
@click.option("--dst", metavar="HOST[:PORT]|CIDR", help="Destination address/network and port.")
@click.option("--proto", metavar="tcp|udp|icmp|icmpv6", help="Protocol.")
@click.option("--both-directions", is_flag=True, help="Also match the reverse direction (replies).")
@click.option("--netns", "netns", multiple=True, metavar="NAME|PATH",
              help="Only drops in this network namespace (repeatable).")
@click.option("--iface", metavar="IFNAME", help="Only packets on this interface (any watched netns).")
@click.option("--reason", "reasons", multiple=True, metavar="NAME",
              help="Only this drop reason, e.g. NETFILTER_DROP (repeatable).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="Stop after N drops.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop after S seconds.")
@click.option("--buffer", "buffer_mib", type=click.IntRange(min=1, max=1024), default=32, show_default=True,
              metavar="MiB", help="Ring buffer size (a power of two); raise it if events are lost.")
@click.option("--ready-file", type=click.Path(dir_okay=False), hidden=True,
              help="Written once the programs are attached (tests start traffic then).")
@click.option("--dump-raw", type=click.Path(dir_okay=False), hidden=True,
              help="Also append each raw ring-buffer record (hex) to this file (fixtures).")
@click.pass_context
def drops(ctx, src, dst, proto, both_directions, netns, iface, reasons, output, count, timeout,
          buffer_mib, ready_file, dump_raw):
    """Live monitor of packets the kernel drops, with reason and location.

    \b
    Examples:
      ipdbg drops
      ipdbg drops --dst 198.51.100.80:80 --reason NETFILTER_DROP
      ipdbg drops --netns client -o json --count 10
    """
    from dataclasses import replace

    from ..bpf.engine import DropMonitor
    from ..filters import build_filter
    from ..netns import netns_inode, read_netns_names, resolve_netns
    from ..privileges import CAP_BPF, CAP_PERFMON, require_caps

    debug = bool(ctx.obj and ctx.obj.get("debug"))
    if buffer_mib & (buffer_mib - 1):
        raise UsageError(f"--buffer {buffer_mib}: not a power of two", "e.g. --buffer 64")
    flt = build_filter(src=src, dst=dst, proto=proto)
    if both_directions:
        flt = replace(flt, both_directions=True)
    inodes = [netns_inode(resolve_netns(spec)) for spec in netns]
    require_caps([CAP_BPF, CAP_PERFMON], "ipdbg drops")

    names = read_netns_names()
    mono_to_wall = time.time() - time.monotonic()
    summary = Summary()
    out = sys.stdout
    raw_file = open(dump_raw, "a") if dump_raw else None
    deadline = None if timeout is None else time.monotonic() + timeout
    mon = DropMonitor(flt, netns_inodes=inodes, reasons=list(reasons), debug=debug,
                      ringbuf_bytes=buffer_mib << 20, iface=iface)
    try:
        with mon:
            if debug:
                click.echo(f"ipdbg: attached {', '.join(mon.attached)}; skipped {mon.skipped or 'none'}",
                           err=True)
            if ready_file:
                with open(ready_file + ".tmp", "w") as f:
                    f.write(" ".join(mon.attached) + "\n")
                os.replace(ready_file + ".tmp", ready_file)
            stop = _StopSignals()
            try:
                with stop:
                    _loop(mon, stop, out, output, summary, count, deadline, raw_file, names,
                          mono_to_wall)
            finally:
                _write_summary(out, output, summary, mon)
            if stop.signum is not None:
                raise Interrupted(f"interrupted by signal {stop.signum}")
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None
    finally:
        if raw_file is not None:
            raw_file.close()


class _StopSignals:
    """SIGINT/SIGTERM only set a flag (and wake select() through a pipe), so a
    batch already taken from the ring is always printed and counted: printed +
    lost + unread equals what the kernel reported. Outside the main thread (no
    signal handlers there) this does nothing."""

    def __init__(self):
        self.signum = None
        self.rfd = self.wfd = None
        self._old = {}
        self._old_wakeup = None

    def __enter__(self):
        import signal

        try:
            self.rfd, self.wfd = os.pipe()
            os.set_blocking(self.wfd, False)
            self._old_wakeup = signal.set_wakeup_fd(self.wfd)
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def fds(self) -> list[int]:
        return [self.rfd] if self._old else []

    def _restore(self):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
        self._old = {}
        for fd in (self.rfd, self.wfd):
            if fd is not None:
                os.close(fd)
        self.rfd = self.wfd = None

    def __exit__(self, *exc):
        self._restore()


def _loop(mon, stop, out, output, summary, count, deadline, raw_file, names, mono_to_wall):
    from ..netns import read_netns_names

    names_read_at = time.monotonic()
    while stop.signum is None:
        wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
        select.select([mon] + stop.fds(), [], [], wait)
        if raw_file is not None:
            records = mon.poll_raw(0)
            raw_file.writelines(r.hex() + "\n" for r in records)
            events = mon.decode(records)
        else:
            events = mon.poll(0)
        if any(ev.netns not in names for ev in events) and time.monotonic() - names_read_at > 1:
            names.update(read_netns_names())
            names_read_at = time.monotonic()
        lines = []
        done = False
        for ev in events:
            summary.add(ev)
            if output == "json":
                lines.append(json.dumps(format_drop_json(ev, names, mono_to_wall)))
            else:
                lines.append(format_drop_text(ev, names, mono_to_wall))
            if count is not None and summary.drops >= count:
                done = True
                break
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()
        if done or (deadline is not None and time.monotonic() >= deadline):
            return


def _write_summary(out, output: str, summary: Summary, mon) -> None:
    try:
        lost = mon.lost
        unread = mon.discard_pending()
    except Exception:
        lost, unread = -1, 0
    try:
        if output == "json":
            out.write(json.dumps(summary.to_json(lost, unread)) + "\n")
        else:
            out.write(summary.format_text(lost, unread) + "\n")
        out.flush()
    except BrokenPipeError:
        pass
