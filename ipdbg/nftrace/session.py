"""TraceSession: owned nftrace tables and trace listeners in one or more netns (effects).

Per netns: one socket owns the trace table (the kernel deletes the table when
that socket closes, so nothing survives us, SIGKILL included), one socket
listens on NFNLGRP_NFTRACE, one on NFNLGRP_NFTABLES (ruleset changes refresh
the rule snapshot), and for legacy tables one nfnetlink_log socket bound to
group 0 (see nflog.py).

Our own table's trace messages (one per matching packet and hook) are skipped
before decoding; with ``seen=True`` each (trace id, hook) still yields, at most
once a second, a ``TRACE_SEEN`` event ("this packet went through hook X here"),
so that a packet in a netns with no ruleset at all is seen, not missed.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import select
import socket
import struct
import time

from ..errors import Interrupted, IpdbgError, KernelError, PrivilegeError
from ..events import TRACE_POLICY, TRACE_RULE, TraceEvent
from ..filters import PacketFilter
from ..netns import enter_netns, netns_inode
from . import build, nflog, nl, sock, xtinfo
from .decode import DecodeError, decode_nflog, decode_ruleset_change, decode_seen, decode_trace

log = logging.getLogger("ipdbg.nftrace")

REFRESH_DEBOUNCE_S = 0.2
# x_tables (iptables-legacy) sends no change notifications: while legacy TRACE records
# come in, the snapshot they are resolved against is re-read when older than this.
LEGACY_MAX_AGE_S = 1.0
RESOLVED_MAX = 200_000  # events whose rule resolve() remembers
LEGACY_PFS = (nl.NFPROTO_IPV4, nl.NFPROTO_IPV6)
_table_counter = itertools.count()
_NLMSG_LEN_TYPE = struct.Struct("=IH")
# nfnetlink_log group 0 taken (EPERM): it may be a tracer that is just going away (its
# socket is released when its last holder, maybe a child between fork and exec, closes
# it), so retry for a moment before blaming another program.
NFLOG_RETRY_S = 2.0
# Seen-at-hook events (our own table's messages): at most one per (trace id, hook)
# per SEEN_REPEAT_NS, and at most SEEN_RATE decoded per second and netns, so that a
# flood costs a dictionary look-up per message, not a decode.
SEEN_REPEAT_NS = 1_000_000_000
SEEN_RATE = 2000
SEEN_MAX = 8192  # remembered (trace id, hook) pairs per netns
# nf_tables_trace.c (6.18), nft_trace_notify: after the nlmsghdr (16) and nfgenmsg (4)
# come NFTA_TRACE_NFPROTO (8 bytes), NFTA_TRACE_TYPE (8), NFTA_TRACE_ID (8), then
# NFTA_TRACE_CHAIN. The bytes of NFPROTO's value, the id and the chain name are the key.
_SEEN_ID_HDR = struct.pack("=HH", 8, nl.NFTA_TRACE_ID)


def format_legacy_unavailable(netns_label: str) -> str:
    """The warning for a netns whose nfnetlink_log group 0 another program holds."""
    return (f"legacy TRACE unavailable in netns {netns_label}: nfnetlink_log is held by "
            "another process (ulogd? another ipdbg?); iptables-legacy rules are not named "
            "there, nftables and iptables-nft rules are")


def read_snapshot_for(netns: str | None):
    """The rules library's snapshot of ``netns``, or None while it is not there."""
    try:
        from ..rules.snapshot import read_snapshot
    except ImportError:  # the rules library is written in parallel (issue: rules snapshot)
        return None
    return read_snapshot(netns)


def read_legacy_tables(netns: str | None) -> bool:
    """Does ``netns`` have any iptables-legacy table loaded (ip_tables / ip6_tables)?"""
    with enter_netns(netns):
        for name in ("ip_tables_names", "ip6_tables_names"):
            try:
                with open(f"/proc/thread-self/net/{name}") as f:
                    if f.read().strip():
                        return True
            except OSError:
                continue
    return False


def read_netlink_drops(netns: str | None, inodes: set[int]) -> int:
    """Sum of the kernel's Drops counters for our netlink sockets (/proc/net/netlink)."""
    total = 0
    with enter_netns(netns):
        try:
            with open("/proc/thread-self/net/netlink") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return 0
    for line in lines:
        cols = line.split()
        # sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
        if len(cols) >= 10 and int(cols[9]) in inodes:
            total += int(cols[8])
    return total


