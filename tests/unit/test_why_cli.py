"""why-dropped / trace / demo command lines without root: usage errors, help, probes."""

import json
import os

import pytest

from ipdbg import errors
from ipdbg.cli import main
from ipdbg.commands.why import build_probe
from ipdbg.filters import build_filter
from ipdbg.record import parse_event_record
from ipdbg.render import format_trace_json, format_trace_line

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "correlate")


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("argv, text", [
    (["why-dropped"], "give at least one of --dst"),
    (["why-dropped", "--dst", "198.51.100.0/24:80", "--probe"], "--probe needs --dst with one address"),
    (["why-dropped", "--dst", "198.51.100.80", "--proto", "udp", "--probe"], "needs a port"),
    (["why-dropped", "--dst", "nothost:80"], "not an IPv4/IPv6 address"),
    (["why-dropped", "--dst", "198.51.100.80:80", "--src", "[2001:db8::1]:1"], "different IP versions"),
    (["why-dropped", "--dst", "198.51.100.80", "--proto", "sctp"], "Invalid value for '--proto'"),
    (["trace"], "give at least one of --dst"),
])
def test_usage_errors_exit_2_before_anything_starts(argv, text, capsys):
    code, out, err = run(argv, capsys)
    assert code == errors.EXIT_USAGE
    assert err.startswith("ipdbg: error: ") and text in err
    assert out == ""


def test_unknown_netns_is_not_found(capsys):
    code, _, err = run(["why-dropped", "--dst", "198.51.100.80", "--netns", "no-such-ns-ipdbg"],
                       capsys)
    assert code == errors.EXIT_NOT_FOUND and "does not exist" in err


@pytest.mark.parametrize("cmd", ["why-dropped", "trace", "demo"])
def test_help_has_examples(cmd, capsys):
    code, out, _ = run([cmd, "--help"], capsys)
    assert code == 0 and "Example" in out


def test_probe_kinds():
    # The probe is chosen from the filter: port -> TCP, no port -> ICMP/ICMPv6.
    assert build_probe(build_filter(dst="198.51.100.80:80"), None, None, None, 1.0)
    assert build_probe(build_filter(dst="2001:db8::1"), None, None, None, 1.0)
    assert build_probe(build_filter(dst="198.51.100.80:53", proto="udp"), "udp", None, None, 1.0)
    with pytest.raises(errors.UsageError):
        build_probe(build_filter(src="10.0.0.1"), None, None, None, 1.0)


def test_trace_lines_from_recorded_events():
    with open(os.path.join(FIXTURES, "user_chain_input.jsonl")) as f:
        events = [parse_event_record(json.loads(line)) for line in f
                  if json.loads(line)["event"] != "rule"]
    lines = [format_trace_line(ev, None, "server", 0, output_tuple=True) for ev in events]
    assert any("nft filter/INPUT rule handle" in line and "JUMP BLOCK" in line for line in lines)
    assert any("kfree_skb NETFILTER_DROP nft_do_chain+" in line and "tcp SYN" in line
               for line in lines)
    obj = json.loads(format_trace_json(events[0], None, "server", 0))
    assert obj["netns_name"] == "server" and obj["tuple"]["dport"] == 80
