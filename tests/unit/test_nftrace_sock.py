"""recvmmsg batches (ipdbg.nftrace.sock.BatchReceiver) on a datagram socketpair: no root needed."""

import socket

import pytest

from ipdbg.nftrace.sock import BatchReceiver


def test_batch_receiver_returns_each_datagram_in_its_slot():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        rx = BatchReceiver(b.fileno(), vlen=4, size=64)
        with pytest.raises(BlockingIOError):
            rx.recv()
        sent = [b"one", b"second datagram", b"x" * 64, b"four", b"fifth"]
        for d in sent:
            a.send(d)
        got = rx.recv()
        assert [bytes(rx.view[o:o + n]) for o, n in got] == sent[:4]  # at most vlen per call
        got = rx.recv()
        assert [bytes(rx.view[o:o + n]) for o, n in got] == sent[4:]
        with pytest.raises(BlockingIOError):
            rx.recv()
    finally:
        a.close()
        b.close()
