"""ipdbg.rules.listing against the real iptables 1.8.9, both backends, IPv4 and IPv6.

For each ruleset of tests/fixtures/rules/corpus/ and each backend, in a fresh lab
namespace: create its ipsets (NAME.ipset, if any), load it with ``iptables-<backend>-restore -c``, read it back with
``iptables-<backend>-save -c``, parse that with ``parse_save`` and compare our text
with the real ``iptables -t T -L [CHAIN]`` for all 16 combinations of -n -v -x
--line-numbers, and ``-S [CHAIN]`` with and without -v, for every table and chain.
A listing we do not render raises ``UnsupportedExtension`` (the caller falls back
to iptables itself); it must name an extension of the known fallback list.

Name lookups: a lab namespace has only ``lo``, so glibc's DNS queries to the host's
name server fail at once (ENETUNREACH) and iptables gets names only from /etc
(hosts, networks, services, protocols, passwd, group). We render with
``read_files_resolver()``, which reads exactly those files: deterministic, and no
lookup ever waits for DNS. ``test_lab_has_no_dns`` checks that premise.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from ipdbg.rules.fastlist import ListStream
from ipdbg.rules.listing import UnsupportedExtension, format_list, format_rules_S
from ipdbg.rules.lookup import read_files_resolver
from ipdbg.rules.parse import gc_paused, parse_save

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "fixtures" / "rules"



def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load("rules_record", RULES / "record.py")
generate = _load("rules_generate", RULES / "generate.py")

FALLBACK = {"connlabel", "devgroup", "eui64", "hashlimit", "realm", "sctp"}
CASES = [(path, backend) for path in record.corpus_files() for backend in record.BACKENDS]


def _table_save(save: str, table: str) -> str:
    """What `iptables-save -c -t TABLE` prints, cut from a whole save."""
    out, inside = [], False
    for line in save.splitlines(keepends=True):
        if line.startswith("*"):
            inside = line[1:].strip() == table
        if inside or line.startswith("#"):
            out.append(line)
        if inside and line.startswith("COMMIT"):
            inside = False
    return "".join(out)


def _stream(save, family, table, chain, flags, resolver):
    """ListStream (what `ipdbg rules -L` renders while iptables-save prints), fed
    the table's save a few lines at a time."""
    lines = _table_save(save, table).splitlines(keepends=True)
    with gc_paused():
        st = ListStream(family, table, chain, numeric="-n" in flags, verbose="-v" in flags,
                        exact="-x" in flags, line_numbers="--line-numbers" in flags,
                        resolver=resolver)
        for i in range(0, len(lines), 7):
            st.feed("".join(lines[i:i + 7]))
        return st.finish()


def _compare(ruleset, outputs, binary, resolver, save=None) -> tuple[list, set, int]:
    """(mismatches, fallback extension names, natively rendered count). With the
    save text, -L listings are also rendered by ListStream: the same text, or None
    where format_list falls back."""
    mismatches, fallbacks, native = [], set(), 0
    for rec in outputs:
        args = rec["args"]
        table, cmd, rest = args[1], args[2], args[3:]
        chain = rest[0] if rest and not rest[0].startswith("-") else None
        flags = set(rest)
        streamed = None
        if save is not None and cmd == "-L":
            streamed = _stream(save, ruleset.family, table, chain, flags, resolver)
        try:
            if cmd == "-S":
                ours = format_rules_S(ruleset, table, chain, verbose="-v" in flags)
            else:
                ours = format_list(ruleset, table, chain, numeric="-n" in flags,
                                   verbose="-v" in flags, exact="-x" in flags,
                                   line_numbers="--line-numbers" in flags, resolver=resolver)
        except UnsupportedExtension as e:
            fallbacks.add(e.name)
            if streamed is not None:
                mismatches.append((" ".join([binary] + args) + " (ListStream)", rec["output"],
                                   streamed))
            continue
        native += 1
        if ours != rec["output"]:
            mismatches.append((" ".join([binary] + args), rec["output"], ours))
        elif save is not None and cmd == "-L" and streamed != ours:
            mismatches.append((" ".join([binary] + args) + " (ListStream)", rec["output"],
                               streamed or "None\n"))
    return mismatches, fallbacks, native


