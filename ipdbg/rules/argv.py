"""iptables command syntax -> a command object (pure: no subprocess, no files).

``ipdbg rules`` takes iptables' own argv (``-t nat -I POSTROUTING 2 -o eth0 -j
MASQUERADE``) plus a few options of ours. This module turns such an argv, or one
line of a ``--batch`` file, into a :class:`RulesCommand` and rejects what
iptables would reject before anything runs (one clear line, exit code 2 or 3).

The one clash with iptables: ``-o`` is both our output format (``-o text|json``)
and iptables' ``--out-interface``. ``-o`` is ours before the command option
(``-L``, ``-A`` ...) and after a command that takes no rule (``-L``, ``-S``, ...);
after ``-A/-I/-R/-D/-C`` it belongs to the rule. ``--output`` is always ours.
"""

from __future__ import annotations

from ..errors import UsageError

# Plain classes, not dataclasses: `ipdbg rules -L` imports this module at start-up
# and a dataclass costs about a millisecond to create.

TABLES = ("filter", "nat", "mangle", "raw", "security")
BACKENDS = ("auto", "nft", "legacy")
OUTPUTS = ("text", "json")
POLICIES = ("ACCEPT", "DROP")
# XT_EXTENSION_MAXNAMELEN is 29 with the NUL (include/uapi/linux/netfilter/x_tables.h)
MAX_CHAIN_LEN = 28

# command option -> action name
COMMAND_OPTIONS = {
    "-A": "append", "--append": "append",
    "-I": "insert", "--insert": "insert",
    "-R": "replace", "--replace": "replace",
    "-D": "delete", "--delete": "delete",
    "-N": "new_chain", "--new-chain": "new_chain",
    "-X": "delete_chain", "--delete-chain": "delete_chain",
    "-F": "flush", "--flush": "flush",
    "-Z": "zero", "--zero": "zero",
    "-P": "policy", "--policy": "policy",
    "-E": "rename_chain", "--rename-chain": "rename_chain",
    "-L": "list", "--list": "list",
    "-S": "list_rules", "--list-rules": "list_rules",
}
READ_ONLY = ("list", "list_rules")
WITH_RULE = ("append", "insert", "replace", "delete")

# Long rule options that take no value (so the token after them may be a flag of ours).
_VALUELESS_LONG = {
    "--syn", "--log-uid", "--log-tcp-sequence", "--log-tcp-options", "--log-ip-options",
    "--set", "--rcheck", "--update", "--remove", "--rsource", "--rdest", "--reap",
    "--random", "--random-fully", "--persistent", "--nodst", "--physdev-is-in",
    "--physdev-is-out", "--physdev-is-bridged", "--ctdir", "--fragment", "--ecn-tcp-cwr",
    "--ecn-tcp-ece", "--ipv4", "--ipv6", "--notrack", "--clamp-mss-to-pmtu",
    "--strict", "--next", "--any", "--hashlimit-htable-gcinterval",
}
_ADDR_OPTS = {"-s", "--source", "--src", "-d", "--destination", "--dst"}
_PORT_OPTS = {"--dport", "--destination-port", "--sport", "--source-port",
              "--dports", "--destination-ports", "--sports", "--source-ports", "--ports"}


class _Record:
    """A small value object: fields with defaults, equality, repr, ``replace``."""

    _fields: dict = {}

    def __init__(self, **kw):
        if not kw.keys() <= self._fields.keys():
            raise TypeError(f"unknown fields {sorted(kw.keys() - self._fields.keys())}")
        self.__dict__.update(self._fields)  # defaults are immutable values
        self.__dict__.update(kw)

    def replace(self, **kw):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(kw)
        return new

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n in self._fields)

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(
            f"{n}={getattr(self, n)!r}" for n in self._fields) + ")"


class RulesCommand(_Record):
    """One iptables-style command, validated as far as can be done without the system."""

    _fields = {
        "action": None,  # a value of COMMAND_OPTIONS
        "table": "filter",
        "chain": None,
        "line": None,  # -I/-R/-D N, -Z CHAIN N, -L/-S CHAIN N
        "rule": (),  # the rule spec tokens (-A/-I/-R/-D)
        "target": None,  # -P policy, -E new name
        "family": 4,
        "numeric": False,
        "verbose": False,
        "exact": False,
        "line_numbers": False,
        "text": "",  # the argv as given
    }

    @property
    def read_only(self) -> bool:
        return self.action in READ_ONLY


