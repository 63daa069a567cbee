"""Netfilter netlink sockets opened inside a netns (effects; thin)."""

from __future__ import annotations

import errno
import os
import select
import socket

from ..errors import KernelError, PrivilegeError
from ..netns import enter_netns
from . import nl

RCVBUF = 64 << 20  # trace bursts: 20k packets/s x ~4 messages x ~300 bytes, with room


def open_nfnl(netns: str | None, groups: tuple[int, ...] = (), rcvbuf: int = 0) -> socket.socket:
    """A NETLINK_NETFILTER socket bound in ``netns`` (it stays there), joined to ``groups``."""
    with enter_netns(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nl.NETLINK_NETFILTER)
    try:
        if rcvbuf:
            try:
                s.setsockopt(socket.SOL_SOCKET, nl.SO_RCVBUFFORCE, rcvbuf)  # beyond rmem_max, as root
            except PermissionError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((0, 0))
        for g in groups:
            s.setsockopt(nl.SOL_NETLINK, nl.NETLINK_ADD_MEMBERSHIP, g)
        s.setsockopt(nl.SOL_NETLINK, nl.NETLINK_EXT_ACK, 1)
        s.setblocking(False)
    except PermissionError as e:
        s.close()
        raise PrivilegeError(f"netlink: {e.strerror}", "tracing needs root (CAP_NET_ADMIN)") from None
    except OSError:
        s.close()
        raise
    return s


def talk(s: socket.socket, data: bytes, acks: list[int], what: str, timeout: float = 5.0) -> None:
    """Send a request (or batch) and wait for every ACK in ``acks``; raise on the first error."""
    s.sendall(data) if hasattr(s, "sendall") else s.send(data)
    want = set(acks)
    poller = select.poll()
    poller.register(s.fileno(), select.POLLIN)
    while want:
        if not poller.poll(int(timeout * 1000)):
            raise KernelError(f"{what}: no answer from the kernel within {timeout:.0f} s")
        try:
            buf = s.recv(1 << 16)
        except BlockingIOError:
            continue
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                continue
            raise KernelError(f"{what}: {e.strerror}") from None
        for mtype, _flags, seq, _pid, payload in nl.parse_nlmsgs(buf):
            if mtype != nl.NLMSG_ERROR or seq not in want:
                continue
            err = nl.parse_nlmsgerr(payload)
            if err:
                hint = None
                if err == errno.EPERM:
                    raise PrivilegeError(f"{what}: {os.strerror(err)}", "tracing needs root (CAP_NET_ADMIN)")
                if err in (errno.EOPNOTSUPP, errno.ENOENT):
                    hint = "the kernel lacks an nf_tables feature ipdbg needs (owner tables: 5.12+)"
                raise KernelError(f"{what}: {os.strerror(err)} (errno {err})", hint)
            want.discard(seq)
