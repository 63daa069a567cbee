"""Run the system's iptables binaries (effects): find them, pick a backend, read
with ``iptables-save -c``, write with ``iptables-restore --noflush -w``, and turn
iptables' stderr into our errors.

``--netns`` runs each binary through ``nsenter --net=PATH`` (ipdbg.netns); the
readers of listings spawn theirs from a thread that entered the netns (``_spawn``).
"""

from __future__ import annotations

import os
import sys

from ..errors import ConflictError, NotFoundError, SystemToolError, UsageError


class _LazyModule:
    """A module imported at its first use: ``subprocess`` (3 ms) is not needed by
    `ipdbg rules -L`, which spawns with os.posix_spawn (``_spawn``)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        module = globals()[self._name] = importlib.import_module(self._name)
        return getattr(module, attr)


subprocess = _LazyModule("subprocess")
re = _LazyModule("re")  # only for iptables' error messages; `-L` spawns before re and enum load


def nsenter_argv(path, argv):
    if path is None:  # ipdbg.netns (and its ctypes) only when a netns is given
        return list(argv)
    from ..netns import nsenter_argv as _nsenter_argv

    return _nsenter_argv(path, argv)


def _which(name: str) -> str | None:
    # shutil.which without importing shutil (start-up time of `ipdbg rules -L`)
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        path = os.path.join(d or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None

BACKENDS = ("nft", "legacy")


def find_binary(name: str) -> str:
    path = _which(name)
    if path is None:
        raise SystemToolError(f"{name} is not installed",
                              "install the Debian package `iptables` (make setup)")
    return path


def binary(kind: str, family: int, backend: str) -> str:
    """kind: "" (iptables), "save" or "restore"."""
    base = "iptables" if family == 4 else "ip6tables"
    name = f"{base}-{backend}" + (f"-{kind}" if kind else "")
    return find_binary(name)


def read_system_backend(family: int = 4) -> str:
    """The backend the system's `iptables` uses ("nft" or "legacy").

    Debian points /usr/sbin/iptables at iptables-nft or iptables-legacy through
    update-alternatives; both are links to xtables-{nft,legacy}-multi.
    """
    name = "iptables" if family == 4 else "ip6tables"
    path = _which(name) or f"/usr/sbin/{name}"
    try:
        real = os.path.realpath(path)
        link = os.readlink(path) if os.path.islink(path) else ""
    except OSError:
        raise SystemToolError(f"{name} is not installed",
                              "install the Debian package `iptables` (make setup)") from None
    for hint in (real, link):
        base = os.path.basename(hint)
        if "legacy" in base:
            return "legacy"
        if "nft" in base:
            return "nft"
    # a plain binary: ask it (`iptables v1.8.9 (nf_tables)` / `(legacy)`)
    out = subprocess.run([path, "-V"], capture_output=True, text=True).stdout
    return "nft" if "nf_tables" in out else "legacy"


def pick_backend(choice: str, family: int = 4) -> str:
    if choice in BACKENDS:
        return choice
    return read_system_backend(family)


def _run(argv: list[str], netns: str | None, input: str | None = None) -> subprocess.CompletedProcess:
    full = nsenter_argv(netns, argv)
    try:
        return subprocess.run(full, input=input, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise SystemToolError(f"cannot run {full[0]}: {exc.strerror}") from None


def read_legacy_tables(family: int, netns: str | None = None) -> set[str]:
    """Names of the x_tables tables that exist in netns (/proc/net/ip{,6}_tables_names).

    Asking iptables-legacy about a table creates it (the kernel instantiates a
    table on first use, net/netfilter/x_tables.c xt_find_table_lock), which would
    change the ruleset of a namespace we only read, so we look first.
    """
    name = "ip_tables_names" if family == 4 else "ip6_tables_names"
    try:
        if netns is None:
            with open(f"/proc/thread-self/net/{name}") as f:
                return {ln.strip() for ln in f if ln.strip()}
        from ..netns import enter_netns

        with enter_netns(netns):
            with open(f"/proc/thread-self/net/{name}") as f:
                return {ln.strip() for ln in f if ln.strip()}
    except FileNotFoundError:  # ip_tables not loaded: no legacy table anywhere
        return set()


def read_save(family: int, backend: str, netns: str | None = None,
              table: str | None = None, counters: bool = True) -> str:
    """The text of `iptables-save [-c] [-t TABLE]` (in netns).

    "" for a legacy table that does not exist yet (reading it would create it).
    """
    return start_read_save(family, backend, netns, table, counters).result()


class _SaveJob:
    """A running iptables-save; ``result()`` waits for its text (or raises)."""

    def __init__(self, argv=None, netns=None, table=None, text=None):
        self.argv, self.netns, self.table, self.text = argv, netns, table, text
        self.proc = None
        if argv is not None:
            full = nsenter_argv(netns, argv)
            try:
                self.proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             stdin=subprocess.DEVNULL, text=True)
            except FileNotFoundError as exc:
                raise SystemToolError(f"cannot run {full[0]}: {exc.strerror}") from None

    def result(self) -> str:
        """The save text (waits once; later calls return the same text)."""
        if self.proc is None:
            return self.text
        proc, self.proc = self.proc, None
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise read_error(err, self.argv, self.netns, self.table)
        self.text = out
        return out


def start_read_save(family: int, backend: str, netns: str | None = None,
                    table: str | None = None, counters: bool = True) -> _SaveJob:
    """Start `iptables-save` and return at once (the caller imports meanwhile)."""
    if backend == "legacy" and table and table not in read_legacy_tables(family, netns):
        return _SaveJob(text="")
    argv = [binary("save", family, backend)]
    if counters:
        argv.append("-c")
    if table:
        argv += ["-t", table]
    return _SaveJob(argv, netns, table)


def _spawn(argv: list[str], netns: str | None, stdout: int) -> tuple[int, int]:
    """Start argv in netns (this thread enters it for the spawn; the child keeps it)
    with stdin /dev/null, stdout on the fd ``stdout`` and stderr in a memfd.
    Returns (pid, memfd). os.posix_spawn: no subprocess import, no nsenter."""
    import _signal as signal  # (ipdbg.cli imports it; `signal` would build enums)

    err = os.memfd_create("ipdbg-stderr", os.MFD_CLOEXEC)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, err, 2)]
    if stdout != 1:
        actions.append((os.POSIX_SPAWN_DUP2, stdout, 1))
    # as subprocess does (restore_signals): Python ignores SIGPIPE and SIGXFSZ
    sigdef = (signal.SIGPIPE, signal.SIGXFSZ)
    try:
        if netns is None:
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsigdef=sigdef)
        else:
            from ..netns import enter_netns

            with enter_netns(netns):
                pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions,
                                     setsigdef=sigdef)
    except OSError as exc:
        os.close(err)
        raise SystemToolError(f"cannot run {argv[0]}: {exc.strerror}") from None
    except BaseException:  # could not enter the netns
        os.close(err)
        raise
    return pid, err


def _reap(pid: int, err: int) -> tuple[int, str]:
    """Wait for a child of ``_spawn``: (exit code as subprocess gives it, its stderr)."""
    status = os.waitpid(pid, 0)[1]
    try:
        os.lseek(err, 0, os.SEEK_SET)
        chunks = []
        while True:
            b = os.read(err, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(err)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def _kill(pid: int, err: int) -> None:
    """End a child of ``_spawn`` that is no longer wanted (not reaped yet)."""
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    try:
        os.close(err)
    except OSError:
        pass


class SaveStream:
    """A running `iptables-save -c -t TABLE` whose output is read as it comes
    (``start_read_save_stream``). Iterate ``chunks()`` to the end, or ``close()``."""

    def __init__(self, argv: list[str], netns: str | None, table: str):
        self.argv, self.netns, self.table = argv, netns, table
        r, w = os.pipe()
        try:
            self.pid, self.err = _spawn(argv, netns, w)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self.fd = r
        try:  # room for a big save: iptables-save does not wait for the renderer
            import fcntl

            # Linux 2.6.35+; more than fs.pipe-max-size (1 MB) needs CAP_SYS_RESOURCE:
            # EPERM leaves the pipe as it was
            fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, 4 << 20)
        except OSError:
            pass

    def chunks(self):
        """The text in pieces of whole lines, as the pipe delivers them; then waits
        for iptables-save and raises ``read_error`` if it failed."""
        fd = self.fd
        rest = b""
        try:
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                if rest:
                    b, rest = rest + b, b""
                cut = b.rfind(b"\n") + 1
                if cut < len(b):
                    b, rest = b[:cut], b[cut:]
                if b:
                    yield b.decode()
            if rest:
                yield rest.decode()
        except BaseException:
            self.close()
            raise
        self.fd = None
        os.close(fd)
        code, stderr = _reap(self.pid, self.err)
        if code != 0:
            raise read_error(stderr, self.argv, self.netns, self.table)

    def close(self) -> None:
        """Stop iptables-save if its output was not read to the end."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            _kill(self.pid, self.err)


