"""Pure parts of ipdbg.probe and ipdbg doctor, from outputs recorded on the project's
host (tests/fixtures/probe/record.sh: kernel 6.18, iptables 1.8.9, nftables 1.0.6)."""

import json
from pathlib import Path

import pytest

from ipdbg import probe
from ipdbg.commands.doctor import build_doctor_report, format_doctor_text
from ipdbg.probe import ProbeResult, select_tier

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "probe"


def read(name):
    return (FIX / name).read_text()


def facts(name):
    return probe.parse_host_facts(json.loads(read(name)))


# -- versions and counts ---------------------------------------------------


def test_iptables_version():
    assert probe.parse_iptables_version(read("iptables-version.nft.txt")) == ("1.8.9", "nf_tables")
    assert probe.parse_iptables_version(read("iptables-version.legacy.txt")) == ("1.8.9", "legacy")
    # iptables before the nft backend existed (1.6, Debian 9) prints no backend
    assert probe.parse_iptables_version("iptables v1.6.0\n") == ("1.6.0", "legacy")
    assert probe.parse_iptables_version("") == (None, None)


def test_nft_version():
    assert probe.parse_nft_version(read("nft-version.txt")) == "1.0.6"
    assert probe.parse_nft_version("nftables v1.1.1 (Commodore Bullmoose #2)") == "1.1.1"
    assert probe.parse_nft_version("garbage") is None


def test_kernel_version():
    assert probe.parse_kernel_version("6.18.44-fc-v769") == (6, 18, 44)
    assert probe.parse_kernel_version("6.1.0-27-amd64") == (6, 1, 0)
    assert probe.parse_kernel_version("5.12") == (5, 12, 0)
    assert probe.parse_kernel_version("weird") == (0, 0, 0)


def test_save_rule_counts():
    assert probe.parse_save_rule_count(read("save.nft-ipv4.txt")) == 3  # filter 2 + nat 1
    assert probe.parse_save_rule_count(read("save.legacy-ipv4.txt")) == 1
    assert probe.parse_save_rule_count(read("save.nft-ipv6-empty.txt")) == 0


def test_privileges_from_status():
    root = probe.parse_privileges(0, read("status.root.txt"))
    assert root.is_root and all(root.caps.values())
    assert root.missing(probe.CAPS_FOR_BPF) == []
    none = probe.parse_privileges(0, read("status.nocaps.txt"))
    assert not any(none.caps.values())
    assert none.missing(probe.CAPS_FOR_BPF) == ["CAP_BPF", "CAP_PERFMON"]


def test_nf_log_and_kfree_skb_params():
    assert probe.parse_nf_log({"2": "nf_log_ipv4\n", "10": "NONE\n", "7": "nfnetlink_log\n"}) == {
        "ipv4": "nf_log_ipv4",
        "bridge": "nfnetlink_log",
    }
    k618 = probe.parse_kfree_skb_params(
        [("", "void *"), ("", "struct sk_buff *"), ("", "void *"), ("", "enum skb_drop_reason"), ("", "struct sock *")]
    )
    assert k618["has_reason"] and k618["has_rx_sk"]
    k515 = probe.parse_kfree_skb_params([("", "void *"), ("", "struct sk_buff *"), ("", "void *")])
    assert not k515["has_reason"] and not k515["has_rx_sk"]
    assert probe.parse_kfree_skb_params([])["found"] is False


def test_format_errno():
    assert probe.format_errno(1) == ("EPERM", "Operation not permitted")
    assert probe.format_errno(524)[0] == "ENOTSUPP"


# -- tier selection ----------------------------------------------------------


def _ok(m):
    return ProbeResult(m, "t", loadable=True, attachable=True)


def _refused(m):
    return ProbeResult(m, "t", loadable=False, step="load", error="EPERM")


def _missing(m):
    return ProbeResult(m, "t", loadable=True, attachable=False, step="attach", error="ENOENT")


@pytest.mark.parametrize(
    "tp_btf,fentry,kprobe,tier",
    [
        (_ok, _refused, _missing, "tracepoint"),  # this host
        (_ok, _ok, _ok, "kprobe"),  # stock Debian kernel in the VM
        (_ok, _ok, _missing, "fentry"),
        (_ok, _refused, _ok, "kprobe"),
        (_missing, _ok, _ok, None),  # no tp_btf (kernel < 5.5 or no BTF): nothing sees drops
        (_refused, _refused, _refused, None),
    ],
)
def test_select_tier(tp_btf, fentry, kprobe, tier):
    results = {"tp_btf": tp_btf("tp_btf"), "fentry": fentry("fentry"), "kprobe": kprobe("kprobe")}
    assert select_tier(results) == tier


def test_select_tier_without_results():
    assert select_tier({}) is None


def test_probe_result_status():
    assert _ok("x").status == "ok"
    assert _refused("x").status == "refused"
    assert _missing("x").status == "missing"
    assert ProbeResult("x", "t", step="privileges").status == "warning"


# -- report rows from recorded facts ---------------------------------------


def rows_by_item(f):
    return {r["item"]: r for r in probe.build_report_rows(f)}


