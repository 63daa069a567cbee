"""Text and JSON for why-dropped answers and trace streams (pure: values in, str out)."""

from __future__ import annotations

import dataclasses
import json
import time

from .correlate import (VERDICT_ACCEPTED, VERDICT_UNSEEN, Explanation, PathStep,
                        format_nft_family, format_tuple_json)
from .events import (IPPROTO_TCP, IPPROTO_UDP, TRACE_POLICY, TRACE_RETURN, DropEvent,
                     PacketKey, TraceEvent, format_tcp_flags)

LABEL_WIDTH = 9  # "DROPPED  ", "  rule     "


def format_endpoint(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port else host


def format_key(key: PacketKey | None, flags: int = 0) -> str:
    """``10.0.0.1:33248 -> 198.51.100.80:80 tcp SYN``."""
    if key is None:
        return "(not IP)"
    ports = key.proto in (IPPROTO_TCP, IPPROTO_UDP)
    text = (f"{format_endpoint(key.src, key.sport if ports else None)} -> "
            f"{format_endpoint(key.dst, key.dport if ports else None)} {key.proto_name}")
    if not ports and key.proto and (key.sport or key.dport):
        text += f" id {key.sport} seq {key.dport}"
    if flags and key.proto == IPPROTO_TCP:
        text += " " + format_tcp_flags(flags)
    return text


def format_step(step: PathStep) -> str:
    where = f"{step.table}/{step.chain}"
    if step.type == TRACE_POLICY:
        return f"{where} policy {step.verdict.upper()}"
    if step.type == TRACE_RETURN:
        return f"{where} return"
    line = f" {step.line}" if step.line is not None else (
        f" handle {step.handle}" if step.handle is not None else "")
    text = f"{where} rule{line} {step.verdict.upper()}"
    if step.target:
        text += f" {step.target}"
    return text


def format_path(path: list[PathStep]) -> str:
    return " -> ".join(format_step(s) for s in path)


def format_rule(rule, step: PathStep | None = None) -> str:
    if rule.backend == "nftables":
        where = f"{format_nft_family(rule, step)} {rule.table}/{rule.chain}"
        pos = f"line {rule.line}" if rule.line is not None else ""
        if rule.handle is not None:
            pos = (pos + ", " if pos else "") + f"handle {rule.handle}"
        return f"{where} {pos}: {rule.text}"
    backend = " (iptables-legacy)" if rule.backend == "legacy" else ""
    return f"{rule.table}/{rule.chain} line {rule.line}{backend}: {rule.text}"


def _shows_process(exp: Explanation) -> bool:
    # On receive, the task in context is whoever ran the softirq (often the
    # sender in another netns): naming it would mislead. On output it is the sender.
    return bool(exp.pid or exp.comm) and (exp.hook in ("OUTPUT", "POSTROUTING")
                                          or exp.reason.startswith("IP_OUT"))


def format_explanation(exp: Explanation) -> str:
    """The architecture.md shape: a headline and labelled lines."""
    lines = []
    netns = exp.netns_label or (str(exp.netns) if exp.netns else "")
    if exp.verdict == VERDICT_UNSEEN:
        head = f"{'UNSEEN':<{LABEL_WIDTH}}{exp.filter_text}"
        if netns:
            head += f"  (netns {netns})"
        lines.append(head)
        lines.append(f"  {'note':<9}{exp.note}")
        return "\n".join(lines)
    head = f"{exp.verdict.upper():<{LABEL_WIDTH}}{format_key(exp.key, exp.tcp_flags)}"
    who = []
    if _shows_process(exp):
        who.append(f"{exp.comm or '?'}, pid {exp.pid}" if exp.pid else exp.comm)
    if netns:
        who.append(f"netns {netns}")
    if who:
        head += f"  ({', '.join(who)})"
    if exp.count > 1:
        head += f"  x{exp.count}"
    lines.append(head)

    def add(label: str, text: str) -> None:
        if text:
            lines.append(f"  {label:<9}{text}")

    if exp.nat_after is not None:
        add("nat", f"became {format_key(exp.nat_after)}")
    from_trace = exp.rule is None and exp.path and exp.verdict != VERDICT_ACCEPTED
    if exp.rule is not None:
        add("rule", format_rule(exp.rule, exp.path[-1] if exp.path else None))
    elif from_trace:  # a policy, or a rule whose text we could not read back
        add("rule", format_step(exp.path[-1]))
    add("path", format_path(exp.path))
    if exp.reply:
        add("reply", exp.reply)
    if exp.verdict != VERDICT_ACCEPTED and exp.reason:
        kernel = exp.reason + (f" at {exp.location}" if exp.location else "")
        if exp.hook:
            kernel += f" (hook {exp.hook})"
        if exp.rule is None and exp.note and not from_trace:
            kernel += f": {exp.note}"
        add("kernel", kernel)
        if exp.rule is not None or from_trace:
            add("note", exp.note)
    elif exp.note:
        add("note", exp.note)
    add("fix", exp.fix or "")
    if exp.fix_delete:
        add("or", exp.fix_delete)
    return "\n".join(lines)


def format_explanation_json(exp: Explanation) -> str:
    return json.dumps(exp.to_json(), sort_keys=False)


def format_lost(lost: dict[str, int]) -> str:
    """``lost events: 3 kernel (ring buffer), 0 trace (netlink)``; '' when none."""
    parts = [f"{n} {what}" for what, n in lost.items() if n]
    return ("lost events: " + ", ".join(parts)) if parts else ""


# ------------------------------------------------------------------ trace stream

def format_time(ts_ns: int, clock_offset_ns: int = 0) -> str:
    """CLOCK_MONOTONIC + offset (realtime - monotonic) as HH:MM:SS.uuuuuu."""
    wall = (ts_ns + clock_offset_ns) / 1e9
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1e6) % 1000000:06d}"


