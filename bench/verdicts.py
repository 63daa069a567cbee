"""Benchmark of rule-verdict tracing (ipdbg.nftrace); appends a "verdicts" section to bench/RESULTS.md.

1. Cost for traffic that does NOT match the trace filter: TCP throughput (iperf3)
   between two lab namespaces with tracing armed in both, against no ipdbg,
   interleaved rounds, medians, ratio (target >= 0.95).
2. Matching packets fully accounted: UDP packets sent at a fixed rate from lab
   host a to b, traced in both namespaces (a: iptables-nft OUTPUT accept rule,
   b: INPUT drop rule). A packet counts when its trace reached a final verdict in
   both namespaces; lost netlink messages are counted beside it. Rate =
   accounted packets / (last event - first event). Target >= 20,000 packets/s.
   Then an overload run at 1.6x that rate shows the ceiling and the loss counting.

    sudo .venv/bin/python bench/verdicts.py [--rounds 5] [--rate 25000] [--seconds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ipdbg.filters import build_filter  # noqa: E402
from ipdbg.lab import Lab  # noqa: E402
from ipdbg.nftrace import TraceSession  # noqa: E402
from common import iperf_bps, write_section  # noqa: E402

A, B = "10.201.0.1", "10.201.0.2"
PORT = 7000

SENDER = r"""
import socket, sys, time
n, rate = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
burst = 50
gap = burst / rate
t0 = time.monotonic()
sent = 0
while sent < n:
    for _ in range(min(burst, n - sent)):
        s.sendto(b"x" * 16, (sys.argv[3], int(sys.argv[4])))
        sent += 1
    delay = t0 + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # sleep, not spin: the tracer needs the CPU more than we do
print(time.monotonic() - t0)
"""


def bench_throughput(lab, a, b, rounds: int, seconds: float):
    srv = b.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    flt = build_filter(dst=f"{B}:{PORT}", proto="udp")  # iperf3's TCP does not match
    off, on = [], []
    iperf_bps(a, B, 1)  # warm-up
    for r in range(rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for mode in order:
            if mode == "off":
                off.append(iperf_bps(a, B, seconds))
            else:
                with TraceSession([a.netns, b.netns], flt, legacy=False):
                    on.append(iperf_bps(a, B, seconds))
    srv.kill()
    return off, on


def run_pps(a, b, ts, n: int, rate: float):
    sender = a.popen([sys.executable, "-c", SENDER, str(n), str(rate), B, str(PORT)], stdout=subprocess.PIPE)
    t_start = time.monotonic()
    done_a = done_b = 0
    events = 0
    last = t_start
    first = 0.0
    idle_since = None
    lost0 = ts.lost
    while True:
        evs = ts.poll(50)
        if evs:
            last = time.monotonic()
            first = first or last
            idle_since = None
            events += len(evs)
            for ev in evs:
                # a: the user's OUTPUT rule accepts; b: the user's INPUT rule drops
                if ev.verdict == "accept" and ev.netns == a.inode:
                    done_a += 1
                elif ev.verdict == "drop" and ev.netns == b.inode:
                    done_b += 1
        else:
            if sender.poll() is not None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
    send_s = float(sender.stdout.read().decode().strip() or 0)
    lost = ts.lost - lost0
    accounted = min(done_a, done_b)
    # From the first event to the last: the sender's start-up is not the tracer's time. When the
    # tracer keeps up this is the rate the sender achieved (shown beside it); when it cannot,
    # it is the tracer's rate.
    span = max(last - (first or t_start), 1e-9)
    return {"sent": n, "send_s": send_s, "complete_a": done_a, "complete_b": done_b,
            "events": events, "lost_msgs": lost, "elapsed": span,
            "pps": accounted / span, "sender_pps": n / max(send_s, 1e-9)}


def bench_pps(a, b, rounds: int, rate: float, seconds: float):
    flt = build_filter(dst=f"{B}:{PORT}", proto="udp")
    n = int(rate * seconds)
    res = []
    with TraceSession([a.netns, b.netns], flt, legacy=False) as ts:
        run_pps(a, b, ts, 2000, rate)  # warm-up
        for _ in range(rounds):
            res.append(run_pps(a, b, ts, n, rate))
    return res




def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=25000.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with Lab(prefix="bv") as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        lab.link(a, b, f"{A}/24", f"{B}/24")
        a.run(["iptables-nft-restore"], input=f"*filter\n:OUTPUT ACCEPT [0:0]\n"
              f"-A OUTPUT -p udp --dport {PORT} -j ACCEPT\nCOMMIT\n")
        b.run(["iptables-nft-restore"], input=f"*filter\n:INPUT ACCEPT [0:0]\n"
              f"-A INPUT -p udp --dport {PORT} -j DROP\nCOMMIT\n")
        off, on = bench_throughput(lab, a, b, args.rounds, args.seconds)
        pps = bench_pps(a, b, args.rounds, args.rate, args.seconds)
        # beyond what Python keeps up with: messages are dropped by the kernel and counted
        over = bench_pps(a, b, 3, args.rate * 1.6, args.seconds)
    m_off, m_on = statistics.median(off), statistics.median(on)
    ratio = m_on / m_off
    # the machine is shared: also the median of the per-round ratios (each pair ran back to back)
    paired = statistics.median(x / y for x, y in zip(on, off))
    m_pps = statistics.median(r["pps"] for r in pps)
    lines = [
        "## verdicts (bench/verdicts.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S')}, kernel {os.uname().release}, "
        f"{args.rounds} interleaved rounds, medians.",
        "",
        "| measure | without ipdbg | tracing armed | ratio | target |",
        "|---|---|---|---|---|",
        f"| TCP throughput, non-matching (iperf3 {args.seconds:g} s) | {m_off / 1e9:.2f} Gbit/s | "
        f"{m_on / 1e9:.2f} Gbit/s | {ratio:.3f} | >= 0.95 |",
        "",
        f"Median of the per-round ratios (pairs run back to back): {paired:.3f}. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine).",
        "",
        f"Matching UDP packets sent at {args.rate:,.0f}/s for {args.seconds:g} s, traced in both netns "
        "(4 trace messages per packet: our rule and the user's rule, in each netns):",
        "",
        "| round | sent | sender achieved/s | final verdict in a | in b | lost msgs | accounted packets/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(pps, 1):
        lines.append(f"| {i} | {r['sent']} | {r['sender_pps']:,.0f} | {r['complete_a']} | {r['complete_b']} | "
                     f"{r['lost_msgs']} | {r['pps']:,.0f} |")
    lines += ["", f"Median accounted rate: {m_pps:,.0f} packets/s (target >= 20,000).", "",
              f"Overload, {args.rate * 1.6:,.0f}/s offered (packets with a final verdict received; the rest "
              "have lost messages, counted):", "",
              "| round | sent | sender achieved/s | final verdict in a | in b | lost msgs | received packets/s |",
              "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(over, 1):
        lines.append(f"| {i} | {r['sent']} | {r['sender_pps']:,.0f} | {r['complete_a']} | {r['complete_b']} | "
                     f"{r['lost_msgs']} | {r['pps']:,.0f} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    print("raw throughput bps off:", [round(x) for x in off], "on:", [round(x) for x in on])
    if not args.no_write:
        write_section("verdicts", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