class Invocation(_Record):
    """What the user asked ``ipdbg rules`` to do: commands plus our own options."""

    _fields = {
        "commands": (),
        "backend": "auto",
        "netns": None,
        "output": "text",
        "dry_run": False,
        "batch": None,  # FILE or "-" (the commands are read later)
        "family": 4,
        "family_given": False,
        "table": "filter",
    }


def _bad(msg: str, hint: str | None = None) -> UsageError:
    return UsageError(msg, hint or "see `ipdbg rules --help` (it takes iptables' own syntax)")


_BUNDLE = r"-[nvx46]+[LSFZXN]?|-[nvx46]*[LSFZXN][nvx46]*"
_BUNDLE_CHARS = frozenset("nvx46LSFZXN")
_IPV4 = r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:/(\d{1,2}))?"


def _fullmatch(pattern: str, tok: str):
    # re (and the enum it loads, ~3 ms) only once a token needs it: a plain
    # `-L CHAIN -n -v` spawns iptables-save before (docs/rules.md, "Speed")
    import re

    return re.fullmatch(pattern, tok)


def _check_token(tok: str) -> None:
    # A newline would start a new line of the restore batch: never let one through.
    if any(c < " " or c == "\x7f" for c in tok):
        raise _bad(f"control character in argument {tok!r}",
                   "rule specs, chain names and comments must be one line of printable text")


def parse_chain_name(name: str) -> str:
    _check_token(name)
    if not name:
        raise _bad("empty chain name")
    if len(name) > MAX_CHAIN_LEN:
        raise _bad(f"chain name {name!r} is longer than {MAX_CHAIN_LEN} characters")
    if name.startswith(("-", "!")) or any(c.isspace() for c in name):
        raise _bad(f"invalid chain name {name!r}",
                   "a chain name is one word that does not start with '-' or '!'")
    return name


def parse_line_number(tok: str, what: str = "line number") -> int:
    if not tok.isdigit():
        raise _bad(f"invalid {what} {tok!r}: expected a positive integer",
                   "use `ipdbg rules -L CHAIN --line-numbers` to see the line numbers")
    n = int(tok)
    if n < 1:
        raise _bad(f"invalid {what} {n}: line numbers start at 1",
                   "use `ipdbg rules -L CHAIN --line-numbers` to see the line numbers")
    return n


def _check_address(tok: str, family: int, opt: str) -> None:
    if family == 4:  # the common case without the ipaddress module
        m = _fullmatch(_IPV4, tok)
        if m and all(int(o) <= 255 for o in m.groups()[:4]) and int(m.group(5) or 0) <= 32:
            return
    import ipaddress

    for part in tok.split(","):
        addr = part
        try:
            if "/" in addr:
                net, mask = addr.split("/", 1)
                ip = ipaddress.ip_address(net)
                if mask.isdigit():
                    ipaddress.ip_network(f"{net}/{mask}", strict=False)
                else:  # dotted mask (IPv4 only)
                    ipaddress.ip_network(f"{net}/{mask}", strict=False)
            else:
                ip = ipaddress.ip_address(addr)
        except ValueError:
            raise _bad(f"malformed address {part!r} for {opt}",
                       "give an IP address or network such as 10.0.0.1 or 10.0.0.0/24 "
                       "(ipdbg does not resolve host names)") from None
        if ip.version != family:
            raise _bad(f"{opt} {part}: an IPv{ip.version} address in an IPv{family} rule",
                       "use -6 for IPv6 rules, -4 (default) for IPv4")


def _check_port(tok: str, opt: str) -> None:
    for part in tok.replace(":", ",").split(","):
        if part == "":
            continue  # open range ":1024" / "1024:"
        if part.isdigit():
            if int(part) > 65535:
                raise _bad(f"invalid port {part!r} for {opt}", "ports are 0 to 65535")
        elif not part.replace("-", "").replace("_", "").isalnum():
            raise _bad(f"invalid port {part!r} for {opt}",
                       "give a port number (0-65535), a range a:b or a service name")


