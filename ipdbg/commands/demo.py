"""`ipdbg demo` (`make demo`): a namespace lab where a rule drops a packet, explained.

The lab: a client (10.77.0.1) and a "remote" server (198.51.100.80, listening
on tcp/80) in two network namespaces joined by a veth pair. The seed rule goes
into the client's OUTPUT chain; why-dropped --probe names it and prints the
fix, the demo applies the fix and shows the connection going through. The lab
is removed at the end, on Ctrl-C, and -- its namespaces being held by children
with PDEATHSIG -- even if ipdbg is killed.
"""

from __future__ import annotations

import subprocess
import sys

import click

CLIENT_ADDR = "10.77.0.1/24"
GATEWAY_ADDR = "10.77.0.2/24"
SERVER_IP = "198.51.100.80"
PORT = 80
SEED_RULES = f"*filter\n-A OUTPUT -d {SERVER_IP}/32 -p tcp --dport {PORT} -j DROP\nCOMMIT\n"


def build_demo_lab(lab):
    """client --veth-- server; the server owns 198.51.100.80, the client routes to it."""
    client = lab.add_host("client")
    server = lab.add_host("server")
    lab.link(client, server, CLIENT_ADDR, GATEWAY_ADDR)
    server.run(["ip", "addr", "add", f"{SERVER_IP}/32", "dev", "eth0"])
    client.run(["ip", "route", "add", "198.51.100.0/24", "via", GATEWAY_ADDR.split("/")[0]])
    return client, server


def _say(text: str = "") -> None:
    click.echo(text)


@click.command("demo")
@click.option("--no-fix", is_flag=True, help="Stop after the explanation (do not apply the fix).")
@click.pass_context
def demo(ctx, no_fix):
    """Build a namespace lab where a rule drops a packet, and explain it.

    \b
    Example:
      sudo ipdbg demo        (or: make demo)
    """
    from .. import traffic
    from ..errors import NoMatchError
    from ..filters import build_filter
    from ..investigate import investigate
    from ..lab import Lab
    from ..privileges import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, require_caps
    from ..render import format_explanation, format_lost

    debug = bool(ctx.obj and ctx.obj.get("debug"))
    require_caps([CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON], "the demo")
    with Lab(prefix="demo") as lab:
        _say(f"lab: client {CLIENT_ADDR.split('/')[0]} -> remote server {SERVER_IP}:{PORT} "
             "(two network namespaces, one veth pair)")
        client, server = build_demo_lab(lab)
        with traffic.start_listener(server.netns, "tcp", PORT):
            before = traffic.send_tcp_connect(client.netns, SERVER_IP, PORT)
            _say(f"client: connect {SERVER_IP}:{PORT} -> {before}")
            _say("client: iptables-restore <<< '-A OUTPUT -d 198.51.100.80/32 -p tcp "
                 "--dport 80 -j DROP'")
            client.run(["iptables-restore"], input=SEED_RULES)
            _say(f"\n$ ipdbg why-dropped --dst {SERVER_IP}:{PORT} --probe --netns client")
            flt = build_filter(dst=f"{SERVER_IP}:{PORT}", proto="tcp")
            probe = lambda: traffic.send_tcp_connect(client.netns, SERVER_IP, PORT)  # noqa: E731
            inv = investigate([client.netns], flt, timeout=5.0, count=1, probe=probe,
                              debug=debug, netns_labels={client.inode: "client"},
                              netns_specs={client.inode: client.netns})
            _say("\n\n".join(format_explanation(e) for e in inv.explanations))
            lost = format_lost(inv.lost_detail)
            if lost:
                _say(lost)
            if inv.verdict_s is not None:
                _say(f"(answered {inv.verdict_s:.2f} s after start)")
            if not inv.blocking:
                raise NoMatchError("the demo's drop was not seen",
                                   "run `ipdbg doctor` to see what this kernel allows")
            fix = inv.blocking[0].fix
            if not no_fix and fix and fix.split()[:2] == ["ipdbg", "rules"]:
                _apply_fix(fix, client)
    _say("lab removed")


def _apply_fix(fix: str, client) -> None:
    from .. import traffic
    from ..errors import SystemToolError

    _say(f"\n$ {fix.replace(client.netns, 'client')}")
    argv = fix.split()
    proc = subprocess.run([sys.executable, "-m", "ipdbg.cli"] + argv[1:],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemToolError(f"the fix failed: {(proc.stderr or proc.stdout).strip()}")
    after = traffic.send_tcp_connect(client.netns, SERVER_IP, PORT)
    _say(f"client: connect {SERVER_IP}:{PORT} -> {after}")