def start_read_save_stream(family: int, backend: str, netns: str | None,
                           table: str) -> SaveStream | None:
    """Start `iptables-save -c -t TABLE` and return at once; None for a legacy table
    that does not exist (asking would create it)."""
    if backend == "legacy" and table not in read_legacy_tables(family, netns):
        return None
    return SaveStream([binary("save", family, backend), "-c", "-t", table], netns, table)


def read_list_to(out, family: int, backend: str, netns: str | None, argv_tail: list[str]) -> bool:
    """``read_list`` written to ``out``: straight from iptables to our stdout (fd 1)
    when ``out`` is sys.stdout, so that its text never passes through here.

    Returns False, having written nothing, when iptables says there is no such
    chain (the caller names it); raises as ``read_list`` for anything else.
    """
    argv = [binary("", family, backend), "-w"] + argv_tail
    try:
        fd = out.fileno() if out is sys.stdout else -1
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd != 1:
        proc = _run(argv, netns)
        code, stderr = proc.returncode, proc.stderr
        if code == 0:
            out.write(proc.stdout)
    else:
        out.flush()
        pid, err = _spawn(argv, netns, 1)
        try:
            code, stderr = _reap(pid, err)
        except BaseException:
            _kill(pid, err)
            raise
    if code == 0:
        return True
    if code == -13:  # SIGPIPE: whoever reads our output stopped (`| head`)
        raise BrokenPipeError
    if "No chain/target/match" in stderr:
        return False
    raise SystemToolError(f"{os.path.basename(argv[0])} failed: {first_message(stderr)}")