def check_rule_spec(rule: tuple[str, ...], family: int) -> None:
    """The checks iptables does late or badly (DNS for a malformed address, ...)."""
    if not rule:
        return
    prev = None
    for tok in rule:
        _check_token(tok)
        if prev in _ADDR_OPTS:
            _check_address(tok, family, prev)
        elif prev in _PORT_OPTS:
            _check_port(tok, prev)
        prev = tok
    if prev in _ADDR_OPTS | _PORT_OPTS | {"-j", "--jump", "-m", "--match", "-p", "--protocol",
                                          "-i", "-o", "--in-interface", "--out-interface", "-g"}:
        raise _bad(f"option {prev} needs a value", "complete the rule spec")


def _is_value_of_prev(rule: list[str]) -> bool:
    """Whether the next token is the value of the last token of the rule so far."""
    if not rule:
        return False
    prev = rule[-1]
    if prev == "!":
        return False
    if prev.startswith("--"):
        return prev not in _VALUELESS_LONG
    if prev.startswith("-") and len(prev) == 2:
        return prev != "-f"
    return False


def parse_argv(argv: list[str] | tuple[str, ...], *, allow_ours: bool = True,
               defaults: Invocation | None = None) -> Invocation:
    """Parse ``ipdbg rules`` arguments (or one batch line when ``allow_ours`` is False).

    Raises UsageError with one line naming the first problem.
    """
    argv = list(argv)
    if argv and argv[0] in ("iptables", "ip6tables"):  # a pasted command line
        if argv[0] == "ip6tables":
            argv = ["-6"] + argv[1:]
        else:
            argv = argv[1:]
    d = defaults or Invocation(commands=())
    table = d.table
    table_given = False
    family, family_given = d.family, d.family_given
    numeric = verbose = exact = line_numbers = False
    backend, netns, output, dry_run, batch = d.backend, d.netns, d.output, d.dry_run, d.batch
    action = None
    cmd_opt = None
    positional: list[str] = []
    rule: list[str] = []
    i = 0

    def value(opt: str) -> str:
        nonlocal i
        if i + 1 >= len(argv):
            raise _bad(f"option {opt} needs a value")
        i += 1
        _check_token(argv[i])
        return argv[i]

    while i < len(argv):
        tok = argv[i]
        _check_token(tok)
        in_rule = action in WITH_RULE
        value_of_rule = in_rule and _is_value_of_prev(rule)
        if (not in_rule and len(tok) > 2 and tok[0] == "-" and _BUNDLE_CHARS.issuperset(tok[1:])
                and _fullmatch(_BUNDLE, tok)):
            # getopt bundling, as in `iptables -nvL INPUT` -> -n -v -L INPUT
            argv[i:i + 1] = ["-" + c for c in tok[1:]]
            continue
        if value_of_rule:
            rule.append(tok)
        elif tok in COMMAND_OPTIONS:
            if action is not None:
                raise _bad(f"two commands given ({cmd_opt} and {tok})",
                           "give one command per line (use --batch FILE for several)")
            action, cmd_opt = COMMAND_OPTIONS[tok], tok
            # positional arguments of the command follow directly
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-") and argv[j] != "!":
                positional.append(argv[j])
                j += 1
                if action in WITH_RULE and len(positional) == 2:
                    break
            i = j - 1
        elif tok in ("-t", "--table"):
            table = value(tok)
            if table not in TABLES:
                raise _bad(f"unknown table {table!r}", "tables are " + ", ".join(TABLES))
            table_given = True
        elif tok.startswith("--table="):
            table = tok.split("=", 1)[1]
            if table not in TABLES:
                raise _bad(f"unknown table {table!r}", "tables are " + ", ".join(TABLES))
        elif tok in ("-4", "--ipv4"):
            family, family_given = 4, True
        elif tok in ("-6", "--ipv6"):
            family, family_given = 6, True
        elif tok in ("-n", "--numeric"):
            numeric = True
        elif tok in ("-v", "--verbose"):
            verbose = True
        elif tok in ("-x", "--exact"):
            exact = True
        elif tok == "--line-numbers":
            line_numbers = True
        elif tok in ("-w", "--wait"):  # we always pass -w ourselves
            if i + 1 < len(argv) and argv[i + 1].replace(".", "").isdigit():
                i += 1
        elif tok in ("-W", "--wait-interval"):
            value(tok)
        elif tok.startswith("--backend"):
            if not allow_ours:
                raise _bad(f"{tok} is not allowed inside a batch file")
            backend = tok.split("=", 1)[1] if "=" in tok else value(tok)
            if backend not in BACKENDS:
                raise _bad(f"unknown backend {backend!r}", "use --backend auto, nft or legacy")
        elif tok.startswith("--netns"):
            if not allow_ours:
                raise _bad(f"{tok} is not allowed inside a batch file")
            netns = tok.split("=", 1)[1] if "=" in tok else value(tok)
        elif tok.startswith("--output") or (tok == "-o" and not in_rule):
            if not allow_ours:
                raise _bad(f"{tok} is not allowed inside a batch file")
            output = tok.split("=", 1)[1] if "=" in tok else value(tok)
            if output not in OUTPUTS:
                raise _bad(f"unknown output format {output!r}", "use -o text or -o json")
        elif tok == "--dry-run":
            if not allow_ours:
                raise _bad("--dry-run is not allowed inside a batch file")
            dry_run = True
        elif tok.startswith("--batch"):
            if not allow_ours:
                raise _bad("--batch is not allowed inside a batch file")
            batch = tok.split("=", 1)[1] if "=" in tok else value(tok)
        elif in_rule:
            rule.append(tok)
        elif tok.startswith("-"):
            raise _bad(f"unknown option {tok!r}" + ("" if action else " (no command given yet)"))
        else:
            raise _bad(f"unexpected argument {tok!r}")
        i += 1

    if action is None:
        if batch is not None and allow_ours:
            return Invocation(commands=(), backend=backend, netns=netns, output=output,
                              dry_run=dry_run, batch=batch, family=family,
                              family_given=family_given, table=table)
        raise _bad("no command given",
                   "give one of -L, -S, -A, -I, -R, -D, -N, -X, -F, -Z, -P (or --batch FILE)")
    if batch is not None and allow_ours:
        raise _bad("--batch takes its commands from the file; do not also give "
                   f"{cmd_opt} on the command line")
    cmd = _build_command(action, cmd_opt, positional, tuple(rule), table, family,
                         numeric, verbose, exact, line_numbers, " ".join(argv))
    del table_given
    return Invocation(commands=(cmd,), backend=backend, netns=netns, output=output,
                      dry_run=dry_run, batch=batch, family=family, family_given=family_given,
                      table=table)


