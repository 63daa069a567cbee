"""Rule verdict tracing: owned nftrace tables, the netlink trace decoder, legacy TRACE.

``TraceSession`` (session.py) arms tracing in one or more netns and yields
``ipdbg.events.TraceEvent``; ``decode.py`` and ``path.py`` are pure. See
docs/nftrace.md.
"""

from .session import TraceSession

__all__ = ["TraceSession"]