def _fail(mismatches, total) -> None:
    cmd, real, ours = mismatches[0]
    pytest.fail(f"{len(mismatches)} of {total} listings differ; first: {cmd}\n"
                f"--- real\n{real}--- ours\n{ours}")


def _available(binary: str) -> bool:
    try:
        return subprocess.run([binary, "--version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_corpus_size():
    assert len(record.corpus_files()) >= 30
    assert any(p.suffix == ".rules6" for p in record.corpus_files())


def test_lab_has_no_dns(lab):
    """Reverse lookups in a lab namespace answer from /etc/hosts only, at once."""
    host = lab.add_host("dns")
    assert host.run(["getent", "hosts", "192.0.2.1"], check=False, timeout=10).returncode == 2
    assert host.run(["getent", "hosts", "2001:db8::1"], check=False, timeout=10).returncode == 2
    out = host.run(["getent", "hosts", "127.0.0.1"], timeout=10).stdout.split()
    assert out[1] == read_files_resolver().lookup_host("127.0.0.1", 4)


@pytest.mark.parametrize("path, backend", CASES,
                         ids=[f"{p.stem}-{b}" for p, b in CASES])
def test_listings_match_iptables(lab, path, backend):
    family = record.family_of(path)
    binary = record.tool(family, backend)
    if not _available(binary):
        pytest.skip(f"{binary} not installed")
    ipset = record.ipset_of(path)
    if ipset and not _available("ipset"):
        pytest.skip("ipset not installed (make setup)")
    save, outputs = record.record_one(lab, path.read_text(), family, backend, full=True,
                                      ipset=ipset)
    ruleset = parse_save(save, family)
    mismatches, fallbacks, native = _compare(ruleset, outputs, binary, read_files_resolver(), save)
    if mismatches:
        _fail(mismatches, len(outputs))
    assert fallbacks <= FALLBACK, f"unexpected fallbacks: {fallbacks - FALLBACK}"
    assert native > 0


GENERATED = [(table, seed, family, backend)
             for table, seeds in (("filter", (1, 2)), ("nat", (1,)))
             for seed in seeds for family in (4, 6) for backend in record.BACKENDS]


@pytest.mark.parametrize("table, seed, family, backend", GENERATED,
                         ids=[f"{t}-seed{s}-ipv{f}-{b}" for t, s, f, b in GENERATED])
def test_generated_rulesets_match_iptables(lab, table, seed, family, backend):
    """Random combinations of what we render (tests/fixtures/rules/generate.py),
    loaded rule by rule (iptables refuses some combinations), all 16 -L flag
    combinations and -S, -S -v of the table."""
    binary = record.tool(family, backend)
    if not _available(binary):
        pytest.skip(f"{binary} not installed")
    make = generate.generate if table == "filter" else generate.generate_nat
    lines = make(seed, n=150, family=family).splitlines()
    host = lab.add_host("gen")
    restore = record.tool(family, backend, "-restore")
    host.run([restore, "-c"], input="\n".join(x for x in lines if x[:1] in "*:") + "\nCOMMIT\n")
    rules = [x for x in lines if x.startswith("[")]
    loaded = sum(host.run([restore, "-c", "--noflush"], input=f"*{table}\n{x}\nCOMMIT\n",
                          check=False).returncode == 0 for x in rules)
    assert loaded > 0.8 * len(rules)
    save = host.run([record.tool(family, backend, "-save"), "-c"]).stdout
    cmds = [["-t", table, "-L"] + f for f in record.flag_combinations()]
    cmds += [["-t", table, "-S"], ["-t", table, "-S", "-v"]]
    outputs = record.run_in_host(host, family, backend, cmds)
    mismatches, fallbacks, native = _compare(parse_save(save, family), outputs, binary,
                                             read_files_resolver(), save)
    if mismatches:
        _fail(mismatches, len(outputs))
    assert not fallbacks and native == len(outputs)
