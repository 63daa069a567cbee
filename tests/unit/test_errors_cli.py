import re
from pathlib import Path

from ipdbg import errors
from ipdbg.privileges import CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, missing_caps, parse_cap_eff

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_exit_code_is_documented_in_readme():
    text = README.read_text()
    table = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|", text, re.M))
    for code in errors.EXIT_CODES:
        assert str(code) in table, f"exit code {code} missing from README"
    for cls in (errors.UsageError, errors.NotFoundError, errors.PrivilegeError,
                errors.ConflictError, errors.SystemToolError, errors.KernelError,
                errors.NoMatchError, errors.ScenarioFailed):
        assert cls("x").exit_code in errors.EXIT_CODES
        assert cls("x").hint, f"{cls.__name__} has no default hint"


def test_capabilities_parse_and_missing():
    status = "Name:\tx\nCapEff:\t0000000000001000\n"
    mask = parse_cap_eff(status)
    assert mask == 1 << CAP_NET_ADMIN
    assert missing_caps(mask, [CAP_NET_ADMIN]) == []
    assert missing_caps(mask, [CAP_NET_ADMIN, CAP_BPF]) == ["CAP_BPF"]
    # CAP_SYS_ADMIN implies CAP_BPF (kernel/bpf/syscall.c bpf_capable())
    assert missing_caps(1 << CAP_SYS_ADMIN, [CAP_BPF]) == []


def test_unknown_command_is_one_line_usage_error(capsys):
    from ipdbg.cli import main
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == errors.EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ipdbg: error: ")
    assert "Traceback" not in "\n".join(err)
