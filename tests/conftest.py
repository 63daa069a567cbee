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


def _read_host_state() -> dict:
    """What ipdbg and its tests must never leave changed in the root netns."""
    import glob
    import subprocess

    def out(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"<{exc}>"
        # drop save-time comments and counters: they change with unrelated traffic
        lines = [ln for ln in p.stdout.splitlines() if not ln.startswith("#")]
        return "\n".join(ln.split(" [")[0] if ln.startswith(":") else ln for ln in lines)

    state = {
        "nft ruleset": out(["nft", "list", "ruleset"]),
        "iptables-legacy": out(["iptables-legacy-save"]),
        "ip6tables-legacy": out(["ip6tables-legacy-save"]),
        "ip netns": out(["ip", "netns", "list"]),
    }
    for path in sorted(glob.glob("/proc/sys/net/netfilter/nf_log/*")):
        try:
            with open(path) as f:
                state[path] = f.read().strip()
        except OSError:
            pass
    return state


@pytest.fixture(scope="session", autouse=True)
def host_left_untouched():
    """Fails the run if the tests changed the host's (root netns) firewall,
    nf_log bindings or namespaces: everything must happen in lab namespaces and
    everything ipdbg adds must go away."""
    if not IS_ROOT:
        yield
        return
    before = _read_host_state()
    yield
    after = _read_host_state()
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not changed, f"tests changed the host's root netns state: {changed}"
