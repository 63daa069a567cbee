"""Name lookups for non-numeric ``iptables -L`` (effects, kept out of the pure code).

iptables resolves, when -n is not given: addresses with gethostbyaddr() then
getnetbyaddr() (libxtables xtables_ipaddr_to_anyname), IPv6 addresses with
getnameinfo(NI_NAMEREQD), ports with getservbyport(), protocols with
getprotobynumber(), uids/gids with getpwuid()/getgrgid() (libxt_owner).

``SystemResolver`` does the same lookups through the C library (NSS: /etc/hosts,
DNS, ...). ``TableResolver`` answers from tables (pure); ``read_files_resolver()``
builds one from /etc files only (what iptables sees when DNS is unreachable, as in
a lab namespace without a route to the name server).
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import socket
from functools import lru_cache
from pathlib import Path


class TableResolver:
    """Lookups answered from plain dicts (pure). Missing keys mean "no name"."""

    def __init__(self, hosts=None, networks=None, services=None, protocols=None,
                 users=None, groups=None):
        self.hosts = hosts or {}          # "10.0.0.1" / "::1" -> name
        self.networks = networks or {}    # "127.0.0.0" -> name (IPv4 only)
        self.services = services or {}    # (port, "tcp") -> name
        self.protocols = protocols or {}  # number -> name
        self.users = users or {}          # uid -> name
        self.groups = groups or {}        # gid -> name

    def lookup_host(self, addr: str, family: int) -> str | None:
        return self.hosts.get(addr)

    def lookup_network(self, addr: str) -> str | None:
        return self.networks.get(addr)

    def lookup_service(self, port: int, proto: str) -> str | None:
        return self.services.get((port, proto))

    def lookup_protocol(self, number: int) -> str | None:
        return self.protocols.get(number)

    def lookup_protocol_number(self, name: str) -> int | None:
        for num, pname in self.protocols.items():
            if pname == name:
                return num
        return None

    def lookup_user(self, uid: int) -> str | None:
        return self.users.get(uid)

    def lookup_group(self, gid: int) -> str | None:
        return self.groups.get(gid)


def parse_hosts(text: str) -> dict[str, str]:
    """/etc/hosts -> {address: first name}; the first line for an address wins (glibc)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            out.setdefault(_canonical(fields[0]), fields[1])
    out.pop(None, None)
    return out


def _canonical(text: str) -> str | None:
    """An address as inet_ntop() (and so iptables-save) writes it; None if not one.

    Not str(ipaddress...): Python 3.11 writes ::ffff:10.0.0.1 as ::ffff:a00:1.
    """
    try:
        if ":" in text:
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
        return str(ipaddress.IPv4Address(text))
    except (OSError, ValueError):
        return None


def parse_networks(text: str) -> dict[str, str]:
    """/etc/networks -> {"a.b.c.d": name}; short forms ("127") are padded with zeros."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            octets = fields[1].split(".")
            if len(octets) > 4 or not all(o.isdigit() for o in octets):
                continue
            # getnetbyaddr() takes the network number: "10" is 0.0.0.10, read as
            # libc's inet_network(); iptables passes ntohl(addr) of the full address.
            num = 0
            for o in octets:
                num = (num << 8) | int(o)
            out.setdefault(str(ipaddress.IPv4Address(num)), fields[0])
    return out


def parse_services(text: str) -> dict[tuple[int, str], str]:
    """/etc/services -> {(port, proto): name}; the first entry wins (getservbyport)."""
    out: dict[tuple[int, str], str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and "/" in fields[1]:
            port, _, proto = fields[1].partition("/")
            if port.isdigit():
                out.setdefault((int(port), proto), fields[0])
    return out


def parse_protocols(text: str) -> dict[int, str]:
    """/etc/protocols -> {number: name}; the first entry wins (getprotobynumber)."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1].isdigit():
            out.setdefault(int(fields[1]), fields[0])
    return out


def parse_id_names(text: str) -> dict[int, str]:
    """/etc/passwd or /etc/group -> {id: name} (name:x:id:...); the first entry wins."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            out.setdefault(int(fields[2]), fields[0])
    return out


def read_files_resolver(etc: str | Path = "/etc") -> TableResolver:
    """A resolver from the /etc files only (no DNS): hosts, networks, services, ..."""
    etc = Path(etc)

    def text(name: str) -> str:
        try:
            return (etc / name).read_text(errors="replace")
        except OSError:
            return ""

    return TableResolver(
        hosts=parse_hosts(text("hosts")), networks=parse_networks(text("networks")),
        services=parse_services(text("services")), protocols=parse_protocols(text("protocols")),
        users=parse_id_names(text("passwd")), groups=parse_id_names(text("group")),
    )


class SystemResolver:
    """The lookups iptables itself makes, through the C library (NSS, DNS included)."""

    def __init__(self):
        self._files = None

    def _etc(self) -> TableResolver:
        if self._files is None:
            self._files = read_files_resolver()
        return self._files

    @lru_cache(maxsize=4096)
    def lookup_host(self, addr: str, family: int) -> str | None:
        try:
            return socket.gethostbyaddr(addr)[0]
        except (OSError, UnicodeError):
            return None

    def lookup_network(self, addr: str) -> str | None:
        # Python has no getnetbyaddr(); NSS "networks: files" on Debian reads /etc/networks.
        return self._etc().lookup_network(addr)

    @lru_cache(maxsize=4096)
    def lookup_service(self, port: int, proto: str) -> str | None:
        try:
            return socket.getservbyport(port, proto)
        except (OSError, OverflowError):
            return None

    def lookup_protocol(self, number: int) -> str | None:
        # Python has no getprotobynumber(); NSS "protocols: db files" reads /etc/protocols.
        return self._etc().lookup_protocol(number)

    def lookup_protocol_number(self, name: str) -> int | None:
        try:
            return socket.getprotobyname(name)
        except OSError:
            return None

    @lru_cache(maxsize=1024)
    def lookup_user(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    @lru_cache(maxsize=1024)
    def lookup_group(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None