class _Netns:
    """Everything ipdbg holds in one netns."""

    def __init__(self, path: str | None, table: str):
        self.path = path
        self.inode = netns_inode(path)
        self.table = table
        self.owner: socket.socket | None = None
        self.trace: socket.socket | None = None
        self.changes: socket.socket | None = None
        self.nflog: socket.socket | None = None
        self.guard: nflog.NflogGuard | None = None
        self.saved_loggers: dict[int, str] = {}
        self.snapshot = None
        self.snapshot_at = 0.0  # time.monotonic() of the read
        self.legacy_watch: xtinfo.LegacyWatch | None = None
        self.dirty_since: float | None = None
        self.lost = 0
        self.refs: dict[tuple, object] = {}
        self.rulesets: dict[int, object] = {}  # legacy Ruleset per family, for policies
        self.batch: sock.BatchReceiver | None = None
        self.nflog_seq = 0
        self.seen: dict[bytes, int] = {}  # seen key -> time of its last seen event
        self.seen_window = 0  # start of the current second of the SEEN_RATE budget
        self.seen_n = 0  # seen events decoded in it
        self.seen_skipped = 0  # over budget: not decoded

    def sockets(self):
        return [s for s in (self.trace, self.nflog, self.changes, self.owner) if s is not None]


class TraceSession:
    """Trace packets matching ``flt`` in each of ``netns_paths`` (None = our own netns).

    >>> with TraceSession(["/run/netns/client"], build_filter(dst="198.51.100.80")) as ts:
    ...     events = ts.poll(1000)
    """

    def __init__(self, netns_paths: list[str | None], flt: PacketFilter, legacy: bool | str = "auto",
                 bridge: bool = False, debug: bool = False, record=None, seen: bool = True):
        self.netns_paths = list(netns_paths) or [None]
        self.flt = flt
        self.legacy = legacy
        self.bridge = bridge
        self.debug = debug
        self.seen = seen  # TRACE_SEEN events from our own table (ignored with debug: all of them come)
        self.warnings: list[str] = []  # for the caller to show (legacy TRACE unavailable somewhere)
        self.legacy_unavailable: dict[int, str] = {}  # netns inode -> why legacy TRACE is off there
        self.record = record  # callable(kind, netns_inode, raw message bytes) or None
        self._ns: list[_Netns] = []
        self._by_fd: dict[int, tuple[_Netns, str]] = {}
        self._resolved: dict[int, tuple[TraceEvent, object]] = {}
        self._buf = bytearray(1 << 20)
        self._lost_overruns = 0

    # ---- life cycle -------------------------------------------------------------

    def __enter__(self) -> "TraceSession":
        try:
            for path in self.netns_paths:
                n = next(_table_counter)
                name = f"ipdbg_{os.getpid()}" + (f"_{n}" if n else "")
                ns = _Netns(path, name)
                self._ns.append(ns)
                # Listeners first: once the table exists, every matching packet is traced.
                ns.trace = sock.open_nfnl(ns.path, (nl.NFNLGRP_NFTRACE,), sock.RCVBUF)
                ns.changes = sock.open_nfnl(ns.path, (nl.NFNLGRP_NFTABLES,), 4 << 20)
            self._arm_legacy([ns for ns in self._ns if self._want_legacy(ns)])
            for ns in self._ns:
                self._arm(ns)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _arm(self, ns: _Netns) -> None:
        try:
            ns.snapshot = read_snapshot_for(ns.path)
            ns.snapshot_at = time.monotonic()
        except Interrupted:  # SIGTERM is an IpdbgError too: not a failed read, the end
            raise
        except IpdbgError as e:  # trace anyway: events still carry table, chain and handle
            log.warning("netns %s: cannot read its rules (%s); rules will not be named", ns.path, e)
        ns.owner = sock.open_nfnl(ns.path)
        families = ["inet"] + (["bridge"] if self.bridge else [])
        for seq, fam in enumerate(families):
            data, acks = build.format_trace_batch(ns.table, self.flt, fam, seq=100 * seq + 1)
            sock.talk(ns.owner, data, acks, f"creating trace table {fam} {ns.table}")
        try:
            ns.batch = sock.BatchReceiver(ns.trace.fileno())
        except (OSError, AttributeError) as e:  # no recvmmsg in this libc: one recv per message
            log.debug("recvmmsg unavailable (%s)", e)
        for s, kind in ((ns.trace, "trace"), (ns.changes, "changes"), (ns.nflog, "nflog")):
            if s is not None:
                self._by_fd[s.fileno()] = (ns, kind)

    def _want_legacy(self, ns: _Netns) -> bool:
        if self.legacy == "auto":
            return read_legacy_tables(ns.path)
        return bool(self.legacy) and self.legacy != "no"

    def _arm_legacy(self, nss: list[_Netns]) -> None:
        """nfnetlink_log group 0 in each of ``nss``; where another program holds it,
        legacy TRACE is skipped in that netns only, with a warning."""
        if not nss:
            return
        for ns in nss:
            ns.nflog = sock.open_nfnl(ns.path, (), sock.RCVBUF)
        pending = list(nss)
        end = time.monotonic() + NFLOG_RETRY_S
        while True:
            held = []
            for ns in pending:
                ns.nflog_seq += 1
                # Instance for group 0 (nfulnl_log_packet uses group 0 for ip_tables' TRACE
                # loginfo). It belongs to the socket: nothing to undo if we die now.
                try:
                    sock.talk(ns.nflog, build.format_nflog_config(0, socket.AF_UNSPEC, nl.NFULNL_CFG_CMD_BIND,
                                                                  ns.nflog_seq),
                              [ns.nflog_seq], "nfnetlink_log: binding group 0")
                except PrivilegeError:  # EPERM: another socket holds group 0 (nfulnl_recv_config)
                    held.append(ns)
            pending = held
            if not pending or time.monotonic() > end:
                break
            time.sleep(0.02)
        for ns in pending:
            ns.nflog.close()
            ns.nflog = None
            msg = format_legacy_unavailable(ns.path or "current")
            self.warnings.append(msg)
            self.legacy_unavailable[ns.inode] = msg
            log.warning("%s", msg)
        for ns in nss:
            if ns.nflog is not None:
                self._bind_nflog(ns)

    def _bind_nflog(self, ns: _Netns) -> None:
        """Group 0 is ours: configure it and bind the protocol families (guarded)."""
        ns.legacy_watch = xtinfo.LegacyWatch(ns.path)
        ns.saved_loggers = {pf: nflog.read_nf_log(ns.path, pf) for pf in LEGACY_PFS}
        # The guard before the first change it would have to undo (PF_BIND).
        ns.guard = nflog.NflogGuard(ns.path, ns.saved_loggers)
        s = ns.nflog
        ns.nflog_seq += 1
        seq = ns.nflog_seq
        sock.talk(s, build.format_nflog_config(0, socket.AF_UNSPEC, None, seq, copy_range=128,
                                               nlbufsiz=65536, timeout=1, qthresh=64),
                  [seq], "nfnetlink_log: configuring group 0")
        for pf in LEGACY_PFS:
            seq += 1
            if ns.saved_loggers[pf] == nflog.NFULNL_LOGGER:
                continue
            sock.talk(s, build.format_nflog_config(0, pf, nl.NFULNL_CFG_CMD_PF_BIND, seq), [seq],
                      f"nfnetlink_log: binding protocol family {pf}")
        ns.nflog_seq = seq
        log.debug("netns %s: nf_log was %s, now nfnetlink_log", ns.inode, ns.saved_loggers)

    def __exit__(self, *exc) -> None:
        errors = []
        interrupted = None  # a SIGTERM during the clean-up: finish it, then raise
        for ns in self._ns:
            for s in (ns.owner, ns.trace, ns.changes):
                if s is not None:
                    s.close()  # closing the owner socket deletes the table (NFT_TABLE_F_OWNER)
            ns.owner = ns.trace = ns.changes = None
            ns.batch = None
            if ns.nflog is not None:
                ns.nflog.close()
                ns.nflog = None
            if ns.legacy_watch is not None:
                ns.legacy_watch.close()
                ns.legacy_watch = None
            for pf, name in ns.saved_loggers.items():
                try:
                    nflog.restore_nf_log(ns.path, pf, name)
                except Interrupted as e:
                    interrupted = e
                except IpdbgError:  # the netns is gone: nothing left to restore
                    pass
                except OSError as e:
                    errors.append(f"echo {name} > /proc/sys/net/netfilter/nf_log/{pf} "
                                  f"(in netns {ns.path or 'host'}): {e}")
            ns.saved_loggers = {}
            if ns.guard is not None:
                ns.guard.close()
                ns.guard = None
        self._by_fd.clear()
        if errors:
            raise KernelError("could not put back the nf_log loggers; run by hand: " + "; ".join(errors))
        if interrupted is not None:
            raise interrupted

    # ---- events -----------------------------------------------------------------

    def fds(self) -> list[int]:
        return list(self._by_fd)

    @property
    def lost(self) -> int:
        """Trace messages the kernel dropped for us (netlink overruns, from /proc/net/netlink)."""
        total = 0
        for ns in self._ns:
            socks = [s for s in (ns.trace, ns.nflog) if s is not None]
            if socks:
                try:
                    drops = read_netlink_drops(ns.path, {os.fstat(s.fileno()).st_ino for s in socks})
                except (OSError, IpdbgError):  # the netns path is gone (its holder exited)
                    drops = 0
                ns.lost = max(ns.lost, drops)
            total += ns.lost
        return max(total, self._lost_overruns)

    @staticmethod
    def _drops(ns: _Netns, s: socket.socket) -> int:
        try:
            return read_netlink_drops(ns.path, {os.fstat(s.fileno()).st_ino})
        except (OSError, IpdbgError):
            return 0

    def poll(self, timeout_ms: int) -> list[TraceEvent]:
        """Decoded events (netns set to the inode); waits at most ``timeout_ms`` for the first."""
        out: list[TraceEvent] = []
        fds = self._by_fd
        if not fds:
            return out
        ready = [fd for fd, _ in self._poller().poll(timeout_ms)]
        for fd in ready:
            ns, kind = fds[fd]
            if kind == "changes":
                self._drain_changes(ns)
        for fd in ready:
            ns, kind = fds[fd]
            if kind == "trace" and ns.batch is not None:
                self._drain_trace(ns, out)
            elif kind != "changes":
                self._drain(ns, kind, out)
        now = time.monotonic()
        for ns in self._ns:
            if ns.dirty_since is not None and now - ns.dirty_since >= REFRESH_DEBOUNCE_S:
                self._refresh(ns)
        return out

    def _poller(self):
        p = getattr(self, "_p", None)
        if p is None or self._p_fds != set(self._by_fd):
            p = select.poll()
            for fd in self._by_fd:
                p.register(fd, select.POLLIN)
            self._p, self._p_fds = p, set(self._by_fd)
        return p

    def _drain(self, ns: _Netns, kind: str, out: list[TraceEvent]) -> None:
        s = ns.trace if kind == "trace" else ns.nflog
        buf = self._buf
        mv = memoryview(buf)
        # Our own table's events say only "traced from here": skip them before decoding
        # (NFTA_TRACE_TABLE with our name, as the kernel encodes it).
        ours = nl.nla_str(nl.NFTA_TRACE_TABLE, ns.table) if kind == "trace" and not self.debug else None
        record = self.record
        trace_type = (nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_TRACE
        nflog_type = (nl.NFNL_SUBSYS_ULOG << 8) | nl.NFULNL_MSG_PACKET
        inode = ns.inode
        resolve = self._resolve_now
        for _ in range(512):  # bounded: let the other sockets have their turn
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._lost_overruns += 1
                    ns.lost = max(ns.lost + 1, self._drops(ns, s))
                    continue
                raise KernelError(f"netlink: receiving {kind} messages: {e.strerror}") from None
            mlen, mtype = _NLMSG_LEN_TYPE.unpack_from(buf, 0)
            single = n - 3 <= mlen <= n  # one message per datagram: the rule for trace multicasts
            if single and ours is not None and record is None:
                raw = bytes(mv[:n])
                if ours in raw:
                    if self.seen:
                        self._seen(ns, raw, mv[16:mlen], out)
                    continue
            ts = time.monotonic_ns()
            checked = False  # legacy: ruleset change check, once per datagram
            msgs = ((mtype, 0, 0, 0, mv[16:mlen]),) if single and mlen >= 16 else nl.parse_nlmsgs(mv[:n])
            for mtype, _flags, _seq, _pid, payload in msgs:
                if record is not None:
                    record(kind, inode, mtype, payload.tobytes())
                try:
                    if kind == "trace":
                        if mtype != trace_type:
                            continue
                        ev = decode_trace(payload, inode, ts)
                        if ev.table == ns.table and not self.debug:
                            if self.seen:
                                self._seen(ns, None, payload, out, ev)
                            continue
                    else:
                        if mtype != nflog_type:
                            continue
                        ev = decode_nflog(payload, inode, ts)
                        if ev is None:
                            continue
                        if not checked:
                            checked = True
                            watch = ns.legacy_watch
                            if (watch is not None and watch.changed()) or \
                                    time.monotonic() - ns.snapshot_at > LEGACY_MAX_AGE_S:
                                self._refresh(ns)
                except (DecodeError, KeyError, IndexError, ValueError) as e:
                    log.debug("undecodable %s message: %s", kind, e)
                    continue
                if ev.type == TRACE_RULE and (ev.handle is not None or ev.rulenum is not None):
                    resolve(ns, ev)
                elif ev.type == TRACE_POLICY and ev.source == "legacy" and not ev.policy:
                    # the TRACE record does not say what the policy is: the ruleset does
                    ev = dataclasses.replace(ev, policy=self._legacy_policy(ns, ev))
                out.append(ev)

    def _legacy_policy(self, ns: _Netns, ev: TraceEvent) -> str:
        fam = 6 if ev.family == "ip6" else 4
        snap = ns.snapshot
        if snap is None or not hasattr(snap, "ruleset"):
            return ""
        rs = ns.rulesets.get(fam)
        if rs is None:
            try:
                rs = ns.rulesets[fam] = snap.ruleset(fam, "legacy")
            except Interrupted:
                raise
            except Exception as e:  # an unparsable save: the policy stays unknown
                log.debug("legacy ruleset of netns %s: %s", ns.inode, e)
                return ""
        table = rs.tables.get(ev.table)
        chain = table.chains.get(ev.chain) if table is not None else None
        return (chain.policy or "").lower() if chain is not None else ""

    def _drain_trace(self, ns: _Netns, out: list[TraceEvent]) -> None:
        """The trace socket, many datagrams per system call (the hot path)."""
        batch = ns.batch
        mv = batch.view
        ours = nl.nla_str(nl.NFTA_TRACE_TABLE, ns.table) if not self.debug else None
        seen = self.seen
        record = self.record
        trace_type = (nl.NFNL_SUBSYS_NFTABLES << 8) | nl.NFT_MSG_TRACE
        inode = ns.inode
        resolve = self._resolve_now
        unpack = _NLMSG_LEN_TYPE.unpack_from
        for _ in range(64):  # bounded: let the other sockets have their turn
            try:
                got = batch.recv()
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._lost_overruns += 1
                    ns.lost = max(ns.lost + 1, self._drops(ns, ns.trace))
                    continue
                raise KernelError(f"netlink: receiving trace messages: {e.strerror}") from None
            ts = time.monotonic_ns()
            for off, n in got:
                mlen, mtype = unpack(mv, off)
                single = n - 3 <= mlen <= n  # one message per datagram: the rule for trace multicasts
                if single and ours is not None and record is None:
                    raw = mv[off:off + n].tobytes()
                    if ours in raw:
                        if seen:
                            self._seen(ns, raw, mv[off + 16:off + mlen], out)
                        continue
                msgs = (((mtype, 0, 0, 0, mv[off + 16:off + mlen]),) if single and mlen >= 16
                        else nl.parse_nlmsgs(mv[off:off + n]))
                for mtype, _f, _s, _p, payload in msgs:
                    if record is not None:
                        record("trace", inode, mtype, payload.tobytes())
                    if mtype != trace_type:
                        continue
                    try:
                        ev = decode_trace(payload, inode, ts)
                    except (DecodeError, KeyError, IndexError, ValueError) as e:
                        log.debug("undecodable trace message: %s", e)
                        continue
                    if ours is not None and ev.table == ns.table:
                        if seen:
                            self._seen(ns, None, payload, out, ev)
                        continue
                    if ev.type == TRACE_RULE and ev.handle is not None:
                        resolve(ns, ev)
                    out.append(ev)
            if len(got) < batch.vlen:
                break

    def _seen(self, ns: _Netns, raw: bytes | None, payload, out: list[TraceEvent],
              ev: TraceEvent | None = None) -> None:
        """Our own table's message: a TRACE_SEEN event, unless one was given for this
        (trace id, hook) less than SEEN_REPEAT_NS ago (the common case: a dict look-up)."""
        ts = time.monotonic_ns()
        if raw is not None and raw[36:40] == _SEEN_ID_HDR:
            key = raw[24:28] + raw[40:60]  # nfproto, trace id, chain (see _SEEN_ID_HDR)
        elif ev is not None:
            key = f"{ev.nfproto}|{ev.trace_id}|{ev.chain}".encode()
        else:
            key = None  # not the layout we know: decode to find out
        seen = ns.seen
        if key is not None:
            last = seen.get(key)
            if last is not None and ts - last < SEEN_REPEAT_NS:
                return
        if ts - ns.seen_window >= 1_000_000_000:
            ns.seen_window, ns.seen_n = ts, 0
        if ns.seen_n >= SEEN_RATE:
            ns.seen_skipped += 1
            return
        ns.seen_n += 1
        try:
            sev = decode_seen(payload, ns.inode, ts) if ev is None else decode_seen(None, ns.inode, ts, ev)
        except (DecodeError, KeyError, IndexError, ValueError) as e:
            log.debug("undecodable trace message of our table: %s", e)
            return
        if key is None:
            key = f"{sev.nfproto}|{sev.trace_id}|{sev.chain}".encode()
            last = seen.get(key)
            if last is not None and ts - last < SEEN_REPEAT_NS:
                return
        if len(seen) >= SEEN_MAX:
            seen.clear()
        seen[key] = ts
        out.append(sev)

    @property
    def seen_skipped(self) -> int:
        """Own-table messages not turned into TRACE_SEEN events (over SEEN_RATE)."""
        return sum(ns.seen_skipped for ns in self._ns)

    def _drain_changes(self, ns: _Netns) -> None:
        for _ in range(64):
            try:
                data = ns.changes.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # we missed some: refresh anyway
                    ns.dirty_since = ns.dirty_since or time.monotonic()
                    continue
                raise
            for mtype, _f, _s, _p, payload in nl.parse_nlmsgs(data):
                ch = decode_ruleset_change(mtype, payload)
                if ch is not None and ch[1] != ns.table:
                    ns.dirty_since = ns.dirty_since or time.monotonic()

    def _refresh(self, ns: _Netns) -> None:
        ns.dirty_since = None
        try:
            ns.snapshot = read_snapshot_for(ns.path)
            ns.snapshot_at = time.monotonic()
            ns.refs.clear()
            ns.rulesets.clear()
        except Interrupted:  # a SIGTERM during the re-read (about 1/s with legacy TRACE) ends us
            raise
        except Exception as e:  # keep tracing with the old snapshot; say so with --debug
            log.debug("netns %s: rule snapshot refresh failed: %s", ns.inode, e)

    # ---- rules ------------------------------------------------------------------

    def _lookup(self, ns: _Netns, ev: TraceEvent):
        snap = ns.snapshot
        if snap is None:
            return None
        if ev.source == "legacy":
            fam = 6 if ev.family == "ip6" else 4
            return snap.lookup(ev.table, ev.chain, ev.rulenum, family=fam, backend="legacy")
        return snap.by_nft_handle(ev.family, ev.table, ev.chain, ev.handle)

    def _resolve_now(self, ns: _Netns, ev: TraceEvent) -> None:
        """Name the rule while it is still there (it may be deleted right after the packet)."""
        ident = (ev.source, ev.family, ev.table, ev.chain, ev.handle, ev.rulenum)
        try:
            ref = ns.refs[ident]  # valid for the current snapshot only (cleared on refresh)
        except KeyError:
            ref = self._lookup(ns, ev)
            if ref is None and ns.dirty_since is not None:
                self._refresh(ns)  # a rule added since the last refresh
                ref = self._lookup(ns, ev)
            ns.refs[ident] = ref
        resolved = self._resolved
        if len(resolved) >= RESOLVED_MAX:
            for k in list(itertools.islice(resolved, RESOLVED_MAX // 2)):
                del resolved[k]
        resolved[id(ev)] = (ev, ref)  # the event is kept alive, so its id is not reused

    def resolve(self, ev: TraceEvent):
        """The rule of a rule-type event, as it was when the packet was traced (None for policy)."""
        if ev.type != TRACE_RULE or (ev.handle is None and ev.rulenum is None):
            return None
        hit = self._resolved.get(id(ev))
        if hit is not None and hit[0] is ev:
            return hit[1]
        for ns in self._ns:
            if ns.inode == ev.netns:
                return self._lookup(ns, ev)
        return None
