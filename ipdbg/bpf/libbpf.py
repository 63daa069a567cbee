"""A thin ctypes binding to the system's libbpf.so.1 (libbpf 1.x API).

Only what ipdbg needs: open an object, set its ``const volatile`` config (the
.rodata map's initial value), choose which programs load, load, attach, read a
ring buffer and a per-CPU array, detach and close. Every handle is owned by a
Python object with ``close()`` and context-manager support, and errors name the
step that failed with the errno text. libbpf's log is collected (and echoed
with ``debug``) so a failed load can say why; it includes the verifier log.

libbpf 1.0+ returns NULL/negative errno and sets errno (no ERR_PTR), which is
what this binding relies on (libbpf.h, "LIBBPF_STRICT_ALL" became the default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import sys
import threading

from ..errors import KernelError, PrivilegeError, SystemToolError

c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_char_p = ctypes.c_char_p
c_size_t = ctypes.c_size_t

# typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
RING_BUFFER_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
# typedef int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, va_list);
# x86-64 passes va_list as a pointer (it is an array type), aarch64 as a pointer to
# its 32-byte struct: either way vsnprintf takes the same pointer back.
PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

_lib = None
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int


def _proto(name, restype, *argtypes):
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


def load_libbpf() -> ctypes.CDLL:
    """The process-wide libbpf handle (raises SystemToolError when missing)."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        _lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise SystemToolError(f"cannot load libbpf.so.1: {exc}",
                              "install it: apt-get install libbpf1 (or `make setup`)") from None
    _proto("bpf_object__open_file", c_void_p, c_char_p, c_void_p)
    _proto("bpf_object__load", c_int, c_void_p)
    _proto("bpf_object__close", None, c_void_p)
    _proto("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
    _proto("bpf_object__find_program_by_name", c_void_p, c_void_p, c_char_p)
    _proto("bpf_object__next_map", c_void_p, c_void_p, c_void_p)
    _proto("bpf_object__find_map_by_name", c_void_p, c_void_p, c_char_p)
    _proto("bpf_program__name", c_char_p, c_void_p)
    _proto("bpf_program__section_name", c_char_p, c_void_p)
    _proto("bpf_program__set_autoload", c_int, c_void_p, ctypes.c_bool)
    _proto("bpf_program__set_log_level", c_int, c_void_p, ctypes.c_uint32)
    _proto("bpf_program__attach", c_void_p, c_void_p)
    _proto("bpf_link__fd", c_int, c_void_p)
    _proto("bpf_link__destroy", c_int, c_void_p)
    _proto("bpf_map__name", c_char_p, c_void_p)
    _proto("bpf_map__fd", c_int, c_void_p)
    _proto("bpf_map__set_max_entries", c_int, c_void_p, ctypes.c_uint32)
    _proto("bpf_map__initial_value", c_void_p, c_void_p, ctypes.POINTER(c_size_t))
    _proto("bpf_map__lookup_elem", c_int, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t,
           ctypes.c_uint64)
    _proto("bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(ctypes.c_uint32))
    _proto("libbpf_num_possible_cpus", c_int)
    _proto("libbpf_set_print", c_void_p, PRINT_FN)
    _proto("ring_buffer__new", c_void_p, c_int, RING_BUFFER_SAMPLE_FN, c_void_p, c_void_p)
    _proto("ring_buffer__poll", c_int, c_void_p, c_int)
    _proto("ring_buffer__consume", c_int, c_void_p)
    _proto("ring_buffer__epoll_fd", c_int, c_void_p)
    _proto("ring_buffer__free", None, c_void_p)
    _proto("bpf_map__update_elem", c_int, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t,
           ctypes.c_uint64)
    _proto("btf__load_vmlinux_btf", c_void_p)
    _proto("btf__free", None, c_void_p)
    _proto("btf__find_by_name_kind", ctypes.c_int32, c_void_p, c_char_p, ctypes.c_uint32)
    _proto("btf__type_by_id", c_void_p, c_void_p, ctypes.c_uint32)
    _proto("btf__name_by_offset", c_char_p, c_void_p, ctypes.c_uint32)
    return _lib


# include/uapi/linux/btf.h: BTF_KIND_ENUM, BTF_KIND_TYPEDEF, BTF_KIND_ENUM64
BTF_KIND_ENUM, BTF_KIND_TYPEDEF, BTF_KIND_ENUM64 = 6, 8, 19


def read_vmlinux_btf_facts(enum_name: str, typedefs: list[str]) -> tuple[dict[str, int], set[str]]:
    """(values of ``enum enum_name``, which of ``typedefs`` exist) in the running
    kernel's BTF, through libbpf's C parser (~10 ms against ~100 ms for
    ipdbg.btf in Python). Raises OSError when the kernel has no BTF."""
    lib = load_libbpf()
    ctypes.set_errno(0)
    btf = lib.btf__load_vmlinux_btf()
    if not btf:
        err = ctypes.get_errno() or _errno.ENOENT
        raise OSError(err, f"no vmlinux BTF ({errno_text(err)})")
    try:
        values: dict[str, int] = {}
        for kind, rec in ((BTF_KIND_ENUM, 2), (BTF_KIND_ENUM64, 3)):
            tid = lib.btf__find_by_name_kind(btf, enum_name.encode(), kind)
            if tid <= 0:
                continue
            t = lib.btf__type_by_id(btf, tid)
            # struct btf_type {u32 name_off; u32 info; u32 size;}: vlen is info & 0xffff;
            # then btf_enum {u32 name_off; s32 val} or btf_enum64 {name_off, lo32, hi32}
            info = ctypes.c_uint32.from_address(t + 4).value
            vlen = info & 0xFFFF
            signed = bool(info & (1 << 31))  # kind_flag: signed values
            words = (ctypes.c_uint32 * (rec * vlen)).from_address(t + 12)
            for k in range(vlen):
                name = lib.btf__name_by_offset(btf, words[rec * k]).decode()
                v = words[rec * k + 1] if rec == 2 else words[rec * k + 1] | (words[rec * k + 2] << 32)
                if signed and v >= 1 << (32 * (rec - 1) - 1):
                    v -= 1 << (32 * (rec - 1))  # as ipdbg.btf: signed only with kind_flag
                values[name] = v
            break
        present = {n for n in typedefs if lib.btf__find_by_name_kind(btf, n.encode(), BTF_KIND_TYPEDEF) > 0}
        return values, present
    finally:
        lib.btf__free(btf)


def errno_text(err: int) -> str:
    err = abs(err)
    return f"{_errno.errorcode.get(err, err)}: {os.strerror(err)}"


def _kernel_error(step: str, err: int, detail: str = "") -> Exception:
    """The error for a failed step; EPERM/EACCES become PrivilegeError."""
    msg = f"{step} failed ({errno_text(err)})"
    if detail:
        msg += f": {detail}"
    if abs(err) in (_errno.EPERM, _errno.EACCES) and os.geteuid() != 0:
        return PrivilegeError(msg, "BPF needs CAP_BPF and CAP_PERFMON (or root)")
    return KernelError(msg)


# -- libbpf's log --------------------------------------------------------------

class LibbpfLog:
    """Collects libbpf's messages (the verifier log comes through here too).

    One print callback per process (libbpf_set_print is global); the last
    messages are kept so an error can quote them. ``echo`` sends them to stderr.
    """

    def __init__(self, keep: int = 400):
        self.keep = keep
        self.lines: list[tuple[int, str]] = []
        self.total = 0  # messages ever received (marks count these: lines get trimmed)
        self.echo = False
        self._lock = threading.Lock()
        self._cb = PRINT_FN(self._print)

    def _print(self, level, fmt, va):
        try:
            buf = ctypes.create_string_buffer(4096)
            _libc.vsnprintf(buf, len(buf), fmt, va)
            text = buf.value.decode(errors="replace")
            with self._lock:
                self.lines.append((level, text.rstrip("\n")))
                self.total += 1
                del self.lines[:-self.keep]
            if self.echo:
                sys.stderr.write(text)
        except Exception:  # never raise into C
            pass
        return 0

    def install(self, echo: bool) -> None:
        self.echo = echo
        load_libbpf().libbpf_set_print(self._cb)

    def mark(self) -> int:
        with self._lock:
            return self.total

    def warnings_since(self, mark: int) -> list[str]:
        with self._lock:
            new = self.lines[len(self.lines) - min(self.total - mark, len(self.lines)):]
            return [t for lvl, t in new if lvl == LIBBPF_WARN and t.strip()]


LOG = LibbpfLog()


def _last_warning(mark: int) -> str:
    """The most telling libbpf warning since ``mark`` (skips the verifier dump)."""
    lines = [ln for ln in LOG.warnings_since(mark)
             if "PROG LOAD LOG" not in ln and not ln.startswith(("-- ", "processed "))]
    for ln in reversed(lines):
        if ":" in ln and ("failed" in ln or "error" in ln.lower()):
            return ln.strip().removeprefix("libbpf: ")
    return lines[-1].strip().removeprefix("libbpf: ") if lines else ""


# -- handles -------------------------------------------------------------------

class _Closing:
    """``with handle:`` closes it; close() is idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Link(_Closing):
    """An attached program (an fd: the kernel detaches it when we exit or die)."""

    def __init__(self, ptr: int, name: str):
        self.ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return load_libbpf().bpf_link__fd(self.ptr)

    @property
    def id(self) -> int:
        """The kernel's link id (as `bpftool link list` shows)."""
        info = (ctypes.c_uint8 * 256)()
        size = ctypes.c_uint32(len(info))
        if load_libbpf().bpf_obj_get_info_by_fd(self.fd, info, ctypes.byref(size)) != 0:
            return 0
        # struct bpf_link_info { __u32 type; __u32 id; __u32 prog_id; ... }
        return int.from_bytes(bytes(info[4:8]), sys.byteorder)

    def close(self) -> None:
        if self.ptr:
            load_libbpf().bpf_link__destroy(self.ptr)
            self.ptr = None


class Map:
    def __init__(self, obj: "BpfObject", ptr: int):
        self.obj = obj
        self.ptr = ptr

    @property
    def name(self) -> str:
        return load_libbpf().bpf_map__name(self.ptr).decode()

    @property
    def fd(self) -> int:
        return load_libbpf().bpf_map__fd(self.ptr)

    def set_max_entries(self, n: int) -> None:
        err = load_libbpf().bpf_map__set_max_entries(self.ptr, n)
        if err:
            raise _kernel_error(f"resizing map {self.name}", err)

    def initial_value(self) -> ctypes.Array:
        """The map's initial data (.rodata/.data), writable until load."""
        size = c_size_t(0)
        ptr = load_libbpf().bpf_map__initial_value(self.ptr, ctypes.byref(size))
        if not ptr:
            raise KernelError(f"map {self.name} has no initial value")
        return (ctypes.c_uint8 * size.value).from_address(ptr)

    def lookup_percpu_u64(self, key: int = 0) -> list[int]:
        ncpu = load_libbpf().libbpf_num_possible_cpus()
        if ncpu <= 0:
            raise _kernel_error("counting possible CPUs", ncpu)
        k = ctypes.c_uint32(key)
        vals = (ctypes.c_uint64 * ncpu)()
        err = load_libbpf().bpf_map__lookup_elem(self.ptr, ctypes.byref(k), 4, vals,
                                                 ctypes.sizeof(vals), 0)
        if err:
            raise _kernel_error(f"reading map {self.name}", err)
        return list(vals)


    def update(self, key: bytes, value: bytes) -> None:
        k = ctypes.create_string_buffer(key, len(key))
        v = ctypes.create_string_buffer(value, len(value))
        err = load_libbpf().bpf_map__update_elem(self.ptr, k, len(key), v, len(value), 0)
        if err:
            raise _kernel_error(f"writing map {self.name}", err)


class Program:
    def __init__(self, obj: "BpfObject", ptr: int):
        self.obj = obj
        self.ptr = ptr

    @property
    def name(self) -> str:
        return load_libbpf().bpf_program__name(self.ptr).decode()

    @property
    def section(self) -> str:
        return load_libbpf().bpf_program__section_name(self.ptr).decode()

    def set_autoload(self, on: bool) -> None:
        load_libbpf().bpf_program__set_autoload(self.ptr, on)

    def set_log_level(self, level: int) -> None:
        load_libbpf().bpf_program__set_log_level(self.ptr, level)

    def attach(self) -> Link:
        mark = LOG.mark()
        ctypes.set_errno(0)
        ptr = load_libbpf().bpf_program__attach(self.ptr)
        if not ptr:
            err = ctypes.get_errno() or _errno.EINVAL
            raise _kernel_error(f"attaching {self.section} ({self.name})", err, _last_warning(mark))
        return Link(ptr, self.section)


class BpfObject(_Closing):
    """An opened (then loaded) BPF object file; ``close()`` frees everything."""

    def __init__(self, path: str, debug: bool = False):
        lib = load_libbpf()
        LOG.install(echo=debug)
        self.path = path
        self.debug = debug
        self.loaded = False
        mark = LOG.mark()
        ctypes.set_errno(0)
        self.ptr = lib.bpf_object__open_file(path.encode(), None)
        if not self.ptr:
            err = ctypes.get_errno() or _errno.EINVAL
            raise _kernel_error(f"opening BPF object {path}", err, _last_warning(mark))

    def programs(self) -> list[Program]:
        out, p = [], None
        while True:
            p = load_libbpf().bpf_object__next_program(self.ptr, p)
            if not p:
                return out
            out.append(Program(self, p))

    def program(self, name: str) -> Program:
        p = load_libbpf().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not p:
            raise KernelError(f"no program {name} in {self.path}")
        return Program(self, p)

    def maps(self) -> list[Map]:
        out, m = [], None
        while True:
            m = load_libbpf().bpf_object__next_map(self.ptr, m)
            if not m:
                return out
            out.append(Map(self, m))

    def map(self, name: str) -> Map:
        """A map by name; ".rodata" etc. match the object's internal maps by suffix."""
        for m in self.maps():
            if m.name == name or (name.startswith(".") and m.name.endswith(name)):
                return m
        raise KernelError(f"no map {name} in {self.path}")

    def load(self) -> None:
        if self.debug:
            for p in self.programs():
                p.set_log_level(1)  # verifier log even on success
        mark = LOG.mark()
        err = load_libbpf().bpf_object__load(self.ptr)
        if err:
            raise _kernel_error(f"loading BPF object {os.path.basename(self.path)}", err,
                                _last_warning(mark))
        self.loaded = True

    def close(self) -> None:
        if self.ptr:
            load_libbpf().bpf_object__close(self.ptr)
            self.ptr = None


class RingBuffer(_Closing):
    """ring_buffer__new over one map; ``poll`` returns the raw records (bytes).

    The callback only copies each record (the slot is released when it returns);
    decoding happens afterwards, in a batch.
    """

    def __init__(self, ring_map: Map):
        self._records: list[bytes] = []
        append = self._records.append
        string_at = ctypes.string_at

        def _on_sample(ctx, data, size):
            append(string_at(data, size))
            return 0

        self._cb = RING_BUFFER_SAMPLE_FN(_on_sample)  # keep alive as long as the ring
        ctypes.set_errno(0)
        self.ptr = load_libbpf().ring_buffer__new(ring_map.fd, self._cb, None, None)
        if not self.ptr:
            raise _kernel_error("creating the ring buffer reader", ctypes.get_errno() or _errno.EINVAL)

    def fileno(self) -> int:
        return load_libbpf().ring_buffer__epoll_fd(self.ptr)

    def poll(self, timeout_ms: int) -> list[bytes]:
        n = load_libbpf().ring_buffer__poll(self.ptr, timeout_ms)
        if n < 0 and n != -_errno.EINTR:
            raise _kernel_error("reading the ring buffer", n)
        return self._take()

    def consume(self) -> list[bytes]:
        n = load_libbpf().ring_buffer__consume(self.ptr)
        if n < 0 and n != -_errno.EINTR:
            raise _kernel_error("reading the ring buffer", n)
        return self._take()

    def _take(self) -> list[bytes]:
        out = self._records[:]
        del self._records[:]
        return out

    def close(self) -> None:
        if self.ptr:
            load_libbpf().ring_buffer__free(self.ptr)
            self.ptr = None


class MmapRing(_Closing):
    """Reads a BPF ring buffer through its own mmap, without libbpf's per-record
    callback (a ctypes callback costs about 1 us per record in Python; this
    reader returns a whole batch as one buffer and the offsets of its records).

    The layout is the kernel's ABI (kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h):
    page 0 holds consumer_pos (the only page we may write), page 1 producer_pos,
    then the data area mapped twice in a row so a record that wraps is contiguous.
    Each record: u32 len (bit 31 BUSY: still being written, bit 30 DISCARD),
    u32 pg_off, then len bytes, padded to 8.

    Ordering: the producer clears BUSY with a release store after writing the
    record; we read the header before the record's bytes. That is enough on
    x86-64 (loads are not reordered with loads), not on weaker CPUs, where the
    engine uses ``RingBuffer`` (libbpf, with the proper acquire loads) instead.

    The two positions are read and written with single 8-byte accesses
    (memoryview cast to "Q": one memcpy of 8 aligned bytes, one mov). Never
    with ``struct.pack_into``: CPython zero-fills the target before packing
    (s_pack_internal), so for a moment consumer_pos reads 0, and a producer
    that reads it then (__bpf_ringbuf_reserve, kernel/bpf/ringbuf.c:
    ``new_prod_pos - cons_pos > rb->mask``) finds the ring "full" and drops the
    event, once more than one ring's worth has been produced. That was the
    source of the few lost events at 250k events/s (bench/RESULTS.md, drops).
    """

    def __init__(self, ring_map: "Map", size: int):
        import mmap

        self.size = size
        self.mask = size - 1
        self.page = mmap.PAGESIZE
        self.fd = ring_map.fd
        try:
            self._cons = mmap.mmap(self.fd, self.page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod = mmap.mmap(self.fd, self.page + 2 * size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=self.page)
        except OSError as exc:
            self.close()
            raise _kernel_error("mapping the ring buffer", exc.errno or _errno.EINVAL) from None
        # u64 views of consumer_pos (page 0) and producer_pos (page 1): atomic
        # 8-byte loads and stores (see above)
        self._cons_pos = memoryview(self._cons).cast("Q")
        self._prod_pos = memoryview(self._prod)[:8].cast("Q")
        import select

        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)

    def fileno(self) -> int:
        return self.fd

    def wait(self, timeout_ms: int) -> None:
        if timeout_ms != 0 and not self._pending():
            try:
                self._poller.poll(timeout_ms)
            except InterruptedError:
                pass

    def _pending(self) -> bool:
        return self._cons_pos[0] != self._prod_pos[0]

    def read(self, max_bytes: int = 1 << 16) -> tuple[bytes, list[tuple[int, int]]]:
        """(buffer, [(offset, length), ...]) of the committed records; consumes them.

        At most about ``max_bytes`` per call: small batches decode faster (the
        memory of the previous batch's objects gets reused) and keep latency low."""
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        avail = min(prod - cons, max_bytes)
        if avail <= 0:
            return b"", []
        start = self.page + (cons & self.mask)
        buf = self._prod[start:start + avail]
        from .decode import parse_ring_records

        recs, used = parse_ring_records(buf)
        if used:
            self._cons_pos[0] = cons + used  # one 8-byte store, never a transient 0
        return buf, recs

    def close(self) -> None:
        # views first: an mmap with exported buffers refuses to close
        for v in (getattr(self, "_cons_pos", None), getattr(self, "_prod_pos", None)):
            if v is not None:
                v.release()
        self._cons_pos = self._prod_pos = None
        for m in (getattr(self, "_cons", None), getattr(self, "_prod", None)):
            if m is not None:
                m.close()
        self._cons = self._prod = None
