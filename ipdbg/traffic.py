"""Send test traffic from a network namespace (effects: sockets).

Used by ``why-dropped --probe``, the demo, the scenario runner and the tests.
Every socket is opened inside the target netns (``enter_netns``) and stays
there after we leave it, so the packets leave from that namespace's stack and
cross its firewall like any other program's.

Results are short words (not exceptions): a probe that is dropped is the
normal case here, not an error.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time

from .errors import UsageError
from .netns import enter_netns

# Words returned by the senders.
CONNECTED = "connected"
REFUSED = "refused"  # RST (closed port, REJECT --reject-with tcp-reset) or ICMP port unreachable
TIMEOUT = "timeout"  # nothing came back (silently dropped)
UNREACHABLE = "unreachable"  # ICMP host/net unreachable or prohibited, no route
BLOCKED = "blocked"  # EPERM on send: a local firewall rule dropped it on OUTPUT
SENT = "sent"
REPLY = "reply"
RESET = "reset"
ERROR = "error"

_ERRNO_WORDS = {
    errno.ECONNREFUSED: REFUSED,
    errno.ECONNRESET: RESET,
    errno.ETIMEDOUT: TIMEOUT,
    errno.EHOSTUNREACH: UNREACHABLE,
    errno.ENETUNREACH: UNREACHABLE,
    errno.EACCES: UNREACHABLE,  # ICMP admin prohibited on some paths
    errno.EPERM: BLOCKED,
    errno.EINPROGRESS: TIMEOUT,
    errno.EAGAIN: TIMEOUT,
}


def _family(addr: str) -> int:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(f"bad address {addr!r}: not an IPv4/IPv6 address") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _sockaddr(addr: str, port: int) -> tuple:
    return (addr, port, 0, 0) if _family(addr) == socket.AF_INET6 else (addr, port)


def _word(err: int) -> str:
    return _ERRNO_WORDS.get(err, f"{ERROR}: {os.strerror(err)}" if err else ERROR)


def _open(netns: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    with enter_netns(netns):
        return socket.socket(family, kind, proto)


def _bind_src(sock: socket.socket, src: str | None, sport: int = 0) -> None:
    if src or sport:
        sock.bind(_sockaddr(src or ("::" if sock.family == socket.AF_INET6 else "0.0.0.0"), sport))


def send_tcp_connect(netns: str | None, dst: str, dport: int, src: str | None = None,
                     timeout: float = 1.0, sport: int = 0) -> str:
    """One TCP connect from ``netns``: connected/refused/timeout/unreachable/blocked/..."""
    sock = _open(netns, _family(dst), socket.SOCK_STREAM)
    try:
        _bind_src(sock, src, sport)
        sock.setblocking(False)
        err = sock.connect_ex(_sockaddr(dst, dport))
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            _, writable, _ = select.select([], [sock], [], timeout)
            if not writable:
                return TIMEOUT
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return CONNECTED if err == 0 else _word(err)
    except OSError as exc:
        return _word(exc.errno or 0)
    finally:
        # RST instead of FIN so nothing lingers in TIME_WAIT between probes.
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()


def send_udp(netns: str | None, dst: str, dport: int, src: str | None = None, count: int = 1,
             payload: bytes = b"ipdbg probe\n", sport: int = 0) -> str:
    """``count`` UDP datagrams from ``netns``: sent/blocked/unreachable/..."""
    sock = _open(netns, _family(dst), socket.SOCK_DGRAM)
    try:
        _bind_src(sock, src, sport)
        for _ in range(count):
            sock.sendto(payload, _sockaddr(dst, dport))
        return SENT
    except OSError as exc:
        return _word(exc.errno or 0)
    finally:
        sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


_echo_ids = iter(range(0x4000, 0x10000))


def send_icmp_echo(netns: str | None, dst: str, src: str | None = None, timeout: float = 1.0,
                   ident: int | None = None, seq: int = 1) -> str:
    """One ICMP/ICMPv6 echo request from ``netns`` (raw socket; needs CAP_NET_RAW).

    reply / timeout / unreachable / blocked. A raw socket rather than a ping
    socket because ``net.ipv4.ping_group_range`` is empty in a fresh netns.
    """
    fam = _family(dst)
    v6 = fam == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    echo_req, echo_rep = (128, 129) if v6 else (8, 0)
    unreach = (1,) if v6 else (3,)
    ident = (os.getpid() ^ next(_echo_ids)) & 0xFFFF if ident is None else ident
    sock = _open(netns, fam, socket.SOCK_RAW, proto)
    try:
        _bind_src(sock, src)
        body = struct.pack("!HH", ident, seq) + b"ipdbg-probe"
        hdr = struct.pack("!BBH", echo_req, 0, 0)
        if not v6:  # the kernel computes the ICMPv6 checksum itself (RFC 3542)
            hdr = struct.pack("!BBH", echo_req, 0, _checksum(hdr + body))
        sock.sendto(hdr + body, _sockaddr(dst, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return TIMEOUT
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                return TIMEOUT
            data, _ = sock.recvfrom(2048)
            if not v6:  # IPv4 raw sockets deliver the IP header
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < 8:
                continue
            itype = data[0]
            if itype == echo_rep and struct.unpack_from("!H", data, 4)[0] == ident:
                return REPLY
            if itype in unreach:
                # The error quotes our request: IP header, then our ICMP header.
                inner = data[8:]
                off = 40 if v6 else (inner[0] & 0x0F) * 4 if inner else 0
                if len(inner) >= off + 6 and struct.unpack_from("!H", inner, off + 4)[0] == ident:
                    return UNREACHABLE
    except OSError as exc:
        return _word(exc.errno or 0)
    finally:
        sock.close()


class Listener:
    """A server socket in a netns, served by a daemon thread until ``close()``.

    TCP: accepts and closes each connection. UDP: echoes each datagram.
    """

    def __init__(self, netns: str | None, proto: str, port: int, addr: str | None = None):
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            raise UsageError(f"listener protocol {proto!r}: use tcp or udp")
        self.netns, self.proto, self.port = netns, proto, port
        fam = _family(addr) if addr else socket.AF_INET6
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        self.sock = _open(netns, fam, kind)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6 and not addr:
                # One socket for IPv4 and IPv6 (v4-mapped addresses).
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.bind(_sockaddr(addr or "::", port))
            if proto == "tcp":
                self.sock.listen(128)
            self.port = self.sock.getsockname()[1]
        except OSError:
            self.sock.close()
            raise
        self._stop_r, self._stop_w = os.pipe()
        self.served = 0
        self._thread = threading.Thread(target=self._serve, name=f"listener-{proto}-{port}",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            readable, _, _ = select.select([self.sock, self._stop_r], [], [])
            if self._stop_r in readable:
                return
            try:
                if self.proto == "tcp":
                    conn, _ = self.sock.accept()
                    conn.close()
                else:
                    data, peer = self.sock.recvfrom(65535)
                    self.sock.sendto(data, peer)
                self.served += 1
            except OSError:
                continue

    def close(self) -> None:
        if self._stop_w is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=2)
        self.sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._stop_w = None

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_listener(netns: str | None, proto: str, port: int, addr: str | None = None) -> Listener:
    """Listen on ``proto``/``port`` in ``netns`` (IPv4 and IPv6 when ``addr`` is None)."""
    return Listener(netns, proto, port, addr)
