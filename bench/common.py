"""What every benchmark script shares: its section of RESULTS.md, iperf3 runs."""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")


def write_section(name: str, text: str, path: str = RESULTS) -> None:
    """Replace the ``<!-- NAME:begin -->`` ... ``end`` section (append it the first
    time); the other scripts' sections stay as they are."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):].lstrip("\n")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block
    with open(path, "w") as f:
        f.write(new)


def iperf_bps(host, server_addr: str, seconds: float) -> float:
    """iperf3 client in a lab host against ``server_addr``: received bits/s."""
    out = host.run(["iperf3", "-c", server_addr, "-t", str(seconds), "-J"],
                   timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]