def _build_command(action, opt, pos, rule, table, family, numeric, verbose, exact,
                   line_numbers, text) -> RulesCommand:
    chain = line = target = None

    def need_chain():
        if not pos:
            raise _bad(f"{opt} needs a chain name")
        return parse_chain_name(pos[0])

    if action == "append":
        chain = need_chain()
        if len(pos) > 1:
            raise _bad(f"unexpected argument {pos[1]!r} after {opt} {chain}")
        if not rule:
            raise _bad(f"{opt} {chain} needs a rule spec", "for example: -p tcp --dport 22 -j ACCEPT")
    elif action == "insert":
        chain = need_chain()
        if len(pos) > 1:
            line = parse_line_number(pos[1])
        if not rule:
            raise _bad(f"{opt} {chain} needs a rule spec", "for example: -p tcp --dport 22 -j ACCEPT")
    elif action == "replace":
        chain = need_chain()
        if len(pos) < 2:
            raise _bad(f"{opt} {chain} needs a line number and a rule spec")
        line = parse_line_number(pos[1])
        if not rule:
            raise _bad(f"{opt} {chain} {line} needs a rule spec", "for example: -j DROP")
    elif action == "delete":
        chain = need_chain()
        if len(pos) > 1:
            line = parse_line_number(pos[1])
            if rule:
                raise _bad(f"{opt} takes a line number or a rule spec, not both")
        elif not rule:
            raise _bad(f"{opt} {chain} needs a line number or a rule spec")
    elif action in ("new_chain",):
        chain = need_chain()
        if len(pos) > 1:
            raise _bad(f"unexpected argument {pos[1]!r}")
    elif action in ("delete_chain", "flush"):
        chain = parse_chain_name(pos[0]) if pos else None
        if len(pos) > 1:
            raise _bad(f"unexpected argument {pos[1]!r}")
    elif action in ("zero", "list", "list_rules"):
        chain = parse_chain_name(pos[0]) if pos else None
        if len(pos) > 1:
            line = parse_line_number(pos[1], "rule number")
        if len(pos) > 2:
            raise _bad(f"unexpected argument {pos[2]!r}")
    elif action == "policy":
        chain = need_chain()
        if len(pos) < 2:
            raise _bad(f"{opt} {chain} needs a target (ACCEPT or DROP)")
        target = pos[1]
        if target not in POLICIES:
            raise _bad(f"invalid policy {target!r}", "a built-in chain's policy is ACCEPT or DROP")
        if len(pos) > 2:
            raise _bad(f"unexpected argument {pos[2]!r}")
    elif action == "rename_chain":
        chain = need_chain()
        if len(pos) < 2:
            raise _bad(f"{opt} {chain} needs the new name")
        target = parse_chain_name(pos[1])
    check_rule_spec(rule, family)
    if rule and rule[-1] == "!":
        raise _bad("'!' at the end of the rule spec", "'!' negates the option after it")
    return RulesCommand(action=action, table=table, chain=chain, line=line, rule=rule,
                        target=target, family=family, numeric=numeric, verbose=verbose,
                        exact=exact, line_numbers=line_numbers, text=text)


