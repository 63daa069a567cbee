"""`ipdbg doctor -o json` against reality on this host.

The expectations are not written down from memory: each one is checked against an
independent source, so a probe that guessed (or hard-coded the project's host) fails:
* libbpf itself (libbpf.so.1 through ctypes) loads and attaches the same kind of
  program from an object compiled here with clang, and must agree with doctor;
* /proc/config.gz says whether CONFIG_KPROBES is set;
* prog ids the kernel assigned must be fresh in every run (a real load each time);
* afterwards, no program of ours is loaded and no fd is left open.
On the project's host that means: tp_btf ok, fentry refused (EPERM at load), kprobe
missing (no CONFIG_KPROBES), tier "tracepoint".
"""

import ctypes
import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from ipdbg.commands.doctor import doctor

CLANG = shutil.which("clang")


def run_doctor_json():
    res = CliRunner().invoke(doctor, ["-o", "json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.fixture(scope="module")
def report():
    return run_doctor_json()


# -- an independent oracle: libbpf ------------------------------------------

SRC = """
#define SEC(n) __attribute__((section(n), used))
char LICENSE[] SEC("license") = "GPL";
SEC("%s") int ipdbg_oracle(void *ctx) { return 0; }
"""


def libbpf_try(section, tmp_path):
    """(load errno, attach errno) from libbpf for a do-nothing program in ``section``;
    0 means it worked. Everything is closed before returning."""
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_object__open_file.restype = ctypes.c_void_p
    lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.bpf_object__load.argtypes = [ctypes.c_void_p]
    lib.bpf_object__next_program.restype = ctypes.c_void_p
    lib.bpf_object__next_program.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.bpf_program__attach.restype = ctypes.c_void_p
    lib.bpf_program__attach.argtypes = [ctypes.c_void_p]
    lib.bpf_link__destroy.argtypes = [ctypes.c_void_p]
    lib.bpf_object__close.argtypes = [ctypes.c_void_p]
    name = section.replace("/", "_")
    src, obj = tmp_path / f"{name}.c", tmp_path / f"{name}.o"
    src.write_text(SRC % section)
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    o = lib.bpf_object__open_file(str(obj).encode(), None)
    assert o, "libbpf could not open %s" % obj
    try:
        err = lib.bpf_object__load(o)
        if err:
            return -err, None
        prog = lib.bpf_object__next_program(o, None)
        link = lib.bpf_program__attach(prog)
        if not link:
            return 0, ctypes.get_errno()
        lib.bpf_link__destroy(link)
        return 0, 0
    finally:
        lib.bpf_object__close(o)


def expected_from_libbpf(load_err, attach_err):
    if load_err == 0 and attach_err == 0:
        return "ok"
    err = load_err or attach_err
    return "refused" if err in (1, 13) else "missing"  # EPERM, EACCES


@pytest.mark.skipif(CLANG is None, reason="clang not installed")
@pytest.mark.parametrize(
    "mech,section",
    [
        ("tp_btf", "tp_btf/kfree_skb"),
        ("raw_tp", "raw_tp/kfree_skb"),
        ("fentry", "fentry/nft_do_chain"),
        ("kprobe", "kprobe/nft_do_chain"),
    ],
)
def test_probe_agrees_with_libbpf(report, tmp_path, mech, section):
    load_err, attach_err = libbpf_try(section, tmp_path)
    got = report["probes"][mech]
    assert got["status"] == expected_from_libbpf(load_err, attach_err), (got, load_err, attach_err)
    if load_err:
        assert (got["step"], got["error"]) == ("load", errno.errorcode[load_err])
    elif attach_err:
        assert got["step"] == "attach"


def kernel_config(option):
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith(option + "="):
                    return line.strip().split("=", 1)[1]
    except OSError:
        pytest.skip("no /proc/config.gz")
    return None


def test_kprobe_matches_kernel_config(report):
    k = report["probes"]["kprobe"]
    if kernel_config("CONFIG_KPROBES") == "y":
        assert k["status"] == "ok", k
    else:
        assert k["status"] == "missing" and k["step"] == "attach" and k["error"] == "ENOENT", k
        assert not os.path.exists("/sys/bus/event_source/devices/kprobe")


def test_this_host(report):
    """The project's host (kernel-notes.md): each fact is also checked above by libbpf."""
    p = report["probes"]
    assert p["tp_btf"]["status"] == "ok"
    assert p["tracepoint"]["status"] == "ok"
    assert p["fentry"]["status"] == "refused"
    assert (p["fentry"]["step"], p["fentry"]["error"]) == ("load", "EPERM")
    assert p["kprobe"]["status"] == "missing"
    assert report["tier"] == "tracepoint"
    assert report["btf"]["netfilter_drop"] is not None


def test_prog_ids_are_fresh_loads():
    """Each run loads programs for real: the kernel hands out new, increasing ids."""
    a = run_doctor_json()["probes"]
    b = run_doctor_json()["probes"]
    ids_a = [a[m]["prog_id"] for m in ("tp_btf", "raw_tp", "tracepoint")]
    ids_b = [b[m]["prog_id"] for m in ("tp_btf", "raw_tp", "tracepoint")]
    assert all(isinstance(i, int) and i > 0 for i in ids_a + ids_b)
    assert len(set(ids_a)) == 3 and min(ids_b) > max(ids_a)


def test_versions_match_the_tools(report):
    out = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    assert f"v{report['iptables']['version']} ({report['iptables']['backend']})" in out
    out = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout
    assert f"v{report['nft_version']} " in out
    assert report["kernel"] == os.uname().release


def _loaded(ids):
    """Those of ``ids`` still loaded (by id: a concurrent doctor run elsewhere may hold
    programs with the same name)."""
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return [p for p in json.loads(out or "[]") if p.get("id") in ids]


@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed")
def test_nothing_left_behind():
    before = set(os.listdir("/proc/self/fd"))
    rep = run_doctor_json()
    after = set(os.listdir("/proc/self/fd"))
    assert after <= before, f"fds left open: {after - before}"
    ids = {rep["probes"][m]["prog_id"] for m in rep["probes"]} - {None}
    assert ids
    # Programs are freed after an RCU grace period: wait a little for them to go.
    deadline = time.monotonic() + 5
    while _loaded(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _loaded(ids) == []
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True).stdout or "[]")
    assert not [lk for lk in links if lk.get("prog_id") in ids]


def test_without_capabilities_still_runs():
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    p = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c",
         "import sys; from ipdbg.cli import main; main(sys.argv[1:])", "doctor", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["tier"] is None
    assert rep["capabilities"] == {"CAP_NET_ADMIN": False, "CAP_BPF": False, "CAP_PERFMON": False, "CAP_SYS_ADMIN": False}
    for m, r in rep["probes"].items():
        assert r["status"] == "warning" and "CAP_BPF" in r["detail"], r
