"""Connections and database sessions a test leaves open, found at the end of that test.

A transport left open on an event loop that has closed can never be closed any more: the garbage
collector finds it later and warns ('unclosed transport', an error here), failing whichever test
happens to be running then, often on another file (the CI flake of session 11). The same for a
database session left with its transaction. tests/conftest.py looks after each test (once its
event loop has closed) and fails that test instead, naming what it left; a full gc.collect()
after each test would find them too, but costs 0.2-0.25 s a test on this suite's heap.
"""

from __future__ import annotations

import asyncio.selector_events as selector_events
import weakref
from typing import Any

from sqlalchemy.orm import session as orm_session

_transports: weakref.WeakSet[selector_events._SelectorTransport] = weakref.WeakSet()
_real_init = selector_events._SelectorTransport.__init__


def _tracked_init(self: selector_events._SelectorTransport, *args: Any, **kwargs: Any) -> None:
    _real_init(self, *args, **kwargs)
    _transports.add(self)


def track_transports() -> None:
    """From now on, every selector transport (TCP, Unix, UDP; TLS runs over one) is remembered
    (weakly) for left_open()."""
    selector_events._SelectorTransport.__init__ = _tracked_init  # type: ignore[method-assign]


def left_open() -> list[str]:
    """What is open and can no longer be closed properly: transports whose event loop has
    closed (their sockets closed here, so that they fail this test only, not a later one at
    garbage collection), and sessions still holding a transaction."""
    found: list[str] = []
    for transport in list(_transports):
        sock = transport._sock
        if sock is not None and transport._loop.is_closed():
            found.append(f"{transport!r} (protocol {type(transport._protocol).__qualname__})")
            transport._sock = None
            sock.close()
    for session in list(orm_session._sessions.values()):
        if session._transaction is not None:
            found.append(f"{type(session).__name__} with its transaction {session._transaction!r}")
    return found
