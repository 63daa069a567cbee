"""Cheap change detection for iptables-legacy tables (effects; thin).

x_tables sends no notification when a legacy table is replaced. IPT_SO_GET_INFO
(include/uapi/linux/netfilter_ipv4/ip_tables.h, struct ipt_getinfo; the same for
ip6_tables) returns, per table, the hook entry and underflow offsets, the number
of entries and the blob size: any insert, append or delete changes them, so
comparing them tells when the rule snapshot must be re-read. (A policy change or
a same-size -R does not change them: session.py also re-reads on age.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket

from ..netns import enter_netns

SOL_IP, SOL_IPV6 = 0, 41
IPT_SO_GET_INFO = 64  # IPT_BASE_CTL + 0; IP6T_SO_GET_INFO has the same value
XT_TABLE_MAXNAMELEN = 32
GETINFO_SIZE = 32 + 4 + 4 * 5 + 4 * 5 + 4 + 4  # struct ipt_getinfo

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class LegacyWatch:
    """Fingerprints of the legacy tables of one netns."""

    def __init__(self, netns: str | None):
        self.socks: dict[int, socket.socket] = {}
        self.names: dict[int, str] = {}
        self.netns = netns
        with enter_netns(netns):
            for fam, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
                try:
                    self.socks[fam] = socket.socket(af, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
                except OSError:
                    continue
        self.last = self.read()

    def _read_names(self) -> None:
        # tables loaded after start (e.g. nat) appear here
        with enter_netns(self.netns):
            for fam, names in ((4, "ip_tables_names"), (6, "ip6_tables_names")):
                try:
                    with open(f"/proc/thread-self/net/{names}") as f:
                        self.names[fam] = f.read()
                except OSError:
                    self.names[fam] = ""

    def read(self) -> tuple:
        self._read_names()
        out = []
        for fam, s in self.socks.items():
            level = SOL_IP if fam == 4 else SOL_IPV6
            for name in sorted(self.names.get(fam, "").split()):
                buf = ctypes.create_string_buffer(name.encode()[:XT_TABLE_MAXNAMELEN - 1], GETINFO_SIZE)
                size = ctypes.c_uint32(GETINFO_SIZE)
                if _libc.getsockopt(s.fileno(), level, IPT_SO_GET_INFO, buf, ctypes.byref(size)) == 0:
                    out.append((fam, name, buf.raw[XT_TABLE_MAXNAMELEN:]))
                else:
                    out.append((fam, name, None))
        return tuple(out)

    def changed(self) -> bool:
        """True once per change since the last call."""
        now = self.read()
        if now != self.last:
            self.last = now
            return True
        return False

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks.clear()
