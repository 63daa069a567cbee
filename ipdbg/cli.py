"""ipdbg command line: the one place that maps errors to exit codes.

Subcommands live in ``ipdbg.commands.*`` and are imported only when used, so that
``ipdbg rules -L`` does not pay for the BPF or netlink code at start-up.
"""

from __future__ import annotations

import sys

# _signal, not signal: the latter builds IntEnums (enum: ~3 ms of every start)
import _signal as signal

from . import errors

# name -> "module:attribute" (imported lazily)
COMMANDS = {
    "rules": "ipdbg.commands.rules:rules",
    "doctor": "ipdbg.commands.doctor:doctor",
    "drops": "ipdbg.commands.drops:drops",
    "why-dropped": "ipdbg.commands.why:why_dropped",
    "trace": "ipdbg.commands.trace:trace",
    "scenario": "ipdbg.commands.scenario:scenario",
    "demo": "ipdbg.commands.demo:demo",
}

SHORT_HELP = {
    "rules": "List and edit iptables rules by line number (iptables syntax).",
    "doctor": "Show what this machine allows ipdbg to do.",
    "drops": "Live monitor of every packet the kernel drops, with its reason.",
    "why-dropped": "Name the rule (or kernel reason) that drops matching packets.",
    "trace": "Live stream of netfilter events for matching packets.",
    "scenario": "Replay firewall scenarios (YAML) in network namespaces.",
    "demo": "Build a namespace lab where a rule drops a packet and explain it.",
}

_CLI = None


def _build_cli():
    """The click group (built on first use: `ipdbg rules` runs without click)."""
    global _CLI
    if _CLI is not None:
        return _CLI
    import importlib

    import click

    class LazyGroup(click.Group):
        def list_commands(self, ctx):
            return sorted(COMMANDS)

        def get_command(self, ctx, name):
            target = COMMANDS.get(name)
            if target is None:
                return None
            module, _, attr = target.partition(":")
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name == module:
                    return None  # command not built yet
                raise
            return getattr(mod, attr)

        def format_commands(self, ctx, formatter):
            rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--debug", is_flag=True, help="Show tracebacks and the kernel's/libbpf's logs.")
    @click.version_option(package_name="ipdbg")
    @click.pass_context
    def cli(ctx, debug):
        """ipdbg: which firewall rule dropped my packet, and fix it by line number.

        \b
        Examples:
          ipdbg why-dropped --dst 198.51.100.80:80 --probe
          ipdbg rules -t nat -L POSTROUTING --line-numbers -n -v
          ipdbg rules -D OUTPUT 1
          ipdbg doctor
        """
        ctx.ensure_object(dict)
        ctx.obj["debug"] = debug

    _CLI = cli
    return cli


def __getattr__(name):
    if name == "cli":
        return _build_cli()
    raise AttributeError(name)


def _rules_args(argv: list[str]) -> list[str] | None:
    """The arguments of `ipdbg [--debug] rules ARGS`, to run without click (its
    import is a third of the start-up of a `rules` edit). None when click must
    parse: other commands, and anything click itself would act on in ARGS (its
    help option -h/--help, also inside a bundle of short flags, and `--`)."""
    i = 1 if argv[:1] == ["--debug"] else 0
    if argv[i:i + 1] != ["rules"]:
        return None
    rest = argv[i + 1:]
    for a in rest:
        if a == "--" or a == "--help" or (a[:1] == "-" and a[1:2] != "-" and "h" in a):
            return None
    return rest


def _echo_err(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _debug_requested(argv: list[str]) -> bool:
    # --debug is a group option; look for it before the subcommand name.
    for arg in argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def _raise_interrupted(signum, frame):
    raise errors.Interrupted("interrupted by signal %d" % signum)


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Returns (and exits with) the documented exit code."""
    as_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    rules_args = None
    # SIGTERM unwinds like Ctrl-C so every `with`/`finally` cleanup runs.
    signal.signal(signal.SIGTERM, _raise_interrupted)
    code = errors.EXIT_OK
    try:
        rules_args = _rules_args(argv)
        if rules_args is not None:
            from .commands.rules import run

            run(rules_args)
        else:
            _build_cli().main(args=argv, prog_name="ipdbg", standalone_mode=False)
    except errors.IpdbgError as exc:
        code = exc.exit_code
        if debug:
            import traceback

            traceback.print_exc()
        if code == errors.EXIT_INTERRUPTED:
            _echo_err("ipdbg: interrupted")
        else:
            _echo_err(f"ipdbg: error: {exc.message}")
            if exc.hint:
                _echo_err(f"  hint: {exc.hint}")
    except KeyboardInterrupt:
        code = errors.EXIT_INTERRUPTED
        _echo_err("ipdbg: interrupted")
    except BrokenPipeError:
        # `ipdbg ... | head`: not an error of ours.
        sys.stderr.close()
        code = errors.EXIT_OK
    except Exception as exc:
        click = sys.modules.get("click")  # click's exceptions only if click ran
        if click is not None and isinstance(exc, click.exceptions.Abort):
            code = errors.EXIT_INTERRUPTED
            _echo_err("ipdbg: interrupted")
        elif click is not None and isinstance(exc, click.exceptions.Exit):
            code = exc.exit_code
        elif click is not None and isinstance(exc, click.ClickException):
            # click's own usage errors (unknown option, missing argument): one line too.
            code = errors.EXIT_USAGE
            msg = exc.format_message().splitlines()[0] if exc.format_message() else str(exc)
            _echo_err(f"ipdbg: error: {msg}")
            ctx = getattr(exc, "ctx", None)
            cmd = ctx.command_path if ctx is not None else "ipdbg"
            _echo_err(f"  hint: see `{cmd} --help`")
        else:  # a bug: one line, traceback only with --debug
            code = errors.EXIT_INTERNAL
            if debug:
                import traceback

                traceback.print_exc()
            else:
                _echo_err(f"ipdbg: error: internal error: {type(exc).__name__}: {exc}")
                _echo_err("  hint: rerun with --debug and report the traceback")
    else:
        code = errors.EXIT_OK
    if as_process and rules_args is not None:
        # `ipdbg rules` as its own process: all is written and closed (no threads,
        # no atexit hooks on this path). Skip CPython's teardown of every module,
        # ~2 ms of an iptables edit that takes 20 (docs/rules.md, "Speed").
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass
        try:
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):
            pass
        import os

        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
