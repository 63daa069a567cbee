"""Netfilter netlink sockets opened inside a netns (effects; thin)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import socket
import sys

from ..errors import KernelError, PrivilegeError
from ..netns import enter_netns
from . import nl

RCVBUF = 64 << 20  # trace bursts: 20k packets/s x ~4 messages x ~300 bytes, with room


def open_nfnl(netns: str | None, groups: tuple[int, ...] = (), rcvbuf: int = 0) -> socket.socket:
    """A NETLINK_NETFILTER socket bound in ``netns`` (it stays there), joined to ``groups``."""
    with enter_netns(netns):
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nl.NETLINK_NETFILTER)
        except OSError as e:
            raise KernelError(f"netlink socket: {e.strerror}", "is nfnetlink available in this kernel?") from None
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
    except OSError as e:
        s.close()
        raise KernelError(f"netlink socket (groups {list(groups)}): {e.strerror}") from None
    return s


def talk(s: socket.socket, data: bytes, acks: list[int], what: str, timeout: float = 5.0) -> None:
    """Send a request (or batch) and wait for every ACK in ``acks``; raise on the first error."""
    try:
        s.send(data)  # netlink processes a request (or a whole batch) in the sender's context
    except PermissionError as e:
        raise PrivilegeError(f"{what}: {e.strerror}", "tracing needs root (CAP_NET_ADMIN)") from None
    except OSError as e:
        raise KernelError(f"{what}: {e.strerror}") from None
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


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IOVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


MSG_DONTWAIT = 0x40
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class BatchReceiver:
    """recvmmsg(2) through ctypes: up to ``vlen`` datagrams per system call.

    Trace messages come one per datagram (nfnetlink_send per verdict), a few
    hundred bytes each; at 20,000+ packets/s one recv per message is a large part
    of the cost. ``recv()`` returns (count, [(offset, length), ...]) into ``buf``.
    Raises BlockingIOError when empty and OSError(ENOBUFS) after an overrun, like
    socket.recv_into.
    """

    def __init__(self, fd: int, vlen: int = 64, size: int = 8192):
        self.fd, self.vlen, self.size = fd, vlen, size
        self.buf = ctypes.create_string_buffer(vlen * size)
        self.view = memoryview(self.buf).cast("B")
        base = ctypes.addressof(self.buf)
        self.iov = (_IOVec * vlen)(*[_IOVec(base + i * size, size) for i in range(vlen)])
        self.msgs = (_MMsgHdr * vlen)()
        for i in range(vlen):
            self.msgs[i].msg_hdr.msg_iov = ctypes.pointer(self.iov[i])
            self.msgs[i].msg_hdr.msg_iovlen = 1
        self._recvmmsg = _libc.recvmmsg
        self._recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        self._recvmmsg.restype = ctypes.c_int
        self._msgs_ptr = ctypes.addressof(self.msgs)
        # msg_len of entry i sits at a fixed offset: read them all from one memoryview
        self._lens = memoryview(self.msgs).cast("B")
        self._len_off = _MMsgHdr.msg_len.offset
        self._stride = ctypes.sizeof(_MMsgHdr)

    def recv(self) -> list[tuple[int, int]]:
        n = self._recvmmsg(self.fd, self._msgs_ptr, self.vlen, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise BlockingIOError(err, os.strerror(err))
            raise OSError(err, os.strerror(err))
        size, stride, off, lens = self.size, self._stride, self._len_off, self._lens
        return [(i * size, int.from_bytes(lens[i * stride + off:i * stride + off + 4], sys.byteorder))
                for i in range(n)]
