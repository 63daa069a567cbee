"""Every command is documented: in README's command table and with an example in --help."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from ipdbg.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_in_readme_and_help(name):
    assert f"| `ipdbg {name}` |" in README, f"{name} missing from README's command table"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`ipdbg {name} --help` has no example"


def test_linked_docs_exist():
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target
