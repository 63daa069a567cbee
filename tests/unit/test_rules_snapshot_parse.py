"""snapshot.py's pure part: recorded `nft -a list ruleset` and `iptables-nft-save -c`
(tests/fixtures/rules_snapshot/, recorded in a lab netns) -> handles, lines, texts."""

from pathlib import Path

from ipdbg.rules.snapshot import index_snapshot, parse_nft_list, parse_save_rules

FIX = Path(__file__).parent.parent / "fixtures" / "rules_snapshot"
NFT = (FIX / "nft_list_ruleset.txt").read_text()
SAVE = (FIX / "iptables_nft_save.txt").read_text()


def test_parse_nft_list_positions_and_texts():
    rules = parse_nft_list(NFT)
    out = [r for r in rules if r[:3] == ("inet", "mine", "out")]
    assert out == [("inet", "mine", "out", 1, 3, "ip daddr @blocked drop"),
                   ("inet", "mine", "out", 2, 5, 'tcp dport { 22, 80 } counter accept comment "hello"')]
    # the set's elements are not rules
    assert not any("192.0.2.1, 192.0.2.2" in r[5] for r in rules)
    inp = [r for r in rules if r[:3] == ("ip", "filter", "INPUT")]
    assert [(r[3], r[4]) for r in inp] == [(1, 5), (2, 6), (3, 7), (4, 8), (5, 9), (6, 10)]
    assert [r[4] for r in rules if r[:3] == ("ip", "filter", "LOGDROP")] == [12, 13]


def test_parse_save_rules():
    t = parse_save_rules(SAVE)["filter"]
    assert list(t) == ["INPUT", "FORWARD", "OUTPUT", "LOGDROP"]
    assert t["INPUT"][3] == '-A INPUT -p tcp -m tcp --dport 80 -m comment --comment "web \\"front\\"" -j ACCEPT'
    assert t["FORWARD"] == []


def test_index_joins_handles_to_iptables_lines():
    snap, consistent = index_snapshot({(4, "nft"): SAVE, (4, "legacy"): "", (6, "nft"): ""}, NFT)
    assert consistent
    ref = snap.by_nft_handle("ip", "filter", "OUTPUT", 11)
    assert (ref.backend, ref.line, ref.text, ref.family) == (
        "nft", 1, "-A OUTPUT -d 198.51.100.80/32 -p tcp -j DROP", 4)
    assert snap.by_nft_handle("ip", "filter", "INPUT", 9).line == 5
    assert snap.lookup("filter", "INPUT", 5).handle == 9
    # ip6 filter is not listed by ip6tables-nft-save here: it counts as native
    six = snap.by_nft_handle("ip6", "filter", "INPUT", 2)
    assert six.backend == "nftables" and six.family == 6 and six.line == 1
    native = snap.by_nft_handle("inet", "mine", "out", 5)
    assert native.backend == "nftables" and native.family == 0 and native.line == 2
    assert snap.backends_with_rules() == {"nft", "nftables"}


def test_index_notices_views_that_disagree():
    # the nft listing has one rule more in OUTPUT than the save (a change between reads)
    save = SAVE.replace("[0:0] -A OUTPUT -d 198.51.100.80/32 -p tcp -j DROP\n", "")
    _, consistent = index_snapshot({(4, "nft"): save}, NFT)
    assert not consistent


def test_native_table_that_iptables_nft_save_mistranslates():
    """A native `table ip filter` with a set lookup: iptables-nft-save 1.8.9 lists
    its rule as `-A INPUT -j DROP`; the snapshot names it in nft syntax instead."""
    nft = (FIX / "nft_native_filter.txt").read_text()
    save = (FIX / "iptables_nft_save_native_filter.txt").read_text()
    assert "[0:0] -A INPUT -j DROP" in save  # the recorded mistranslation
    snap, consistent = index_snapshot({(4, "nft"): save}, nft)
    assert consistent
    ref = snap.lookup("filter", "INPUT", 1, backend="nftables")
    assert ref is not None and ref.text == "ip saddr @s drop"
    assert snap.lookup("filter", "INPUT", 1, backend="nft") is None
    # the iptables-nft nat table (a comment holding "@" and "{") stays iptables-nft's
    nat = snap.lookup("nat", "OUTPUT", 1)
    assert nat.backend == "nft" and nat.text.endswith('--comment "a @ { b" -j RETURN')