def read_error(stderr: str, argv: list[str], netns: str | None, table: str | None):
    msg = first_message(stderr) or f"exit status of {os.path.basename(argv[0])}"
    if netns and ("setns" in stderr or "nsenter" in stderr):
        return NotFoundError(f"cannot enter network namespace {netns}: {msg}",
                             "check the name with `ip netns list` or the path")
    if table and ("not exist" in stderr or "No such file" in stderr or "Table does not exist" in stderr):
        return UsageError(f"table {table!r} is not available: {msg}",
                          "the kernel may lack its module (iptable_" + table + ")")
    if "Permission denied" in stderr or "Operation not permitted" in stderr:
        from ..errors import PrivilegeError
        return PrivilegeError(f"{os.path.basename(argv[0])}: {msg}")
    return SystemToolError(f"{os.path.basename(argv[0])} failed: {msg}")


def first_message(stderr: str) -> str:
    """The line of iptables' stderr that says what went wrong."""
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith(("Try `", "Error occurred at line")):
            continue
        # "iptables-restore v1.8.9 (nf_tables): MESSAGE" -> MESSAGE
        m = re.match(r"^\S+ v[\d.]+ \([^)]*\):(.*)$", line)
        if m:
            if m.group(1).strip():
                return m.group(1).strip()
            continue  # nft: the message is on the next line ("line 8: CHAIN_DEL failed ...")
        return line
    return ""


_LINE_RE = (r"Error occurred at line: (\d+)", r"line (\d+) failed", r"(?m)^line (\d+): ")


def failed_line(stderr: str) -> int | None:
    for rx in _LINE_RE:
        m = re.search(rx, stderr)
        if m:
            return int(m.group(1))
    return None


def apply_restore(batch_text: str, family: int, backend: str, netns: str | None = None,
                  counters: bool = False, test: bool = False) -> subprocess.CompletedProcess:
    """Run `iptables-restore --noflush -w [-c]` with the batch on stdin.

    Returns the finished process; the caller maps a failure with ``restore_error``
    (it knows which batch line is what).
    """
    argv = [binary("restore", family, backend), "--noflush", "-w"]
    if counters:
        argv.append("-c")
    if test:
        argv.append("--test")
    return _run(argv, netns, input=batch_text)


def apply_table_text(save_text: str, table: str, family: int, backend: str,
                     netns: str | None = None) -> subprocess.CompletedProcess:
    """Put a whole table back as iptables-save printed it (flush + restore, counters)."""
    argv = [binary("restore", family, backend), "-w", "-c", "-T", table]
    return _run(argv, netns, input=save_text)


