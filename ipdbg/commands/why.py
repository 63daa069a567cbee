"""`ipdbg why-dropped`: name the rule (or the kernel's reason) that drops packets.

Options shared with `ipdbg trace` (filter and netns selection) are defined here
as decorators; ``read_watch_list`` turns --netns/--pid/--all-netns into paths.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import click

from ..errors import NoMatchError, UsageError


# ------------------------------------------------------------------ shared options

def filter_options(f):
    for opt in reversed([
        click.option("--dst", metavar="HOST[:PORT]",
                     help="Destination address or CIDR, with port: 198.51.100.80:80, [2001:db8::1]:80."),
        click.option("--src", metavar="HOST[:PORT]", help="Source address or CIDR, with port."),
        click.option("--proto", type=click.Choice(["tcp", "udp", "icmp", "icmpv6", "all"]),
                     help="Protocol (default: any)."),
        click.option("--iface", metavar="IFNAME", help="Only packets through this interface."),
        click.option("--netns", "netns", multiple=True, metavar="NAME|PATH",
                     help="Network namespace to watch (repeatable): `ip netns` name or path."),
        click.option("--pid", type=int, metavar="PID", help="Watch the netns of this process."),
        click.option("--all-netns", is_flag=True,
                     help="Watch every netns: /run/netns/* and those of running processes."),
        click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="Text, or one JSON object per line."),
        click.option("--ready-file", type=click.Path(dir_okay=False), metavar="PATH",
                     help="Written once tracing is armed: start your traffic then (scripts, tests)."),
    ]):
        f = opt(f)
    return f


@dataclass
class WatchList:
    paths: list[str | None] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)  # inode -> how to show it
    specs: dict[int, str] = field(default_factory=dict)  # inode -> how to name it in a command
    fds: list[int] = field(default_factory=list)  # held namespaces (see read_watch_list)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def read_watch_list(netns: tuple[str, ...], pid: int | None, all_netns: bool) -> WatchList:
    """The namespaces to watch, deduplicated by inode (the current one when none given)."""
    from ..netns import (NETNS_RUN_DIR, netns_inode, netns_of_pid, read_netns_names,
                         resolve_netns)

    wl = WatchList()

    def add(path: str | None, label: str, spec: str | None) -> None:
        ino = netns_inode(path)
        if ino in wl.labels:
            return
        wl.paths.append(path)
        wl.labels[ino] = label
        if spec:
            wl.specs[ino] = spec

    for spec in netns:
        path = resolve_netns(spec)
        add(path, spec, spec)
    if pid is not None:
        path = netns_of_pid(pid)
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        add(path, f"pid {pid} ({comm})", path)
    if all_netns:
        names = read_netns_names()
        own = netns_inode()
        add(None, names.get(own, "current"), None)
        try:
            entries = sorted(os.listdir(NETNS_RUN_DIR))
        except OSError:
            entries = []
        for name in entries:
            try:
                add(os.path.join(NETNS_RUN_DIR, name), name, name)
            except OSError:
                continue
        for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
            if not entry.isdigit():
                continue
            path = f"/proc/{entry}/ns/net"
            # A process may exit while we watch its netns: hold the netns by an fd
            # and reach it through /proc/OURPID/fd (child tools too), so the path stays valid (our
            # trace sockets pin the netns anyway until we leave).
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            ino = os.fstat(fd).st_ino
            if ino in wl.labels:
                os.close(fd)
                continue
            wl.fds.append(fd)
            add(f"/proc/{os.getpid()}/fd/{fd}", names.get(ino, f"pid {entry}"), path)
    if not wl.paths:
        add(None, "current", None)
    return wl


# ------------------------------------------------------------------ probe

def build_probe(flt, proto: str | None, src: str | None, netns_path: str | None, timeout: float):
    """A callable sending the packet the filter describes, from ``netns_path``."""
    from .. import traffic
    from ..events import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP

    if flt.dst is None or flt.dst.num_addresses != 1:
        raise UsageError("--probe needs --dst with one address (HOST[:PORT])")
    dst = str(flt.dst.network_address)
    src_addr = None
    if flt.src is not None:
        if flt.src.num_addresses != 1:
            raise UsageError("--probe needs --src to be one address, not a network")
        src_addr = str(flt.src.network_address)
    sport = flt.sport or 0
    p = flt.proto
    if p is None:
        p = IPPROTO_TCP if flt.dport else (IPPROTO_ICMPV6 if flt.dst.version == 6 else IPPROTO_ICMP)
    if p in (IPPROTO_TCP, IPPROTO_UDP) and not flt.dport:
        raise UsageError("--probe with tcp/udp needs a port: --dst HOST:PORT")
    if p == IPPROTO_TCP:
        return lambda: traffic.send_tcp_connect(netns_path, dst, flt.dport, src=src_addr,
                                                timeout=timeout, sport=sport)
    if p == IPPROTO_UDP:
        return lambda: traffic.send_udp(netns_path, dst, flt.dport, src=src_addr, sport=sport)
    if p in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return lambda: traffic.send_icmp_echo(netns_path, dst, src=src_addr, timeout=timeout)
    raise UsageError(f"--probe cannot send protocol {proto!r}", "use tcp, udp, icmp or icmpv6")


def describe_probe(flt) -> str:
    from ..correlate import format_filter_text
    return format_filter_text(flt)


# ------------------------------------------------------------------ command

@click.command("why-dropped")
@filter_options
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Stop once this many distinct flows were explained.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Give up after S seconds (exit 8 when nothing was dropped).")
@click.option("--probe", is_flag=True,
              help="Send the packet yourself (TCP connect, UDP datagram or ICMP echo) "
                   "from the first --netns (or --pid), from --src when given.")
@click.option("--record", type=click.Path(dir_okay=False), hidden=True,
              help="Write every event (JSON lines) here, for test fixtures.")
@click.pass_context
def why_dropped(ctx, dst, src, proto, iface, netns, pid, all_netns, output, ready_file, count,
                timeout, probe, record):
    """Name the table, chain and rule line that drops matching packets, or the
    kernel's reason when no rule did, and print the command that fixes it.

    \b
    Examples:
      ipdbg why-dropped --dst 198.51.100.80:80 --probe
      ipdbg why-dropped --dst [2001:db8::1]:443 --netns client -o json
      ipdbg why-dropped --src 10.0.0.0/24 --proto udp --all-netns --count 5
    """
    from ..filters import build_filter
    from ..investigate import investigate
    from ..privileges import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, require_caps
    from ..render import format_explanation, format_explanation_json, format_lost

    debug = bool(ctx.obj and ctx.obj.get("debug"))
    flt = build_filter(src=src, dst=dst, proto=None if proto == "all" else proto, iface=iface)
    if not (dst or src or proto or iface):
        raise UsageError("give at least one of --dst, --src, --proto, --iface",
                         "e.g. ipdbg why-dropped --dst 198.51.100.80:80")
    wl = read_watch_list(netns, pid, all_netns)
    probe_fn = None
    if probe:
        # From the first netns named (--netns, then --pid), else from ours.
        explicit = len(netns) + (pid is not None)
        sender = wl.paths[0] if explicit else None
        probe_fn = build_probe(flt, proto, src, sender, timeout=min(1.0, timeout))
    require_caps([CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN], "why-dropped")

    try:
        inv = investigate(wl.paths, flt, timeout, count=count, probe=probe_fn, debug=debug,
                          ready_file=ready_file, netns_labels=wl.labels, netns_specs=wl.specs,
                          record=record)
    finally:
        wl.close()
    out = sys.stdout
    if output == "json":
        for exp in inv.explanations:
            out.write(format_explanation_json(exp) + "\n")
    else:
        out.write("\n\n".join(format_explanation(e) for e in inv.explanations) + "\n")
        if probe and inv.probe_result:
            out.write(f"probe    {describe_probe(flt)}: {inv.probe_result}\n")
    extra = []
    if inv.more_flows:
        extra.append(f"{inv.more_flows} more flow(s) were explained; raise --count to see them")
    if inv.unfinished:
        extra.append(f"{inv.unfinished} more drop(s) were still being traced when --count "
                     "was reached")
    if output == "text":
        for line in extra:
            out.write(f"({line})\n")
    for note in inv.notes + (extra if output == "json" else []):
        click.echo(f"ipdbg: note: {note}", err=True)
    lost = format_lost(inv.lost_detail)
    if lost:
        if output == "json":
            click.echo(f"ipdbg: warning: {lost}", err=True)
        else:
            out.write(lost + "\n")
    out.flush()
    if debug:
        verdict = f"{inv.verdict_s:.3f} s" if inv.verdict_s is not None else "none"
        click.echo(f"ipdbg: engines ready after {inv.ready_s:.3f} s, verdict after {verdict}, "
                   f"{inv.drops_seen} drop and {inv.traces_seen} trace events, "
                   f"{inv.elapsed_s:.3f} s in all; engine {inv.engine}", err=True)
    if not inv.blocking:
        seen = "matching packets were seen but not dropped" if any(
            e.verdict == "accepted" for e in inv.explanations) else "no matching packet was seen"
        hint = None
        if inv.probe_result not in (None, "connected", "reply", "sent") and not all_netns:
            # The probe did not get through, yet nothing we watch dropped it.
            hint = (f"the probe got `{inv.probe_result}`: the packet may be dropped in a netns "
                    "not watched (a router, the server): add --netns for it, or --all-netns")
        raise NoMatchError(f"nothing matching was dropped within {timeout:g} s ({seen})", hint)
