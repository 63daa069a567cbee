"""One error hierarchy for ipdbg.

Library code raises these; only ``ipdbg.cli`` turns them into a one-line
``ipdbg: error: ...`` message (plus the hint) and an exit code. The exit codes are
documented in README.md ("Exit codes"); a test keeps the two in sync.
"""

from __future__ import annotations

# Exit codes (README.md, "Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in ipdbg: the traceback is shown with --debug
EXIT_USAGE = 2  # bad input: options, rule spec, address, port, line number out of range
EXIT_NOT_FOUND = 3  # a table, chain, rule, netns, process or file that does not exist
EXIT_PRIVILEGE = 4  # missing root / capability
EXIT_CONFLICT = 5  # the ruleset changed between reading it and applying an edit
EXIT_SYSTEM = 6  # a system tool is missing or failed (iptables, nft, ip, libbpf, ...)
EXIT_KERNEL = 7  # the kernel refused what ipdbg needs (BPF load/attach, netlink, feature)
EXIT_NO_MATCH = 8  # why-dropped: no matching packet was dropped within the timeout
EXIT_SCENARIO_FAILED = 9  # scenario run: at least one expectation was not met
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug; rerun with --debug for the traceback)",
    EXIT_USAGE: "bad input: options, rule spec, address, port, line number",
    EXIT_NOT_FOUND: "table, chain, rule, netns, process or file not found",
    EXIT_PRIVILEGE: "missing privileges (root or a capability)",
    EXIT_CONFLICT: "the ruleset changed between reading and applying; nothing was changed",
    EXIT_SYSTEM: "a system tool is missing or failed",
    EXIT_KERNEL: "the kernel refused an operation (BPF, netlink, missing feature)",
    EXIT_NO_MATCH: "why-dropped: nothing matching was dropped within the timeout",
    EXIT_SCENARIO_FAILED: "scenario: an expectation was not met",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM)",
}


class IpdbgError(Exception):
    """Base class. ``message`` is one line; ``hint`` tells the user what to do."""

    exit_code = EXIT_INTERNAL
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class UsageError(IpdbgError):
    exit_code = EXIT_USAGE
    default_hint = "see `ipdbg COMMAND --help`"


class NotFoundError(IpdbgError):
    exit_code = EXIT_NOT_FOUND
    default_hint = "check the name; `ipdbg rules -L` lists tables and chains, `ip netns list` namespaces"


class PrivilegeError(IpdbgError):
    exit_code = EXIT_PRIVILEGE
    default_hint = "run as root (sudo ipdbg ...)"


class ConflictError(IpdbgError):
    exit_code = EXIT_CONFLICT
    default_hint = "list the chain again and retry with the new line number"


class SystemToolError(IpdbgError):
    exit_code = EXIT_SYSTEM
    default_hint = "run `make setup` (or `ipdbg doctor`) to see what is missing"


class KernelError(IpdbgError):
    exit_code = EXIT_KERNEL
    default_hint = "run `ipdbg doctor` to see what this kernel allows; --debug shows the kernel's log"


class NoMatchError(IpdbgError):
    exit_code = EXIT_NO_MATCH
    default_hint = "widen the filter, raise --timeout, or use --probe to send a packet"


class ScenarioFailed(IpdbgError):
    exit_code = EXIT_SCENARIO_FAILED
    default_hint = "see the table above for the scenario and expectation that failed"


class Interrupted(IpdbgError):
    exit_code = EXIT_INTERRUPTED
    default_hint = ""