def parse_batch(text: str, defaults: Invocation) -> tuple[RulesCommand, ...]:
    """One iptables-style command per line; ``#`` comments and blank lines are skipped.

    Each line may start with ``iptables``/``ip6tables`` and may give its own ``-t``.
    A ``-4``/``-6`` must agree with the invocation: one batch is one family.
    """
    import shlex

    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            toks = shlex.split(line) if any(c in line for c in "\"'\\") else line.split()
        except ValueError as exc:
            raise _bad(f"batch line {n}: {exc}", "check the quotes on that line") from None
        try:
            inv = parse_argv(toks, allow_ours=False, defaults=defaults.replace(commands=()))
        except UsageError as exc:
            raise UsageError(f"batch line {n}: {exc.message}", exc.hint) from None
        cmd = inv.commands[0]
        if cmd.family != defaults.family:
            raise _bad(f"batch line {n}: IPv{cmd.family} command in an IPv{defaults.family} batch",
                       "one batch is one family: give -6 to ipdbg rules, not on a line")
        if cmd.read_only:
            raise _bad(f"batch line {n}: {cmd.action.replace('_', ' ')} in a batch",
                       "a batch holds edits only (-A -I -R -D -N -X -F -Z -P -E)")
        out.append(cmd)
    if not out:
        raise _bad("the batch is empty", "give one iptables-style command per line")
    return tuple(out)


def format_rule_tokens(rule: tuple[str, ...] | list[str]) -> str:
    """Tokens -> text that iptables-restore splits back into the same tokens.

    iptables-restore (xshared.c add_param_to_argv) understands double quotes and a
    backslash before a quote, like iptables-save writes them.
    """
    out = []
    for tok in rule:
        if tok == "" or any(c.isspace() or c in "\"'\\" for c in tok):
            out.append('"' + tok.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(tok)
    return " ".join(out)


_ACTION_OPT = {v: k for k, v in COMMAND_OPTIONS.items() if not k.startswith("--")}


def format_command(cmd: RulesCommand) -> str:
    """The command as iptables syntax, for messages (``-t nat -D POSTROUTING 2``)."""
    parts = [] if cmd.family == 4 else ["-6"]
    if cmd.table != "filter":
        parts += ["-t", cmd.table]
    parts.append(_ACTION_OPT[cmd.action])
    for p in (cmd.chain, cmd.line, cmd.target):
        if p is not None:
            parts.append(str(p))
    if cmd.rule:
        parts.append(format_rule_tokens(cmd.rule))
    return " ".join(parts)
