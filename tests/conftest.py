"""Shared pytest set-up.

tests/unit runs anywhere without root. tests/root is marked ``root``: it is
skipped when not root, and every test builds its own namespaces (``lab``
fixture) that are always removed.
"""

import os

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root (builds network namespaces)")
    for item in items:
        if "tests/root" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.root)
            if not IS_ROOT:
                item.add_marker(skip)


@pytest.fixture
def lab():
    """A fresh namespace lab, removed after the test whatever happens."""
    from ipdbg.lab import Lab

    with Lab(prefix="t") as lab:
        yield lab
