"""Rule verdict tracing: owned nftrace tables, the netlink trace decoder, legacy TRACE.

``TraceSession`` (session.py) arms tracing in one or more netns and yields
``ipdbg.events.TraceEvent``; ``decode.py`` and ``path.py`` are pure. See
docs/nftrace.md.
"""

__all__ = ["TraceSession"]


def __getattr__(name):
    # lazy: `ipdbg rules` imports the pure netlink codec (nl.py) without the session
    if name == "TraceSession":
        from .session import TraceSession

        return TraceSession
    raise AttributeError(name)
