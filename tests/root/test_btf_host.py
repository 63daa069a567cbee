"""ipdbg.btf against this host's kernel BTF, cross-checked with bpftool."""

import json
import os
import shutil
import subprocess

import pytest

from ipdbg.btf import format_drop_reason, read_vmlinux_btf

VMLINUX = "/sys/kernel/btf/vmlinux"

pytestmark = pytest.mark.skipif(not os.path.exists(VMLINUX), reason="kernel without BTF")


@pytest.fixture(scope="module")
def kbtf():
    return read_vmlinux_btf(VMLINUX)


def test_drop_reasons(kbtf):
    reasons = kbtf.enum_values("skb_drop_reason")
    assert "SKB_DROP_REASON_NETFILTER_DROP" in reasons
    assert "SKB_DROP_REASON_NO_SOCKET" in reasons
    assert format_drop_reason(reasons["SKB_DROP_REASON_NETFILTER_DROP"], reasons) == "NETFILTER_DROP"


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed")
def test_matches_bpftool(kbtf):
    """The enum, sk_buff's layout and the type count agree with bpftool's decoding."""
    out = subprocess.run(
        ["bpftool", "-j", "btf", "dump", "file", VMLINUX, "format", "raw"],
        check=True, capture_output=True, text=True,
    ).stdout
    types = json.loads(out)["types"]
    assert kbtf.count == len(types)
    by_id = {t["id"]: t for t in types}
    enum = by_id[kbtf.find("skb_drop_reason", "ENUM")]
    # bpftool 7.1's JSON sign-extends 32-bit enum values (SUBSYS_MASK 0xffff0000)
    got = {k: v & 0xFFFFFFFF for k, v in kbtf.enum_values("skb_drop_reason").items()}
    assert got == {v["name"]: v["val"] & 0xFFFFFFFF for v in enum["values"]}
    skb = by_id[kbtf.find("sk_buff", "STRUCT")]
    assert kbtf.struct_size("sk_buff") == skb["size"]
    for m in skb["members"]:
        if m["name"] != "(anon)":
            assert kbtf.member_bit_offset("sk_buff", m["name"]) == m["bits_offset"]
    func = by_id[kbtf.find("nft_do_chain", "FUNC")]
    proto = by_id[func["type_id"]]
    assert [p for p, _ in kbtf.func_proto_params("nft_do_chain")] == [p["name"] for p in proto["params"]]