def test_report_rows_root_host():
    f = facts("facts.root.json")
    rows = rows_by_item(f)
    assert rows["bpf tp_btf"]["status"] == "ok"
    assert rows["bpf raw_tp"]["status"] == "ok"
    assert rows["bpf tracepoint"]["status"] == "ok"
    assert rows["bpf fentry"]["status"] == "refused"
    assert "EPERM" in rows["bpf fentry"]["detail"]
    assert rows["bpf kprobe"]["status"] == "missing"
    assert "ENOENT" in rows["bpf kprobe"]["detail"]
    assert rows["drop reasons"]["status"] == "ok"
    assert "NETFILTER_DROP = 12" in rows["drop reasons"]["detail"]
    assert rows["nft owned tables"]["status"] == "ok"
    assert rows["iptables"]["detail"] == "v1.8.9, backend nf_tables"
    assert rows["privileges"]["status"] == "ok"
    assert set(r["status"] for r in rows.values()) <= {"ok", "missing", "refused", "warning"}
    assert select_tier(f.probes) == "tracepoint"


def test_report_without_capabilities_says_why():
    f = facts("facts.nocaps.json")
    report = build_doctor_report(f)
    assert report["tier"] is None
    assert "CAP_BPF" in report["tier_detail"]
    rows = {r["item"]: r for r in report["items"]}
    assert rows["privileges"]["status"] == "warning"
    assert "missing CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN" in rows["privileges"]["detail"]
    for m in probe.MECHANISMS:
        assert rows[f"bpf {m}"]["status"] == "warning"
        assert "not probed: needs CAP_BPF, CAP_PERFMON" in rows[f"bpf {m}"]["detail"]
    assert rows["rule backends"]["status"] == "warning"
    assert any("CAP_NET_ADMIN" in r["detail"] for r in report["items"] if r["item"] == "note")


def test_both_backends_warning():
    nft = probe.parse_save_rule_count(read("save.nft-ipv4.txt"))
    legacy = probe.parse_save_rule_count(read("save.legacy-ipv4.txt"))
    f = facts("facts.root.json")
    f.rule_counts = {"nft/ipv4": nft, "nft/ipv6": 0, "legacy/ipv4": legacy, "legacy/ipv6": 0}
    row = rows_by_item(f)["rule backends"]
    assert row["status"] == "warning" and "BOTH" in row["detail"]
    f.rule_counts = {"nft/ipv4": nft, "legacy/ipv4": 0}
    assert rows_by_item(f)["rule backends"]["status"] == "ok"


def test_old_kernel_rows():
    f = facts("facts.root.json")
    f.kernel_release = "5.10.0-30-amd64"
    f.kfree_skb = probe.parse_kfree_skb_params([("", "void *"), ("", "struct sk_buff *"), ("", "void *")])
    rows = rows_by_item(f)
    assert rows["nft owned tables"]["status"] == "missing"
    assert rows["drop reasons"]["status"] == "missing"


def test_host_facts_round_trip():
    f = facts("facts.root.json")
    assert probe.parse_host_facts(json.loads(json.dumps(probe.format_host_facts(f)))) == f


def test_text_and_json_report():
    f = facts("facts.root.json")
    sections = {"attached drop programs": [{"item": "ipdbg_drops", "status": "ok", "detail": "prog 42"}]}
    report = build_doctor_report(f, sections)
    text = format_doctor_text(report)
    first = text.splitlines()[0]
    assert first.startswith("engine tier: tracepoint")
    assert "bpf fentry" in text and "refused" in text
    assert "attached drop programs:" in text and "prog 42" in text
    json.dumps(report)  # serialisable
    assert report["probes"]["fentry"]["error"] == "EPERM"


# -- fentry target in a module's split BTF -----------------------------------


def _blob(types: bytes, strings: bytes) -> bytes:
    import struct

    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_fentry_target_in_module_btf(tmp_path):
    """Debian builds nf_tables as a module: nft_do_chain is then only in the split BTF
    /sys/kernel/btf/nf_tables, with ids continuing after vmlinux's."""
    import struct

    from ipdbg.btf import parse_btf

    # base "vmlinux": [1] INT 'int'
    base = parse_btf(_blob(struct.pack("<IIII", 1, 1 << 24, 4, 32), b"\0int\0"))
    # module: [2] FUNC_PROTO int (void), [3] FUNC 'nft_do_chain' -> 2 (string offsets after base's)
    soff = base.header.str_len
    mod = struct.pack("<III", 0, 13 << 24, 1) + struct.pack("<III", soff + 1, (12 << 24) | 1, 2)
    (tmp_path / "nf_tables").write_bytes(_blob(mod, b"\0nft_do_chain\0"))
    assert probe._fentry_target(base, "nft_do_chain", "nf_tables", str(tmp_path)) == (3, "nf_tables")
    with pytest.raises(probe._SysErr) as exc:
        probe._fentry_target(base, "nft_do_chain", "nf_tables", str(tmp_path / "nope"))
    assert "module nf_tables not loaded" in exc.value.detail
    # built in: found in vmlinux first
    tiny = parse_btf((FIX.parent / "btf" / "tiny.btf").read_bytes())
    assert probe._fentry_target(tiny, "nft_do_chain", "nf_tables", str(tmp_path)) == (30, "")
