"""Real drops in lab namespaces, seen by the BPF drop programs.

Each test makes its hosts, causes one kind of drop (plus, where it matters, a
second flow that is also dropped but excluded by the filter), and checks the
events: reason, packet key, namespace, and the reply events tied to the
dropped skb. Traffic stays between lab hosts, to lab addresses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ipdbg import traffic
from ipdbg.bpf.engine import DropMonitor
from ipdbg.filters import build_filter
from ipdbg.netns import enter_netns

IPDBG = [sys.executable, "-m", "ipdbg.cli"]


def collect(mon: DropMonitor, want, seconds: float = 5.0) -> list:
    """Poll until ``want(events)`` holds or ``seconds`` pass; return all events."""
    events = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events.extend(mon.poll(100))
        if want(events):
            break
    events.extend(mon.poll(0))
    return events


def drops_to(events, dport, reason=None, kind="kfree_skb"):
    return [e for e in events if e.kind == kind and e.key is not None and e.key.dport == dport
            and (reason is None or e.reason_name == reason)]


@pytest.fixture
def pair(lab):
    a = lab.add_host("a")
    b = lab.add_host("b")
    lab.link(a, b, "10.81.0.1/24", "10.81.0.2/24")
    return a, b


def test_attaches_tp_btf_programs():
    with DropMonitor(build_filter(dst="203.0.113.1")) as mon:
        assert mon.ring_reader == "mmap"  # x86-64
        assert mon.tier == "tracepoint"
        assert "tp_btf/kfree_skb" in mon.attached
        # 6.18 has all three tracepoints (include/trace/events/{skb,icmp,tcp}.h)
        assert set(mon.attached) == {"tp_btf/kfree_skb", "tp_btf/icmp_send", "tp_btf/tcp_send_reset"}
        assert mon.lost == 0
        assert mon.fileno() >= 0


def test_iptables_drop_and_excluded_flow(pair):
    a, b = pair
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP"])
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9998", "-j", "DROP"])
    flt = build_filter(dst="10.81.0.2:9999", proto="udp")
    with DropMonitor(flt, netns_inodes=[b.inode]) as mon:
        assert traffic.send_udp(a.netns, "10.81.0.2", 9998, count=3) == "sent"  # excluded
        assert traffic.send_udp(a.netns, "10.81.0.2", 9999, count=3, sport=40999) == "sent"
        events = collect(mon, lambda ev: len(drops_to(ev, 9999)) >= 3)
        # the excluded flow is dropped too: its rule counter says so
        save = b.run(["iptables-save", "-c"]).stdout
        assert "[3:" in save.split("--dport 9998")[0].splitlines()[-1]
    hits = drops_to(events, 9999, "NETFILTER_DROP")
    assert len(hits) == 3
    ev = hits[0]
    assert ev.netns == b.inode
    assert ev.key.src == "10.81.0.1" and ev.key.dst == "10.81.0.2"
    assert ev.key.proto == 17 and ev.key.sport == 40999
    assert ev.location_sym.startswith(("nft_do_chain+", "nf_hook_slow+"))
    assert ev.ifindex > 0
    assert not drops_to(events, 9998), "the filter let an excluded flow through"
    assert all(e.key is not None and e.key.dport == 9999 for e in events)


@pytest.mark.parametrize("reader", ["mmap", "libbpf"])
def test_closed_port_no_socket_and_reset(pair, reader):
    a, b = pair
    with DropMonitor(build_filter(dst="10.81.0.2:81"), netns_inodes=[b.inode], ring_reader=reader) as mon:
        assert mon.ring_reader == reader
        assert traffic.send_tcp_connect(a.netns, "10.81.0.2", 81) == "refused"
        events = collect(mon, lambda ev: drops_to(ev, 81, "NO_SOCKET") and drops_to(ev, 81, kind="tcp_send_reset"))
    drop = drops_to(events, 81, "NO_SOCKET")[0]
    rst = drops_to(events, 81, kind="tcp_send_reset")[0]
    assert drop.key.proto == 6 and drop.tcp_flags & 0x02  # the SYN
    assert drop.location_sym.startswith("tcp_v4_rcv+")
    # the RST event names the very skb that was dropped, with the same packet
    assert rst.skb == drop.skb
    assert rst.key == drop.key
    assert rst.netns == drop.netns == b.inode


def test_reject_ties_icmp_error_to_drop(pair):
    a, b = pair
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9997", "-j", "REJECT"])
    with DropMonitor(build_filter(dst="10.81.0.2:9997"), netns_inodes=[b.inode]) as mon:
        traffic.send_udp(a.netns, "10.81.0.2", 9997)
        events = collect(mon, lambda ev: drops_to(ev, 9997) and drops_to(ev, 9997, kind="icmp_send"))
    drop = drops_to(events, 9997, "NETFILTER_DROP")[0]
    icmp = drops_to(events, 9997, kind="icmp_send")[0]
    assert icmp.skb == drop.skb and icmp.key == drop.key
    assert (icmp.icmp_type, icmp.icmp_code) == (3, 3)  # port unreachable: REJECT's default


def test_no_route_in_and_rp_filter(lab):
    a, r, c = lab.add_host("a"), lab.add_host("r"), lab.add_host("c")
    lab.link(a, r, "10.82.0.1/24", "10.82.0.2/24")
    lab.link(r, c, "10.82.1.1/24", "10.82.1.2/24")
    c.run(["ip", "addr", "add", "198.51.100.80/32", "dev", "lo"])  # r has no route to it
    a.run(["ip", "route", "add", "198.51.100.0/24", "via", "10.82.0.2"])
    a.run(["ip", "addr", "add", "10.82.1.9/32", "dev", "lo"])  # r routes 10.82.1.0/24 via c
    r.sysctl("net.ipv4.ip_forward", 1)
    r.sysctl("net.ipv4.conf.all.rp_filter", 1)
    r.sysctl("net.ipv4.conf.eth0.rp_filter", 1)
    with DropMonitor(build_filter(src="10.82.0.0/23", proto="udp"), netns_inodes=[r.inode]) as mon:
        traffic.send_udp(a.netns, "198.51.100.80", 7777)
        traffic.send_udp(a.netns, "10.82.0.2", 7778, src="10.82.1.9")
        events = collect(mon, lambda ev: drops_to(ev, 7777) and drops_to(ev, 7778))
    noroute = drops_to(events, 7777)
    assert [e.reason_name for e in noroute] == ["IP_INNOROUTES"]
    icmp = drops_to(events, 7777, kind="icmp_send")
    assert icmp and icmp[0].skb == noroute[0].skb and icmp[0].icmp_type == 3
    rpf = drops_to(events, 7778)
    assert [e.reason_name for e in rpf] == ["IP_RPFILTER"]
    assert rpf[0].key.src == "10.82.1.9"


def test_no_route_out(pair):
    """An established TCP flow whose route turns unreachable: __ip_queue_xmit drops
    with IP_OUTNOROUTES (net/ipv4/ip_output.c) in the sender's netns."""
    a, b = pair
    with enter_netns(b.netns):
        srv = socket.create_server(("10.81.0.2", 8085))
    with enter_netns(a.netns):
        cli = socket.create_connection(("10.81.0.2", 8085), timeout=2)
    try:
        conn, _ = srv.accept()
        sport = cli.getsockname()[1]
        a.run(["ip", "route", "add", "unreachable", "10.81.0.2/32"])
        with DropMonitor(build_filter(src=f"10.81.0.1:{sport}", proto="tcp"),
                         netns_inodes=[a.inode], reasons=["IP_OUTNOROUTES"]) as mon:
            cli.send(b"x" * 100)
            events = collect(mon, lambda ev: drops_to(ev, 8085))
        hits = drops_to(events, 8085)
        assert hits and all(e.reason_name == "IP_OUTNOROUTES" for e in hits)
        assert hits[0].netns == a.inode and hits[0].key.sport == sport
        assert hits[0].comm  # the sending task
        conn.close()
    finally:
        cli.close()
        srv.close()


