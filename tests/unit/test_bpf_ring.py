"""libbpf.MmapRing over a memfd laid out like a BPF ring buffer's mmap (no BPF,
no root): page 0 consumer_pos, page 1 producer_pos, then the data area
(kernel/bpf/ringbuf.c). The kernel maps the data area twice in a row; the
records here never wrap, so once is enough."""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct

import pytest

from ipdbg.bpf import libbpf
from ipdbg.bpf.decode import RINGBUF_BUSY

PAGE = mmap.PAGESIZE
SIZE = 1 << 16
RECORD = b"0123456789abcdef" * 7  # 112 bytes, the size of struct drop_event


class _FakeMap:
    def __init__(self, fd: int):
        self.fd = fd


@pytest.fixture
def ring_fd():
    fd = os.memfd_create("ipdbg-test-ring")
    os.ftruncate(fd, 2 * PAGE + 2 * SIZE)
    yield fd
    os.close(fd)


def _producer(fd: int):
    return mmap.mmap(fd, 2 * PAGE + 2 * SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def _put(prod: mmap.mmap, pos: int, payload: bytes) -> int:
    """Write one committed record at ``pos``, publish it; the new producer_pos."""
    off = 2 * PAGE + (pos & (SIZE - 1))
    prod[off:off + 8] = struct.pack("=II", len(payload), 0)
    prod[off + 8:off + 8 + len(payload)] = payload
    pos += (len(payload) + 8 + 7) & ~7
    prod[PAGE:PAGE + 8] = struct.pack("=Q", pos)
    return pos


def _cons(prod: mmap.mmap) -> int:
    return struct.unpack_from("=Q", prod, 0)[0]


def test_read_consumes_committed_records(ring_fd):
    prod = _producer(ring_fd)
    ring = libbpf.MmapRing(_FakeMap(ring_fd), SIZE)
    try:
        assert ring.read() == (b"", [])
        pos = 0
        for _ in range(3):
            pos = _put(prod, pos, RECORD)
        buf, recs = ring.read()
        assert recs == [(8, 112), (128, 112), (248, 112)]
        assert all(buf[o:o + n] == RECORD for o, n in recs)
        assert _cons(prod) == pos == 360
        assert ring.read() == (b"", [])
        # a record still being written (BUSY) is not consumed
        off = 2 * PAGE + pos
        prod[off:off + 8] = struct.pack("=II", len(RECORD) | RINGBUF_BUSY, 0)
        prod[PAGE:PAGE + 8] = struct.pack("=Q", pos + 120)
        assert ring.read()[1] == [] and _cons(prod) == 360
    finally:
        ring.close()
        prod.close()
    ring.close()  # idempotent


def _watch_consumer_pos(fd: int, start, stop, out) -> None:
    """Child process: read consumer_pos as often as it can; count the reads
    that see 0 once it has been nonzero (what the kernel's producer would see)."""
    m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ)
    pos = memoryview(m).cast("Q")
    while pos[0] == 0:
        pass
    start.set()
    reads = zeros = 0
    while not stop.is_set():
        for _ in range(1000):
            if pos[0] == 0:
                zeros += 1
        reads += 1000
    pos.release()
    m.close()
    out.put((reads, zeros))


def test_consumer_pos_never_reads_zero_while_it_advances(ring_fd):
    """The producer reads consumer_pos without any lock (__bpf_ringbuf_reserve);
    if it ever sees 0 the ring looks full and an event is dropped. The reader
    must store the position in one piece (struct.pack_into zero-fills first)."""
    prod = _producer(ring_fd)
    ring = libbpf.MmapRing(_FakeMap(ring_fd), SIZE)
    ctx = multiprocessing.get_context("fork")
    start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_watch_consumer_pos, args=(ring_fd, start, stop, out))
    child.start()
    try:
        pos = _put(prod, 0, RECORD)
        assert ring.read()[1] == [(8, 112)]
        assert start.wait(30)
        n = 0
        while n < 300_000:
            pos = _put(prod, pos, RECORD)
            assert len(ring.read()[1]) == 1
            n += 1
        stop.set()
        reads, zeros = out.get(timeout=30)
        child.join(30)
    finally:
        stop.set()
        if child.is_alive():
            child.kill()
        ring.close()
        prod.close()
    assert reads > 0
    assert zeros == 0, f"consumer_pos read as 0 in {zeros} of {reads} reads"
