"""`-D CHAIN N`, `-R CHAIN N RULE`, `-I CHAIN [N] RULE` on iptables-nft as one
nf_tables transaction (effects). See docs/rules.md, "Edit safety" and "Speed".

1. Read the ruleset generation (NFT_MSG_GETGEN), then dump the chain's rules only
   up to line N and take the handle of the rule at line N (the dump socket is
   closed there: a line in the middle of a chain costs half a dump).
2. Meanwhile, for -R/-I, the system's iptables-nft-restore turns the new rule
   into nf_tables expressions in a throw-away netns (a thread that unshare()s its
   own netns); they are read back from there with a one-rule dump. iptables
   itself still does every translation: ipdbg never builds a rule's expressions.
3. Send one transaction tagged with that generation: DELRULE of the handle, or
   NEWRULE replacing it in place, or NEWRULE before it. The kernel applies it
   only if the ruleset generation is unchanged (NFNL_BATCH_GENID; otherwise
   ERESTART, nothing applied): the rule removed or replaced is the one read at
   line N, and line N is still where it is.

On ERESTART it reads again and goes on only if line N still holds the same rule
(same handle and same expressions, counters aside), as "Edit safety" says; otherwise exit 5. Anything this path cannot
do itself (no such table, chain or line; a rule iptables-nft-restore cannot
translate without the target netns, e.g. -m set; a kernel error) returns None
before anything changed, and the caller takes the iptables-restore path, which
says precisely why.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading

from ..errors import ConflictError
from ..nftrace import nl
from . import nftmsg
from .argv import format_command, format_rule_tokens

TIMEOUT_MS = 5000
ATTEMPTS = 3
BUILTIN = {"ACCEPT", "DROP", "RETURN", "QUEUE", "CONTINUE", "NFQUEUE"}


class LineEdit:
    __slots__ = ("op", "line", "handle", "genid")

    def __init__(self, op, line, handle, genid):
        self.op, self.line, self.handle, self.genid = op, line, handle, genid

    def to_json(self, cmd) -> dict:
        return {"op": self.op, "table": cmd.table, "chain": cmd.chain, "line": self.line,
                "handle": self.handle, "generation": self.genid}


def apply_line_edit(cmd, netns: str | None):
    """Apply ``cmd`` (delete/replace with a line, insert) here; a LineEdit when done,
    None when the caller must take the iptables-restore path (nothing changed)."""
    if cmd.action == "delete" and cmd.line is not None:
        op = "delete"
    elif cmd.action == "replace" and cmd.line is not None:
        op = "replace"
    elif cmd.action == "insert":
        op = "insert"
    else:
        return None
    line = cmd.line or 1
    body_job = None
    if op != "delete":
        proto = nftmsg.parse_rule_proto(list(cmd.rule))
        if proto is None:
            return None
        body_job = _Scratch(cmd, nftmsg.format_compat(*proto))
        body_job.start()
    try:
        return _apply(cmd, netns, op, line, body_job)
    finally:
        if body_job is not None:
            body_job.join()


def _apply(cmd, netns, op, line, body_job):
    first = None
    for _attempt in range(ATTEMPTS):
        read = _read_line(cmd, netns, line, want_append=(op == "insert"))
        if read is None:
            return None
        sock, genid, handle, ident = read
        try:
            if first is None:
                first = (handle, ident)
            elif (handle, ident) != first:
                raise ConflictError(
                    f"{format_command(cmd)}: the rule at that line is no longer the one read "
                    f"(the chain changed meanwhile); nothing was changed",
                    "list the chain again (`ipdbg rules -L CHAIN --line-numbers`) and retry")
            body = b""
            if body_job is not None:
                body = body_job.result()
                if body is None:
                    return None
            xop = op
            if op == "insert" and handle is None:
                xop = "append"  # -I CHAIN N with N = rules + 1: iptables appends
            batch, seq = nftmsg.format_edit_batch(xop, cmd.family, cmd.table, cmd.chain, genid,
                                                  seq=100, handle=handle, body=body)
            err = _send_batch(sock, batch, begin_seq=100, edit_seq=seq)
        finally:
            sock.close()
        if err == 0:
            return LineEdit(xop, line, handle, genid)
        if err != errno.ERESTART:
            return None  # refused as a whole: iptables-restore says why
    raise ConflictError(f"{format_command(cmd)}: the ruleset kept changing while ipdbg read it; "
                        f"nothing was changed", "retry")


def _open(netns):
    from ..netns import enter_netns

    with enter_netns(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nl.NETLINK_NETFILTER)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, 0))
    except OSError:
        s.close()
        raise
    return s


def _recv(s):
    if not select.select([s], [], [], TIMEOUT_MS / 1000)[0]:
        raise OSError(errno.ETIMEDOUT, "no answer from nf_tables")
    return s.recv(1 << 17)


def _read_line(cmd, netns, line, want_append):
    """(socket for the batch, generation, handle of line N, what the rule there is)
    or None. With ``want_append``, line N may be one past the end (handle None)."""
    try:
        ctl = _open(netns)
    except OSError:
        return None
    ok = False
    try:
        ctl.send(nftmsg.format_getgen(1))
        genid = None
        while genid is None:
            genid = nftmsg.parse_gen(_recv(ctl), 1)
        dump = _open(netns)
        try:
            dump.send(nftmsg.format_rule_dump(cmd.family, cmd.table, cmd.chain, 2))
            scan = nftmsg.RuleScan(2, line)
            while not scan.done:
                scan.feed(_recv(dump))
        finally:
            dump.close()  # a dump left half-read ends with its socket
        if scan.error:
            return None  # ENOENT: no such table or chain
        ident = b""
        if len(scan.handles) >= line:
            handle = scan.handles[line - 1]
            ident = nftmsg.parse_rule_identity(scan.last)
        elif want_append and len(scan.handles) == line - 1:
            handle = None
        else:
            return None  # out of range: the restore path says so
        ok = True
        return ctl, genid, handle, ident
    except OSError:
        return None
    finally:
        if not ok:
            ctl.close()


def _send_batch(s, batch: bytes, begin_seq: int, edit_seq: int) -> int:
    try:
        s.send(batch)
        while True:
            acks = nftmsg.parse_acks(_recv(s))
            if acks.get(begin_seq):
                return acks[begin_seq]  # ERESTART: the generation moved
            if edit_seq in acks:
                return acks[edit_seq]
    except OSError as e:
        return e.errno or errno.EIO


# ---------------------------------------------------------------- the new rule

def _xt_libdirs() -> list[str]:
    import glob

    dirs = [os.environ["XTABLES_LIBDIR"]] if os.environ.get("XTABLES_LIBDIR") else []
    return dirs + glob.glob("/usr/lib/*/xtables") + ["/usr/lib/xtables", "/usr/local/lib/xtables"]


def format_scratch_table(cmd, is_extension) -> str:
    """The iptables-restore input that makes the new rule, alone, in an empty netns."""
    from .edit import BUILTIN_CHAINS

    builtin = cmd.chain in BUILTIN_CHAINS.get(cmd.table, ())
    lines = [f"*{cmd.table}", f":{cmd.chain} {'ACCEPT' if builtin else '-'} [0:0]"]
    toks = list(cmd.rule)
    for i, tok in enumerate(toks[:-1]):
        if tok in ("-j", "--jump", "-g", "--goto"):
            name = toks[i + 1]
            if name != cmd.chain and name not in BUILTIN and (
                    tok in ("-g", "--goto") or not is_extension(name)):
                lines.append(f":{name} - [0:0]")
    lines += [f"-A {cmd.chain} {format_rule_tokens(cmd.rule)}", "COMMIT", ""]
    return "\n".join(lines)


class _Scratch(threading.Thread):
    """iptables-nft-restore makes the rule in a netns of this thread's own; its
    expressions and userdata come back through a dump there."""

    def __init__(self, cmd, compat: bytes):
        super().__init__(daemon=True)
        self.cmd, self.compat, self.body = cmd, compat, None

    def run(self):
        try:
            self.body = self._make()
        except Exception:  # noqa: BLE001 - any failure: the restore path decides
            self.body = None

    def _make(self):
        import subprocess  # here: `-D N` needs none of it

        from ..netns import unshare_netns
        from .backend import binary

        cmd = self.cmd
        dirs = _xt_libdirs()

        def is_extension(name):
            return any(os.path.exists(os.path.join(d, f"{p}_{name}.so"))
                       for d in dirs for p in ("libxt", "libipt", "libip6t"))

        text = format_scratch_table(cmd, is_extension)
        restore = binary("restore", cmd.family, "nft")
        unshare_netns()  # this thread only; its children and sockets live there
        proc = subprocess.run([restore], input=text, capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nl.NETLINK_NETFILTER)
        try:
            s.bind((0, 0))
            s.send(nftmsg.format_rule_dump(cmd.family, cmd.table, cmd.chain, 1))
            buf = b""
            scan = nftmsg.RuleScan(1, 1 << 30)
            while not scan.done:
                chunk = _recv(s)
                scan.feed(chunk)
                buf += chunk
            rules = nftmsg.parse_rule_body(buf)
        finally:
            s.close()
        if scan.error or len(rules) != 1:
            return None
        _handle, _fam, exprs, udata = rules[0]
        if nftmsg.REFERENCING.intersection(nftmsg.parse_expr_names(exprs)):
            return None
        return exprs + (udata or b"") + self.compat

    def result(self):
        self.join()
        return self.body