TRACE_HEADER = f"{'TIME':<15} {'SKB':<18} {'PROCESS':<16} {'NETNS':<18} EVENT"


def format_trace_line(ev, rule=None, netns_label: str = "", clock_offset_ns: int = 0,
                      output_tuple: bool = False) -> str:
    """One line per event, in the spirit of pwru."""
    netns = netns_label or str(ev.netns)
    if isinstance(ev, DropEvent):
        skb = f"{ev.skb:#x}" if ev.skb else "-"
        proc = f"{ev.comm}/{ev.pid}" if ev.pid else (ev.comm or "-")
        if ev.kind == "kfree_skb":
            what = f"kfree_skb {ev.reason_name or ev.reason} {ev.location_sym}".rstrip()
        elif ev.kind == "icmp_send":
            what = f"icmp_send type {ev.icmp_type} code {ev.icmp_code}"
        else:
            what = ev.kind
        key, flags = ev.key, ev.tcp_flags
    else:
        skb = f"id:{ev.trace_id:#010x}"
        proc = "-"
        what = _trace_event_text(ev, rule)
        key, flags = ev.key, 0
    line = (f"{format_time(ev.ts_ns, clock_offset_ns):<15} {skb:<18} {proc[:16]:<16} "
            f"{netns[-18:]:<18} {what}")
    if output_tuple and key is not None:
        line += f"  {format_key(key, flags)}"
    return line


def _trace_event_text(ev: TraceEvent, rule) -> str:
    src = "legacy" if ev.source == "legacy" else "nft"
    where = f"{ev.table}/{ev.chain}"
    if ev.type == TRACE_POLICY:
        return f"{src} {where} policy {(ev.policy or ev.verdict).upper()}"
    if ev.type == TRACE_RETURN:
        return f"{src} {where} return"
    line = getattr(rule, "line", None) if rule is not None else ev.rulenum
    pos = f" line {line}" if line is not None else (
        f" handle {ev.handle}" if ev.handle is not None else "")
    text = f"{src} {where} rule{pos} {(ev.verdict or 'continue').upper()}"
    if ev.jump_target:
        text += f" {ev.jump_target}"
    if rule is not None and getattr(rule, "text", ""):
        text += f"  [{rule.text}]"
    return text


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def format_trace_json(ev, rule=None, netns_label: str = "", clock_offset_ns: int = 0) -> str:
    """One JSON object per event (``trace -o json``)."""
    out = {"event": "drop" if isinstance(ev, DropEvent) else "trace",
           "time": (ev.ts_ns + clock_offset_ns) / 1e9, "netns_name": netns_label or None}
    data = _plain(ev)
    data.pop("key", None)
    data.pop("ct", None)
    out.update(data)
    out["tuple"] = format_tuple_json(ev.key)
    if isinstance(ev, DropEvent) and ev.tcp_flags:
        out["tcp_flags_names"] = format_tcp_flags(ev.tcp_flags)
    if rule is not None:
        out["rule"] = {"table": rule.table, "chain": rule.chain, "line": rule.line,
                       "text": rule.text, "backend": rule.backend,
                       "handle": getattr(rule, "handle", None)}
    return json.dumps(out)
