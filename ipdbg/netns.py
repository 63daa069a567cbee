"""Network namespaces: resolve names, enter them, name them for display.

Pure helpers are ``parse_*``/``format_*``; everything else touches the system.
"""

from __future__ import annotations

import os

from .errors import KernelError, NotFoundError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = None  # on first setns(); find_library() would run ldconfig, too slow for start-up


def _load_libc():
    global _libc
    if _libc is None:
        # the C library this process already runs on (glibc: setns since 2.14)
        import ctypes  # here: resolving a name must not cost ctypes' import

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def resolve_netns(spec: str | None) -> str | None:
    """NAME (from `ip netns`), a path (/proc/PID/ns/net, /run/netns/X) or None (ours)."""
    if spec is None or spec == "":
        return None
    path = spec if "/" in spec else os.path.join(NETNS_RUN_DIR, spec)
    if not os.path.exists(path):
        raise NotFoundError(
            f"network namespace {spec!r} does not exist",
            "list them with `ip netns list`, or give a path such as /proc/PID/ns/net",
        )
    return path


def netns_of_pid(pid: int) -> str:
    path = f"/proc/{pid}/ns/net"
    if not os.path.exists(path):
        raise NotFoundError(f"no process with pid {pid}", "check the pid with `ps -p PID`")
    return path


def netns_inode(path: str | None = None) -> int:
    """Inode number of a netns (the kernel's ns.inum), ours when path is None."""
    return os.stat(path or "/proc/self/ns/net").st_ino


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    # os.setns exists only from Python 3.12; we support 3.11.
    if _load_libc().setns(fd, nstype) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise KernelError(f"setns failed: {os.strerror(err)}", "entering a netns needs CAP_SYS_ADMIN")


def unshare_netns() -> None:
    """Give the calling thread a new, empty netns of its own (unshare(2)); its
    children and sockets live there, and it goes when the thread and they do."""
    if _load_libc().unshare(CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise KernelError(f"unshare failed: {os.strerror(err)}", "a new netns needs CAP_SYS_ADMIN")


class enter_netns:
    """``with enter_netns(path):`` runs the body in netns ``path`` (this thread
    only), then comes back. A class, not @contextmanager: contextlib is not
    imported at start-up.

    Sockets opened inside stay bound to that netns after we leave it, which is
    how one process listens in several namespaces at once.
    """

    __slots__ = ("path", "own")

    def __init__(self, path: str | None):
        self.path, self.own = path, None

    def __enter__(self):
        if self.path is None:
            return None
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(self.path, os.O_RDONLY)
            try:
                setns(target)
            finally:
                os.close(target)
        except BaseException:
            os.close(own)
            raise
        self.own = own
        return None

    def __exit__(self, *exc):
        own, self.own = self.own, None
        if own is not None:
            try:
                setns(own)
            finally:
                os.close(own)
        return False


def nsenter_argv(path: str | None, argv: list[str]) -> list[str]:
    """argv to run ``argv`` inside netns ``path`` (unchanged when path is None)."""
    if path is None:
        return list(argv)
    return ["nsenter", f"--net={path}", "--"] + list(argv)


def read_netns_names() -> dict[int, str]:
    """inode -> a name for display: `ip netns` names first, else "pid N (comm)"."""
    names: dict[int, str] = {}
    try:
        entries = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        entries = []
    for name in entries:
        try:
            names.setdefault(os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino, name)
        except OSError:
            pass
    root = netns_inode("/proc/1/ns/net") if os.path.exists("/proc/1/ns/net") else None
    if root is not None:
        names.setdefault(root, "host")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
            if ino in names:
                continue
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            names[ino] = f"pid {entry} ({comm})"
        except OSError:
            continue
    return names
