"""ipdbg.rules.listing: byte equality with recorded real ``iptables -L`` / ``-S`` outputs.

The fixtures in tests/fixtures/rules/recorded/ come from record.py (iptables 1.8.9,
iptables-nft and iptables-legacy, in a lab namespace); non-numeric listings use the
recorded /etc files (recorded/etc/) as the resolver, which is what iptables saw
there (DNS is unreachable from a lab namespace).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipdbg.errors import NotFoundError
from ipdbg.rules.listing import (
    UnsupportedExtension, format_list, format_num, format_rules_S, rule_to_json,
)
from ipdbg.rules.lookup import TableResolver, read_files_resolver
from ipdbg.rules.parse import parse_save

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "recorded"
RECORDINGS = sorted(RECORDED.glob("*.json"))
RESOLVER = read_files_resolver(RECORDED / "etc")

# Extensions we do not render natively: listing them must raise UnsupportedExtension
# (the caller then runs the system's iptables -L). Everything else must match.
FALLBACK = {"connlabel", "devgroup", "eui64", "hashlimit", "realm", "sctp"}


def render(ruleset, args: list[str], resolver=RESOLVER) -> str:
    """Our output for ``iptables ARGS`` (args as recorded: -t T -L|-S [CHAIN] flags)."""
    table, cmd, rest = args[1], args[2], args[3:]
    chain = rest[0] if rest and not rest[0].startswith("-") else None
    flags = set(rest)
    if cmd == "-S":
        return format_rules_S(ruleset, table, chain, verbose="-v" in flags)
    return format_list(ruleset, table, chain, numeric="-n" in flags, verbose="-v" in flags,
                       exact="-x" in flags, line_numbers="--line-numbers" in flags,
                       resolver=resolver)


def load(path: Path):
    data = json.loads(path.read_text())
    save = path.with_suffix(".save").read_text()
    return data, parse_save(save, data["family"])


def test_enough_recordings():
    assert len(RECORDINGS) >= 60
    assert sum(len(json.loads(p.read_text())["outputs"]) for p in RECORDINGS) > 2000


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recorded_outputs_byte_identical(path):
    data, ruleset = load(path)
    mismatches, fallbacks = [], set()
    for rec in data["outputs"]:
        try:
            ours = render(ruleset, rec["args"])
        except UnsupportedExtension as e:
            fallbacks.add(e.name)
            continue
        if ours != rec["output"]:
            mismatches.append(" ".join(rec["args"]))
    assert not mismatches, f"{len(mismatches)} listings differ, first: {mismatches[:3]}"
    assert fallbacks <= FALLBACK


def test_fallbacks_only_where_expected():
    """Rulesets without fallback extensions render every listing natively."""
    native = 0
    for path in RECORDINGS:
        data, ruleset = load(path)
        for rec in data["outputs"]:
            try:
                render(ruleset, rec["args"])
                native += 1
            except UnsupportedExtension as e:
                assert e.name in FALLBACK, (path.name, rec["args"], e.name)
                assert e.exit_code == 1
    assert native > 2400


def test_unsupported_chain_raises_but_other_chains_render():
    data, ruleset = load(RECORDED / "40-misc-matches.nft.json")
    with pytest.raises(UnsupportedExtension) as exc:
        format_list(ruleset, "filter", "INPUT", numeric=True)
    # the first rule we cannot render: SCTP chunk type ASCONF (193)
    assert exc.value.name == "sctp" and exc.value.kind == "match"
    assert "chunk types ASCONF" in exc.value.message
    with pytest.raises(UnsupportedExtension):
        format_list(ruleset, "filter", numeric=True, verbose=True)  # whole table
    expected = next(r["output"] for r in data["outputs"]
                    if r["args"] == ["-t", "filter", "-L", "OUTPUT"])
    assert format_list(ruleset, "filter", "OUTPUT", resolver=RESOLVER) == expected
    # -S never needs extension printers.
    expected = next(r["output"] for r in data["outputs"] if r["args"] == ["-t", "filter", "-S"])
    assert format_rules_S(ruleset, "filter") == expected


def test_numeric_listing_makes_no_lookups():
    class Refuse:
        def __getattr__(self, name):
            raise AssertionError(f"numeric listing called resolver.{name}")

    data, ruleset = load(RECORDED / "26-kube-proxy.nft.json")
    want = next(r["output"] for r in data["outputs"]
                if r["args"] == ["-t", "nat", "-L", "-n", "-v"])
    assert format_list(ruleset, "nat", numeric=True, verbose=True, resolver=Refuse()) == want
    assert format_list(ruleset, "nat", numeric=True, verbose=True) == want


def test_injected_resolver_names_hosts_services_users():
    ruleset = parse_save(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "[0:0] -A INPUT -s 10.0.0.1/32 -d 10.1.0.0/16 -p tcp -m tcp --dport 8080 -j ACCEPT\n"
        "[0:0] -A OUTPUT -m owner --uid-owner 1000 -j ACCEPT\nCOMMIT\n", 4)
    res = TableResolver(hosts={"10.0.0.1": "gw.lab"}, networks={"10.1.0.0": "labnet"},
                        services={(8080, "tcp"): "web"}, users={1000: "alice"})
    out = format_list(ruleset, "filter", resolver=res).splitlines()
    assert out[2] == ("ACCEPT     tcp  --  gw.lab               labnet/16            tcp dpt:web")
    assert out[-1].endswith(" owner UID match alice")
    out = format_list(ruleset, "filter", numeric=True, resolver=res).splitlines()
    assert out[2] == ("ACCEPT     6    --  10.0.0.1             10.1.0.0/16          tcp dpt:8080")


@pytest.mark.parametrize("n, exact, text", [
    (0, False, "    0"), (99999, False, "99999"), (100000, False, " 100K"),
    (9999499, False, "9999K"), (9999500, False, "  10M"), (1234567890, False, "1235M"),
    (10**13, False, "  10T"), (2**64 - 1, False, "   0K"),  # uint64 wrap in iptables
    (5, True, "       5"), (123456789012, True, "123456789012"),
])
def test_format_num(n, exact, text):
    assert format_num(n, exact) == text


def test_unknown_table_or_chain_is_not_found():
    _, ruleset = load(RECORDED / "02-basic-server.nft.json")
    with pytest.raises(NotFoundError) as exc:
        format_list(ruleset, "nat", numeric=True)
    assert "filter" in exc.value.hint
    with pytest.raises(NotFoundError) as exc:
        format_rules_S(ruleset, "filter", "NOPE")
    assert "INPUT" in exc.value.hint and exc.value.exit_code == 3


def test_rule_to_json():
    _, ruleset = load(RECORDED / "26-kube-proxy.legacy.json")
    rule = ruleset.tables["filter"].chains["KUBE-FIREWALL"].rules[0]
    doc = rule_to_json(4, "filter", "KUBE-FIREWALL", 1, rule)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["rule"] == ('-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment '
                           '--comment "block incoming localnet connections" -m conntrack '
                           '! --ctstate RELATED,ESTABLISHED,DNAT -j DROP')
    assert (doc["family"], doc["table"], doc["chain"], doc["line"]) == (4, "filter", "KUBE-FIREWALL", 1)
    assert (doc["packets"], doc["bytes"]) == (rule.packets, rule.bytes)
    parts = doc["parts"]
    assert parts["source"] == "127.0.0.0/8" and parts["destination"] == "127.0.0.0/8"
    assert parts["protocol"] is None and parts["fragment"] is None
    assert parts["matches"] == [
        {"name": "comment", "options": [{"name": "--comment", "negated": False,
                                         "values": ["block incoming localnet connections"]}]},
        {"name": "conntrack", "options": [{"name": "--ctstate", "negated": True,
                                           "values": ["RELATED,ESTABLISHED,DNAT"]}]},
    ]
    assert parts["target"] == "DROP" and parts["target_options"] == []
    assert parts["negations"] == ["source", "conntrack --ctstate"]

    dnat = ruleset.tables["nat"].chains["KUBE-SEP-2ZYMK6SHMGH6HTPU"].rules[1]
    doc = rule_to_json(4, "nat", "KUBE-SEP-2ZYMK6SHMGH6HTPU", 2, dnat)
    assert doc["parts"]["target_options"] == [
        {"name": "--to-destination", "values": ["10.244.0.3:53"], "negated": False}]
    assert doc["parts"]["negations"] == []


@pytest.mark.parametrize("name", ["08-comments.nft", "26-kube-proxy.legacy", "33-large-chain.nft",
                                  "12-log.legacy", "28-ipv6-reject-nat.nft"])
def test_lazy_and_built_parts_render_the_same(name):
    """Rules read straight from the spec (parts not built) and rules with parts built
    (say, after an edit looked at them) must print the same lines."""
    data, lazy = load(RECORDED / f"{name}.json")
    _, built = load(RECORDED / f"{name}.json")
    for table in built.tables.values():
        for chain in table.chains.values():
            for rule in chain.rules[::2]:  # half of them: both paths in one listing
                assert rule.parts is not None
    for rec in data["outputs"]:
        if rec["args"][2] == "-L":
            assert render(lazy, rec["args"]) == rec["output"] == render(built, rec["args"])


def test_rule_targets_for_references_ignore_quoted_jumps():
    ruleset = parse_save(
        '*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n'
        '[0:0] -A INPUT -m comment --comment " -j B" -j A\n'
        '[0:0] -A INPUT -j LOG --log-prefix " -g B "\n'
        '[0:0] -A INPUT -g B\n'
        '[0:0] -A INPUT -m comment --comment "x\\"y -j B"\n'
        'COMMIT\n', 4)
    text = format_list(ruleset, "filter", numeric=True)
    assert "Chain A (1 references)" in text and "Chain B (1 references)" in text


def test_etc_file_parsers_follow_libc_first_match():
    from ipdbg.rules.lookup import (
        parse_hosts, parse_id_names, parse_networks, parse_protocols, parse_services,
    )

    hosts = parse_hosts("127.0.0.1 localhost\n127.0.0.1 other # dup\n::1 ip6-localhost\n"
                        "bogus line\n0:0:0:0:0:0:0:2 two\n::ffff:10.0.0.1 mapped\n")
    assert hosts == {"127.0.0.1": "localhost", "::1": "ip6-localhost", "::2": "two",
                     "::ffff:10.0.0.1": "mapped"}  # the inet_ntop() form, as iptables-save
    # inet_network(): "127" is network number 127 (0.0.0.127), not 127.0.0.0.
    assert parse_networks("loopback 127.0.0.0\nshort 10\n") == {"127.0.0.0": "loopback",
                                                                   "0.0.0.10": "short"}
    services = parse_services("ssh 22/tcp\nssh 22/udp\nalt 22/tcp\nhttp 80/tcp www # c\n")
    assert services == {(22, "tcp"): "ssh", (22, "udp"): "ssh", (80, "tcp"): "http"}
    assert parse_protocols("ip 0 IP\nhopopt 0 HOPOPT\ntcp 6 TCP\n") == {0: "ip", 6: "tcp"}
    assert parse_id_names("root:x:0\nnobody:x:65534:65534::/:/bin/false\n") == {
        0: "root", 65534: "nobody"}


def test_recorded_etc_resolver_answers_like_iptables_did():
    assert RESOLVER.lookup_host("127.0.0.1", 4) == "localhost"
    assert RESOLVER.lookup_network("169.254.0.0") == "link-local"
    assert RESOLVER.lookup_service(22, "tcp") == "ssh"
    assert RESOLVER.lookup_service(3868, "sctp") is None
    assert RESOLVER.lookup_protocol(47) == "gre"
    assert RESOLVER.lookup_protocol_number("ipv6-icmp") == 58
    assert RESOLVER.lookup_user(0) == "root"


def test_specs_not_in_save_order_still_list_right():
    """A spec written by hand (addresses after the matches) takes the slow path."""
    odd = parse_save(
        "*filter\n:INPUT ACCEPT [0:0]\n"
        "[0:0] -A INPUT -m comment --comment x -s 10.0.0.1/32 ! -i eth0 -p udp -j DROP\n"
        "[0:0] -A INPUT -m comment --comment x -s 10.0.0.1/32 ! -i eth0 -p udp -j DROP\n"
        "[0:0] -A INPUT -s 10.0.0.1/32 ! -i eth0 -p udp -m comment --comment x -j DROP\n"
        "COMMIT\n", 4)
    lines = format_list(odd, "filter", numeric=True, verbose=True).splitlines()[2:]
    assert lines[0] == lines[1] == lines[2] == (
        "    0     0 DROP       17   --  !eth0  *       10.0.0.1             0.0.0.0/0"
        "            /* x */")
    assert format_rules_S(odd, "filter", verbose=True).splitlines()[1] == (
        "-A INPUT -m comment --comment x -s 10.0.0.1/32 ! -i eth0 -p udp -c 0 0 -j DROP")
