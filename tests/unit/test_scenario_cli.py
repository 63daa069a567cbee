"""`ipdbg scenario check|list` in-process (no root): exit codes and messages."""

import pytest

from ipdbg.cli import main

BAD = """\
name: bad
hosts:
  client: {addr: 10.0.0.1/24}
  web: {addr: 10.0.0.2/24, listen: [tcp/80]}
links: [[client, web]]
traffic: {from: client, to: server, proto: tcp, port: 80, expect: {verdict: dropped}}
"""


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_check_bad_file_exits_2_naming_file_and_line(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    code, out, err = run(["scenario", "check", str(f)], capsys)
    assert code == 2
    assert err.startswith(f"ipdbg: error: {f}:6: traffic: to: 'server' is neither a host")
    assert "hint: the format is described in docs/scenarios.md" in err


def test_check_all_shipped(capsys):
    code, out, _ = run(["scenario", "check", "--all"], capsys)
    assert code == 0
    assert out.count("\nok  ") + out.startswith("ok  ") >= 20


def test_list_shows_every_file_with_what_it_reproduces(capsys):
    code, out, _ = run(["scenario", "list"], capsys)
    assert code == 0
    assert "output-drop-by-dst.yaml" in out and "OUTPUT DROP" in out


def test_run_needs_files_or_all(capsys):
    code, _, err = run(["scenario", "run"], capsys)
    assert code == 2 and "no scenario given" in err
    code, _, err = run(["scenario", "run", "--all", "x.yaml"], capsys)
    assert code == 2 and "not both" in err


def test_missing_file_exits_3(tmp_path, capsys):
    code, _, err = run(["scenario", "check", str(tmp_path / "nope.yaml")], capsys)
    assert code == 3 and "No such file" in err