def test_reason_filter_keeps_other_reasons_out(pair):
    a, b = pair
    b.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "82", "-j", "DROP"])
    with DropMonitor(build_filter(dst="10.81.0.2"), netns_inodes=[b.inode], reasons=["NO_SOCKET"]) as mon:
        traffic.send_tcp_connect(a.netns, "10.81.0.2", 82, timeout=0.3)  # NETFILTER_DROP: excluded
        traffic.send_tcp_connect(a.netns, "10.81.0.2", 83)  # closed: NO_SOCKET
        events = collect(mon, lambda ev: drops_to(ev, 83, "NO_SOCKET"))
    assert drops_to(events, 83, "NO_SOCKET")
    assert not drops_to(events, 82)
    assert {e.reason_name for e in events if e.kind == "kfree_skb"} == {"NO_SOCKET"}


def test_netns_filter_keeps_other_namespaces_out(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    c, d = lab.add_host("c"), lab.add_host("d")
    lab.link(a, b, "10.83.0.1/24", "10.83.0.2/24")
    lab.link(c, d, "10.83.0.1/24", "10.83.0.2/24")  # same addresses, other namespaces
    with DropMonitor(build_filter(dst="10.83.0.2:84"), netns_inodes=[b.inode]) as mon:
        traffic.send_tcp_connect(c.netns, "10.83.0.2", 84)  # excluded: in d
        traffic.send_tcp_connect(a.netns, "10.83.0.2", 84)
        events = collect(mon, lambda ev: drops_to(ev, 84, "NO_SOCKET"))
    hits = drops_to(events, 84)
    assert hits and {e.netns for e in events} == {b.inode}


def test_netns_filter_beyond_16_namespaces(lab):
    # 11 pairs with the same addresses: 20 watched namespaces (the BPF hash map,
    # no longer a 16-slot array), the 11th pair is not watched.
    pairs = []
    for i in range(11):
        a, b = lab.add_host(f"a{i}"), lab.add_host(f"b{i}")
        lab.link(a, b, "10.87.0.1/24", "10.87.0.2/24")
        pairs.append((a, b))
    watched = [h.inode for a, b in pairs[:10] for h in (a, b)]
    assert len(set(watched)) == 20
    with DropMonitor(build_filter(dst="10.87.0.2:85"), netns_inodes=watched,
                     kinds=("kfree_skb",)) as mon:
        for a, _ in reversed(pairs):  # the excluded pair first
            traffic.send_tcp_connect(a.netns, "10.87.0.2", 85)  # closed: NO_SOCKET in b
        want = {b.inode for _, b in pairs[:10]}
        events = collect(mon, lambda ev: {e.netns for e in drops_to(ev, 85)} >= want)
    hits = drops_to(events, 85, "NO_SOCKET")
    assert {e.netns for e in hits} == want
    assert pairs[10][1].inode not in {e.netns for e in events}


@pytest.mark.parametrize("flavour", ["tp_btf", "raw_tp"])
def test_iface_filter_in_kernel(lab, flavour):
    # Two links between c and s; UDP dropped on INPUT of s and on OUTPUT of c (no
    # skb->dev yet there: the route's device counts). Only eth1's drops come up.
    c, s = lab.add_host("c"), lab.add_host("s")
    lab.link(c, s, "10.88.0.1/24", "10.88.0.2/24")  # eth0 on both
    lab.link(c, s, "10.89.0.1/24", "10.89.0.2/24")  # eth1 on both
    s.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9990", "-j", "DROP"])
    c.run(["iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9991", "-j", "DROP"])
    with enter_netns(s.netns):
        eth1_s = socket.if_nametoindex("eth1")
    with DropMonitor(build_filter(proto="udp"), netns_inodes=[c.inode, s.inode], iface="eth1",
                     kinds=("kfree_skb",), flavours=(flavour,)) as mon:
        assert mon.attached == [f"{flavour}/kfree_skb"]
        for dst in ("10.88.0.2", "10.89.0.2"):
            assert traffic.send_udp(c.netns, dst, 9990, count=2) == "sent"
            traffic.send_udp(c.netns, dst, 9991, count=2)
        events = collect(mon, lambda ev: len(drops_to(ev, 9990)) >= 2 and len(drops_to(ev, 9991)) >= 2)
    nf = [e for e in events if e.reason_name == "NETFILTER_DROP"]
    assert {(e.key.dst, e.key.dport) for e in nf} == {("10.89.0.2", 9990), ("10.89.0.2", 9991)}
    assert {e.ifindex for e in drops_to(events, 9990)} == {eth1_s}
    assert {e.netns for e in drops_to(events, 9991)} == {c.inode}
    # the same traffic without the filter: eth0's drops are there (the test can fail)
    with DropMonitor(build_filter(proto="udp", dst="10.88.0.2"), netns_inodes=[s.inode],
                     kinds=("kfree_skb",)) as mon:
        traffic.send_udp(c.netns, "10.88.0.2", 9990)
        assert drops_to(collect(mon, lambda ev: drops_to(ev, 9990)), 9990)


def test_ipv6_drop(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, "fd00:81::1/64", "fd00:81::2/64")
    b.run(["ip6tables", "-A", "INPUT", "-p", "udp", "--dport", "9996", "-j", "DROP"])
    with DropMonitor(build_filter(dst="[fd00:81::2]:9996"), netns_inodes=[b.inode]) as mon:
        traffic.send_udp(a.netns, "fd00:81::2", 9996)
        events = collect(mon, lambda ev: drops_to(ev, 9996))
    ev = drops_to(events, 9996, "NETFILTER_DROP")[0]
    assert ev.key.family == 6 and ev.key.src == "fd00:81::1" and ev.key.proto == 17


def _start_cli(args, ready):
    env = dict(os.environ)
    proc = subprocess.Popen(IPDBG + ["drops"] + args + ["--ready-file", ready],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=5) if proc.poll() is None else proc.communicate()
            pytest.fail(f"ipdbg drops did not get ready: rc={proc.returncode} {err}")
        time.sleep(0.05)
    return proc


def test_cli_json_count(pair, tmp_path):
    a, b = pair
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9995", "-j", "DROP"])
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9994", "-j", "DROP"])
    proc = _start_cli(["--dst", "10.81.0.2:9995", "--netns", b.netns, "-o", "json", "--count", "2",
                       "--timeout", "20"], str(tmp_path / "ready"))
    traffic.send_udp(a.netns, "10.81.0.2", 9994, count=2)  # excluded
    traffic.send_udp(a.netns, "10.81.0.2", 9995, count=2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    events, summary = lines[:-1], lines[-1]["summary"]
    assert [e["dport"] for e in events] == [9995, 9995]
    assert all(e["reason"] == "NETFILTER_DROP" and e["netns"] == b.inode for e in events)
    assert summary["drops"] == 2 and summary["lost"] == 0
    assert summary["by_reason"] == {"NETFILTER_DROP": 2}


def test_cli_text_sigterm_summary(pair, tmp_path):
    a, b = pair
    proc = _start_cli(["--dst", "10.81.0.2:86", "--reason", "NO_SOCKET"], str(tmp_path / "ready"))
    traffic.send_tcp_connect(a.netns, "10.81.0.2", 86)
    time.sleep(0.5)  # let the event reach the output before we stop it
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = out.splitlines()
    assert any("tcp 10.81.0.1:" in ln and "-> 10.81.0.2:86 [SYN]" in ln and "NO_SOCKET" in ln
               and "tcp_v4_rcv+0x" in ln for ln in lines), out
    assert any("TCP_RESET_SENT" in ln for ln in lines), out
    assert lines[-2].startswith("-- 1 drops, 0 events lost"), out
    assert "NO_SOCKET  tcp_v4_rcv+0x" in lines[-1]


def test_cli_without_bpf_capabilities_exits_4():
    # root without capabilities: the bounding set is empty, so exec keeps none.
    proc = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
                          + IPDBG + ["drops", "--timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert "CAP_BPF" in err[0] and "CAP_PERFMON" in err[0]
    assert not proc.stdout


def test_raw_tp_fallback_sees_the_same_drop(pair):
    a, b = pair
    with DropMonitor(build_filter(dst="10.81.0.2:87"), netns_inodes=[b.inode],
                     flavours=("raw_tp",)) as mon:
        assert set(mon.attached) == {"raw_tp/kfree_skb", "raw_tp/icmp_send", "raw_tp/tcp_send_reset"}
        traffic.send_tcp_connect(a.netns, "10.81.0.2", 87)
        events = collect(mon, lambda ev: drops_to(ev, 87, "NO_SOCKET") and drops_to(ev, 87, kind="tcp_send_reset"))
    drop = drops_to(events, 87, "NO_SOCKET")[0]
    assert drop.key.src == "10.81.0.1" and drop.netns == b.inode and drop.tcp_flags == 0x02
    assert drops_to(events, 87, kind="tcp_send_reset")[0].skb == drop.skb


def test_failed_flavour_names_the_step():
    import os.path

    from ipdbg.errors import KernelError

    if os.path.exists("/sys/kernel/tracing/events/skb/kfree_skb/id") or \
            os.path.exists("/sys/kernel/debug/tracing/events/skb/kfree_skb/id"):
        pytest.skip("tracefs is mounted here: the classic tracepoint would attach")
    with pytest.raises(KernelError) as exc:
        with DropMonitor(build_filter(dst="203.0.113.1"), flavours=("tracepoint",)):
            pass
    # classic tracepoints need tracefs for their id: the attach step fails, with errno text
    assert "attaching tracepoint/skb/kfree_skb" in exc.value.message
    assert "ENOENT" in exc.value.message
    # libbpf's own words, captured through its print callback (vsnprintf of its va_list)
    assert "failed to create tracepoint 'skb/kfree_skb'" in exc.value.message


def test_doctor_section_lists_what_attaches():
    from ipdbg.bpf.engine import read_drop_program_rows

    rows = {r["item"]: r for r in read_drop_program_rows()}
    for name in ("tp_btf/kfree_skb", "tp_btf/icmp_send", "tp_btf/tcp_send_reset"):
        assert rows[name]["status"] == "ok" and "link id" in rows[name]["detail"]
    out = subprocess.run(IPDBG + ["doctor"], capture_output=True, text=True, timeout=120).stdout
    assert "drop programs (ipdbg drops):" in out and "tp_btf/kfree_skb" in out


@pytest.mark.parametrize("reader", ["mmap", "libbpf"])
def test_many_events_in_order_across_batches(pair, reader):
    """More records than one read batch (64 KiB): none lost, none repeated, in order."""
    a, b = pair
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "9993", "-j", "DROP"])
    n = 3000
    with DropMonitor(build_filter(dst="10.81.0.2:9993"), netns_inodes=[b.inode], ring_reader=reader) as mon:
        a.run(["python3", "-c", "import socket\n"
               "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               f"for i in range({n}): s.sendto(i.to_bytes(4, 'big'), ('10.81.0.2', 9993))\n"])
        events = collect(mon, lambda ev: len(ev) >= n)
        assert mon.lost == 0
    assert len(events) == n
    ts = [e.ts_ns for e in events]
    assert ts == sorted(ts)
    assert len({(e.key.ident, e.skb, e.ts_ns) for e in events}) == n


def test_icmp_echo_id_and_seq_in_port_fields(pair):
    a, b = pair
    b.run(["iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP"])
    with DropMonitor(build_filter(dst="10.81.0.2", proto="icmp"), netns_inodes=[b.inode]) as mon:
        traffic.send_icmp_echo(a.netns, "10.81.0.2", ident=0x4242, seq=7, timeout=0.3)
        events = collect(mon, lambda ev: any(e.kind == "kfree_skb" for e in ev))
    ev = [e for e in events if e.kind == "kfree_skb"][0]
    assert ev.reason_name == "NETFILTER_DROP"
    assert (ev.key.proto, ev.key.sport, ev.key.dport) == (1, 0x4242, 7)


def test_cli_dump_raw_records_decode_to_printed_events(pair, tmp_path):
    from ipdbg.bpf.decode import decode_drop_event

    a, b = pair
    raw = tmp_path / "raw.hex"
    proc = _start_cli(["--dst", "10.81.0.2:88", "-o", "json", "--count", "1", "--timeout", "20",
                       "--dump-raw", str(raw)], str(tmp_path / "ready"))
    traffic.send_tcp_connect(a.netns, "10.81.0.2", 88)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    printed = [json.loads(line) for line in out.splitlines()][:-1]
    records = [bytes.fromhex(line) for line in raw.read_text().split()]
    decoded = [decode_drop_event(r) for r in records]
    assert [(e.kind, e.skb, e.key.sport) for e in decoded][:len(printed)] == \
        [(p["kind"], int(p["skb"], 16), p["sport"]) for p in printed]


def test_flavour_that_cannot_attach_falls_back_to_the_next():
    import os.path

    if os.path.exists("/sys/kernel/tracing/events/skb/kfree_skb/id") or \
            os.path.exists("/sys/kernel/debug/tracing/events/skb/kfree_skb/id"):
        pytest.skip("tracefs is mounted here: the classic tracepoint would attach")
    with DropMonitor(build_filter(dst="203.0.113.1"), flavours=("tracepoint", "raw_tp")) as mon:
        assert "raw_tp/kfree_skb" in mon.attached
        assert len(mon.load_failures) == 1 and mon.load_failures[0].startswith("tracepoint: attaching")
        ids = mon.link_ids
    # the tracepoint attempt left nothing behind, and neither does the monitor
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            subprocess.run(["bpftool", "link", "show", "id", str(i)], capture_output=True).returncode == 0
            for i in ids):
        time.sleep(0.1)
    assert not any(subprocess.run(["bpftool", "link", "show", "id", str(i)], capture_output=True).returncode == 0
                   for i in ids)


def test_cli_debug_shows_libbpf_and_verifier_log():
    proc = subprocess.run(IPDBG + ["--debug", "drops", "--dst", "203.0.113.9", "--timeout", "0.1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "libbpf: prog 'ipdbg_kfree_skb_btf': -- BEGIN PROG LOAD LOG --" in proc.stderr
    assert "processed " in proc.stderr  # the verifier's summary line
    assert "attached tp_btf/kfree_skb" in proc.stderr
    assert proc.stdout.startswith("-- 0 drops, 0 events lost")


def test_cli_buffer_must_be_a_power_of_two():
    bad = subprocess.run(IPDBG + ["drops", "--buffer", "48", "--timeout", "0.1"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "not a power of two" in bad.stderr
    ok = subprocess.run(IPDBG + ["drops", "--buffer", "64", "--dst", "203.0.113.9", "--timeout", "0.1"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_tp_btf_and_raw_tp_read_the_same_keys(lab):
    """The tp_btf programs read headers in place with wide loads, raw_tp copies
    them out field by field (drops.bpf.c): both must report the same key for
    TCP, UDP and ICMP echo, over IPv4 (with and without IP options) and IPv6."""
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, b, ["10.81.0.1/24", "fd00:81::1/64"], ["10.81.0.2/24", "fd00:81::2/64"])
    for tool in ("iptables", "ip6tables"):
        b.run([tool, "-A", "INPUT", "-p", "tcp", "--dport", "9101", "-j", "DROP"])
        b.run([tool, "-A", "INPUT", "-p", "udp", "-m", "multiport", "--dports", "9102,9103", "-j", "DROP"])
    b.run(["iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP"])
    b.run(["ip6tables", "-A", "INPUT", "-p", "icmpv6", "--icmpv6-type", "echo-request", "-j", "DROP"])
    mons = [DropMonitor(None, netns_inodes=[b.inode], flavours=(f,), kinds=("kfree_skb",))
            for f in ("tp_btf", "raw_tp")]
    with mons[0] as btf, mons[1] as raw:
        assert btf.attached == ["tp_btf/kfree_skb"] and raw.attached == ["raw_tp/kfree_skb"]
        for dst in ("10.81.0.2", "fd00:81::2"):
            traffic.send_tcp_connect(a.netns, dst, 9101, timeout=0.3, sport=40101)
            traffic.send_udp(a.netns, dst, 9102, sport=40102)
            traffic.send_icmp_echo(a.netns, dst, ident=0x5151, seq=9, timeout=0.3)
        # IPv4 with options (ihl 6): NOP NOP NOP EOL
        with enter_netns(a.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")
            s.bind(("10.81.0.1", 40103))
            s.sendto(b"options", ("10.81.0.2", 9103))
        finally:
            s.close()

        def keys(mon):
            # (skb addresses are reused: count events, not skbs)
            evs = collect(mon, lambda ev: sum(e.reason_name == "NETFILTER_DROP" for e in ev) >= 7)
            return {(e.skb, e.key, e.tcp_flags) for e in evs if e.reason_name == "NETFILTER_DROP"}

        got_btf, got_raw = keys(btf), keys(raw)
    assert got_btf == got_raw
    assert len(got_btf) == 7
    by_port = {k.dport: k for _, k, _ in got_btf if k.proto in (6, 17)}
    v4 = {k.proto: k for _, k, _ in got_btf if k.family == 4}
    tcp = [(k, flags) for _, k, flags in got_btf if k.proto == 6]
    assert {k.family for k, _ in tcp} == {4, 6}
    assert all(k.sport == 40101 and k.dport == 9101 and k.seq and flags == 0x02 for k, flags in tcp)
    assert by_port[9103].sport == 40103 and by_port[9103].src == "10.81.0.1"
    echo = [k for _, k, _ in got_btf if k.proto in (1, 58)]
    assert {k.family for k in echo} == {4, 6} and all((k.sport, k.dport) == (0x5151, 9) for k in echo)
    assert v4[17].dst == "10.81.0.2" and v4[17].ident
