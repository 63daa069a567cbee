"""why-dropped's machinery (effects): arm the engines, wait, join, answer.

Used by ``ipdbg why-dropped`` and by the scenario runner::

    inv = investigate([host.netns], build_filter(dst="198.51.100.80:80"), timeout=5,
                      count=1, on_ready=start_traffic)
    for exp in inv.explanations: print(exp.to_json())
    inv.lost        # events the engines could not deliver (shown, never silent)

Both engines are armed before ``on_ready`` is called (and the ready file written),
so traffic started from there is seen from its first packet.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

from .correlate import BLOCKING, Correlator, Explanation
from .errors import IpdbgError
from .filters import PacketFilter, match_key
from .netns import netns_inode

PROBE_SETTLE_S = 0.5  # after the probe returned with no drop, wait this long for late events
TICK_S = 0.05  # how often settled drops are finalized when no event arrives


@dataclass
class Investigation:
    explanations: list[Explanation] = field(default_factory=list)
    lost_kernel: int = 0  # BPF ring buffer
    lost_trace: int = 0  # netlink (ENOBUFS) / nfnetlink_log
    drops_seen: int = 0
    traces_seen: int = 0
    probe_result: str | None = None
    ready_s: float = 0.0  # from the call to armed engines
    verdict_s: float | None = None  # from the call to the first drop explained
    elapsed_s: float = 0.0
    engine: dict = field(default_factory=dict)  # tier, attached programs, trace sources
    notes: list[str] = field(default_factory=list)
    more_flows: int = 0  # flows explained beyond --count (not listed)
    unfinished: int = 0  # drops still being traced when --count stopped us (not listed)

    @property
    def lost(self) -> int:
        return self.lost_kernel + self.lost_trace

    @property
    def lost_detail(self) -> dict[str, int]:
        return {"kernel (ring buffer)": self.lost_kernel, "trace (netlink)": self.lost_trace}

    @property
    def blocking(self) -> list[Explanation]:
        return [e for e in self.explanations if e.verdict in BLOCKING]

    def to_json(self) -> dict:
        return {"explanations": [e.to_json() for e in self.explanations], "lost": self.lost,
                "lost_kernel": self.lost_kernel, "lost_trace": self.lost_trace,
                "probe": self.probe_result, "verdict_s": self.verdict_s,
                "notes": self.notes}


def enter_trace_session(stack: ExitStack, paths, flt, debug, notes: list[str],
                        labels: dict[int, str] | None = None, seen: bool = False):
    """TraceSession in ``stack``; its warnings (e.g. legacy TRACE unavailable in a netns
    whose nfnetlink_log another program holds) go to ``notes``. ``seen``: also the
    TRACE_SEEN events of ipdbg's own trace chains (why-dropped's ``accepted`` answer
    in a netns with no rules; not for the live stream)."""
    from .nftrace import TraceSession
    from .nftrace.session import format_legacy_unavailable

    session = stack.enter_context(TraceSession(paths, flt, debug=debug, seen=seen))
    for inode in session.legacy_unavailable:
        label = (labels or {}).get(inode)
        notes.append(format_legacy_unavailable(label) if label else session.legacy_unavailable[inode])
    return session


def investigate(netns_paths: list[str | None], flt: PacketFilter, timeout: float,
                count: int | None = None, on_ready: Callable[[], None] | None = None,
                probe: Callable[[], str] | None = None, debug: bool = False,
                ready_file: str | None = None,
                on_explanation: Callable[[Explanation], None] | None = None,
                netns_labels: dict[int, str] | None = None,
                netns_specs: dict[int, str] | None = None,
                record: str | None = None, trace: bool = True) -> Investigation:
    """Watch ``netns_paths`` for packets matching ``flt`` and explain their drops.

    Returns when ``count`` distinct drops (flows) are explained, when ``timeout``
    seconds passed since the engines were ready, or -- with ``probe`` -- shortly
    after the probe returned without any drop. ``probe`` runs in a thread once
    ready and returns a traffic.py word. Does not raise when nothing matched:
    the ``Investigation`` says what was seen (``accepted``/``unseen``).
    """
    from .bpf.engine import DropMonitor

    t0 = time.monotonic()
    paths = list(netns_paths) or [None]
    own = netns_inode()
    inodes = [netns_inode(p) for p in paths]
    labels = {i: (p or "current") for i, p in zip(inodes, paths)}
    labels.update(netns_labels or {})
    specs = {i: p for i, p in zip(inodes, paths) if p is not None and i != own}
    if netns_specs is not None:
        specs = {i: s for i, s in netns_specs.items() if i != own}
    inv = Investigation()
    rec = open(record, "w") if record else None
    try:
        with ExitStack() as stack:
            # The BPF side filters on up to MAX_NETNS namespaces; beyond (--all-netns)
            # it sees every netns and we keep the watched ones here.
            from .bpf.decode import MAX_NETNS

            bpf_inodes = inodes if len(set(inodes)) <= MAX_NETNS else None
            watched = set(inodes)
            mon = stack.enter_context(DropMonitor(flt, netns_inodes=bpf_inodes, debug=debug))
            # DNAT rewrites the destination before the filter chains drop the packet:
            # its kfree_skb no longer matches --dst. A second monitor sees netfilter
            # drops without the destination part; the correlator keeps one only when
            # it is the same packet as a trace that matched the filter.
            # A second monitor is one more program on every drop path: only where NAT can be.
            relaxed = dataclasses.replace(flt, dst=None, dport=None)
            extra_mon = None
            if relaxed != flt and len(paths) <= 16 and read_dnat_present(paths):  # an nft per netns
                extra_mon = stack.enter_context(DropMonitor(
                    relaxed, netns_inodes=bpf_inodes, reasons=["NETFILTER_DROP"],
                    kinds=("kfree_skb",), debug=debug))
            inv.engine = {"tier": mon.tier, "attached": list(mon.attached)}
            session = None
            if trace:
                try:
                    session = enter_trace_session(stack, paths, flt, debug, inv.notes,
                                                  labels=labels, seen=True)
                except ImportError as exc:  # the trace engine is not installed/built
                    inv.notes.append(f"nftrace engine not available ({exc}): kernel "
                                     "reasons only, no rule names")
            resolve = None
            if session is not None:
                resolve = session.resolve
                if rec is not None:
                    resolve = _recording_resolve(session.resolve, rec)
            # Our own trace tables: not steps of a path, only "seen at this hook" marks.
            ignore = {ns.table for ns in getattr(session, "_ns", ())}
            corr = Correlator(resolve, specs, labels, ignore_tables=ignore)
            ifindex = read_ifindexes(paths, inodes, flt.iface) if flt.iface else {}
            inv.ready_s = time.monotonic() - t0
            if ready_file:  # atomically: a test polling for it never reads it half-written
                with open(ready_file + ".tmp", "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.replace(ready_file + ".tmp", ready_file)
            if on_ready is not None:
                on_ready()
            probe_done = threading.Event()
            probe_box: list = []
            if probe is not None:
                def run_probe():
                    try:
                        probe_box.append(probe())
                    except IpdbgError as exc:
                        probe_box.append(f"error: {exc.message}")
                    except OSError as exc:
                        probe_box.append(f"error: {exc}")
                    finally:
                        probe_done.set()
                threading.Thread(target=run_probe, name="ipdbg-probe", daemon=True).start()
            ready_at = time.monotonic()
            deadline = ready_at + timeout
            probe_end = None
            drained_ns = time.monotonic_ns()
            fds = [mon.fileno()] + (list(session.fds()) if session is not None else [])
            if extra_mon is not None:
                fds.append(extra_mon.fileno())
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                select.select(fds, [], [], min(TICK_S, deadline - now))
                for ev in mon.poll(0):
                    if bpf_inodes is None and ev.netns and ev.netns not in watched:
                        continue
                    inv.drops_seen += 1
                    # --iface: the BPF side does not filter on it; a drop elsewhere
                    # (or with no device, on OUTPUT) counts only if it joins a trace,
                    # whose rule did match the interface.
                    extra = flt.iface is not None and ifindex.get(ev.netns) != ev.ifindex
                    if rec is not None:
                        _write(rec, ev, extra)
                    corr.add_drop(ev, extra)
                if extra_mon is not None:
                    for ev in extra_mon.poll(0):
                        if match_key(flt, ev.key):
                            continue  # the first monitor has it
                        if bpf_inodes is None and ev.netns and ev.netns not in watched:
                            continue
                        if rec is not None:
                            _write(rec, ev, extra=True)
                        corr.add_drop(ev, extra=True)
                if session is not None:
                    drained_ns = _drain_trace(session, corr, inv, rec) or drained_ns
                else:
                    drained_ns = time.monotonic_ns()
                # The kernel sends a packet's trace messages before it frees the
                # packet: once the trace sockets were empty at T, every trace of a
                # drop older than T is in. Finalize against T, not the clock, so a
                # backlog of trace messages (a flood) never makes "no rule" answers.
                for exp in corr.poll(drained_ns):
                    if inv.verdict_s is None and exp.verdict in BLOCKING:
                        inv.verdict_s = time.monotonic() - t0
                    if on_explanation is not None:
                        on_explanation(exp)
                if count and corr.blocking_count >= count:
                    break
                if probe is not None and probe_done.is_set():
                    if probe_end is None:
                        probe_end = time.monotonic()
                    # The probe is over: a drop would be pending or explained by now.
                    if (time.monotonic() - probe_end >= PROBE_SETTLE_S
                            and not corr.has_pending()):
                        break
            cut = bool(count and corr.blocking_count >= count)
            if session is not None:  # what is already queued still counts
                for _ in range(20):
                    if _drain_trace(session, corr, inv, rec):
                        break
            exps = corr.finish(flt, inodes, cut=cut)
            if cut:
                blocking = [e for e in exps if e.verdict in BLOCKING]
                inv.more_flows = max(0, len(blocking) - count)
                exps = blocking[:count]
            inv.unfinished = corr.unfinished
            inv.explanations = exps
            if inv.verdict_s is None and any(e.verdict in BLOCKING for e in inv.explanations):
                inv.verdict_s = time.monotonic() - t0
            inv.lost_kernel = mon.lost + (extra_mon.lost if extra_mon is not None else 0)
            inv.lost_trace = int(getattr(session, "lost", 0) or 0) if session is not None else 0
            inv.probe_result = probe_box[0] if probe_box else None
    finally:
        if rec is not None:
            rec.close()
    inv.elapsed_s = time.monotonic() - t0
    return inv


def read_ifindexes(paths, inodes, iface: str) -> dict[int, int]:
    """netns inode -> ifindex of ``iface`` there (where it exists)."""
    import socket

    from .netns import enter_netns

    out = {}
    for path, ino in zip(paths, inodes):
        with enter_netns(path):
            try:
                out[ino] = socket.if_nametoindex(iface)
            except OSError:
                continue
    return out


_DNAT_WORDS = ("dnat", "redirect", "DNAT", "REDIRECT", "xt target")


def read_dnat_present(paths: list[str | None]) -> bool:
    """Can a watched netns rewrite destinations (DNAT/REDIRECT, nft or legacy)?

    `nft list ruleset` shows iptables-nft and native tables; a loaded legacy
    nat table shows in ip_tables_names / ip6_tables_names."""
    import subprocess

    from .netns import enter_netns, nsenter_argv

    procs = [subprocess.Popen(nsenter_argv(p, ["nft", "list", "ruleset"]), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL) for p in paths]
    found = False
    for proc in procs:
        out, _ = proc.communicate()
        found = found or any(w in out for w in _DNAT_WORDS)
    if found:
        return True
    for p in paths:
        with enter_netns(p):
            for name in ("ip_tables_names", "ip6_tables_names"):
                try:
                    with open(f"/proc/thread-self/net/{name}") as f:
                        if "nat" in f.read().split():
                            return True
                except OSError:
                    continue
    return False


def _drain_trace(session, corr, inv, rec, rounds: int = 50) -> int | None:
    """Read trace events until the sockets are empty (or ``rounds`` reads).

    Returns the CLOCK_MONOTONIC time at which they were found empty, else None."""
    for _ in range(rounds):
        before = time.monotonic_ns()
        events = session.poll(0)
        if not events:
            return before
        for ev in events:
            inv.traces_seen += 1
            if rec is not None:
                _write(rec, ev)
            corr.add_trace(ev)
    return None


def _write(rec, ev, extra: bool = False) -> None:
    from .record import format_event_record

    data = format_event_record(ev)
    if extra:
        data["extra"] = True
    rec.write(json.dumps(data) + "\n")


def _recording_resolve(resolve, rec):
    from .record import format_rule_record

    def wrapped(ev):
        rule = resolve(ev)
        rec.write(json.dumps(format_rule_record(ev, rule)) + "\n")
        return rule
    return wrapped
