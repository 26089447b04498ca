"""Which database errors mean "the database is not there right now" (answer 503, retry later),
as opposed to a fault in what was asked of it."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout, OSError, asyncio.TimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached, or the connection was lost mid-way (a commit's outcome
    may then be unknown: only a retry, which is idempotent, can tell)."""
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, DBAPIError) and isinstance(exc.orig, OSError | ConnectionError)