def apply_restore_scratch(batch_text: str, family: int, backend: str) -> subprocess.CompletedProcess:
    """Apply a batch in a new, empty, throw-away netns (`unshare -n`).

    For iptables-legacy tables that do not exist yet in the target netns: any
    restore touching them creates them, even one that then fails. A batch that
    applies to empty built-in chains here applies the same way there.
    """
    argv = ["unshare", "-n", binary("restore", family, backend), "--noflush", "-w"]
    try:
        return subprocess.run(argv, input=batch_text, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise SystemToolError(f"cannot run unshare: {exc.strerror}",
                              "install util-linux") from None


def read_rule_at(family: int, backend: str, netns: str | None, table: str, chain: str,
                 line: int) -> str | None:
    """The save text (after "-A CHAIN ") of rule LINE of CHAIN, from `iptables -S
    CHAIN LINE` (iptables prints it with iptables-save's own function).

    iptables-nft then fetches that chain only, iptables-legacy prints one rule
    instead of the table. None when it cannot say (no such table, chain or line,
    any error): the caller reads the table instead, which says precisely why.
    """
    if backend == "legacy" and table not in read_legacy_tables(family, netns):
        return None  # asking would create the table
    argv = [binary("", family, backend), "-w", "-t", table, "-S", chain, str(line)]
    try:
        proc = _run(argv, netns)
    except SystemToolError:
        return None
    out = proc.stdout
    if proc.returncode != 0 or out.count("\n") != 1 or not out.endswith("\n"):
        return None
    text, head = out[:-1], f"-A {chain}"
    if text == head:
        return ""
    if not text.startswith(head + " "):
        return None
    return text[len(head) + 1:]


def read_list(family: int, backend: str, netns: str | None, argv_tail: list[str]) -> str:
    """Run the system's `iptables ARGS` (the fallback for listings we cannot render)."""
    argv = [binary("", family, backend), "-w"] + argv_tail
    proc = _run(argv, netns)
    if proc.returncode != 0:
        msg = first_message(proc.stderr)
        if "No chain/target/match" in proc.stderr:
            raise NotFoundError(f"{msg} ({' '.join(argv_tail)})")
        raise SystemToolError(f"{os.path.basename(argv[0])} failed: {msg}")
    return proc.stdout


def restore_error(stderr: str, role: str | None, what: str) -> Exception:
    """iptables-restore's complaint about one batch line -> our error.

    ``role`` is "check" for a line of the line-number check (so the ruleset changed
    since it was read), "user" for the user's own change, None if unknown.
    ``what`` names the command (for the message).
    """
    msg = first_message(stderr) or "iptables-restore failed"
    if role == "check":
        return ConflictError(
            f"{what}: the rule at that line is no longer the one read "
            f"(the chain changed meanwhile); nothing was changed",
            "list the chain again (`ipdbg rules -L CHAIN --line-numbers`) and retry")
    if "Couldn't load target" in msg or "Couldn't load match" in msg:
        m = re.search(r"`([^']*)'", msg)
        kind = "target" if "target" in msg else "match"
        name = m.group(1) if m else "?"
        return UsageError(f"{what}: unknown {kind} {name!r}",
                          f"check the spelling; a jump target must be a chain of that table or "
                          f"an extension iptables knows (`iptables {'-j' if kind == 'target' else '-m'} {name} -h`)")
    m = re.match(r"Chain '([^']*)' does not exist", msg)
    if m:
        return UsageError(f"{what}: unknown target {m.group(1)!r} (no such chain or extension)",
                          "create the chain first (-N) or check the spelling")
    if "No chain/target/match" in msg:
        return NotFoundError(f"{what}: no such chain, target or match",
                             "list the chains with `ipdbg rules -S`")
    if "Bad rule (does a matching rule exist" in msg or role == "user" and msg == "iptables-restore failed":
        return NotFoundError(f"{what}: iptables found no rule to do that on",
                             "list the chain with `ipdbg rules -S CHAIN` and copy the rule from there")
    if "Too many links" in msg or "Device or resource busy" in msg:
        return UsageError(f"{what}: the chain is still referenced by a rule",
                          "delete the rules that jump to it first")
    if "Directory not empty" in msg:
        return UsageError(f"{what}: the chain is not empty", "flush it first with -F")
    return UsageError(f"{what}: iptables rejected it: {msg}",
                      "check the rule spec (`iptables -h`, `iptables -m MATCH -h`)")
