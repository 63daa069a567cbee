"""A pure parser for the kernel's raw BTF format (no libbpf, no bpftool).

Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst (kernel 5.x-6.18):
a ``struct btf_header`` (magic 0xeB9F), then a type section of ``struct btf_type``
records (12 bytes each, followed by kind-specific data), then a string section of
NUL-terminated names. Type ids start at 1 (0 is ``void``); in split BTF (kernel
modules, /sys/kernel/btf/<module>) they continue after the base BTF's last id.

Speed: the vmlinux BTF of 6.18 is 5.5 MB and 126,689 types. ``parse_btf`` makes one
pass that records where each type starts, its info word and its name offset; a type
is decoded only when asked for. A look-up by name finds the name's bytes in the
string section, then that offset among the name_off words (both with bytes.find in
C). Measured on 6.18: about 0.05 s to read and index, then 1-5 ms per look-up
(docs/doctor.md).
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass

BTF_MAGIC = 0xEB9F

# enum in include/uapi/linux/btf.h (BTF_KIND_*), with the kernel version that added it.
KIND_NAMES = {
    0: "UNKN",
    1: "INT",
    2: "PTR",
    3: "ARRAY",
    4: "STRUCT",
    5: "UNION",
    6: "ENUM",
    7: "FWD",
    8: "TYPEDEF",
    9: "VOLATILE",
    10: "CONST",
    11: "RESTRICT",
    12: "FUNC",  # 5.0
    13: "FUNC_PROTO",  # 5.0
    14: "VAR",  # 5.2
    15: "DATASEC",  # 5.2
    16: "FLOAT",  # 5.13
    17: "DECL_TAG",  # 5.16
    18: "TYPE_TAG",  # 5.17
    19: "ENUM64",  # 6.0
}
KIND_IDS = {v: k for k, v in KIND_NAMES.items()}

# Bytes of kind-specific data after the 12-byte btf_type: (fixed, per vlen item).
_EXTRA = {
    1: (4, 0),  # INT: u32 encoding/offset/bits
    3: (12, 0),  # ARRAY: struct btf_array
    4: (0, 12),  # STRUCT: struct btf_member[vlen]
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM: struct btf_enum[vlen]
    13: (0, 8),  # FUNC_PROTO: struct btf_param[vlen]
    14: (4, 0),  # VAR: struct btf_var
    15: (0, 12),  # DATASEC: struct btf_var_secinfo[vlen]
    17: (4, 0),  # DECL_TAG: struct btf_decl_tag
    19: (0, 12),  # ENUM64: struct btf_enum64[vlen]
}

_MODIFIERS = {9: "volatile", 10: "const", 11: "restrict"}

DROP_REASON_PREFIX = "SKB_DROP_REASON_"


class BtfError(ValueError):
    """The data is not valid BTF (bad magic, truncated, unknown kind)."""


@dataclass(frozen=True)
class BtfHeader:
    magic: int
    version: int
    flags: int
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int


@dataclass(frozen=True)
class BtfMember:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 when not a bitfield


@dataclass(frozen=True)
class BtfType:
    """One decoded type. ``members`` holds the kind-specific list:

    STRUCT/UNION: BtfMember; ENUM/ENUM64: (name, value); FUNC_PROTO: (name, type_id);
    DATASEC: (var type_id, offset, size). ``type_id`` is the referenced type (PTR,
    TYPEDEF, CONST, ..., FUNC, VAR, DECL_TAG, ARRAY element, FUNC_PROTO return).
    """

    id: int
    kind: str
    name: str
    size: int | None = None
    type_id: int | None = None
    vlen: int = 0
    kind_flag: bool = False
    members: tuple = ()
    # INT: (encoding, offset, bits); ARRAY: (elem type, index type, nelems);
    # VAR: linkage; DECL_TAG: component_idx
    extra: object = None


def parse_header(data: bytes) -> BtfHeader:
    if len(data) < 24:
        raise BtfError("BTF too short for a header (%d bytes)" % len(data))
    magic, version, flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    endian = "<"
    if magic != BTF_MAGIC:
        magic_be = struct.unpack_from(">H", data, 0)[0]
        if magic_be != BTF_MAGIC:
            raise BtfError("not BTF: magic 0x%04x" % magic)
        endian = ">"
        magic, version, flags, hdr_len = struct.unpack_from(">HBBI", data, 0)
    type_off, type_len, str_off, str_len = struct.unpack_from(endian + "IIII", data, 8)
    hdr = BtfHeader(magic, version, flags, hdr_len, type_off, type_len, str_off, str_len)
    end = hdr_len + max(type_off + type_len, str_off + str_len)
    if end > len(data):
        raise BtfError("BTF truncated: sections end at %d, data has %d bytes" % (end, len(data)))
    return hdr


def parse_btf(data: bytes, base: "Btf | None" = None) -> "Btf":
    """Parse raw BTF (``base`` for split BTF such as /sys/kernel/btf/<module>)."""
    return Btf(data, base)


class Btf:
    def __init__(self, data: bytes, base: "Btf | None" = None):
        self.data = bytes(data)
        self.header = hdr = parse_header(self.data)
        # Big-endian BTF (e.g. recorded on s390x) is byte-swapped on a little-endian host.
        self._swap = struct.unpack_from("<H", self.data, 0)[0] != BTF_MAGIC
        self.base = base
        self.start_id = (base.start_id + base.count) if base else 1
        t0 = hdr.hdr_len + hdr.type_off
        s0 = hdr.hdr_len + hdr.str_off
        self._types = memoryview(self.data)[t0 : t0 + hdr.type_len]
        self._strs = self.data[s0 : s0 + hdr.str_len]
        self._str_base = base._str_total if base else 0
        self._str_total = self._str_base + hdr.str_len
        self._offsets, self._infos, self._name_offs = self._index()
        self.count = len(self._offsets)
        self._name_bytes = array.array("I", self._name_offs).tobytes()
        self._cache: dict[int, BtfType] = {}

    # -- index --------------------------------------------------------------

    def _words(self):
        mv = self._types
        if len(mv) % 4:
            raise BtfError("type section length %d is not a multiple of 4" % len(mv))
        words = mv.cast("I")
        if self._swap != (sys.byteorder == "big"):
            # The blob's byte order differs from ours: swap once (rare; tests only).
            a = array.array("I", mv.tobytes())
            a.byteswap()
            return a
        return words

    def _index(self):
        """One pass over the type section: start word, info word, name offset per id."""
        words = self._words()
        self._w = words
        n = len(words)
        offsets = []
        infos = []
        names = []
        add_off = offsets.append
        add_info = infos.append
        add_name = names.append
        extra = _EXTRA
        i = 0
        while i < n:
            if i + 3 > n:
                raise BtfError("type section truncated at byte %d" % (i * 4))
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            add_off(i)
            add_info(info)
            add_name(words[i])
            e = extra.get(kind)
            if e is None:
                if kind > 19 or kind == 0:
                    raise BtfError("unknown BTF kind %d at byte %d" % (kind, i * 4))
                i += 3
            else:
                i += 3 + (e[0] + e[1] * (info & 0xFFFF)) // 4
        if i != n:
            raise BtfError("type section overruns its length")
        return offsets, infos, names

    # -- strings ------------------------------------------------------------

    def string(self, off: int) -> str:
        if off < self._str_base:
            return self.base.string(off)
        off -= self._str_base
        end = self._strs.find(b"\0", off)
        if off >= len(self._strs) or end < 0:
            raise BtfError("string offset %d out of range" % off)
        return self._strs[off:end].decode("utf-8", "replace")

    def _ids_named(self, name: str) -> list[int]:
        """Ids of the types called ``name``, without decoding every name: find the name's
        offsets in the string section, then those offsets among the types' name_off
        words (both searches run in C through bytes.find)."""
        if not name:
            return []
        ids = []
        needle = b"\0" + name.encode() + b"\0"
        strs = self._strs
        pos = strs.find(needle)
        while pos >= 0:
            word = (self._str_base + pos + 1).to_bytes(4, sys.byteorder)
            hay = self._name_bytes
            at = hay.find(word)
            while at >= 0:
                if at % 4 == 0:
                    ids.append(self.start_id + at // 4)
                at = hay.find(word, at + 1)
            pos = strs.find(needle, pos + 1)
        return sorted(ids)

    # -- types --------------------------------------------------------------

    def kind_of(self, type_id: int) -> str:
        if type_id == 0:
            return "VOID"
        if type_id < self.start_id:
            return self.base.kind_of(type_id)
        return KIND_NAMES[(self._infos[type_id - self.start_id] >> 24) & 0x1F]

    def type(self, type_id: int) -> BtfType:
        """Decode one type (cached)."""
        if type_id == 0:
            return BtfType(0, "VOID", "void")
        if type_id < self.start_id:
            return self.base.type(type_id)
        t = self._cache.get(type_id)
        if t is None:
            if type_id - self.start_id >= self.count:
                raise BtfError("type id %d out of range" % type_id)
            t = self._decode(type_id)
            self._cache[type_id] = t
        return t

    def _decode(self, type_id: int) -> BtfType:
        w = self._w
        i = self._offsets[type_id - self.start_id]
        name_off, info, size_type = w[i], w[i + 1], w[i + 2]
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        name = self.string(name_off) if name_off else ""
        k = KIND_NAMES[kind]
        p = i + 3
        if kind == 1:  # INT
            enc = w[p]
            return BtfType(type_id, k, name, size=size_type, extra=((enc >> 24) & 0xF, (enc >> 16) & 0xFF, enc & 0xFF))
        if kind == 3:  # ARRAY
            return BtfType(type_id, k, name, type_id=w[p], extra=(w[p], w[p + 1], w[p + 2]))
        if kind in (4, 5):  # STRUCT, UNION
            mem = []
            for j in range(vlen):
                m_name, m_type, m_off = w[p + 3 * j], w[p + 3 * j + 1], w[p + 3 * j + 2]
                if kflag:
                    bits, bsize = m_off & 0xFFFFFF, m_off >> 24
                else:
                    bits, bsize = m_off, 0
                mem.append(BtfMember(self.string(m_name) if m_name else "", m_type, bits, bsize))
            return BtfType(type_id, k, name, size=size_type, vlen=vlen, kind_flag=kflag, members=tuple(mem))
        if kind == 6:  # ENUM: values are signed when kind_flag is set (6.0+), else u32
            vals = []
            for j in range(vlen):
                v = w[p + 2 * j + 1]
                if kflag and v >= 1 << 31:
                    v -= 1 << 32
                vals.append((self.string(w[p + 2 * j]), v))
            return BtfType(type_id, k, name, size=size_type, vlen=vlen, kind_flag=kflag, members=tuple(vals))
        if kind == 19:  # ENUM64
            vals = []
            for j in range(vlen):
                v = w[p + 3 * j + 1] | (w[p + 3 * j + 2] << 32)
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                vals.append((self.string(w[p + 3 * j]), v))
            return BtfType(type_id, k, name, size=size_type, vlen=vlen, kind_flag=kflag, members=tuple(vals))
        if kind == 13:  # FUNC_PROTO: return type in size_type
            params = tuple((self.string(w[p + 2 * j]) if w[p + 2 * j] else "", w[p + 2 * j + 1]) for j in range(vlen))
            return BtfType(type_id, k, name, type_id=size_type, vlen=vlen, members=params)
        if kind == 14:  # VAR
            return BtfType(type_id, k, name, type_id=size_type, extra=w[p])
        if kind == 15:  # DATASEC
            secs = tuple((w[p + 3 * j], w[p + 3 * j + 1], w[p + 3 * j + 2]) for j in range(vlen))
            return BtfType(type_id, k, name, size=size_type, vlen=vlen, members=secs)
        if kind == 16:  # FLOAT
            return BtfType(type_id, k, name, size=size_type)
        if kind == 17:  # DECL_TAG: component_idx is signed (-1: the whole decl)
            idx = w[p]
            if idx >= 1 << 31:
                idx -= 1 << 32
            return BtfType(type_id, k, name, type_id=size_type, extra=idx)
        if kind == 7:  # FWD: kind_flag 1 = union
            return BtfType(type_id, k, name, kind_flag=kflag)
        if kind == 12:  # FUNC: vlen holds the linkage
            return BtfType(type_id, k, name, type_id=size_type, extra=vlen)
        # PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG
        return BtfType(type_id, k, name, type_id=size_type)

    # -- look-ups -----------------------------------------------------------

    def find_all(self, name: str, kind: str | None = None) -> list[int]:
        ids = []
        if self.base is not None:
            ids.extend(self.base.find_all(name, kind))
        for tid in self._ids_named(name):
            if kind is None or self.kind_of(tid) == kind.upper():
                ids.append(tid)
        return ids

    def find(self, name: str, kind: str) -> int | None:
        """The type id of ``name`` with BTF kind ``kind`` ("STRUCT", "ENUM", "FUNC", ...).

        For "ENUM", an ENUM64 of that name is also accepted (6.0+ may emit either).
        """
        ids = self.find_all(name, kind)
        if not ids and kind.upper() == "ENUM":
            ids = self.find_all(name, "ENUM64")
        if not ids:
            return None
        # Prefer a complete definition over a FWD or an empty decl.
        return ids[0]

    def resolve(self, type_id: int) -> int:
        """Skip typedefs and modifiers (const, volatile, restrict, type tags)."""
        seen = 0
        while type_id:
            t = self.type(type_id)
            if t.kind not in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
                return type_id
            type_id = t.type_id
            seen += 1
            if seen > 64:
                raise BtfError("type loop at id %d" % type_id)
        return 0

    def enum_values(self, name: str) -> dict[str, int]:
        tid = self.find(name, "ENUM")
        if tid is None:
            return {}
        return dict(self.type(tid).members)

    def _struct(self, name: str) -> BtfType | None:
        for kind in ("STRUCT", "UNION"):
            for tid in self.find_all(name, kind):
                return self.type(tid)
        tid = self.find(name, "TYPEDEF")
        if tid is not None:
            t = self.type(self.resolve(tid))
            if t.kind in ("STRUCT", "UNION"):
                return t
        return None

    def struct_size(self, name: str) -> int | None:
        t = self._struct(name)
        return None if t is None else t.size

    def member_bit_offset(self, struct_name: str, member: str) -> int | None:
        t = self._struct(struct_name)
        if t is None:
            return None
        return self._member_bits(t, member)

    def _member_bits(self, t: BtfType, member: str) -> int | None:
        for m in t.members:
            if m.name == member:
                return m.bit_offset
        # Members of anonymous structs/unions are reachable by name in C.
        for m in t.members:
            if not m.name:
                inner = self.type(self.resolve(m.type_id))
                if inner.kind in ("STRUCT", "UNION"):
                    bits = self._member_bits(inner, member)
                    if bits is not None:
                        return m.bit_offset + bits
        return None

    def member_offset(self, struct_name: str, member: str) -> int | None:
        """Byte offset of ``member`` (bitfields: the byte holding their first bit)."""
        bits = self.member_bit_offset(struct_name, member)
        return None if bits is None else bits // 8

    def func_proto(self, func_name: str) -> BtfType | None:
        """The FUNC_PROTO of a FUNC, or of a typedef to a function pointer
        (``btf_trace_<tracepoint>`` typedefs are ``void (*)(void *, args...)``)."""
        tid = self.find(func_name, "FUNC")
        if tid is not None:
            return self.type(self.type(tid).type_id)
        tid = self.find(func_name, "TYPEDEF")
        if tid is None:
            return None
        t = self.type(self.resolve(tid))
        if t.kind == "PTR":
            t = self.type(self.resolve(t.type_id))
        return t if t.kind == "FUNC_PROTO" else None

    def func_proto_params(self, func_name: str) -> list[tuple[str, str]]:
        proto = self.func_proto(func_name)
        if proto is None:
            return []
        return [(pname, self.type_name(ptype)) for pname, ptype in proto.members]

    def type_name(self, type_id: int, _depth: int = 0) -> str:
        """A C-like spelling: "struct sk_buff *", "const char *", "u32", "void *"."""
        if _depth > 32:
            return "..."
        t = self.type(type_id)
        if t.kind == "VOID":
            return "void"
        if t.kind in ("STRUCT", "UNION", "ENUM", "ENUM64"):
            kw = {"STRUCT": "struct", "UNION": "union"}.get(t.kind, "enum")
            return f"{kw} {t.name or '(anon)'}"
        if t.kind == "FWD":
            return ("union " if t.kind_flag else "struct ") + t.name
        if t.kind == "PTR":
            inner = self.type_name(t.type_id, _depth + 1)
            return inner + ("*" if inner.endswith("*") else " *")
        if t.kind in ("CONST", "VOLATILE", "RESTRICT"):
            return f"{_MODIFIERS[KIND_IDS[t.kind]]} {self.type_name(t.type_id, _depth + 1)}"
        if t.kind == "TYPE_TAG":
            return self.type_name(t.type_id, _depth + 1)
        if t.kind == "ARRAY":
            elem, _, n = t.extra
            return f"{self.type_name(elem, _depth + 1)}[{n}]"
        if t.kind == "FUNC_PROTO":
            return "%s (*)(%s)" % (
                self.type_name(t.type_id, _depth + 1),
                ", ".join(self.type_name(p, _depth + 1) for _, p in t.members),
            )
        return t.name


def format_drop_reason(value: int, enum_map: dict[str, int]) -> str:
    """``12`` -> ``"NETFILTER_DROP"`` using the kernel's own ``enum skb_drop_reason``.

    Unknown values come back as ``"reason 1234"`` (a newer kernel than the map).
    """
    for name, v in enum_map.items():
        if v == value:
            return name[len(DROP_REASON_PREFIX) :] if name.startswith(DROP_REASON_PREFIX) else name
    return f"reason {value}"


def read_vmlinux_btf(path: str = "/sys/kernel/btf/vmlinux") -> Btf:
    """Read and parse the kernel's BTF. Raises OSError when the file is missing."""
    with open(path, "rb") as f:
        return parse_btf(f.read())
