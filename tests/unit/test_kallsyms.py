"""kallsyms parsing and symbolization, from an excerpt of 6.18's /proc/kallsyms."""

from pathlib import Path

from ipdbg.kallsyms import parse_kallsyms

FIXTURE = Path(__file__).parent.parent / "fixtures" / "bpf" / "kallsyms-6.18-excerpt.txt"


def syms():
    return parse_kallsyms(FIXTURE.read_text())


def test_only_text_symbols_are_kept():
    k = syms()
    assert "nft_do_chain" in k.names
    assert "__start_rodata" not in k.names  # D
    assert "__start_runtime_ptr_USER_PTR_MAX" not in k.names  # R
    assert list(k.addrs) == sorted(k.addrs)


def test_symbolize_function_plus_offset():
    k = syms()
    assert k.symbolize(0xFFFFFFFF81FBD5D0 + 0x46F) == "nft_do_chain+0x46f"
    assert k.symbolize(0xFFFFFFFF81FBD5D0) == "nft_do_chain+0x0"
    assert k.symbolize(0xFFFFFFFF820938B0 + 0x99) == "tcp_v4_rcv+0x99"
    # the __pfx_ padding before a function is its own symbol (6.2+ with CFI/call depth)
    assert k.symbolize(0xFFFFFFFF81FBD5C8) == "__pfx_nft_do_chain+0x8"
    assert k.lookup(0xFFFFFFFF81FBD5D0 + 4) == ("nft_do_chain", 4)


def test_module_symbols_carry_their_module():
    k = syms()
    assert k.symbolize(0xFFFFFFFFC0201010) == "ftrace_trampoline+0x10 [__builtin__ftrace]"


def test_below_first_symbol_and_hidden_addresses():
    k = syms()
    assert k.symbolize(0x1000) == "0x1000"
    assert k.lookup(0) is None
    # without root every address reads 0: nothing to symbolize with
    hidden = parse_kallsyms("0000000000000000 T nft_do_chain\n0000000000000000 t ip_error\n")
    assert not hidden
    assert hidden.symbolize(0xFFFFFFFF81FBD5D0) == "0xffffffff81fbd5d0"


def test_aliases_keep_the_first_name():
    k = parse_kallsyms("ffffffff81000000 T srso_alias_untrain_ret\nffffffff81000000 T _stext\n")
    assert k.symbolize(0xFFFFFFFF81000010) == "srso_alias_untrain_ret+0x10"


def test_fast_parse_matches_a_line_by_line_reading():
    # the regular-expression parser against the obvious split() of each line
    text = FIXTURE.read_text()
    want = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "TtWw" and int(parts[0], 16):
            want.setdefault(int(parts[0], 16), (parts[2], parts[3].strip("[]") if len(parts) > 3 else ""))
    k = syms()
    assert list(k.addrs) == sorted(want)
    assert [(n, m) for n, m in zip(k.names, k.modules)] == [want[a] for a in sorted(want)]
    for a in sorted(want):
        assert k.symbolize(a + 3) == f"{want[a][0]}+0x3" + (f" [{want[a][1]}]" if want[a][1] else "")


def test_mixed_width_and_upper_case_addresses():
    k = parse_kallsyms("C0001000 t modfunc\t[mod]\nffffffff81000000 T _text\n")
    assert k.symbolize(0xC0001004) == "modfunc+0x4 [mod]"
    assert k.symbolize(0xFFFFFFFF81000001) == "_text+0x1"
    assert k.symbolize(0x1_0000_0000_0000_0000) == "_text+0x7f000000"
