"""Which database errors mean "the database is not there right now" (answer 503, retry later),
as opposed to a fault in what was asked of it."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout, OSError, asyncio.TimeoutError)

# PostgreSQL's SQLSTATEs for a server that will not serve now (PostgreSQL manual, Appendix A):
# class 08 "connection exception"; 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
# cannot_connect_now (starting up, shutting down, in recovery); 53300 too_many_connections; 25006
# read_only_sql_transaction (a standby after a failover, default_transaction_read_only during
# maintenance: no row is bad, the server takes no writes now). Not 57014 query_canceled: a
# statement timeout can be the batch's own doing, and retrying it would loop. asyncpg's
# errors reach SQLAlchemy as a plain DBAPIError, so only the code tells these from a refused row.
_SERVER_AWAY_CLASS = "08"
_SERVER_AWAY_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "25006"})


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached, or the connection was lost mid-way (a commit's outcome
    may then be unknown: only a retry, which is idempotent, can tell)."""
    if isinstance(exc, UNAVAILABLE):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc.orig, OSError | ConnectionError):
        return True
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(state, str) and (
        state.startswith(_SERVER_AWAY_CLASS) or state in _SERVER_AWAY_STATES
    )
