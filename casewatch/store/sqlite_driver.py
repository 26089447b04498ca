"""SQLAlchemy's aiosqlite adapter, with each statement one trip to the driver's thread.

aiosqlite runs every sqlite3 call on a thread of its own per connection; each call is a trip
there and back (a queue put, a thread wake-up, the GIL handed over twice, the event loop woken).
SQLAlchemy's adapter (sqlalchemy.dialects.sqlite.aiosqlite, through
sqlalchemy.connectors.asyncio.AsyncAdapt_dbapi_cursor) makes four for one statement: aiosqlite's
cursor(), execute(), fetchall() and close(). On a /flags answer those trips were about half the
CPU. Here the cursor makes one: a function run on the driver's thread creates the sqlite3 cursor,
executes, fetches every row, notes description, rowcount and lastrowid, and closes it.

Everything else is SQLAlchemy's own: the exceptions are sqlite3's, raised from the same await and
handed to the same `_handle_exception` (so IntegrityError, OperationalError "database is locked"
and the rest reach SQLAlchemy and casewatch.store.errors exactly as before); commit, rollback,
close and server-side cursors are the parent classes'.

A transaction's BEGIN also rides along: `begin_on_next_statement` (called by store.engine's
"begin" listener instead of running BEGIN as a statement of its own) makes the next statement's
trip run BEGIN first. A transaction that runs no statement then never begins, and its commit or
rollback needs no trip.

A statement whose outcome nobody reads may ride along too: after `defer_next_statement` (called
by store.engine for the audit entries' nominal index rows) the next statement is held and run at
the start of the connection's next trip: the next statement's, or the commit's. An audited
answer's index rows then go with its COMMIT. Order is kept (held statements run before anything
after them); a rollback drops them, as it would have undone them; if one fails, its sqlite3 error
is raised from the trip that ran it (the next statement or the commit), so the transaction fails
as it would have.

Hooks used (SQLAlchemy 2.1, aiosqlite 0.22, both pinned in constraints.txt): the adapter classes
above, aiosqlite's `Connection._execute(fn, *args)` (runs fn on the connection's thread and awaits
its result; SQLAlchemy itself puts work on that queue for isolation_level) and
`Connection._conn` (the sqlite3 connection, read on the loop, as aiosqlite's own cursor() does).
tests/test_sqlite_driver.py checks they are there.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[list[Any] | None, Any, int, int | None, bool]


def _begin(conn: sqlite3.Connection, begin: str) -> None:
    conn.execute(begin).close()


# A statement held for the next trip (defer_next_statement): operation, parameters, many.
_Held = tuple[str, Any, bool]


def _commit_after(conn: sqlite3.Connection, begin: str | None, held: list[_Held]) -> None:
    """On the driver's thread: BEGIN and the held statements, then COMMIT, in one trip."""
    _run_held(conn, begin, held)
    conn.commit()


def _run_held(conn: sqlite3.Connection, begin: str | None, held: list[_Held]) -> None:
    if begin is not None:
        _begin(conn, begin)
    for operation, parameters, many in held:
        cursor = conn.cursor()
        try:
            if many:
                cursor.executemany(operation, parameters)
            else:
                cursor.execute(operation, parameters if parameters is not None else ())
        finally:
            cursor.close()


def _run(
    conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool,
    held: list[_Held],
) -> _Outcome:
    """On the driver's thread: BEGIN if asked and the held statements, then the statement, its
    rows and what the DB-API cursor says about it, read before the cursor closes, and whether a
    transaction is now open."""
    _run_held(conn, begin, held)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return rows, description, cursor.rowcount, cursor.lastrowid, conn.in_transaction
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # No aiosqlite cursor is made (that was a trip of its own): _run makes one per statement.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing to close: the sqlite3 cursor closed on the driver's thread."""

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._trip(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._trip(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, OneTripConnection)
        async with adapt._execute_mutex:
            if adapt._defer_next:
                # Held for the next trip; nothing to report (no rows, count or id unknown).
                adapt._defer_next = False
                adapt._held.append((operation, parameters, many))
                self._description, self._rowcount, self._lastrowid = None, -1, None
                self._rows = collections.deque()
                return
            # Taken before the trip, whatever comes of it: if BEGIN or the statement fails, the
            # rollback that follows is then a real one (a no-op in sqlite3 when BEGIN itself failed).
            begin, adapt._pending_begin = adapt._pending_begin, None
            held, adapt._held = adapt._held, []
            adapt._in_transaction = True  # unknown until the trip says
            driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            rows, self._description, self._rowcount, self._lastrowid, adapt._in_transaction = (
                await driver._execute(_run, driver._conn, begin, operation, parameters, many, held)  # type: ignore[no-untyped-call]
            )
            self._rows = collections.deque(rows or ())

    def nextset(self) -> None:
        raise NotImplementedError("sqlite3 has one result set a statement")

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_pending_begin", "_in_transaction", "_defer_next", "_held")

    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None
        # Whether sqlite3 has a transaction open, as the last trip found it (True when unknown).
        # sqlite3's commit() and rollback() do nothing without one, so then they need no trip:
        # SQLAlchemy's pool rolls back every connection it gets back, even one just committed.
        self._in_transaction = True
        self._defer_next = False
        self._held: list[_Held] = []

    def begin_on_next_statement(self, begin: str) -> None:
        """Run `begin` (BEGIN, BEGIN IMMEDIATE) in the same trip as the next statement."""
        self._pending_begin = begin

    def defer_next_statement(self) -> None:
        """Hold the next statement for the next trip (its outcome is not read: no rows, no count)."""
        self._defer_next = True

    def hold(self, operation: str, parameters: Any, *, many: bool) -> None:
        """Hold a statement given as SQL and DB-API parameters (store.held: SQLAlchemy's SQL,
        its bind processing done) for the next trip, as defer_next_statement holds the next one.
        For a transaction already begun: the statement runs after its earlier ones, never alone."""
        self._held.append((operation, parameters, many))

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            # The parent's cursor (its rows are fetched a page at a time): its statements neither
            # carry a pending BEGIN nor report back, so the BEGIN goes now, a trip of its own, and
            # the transaction counts as open.
            self._in_transaction = True
            begin, self._pending_begin = self._pending_begin, None
            held, self._held = self._held, []
            self._defer_next = False
            if begin is not None or held:
                driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
                try:
                    await_(driver._execute(_run_held, driver._conn, begin, held))  # type: ignore[no-untyped-call]
                except Exception as error:
                    self._handle_exception(error)
        return super().cursor(server_side)

    def commit(self) -> None:
        held, self._held = self._held, []
        self._defer_next = False
        if held:
            # The held statements and the commit in one trip (with the BEGIN, if still pending).
            begin, self._pending_begin = self._pending_begin, None
            self._in_transaction = True
            driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            try:
                await_(driver._execute(_commit_after, driver._conn, begin, held))  # type: ignore[no-untyped-call]
            except Exception as error:
                self._handle_exception(error)
            self._in_transaction = False
            return
        self._end(super().commit)

    def rollback(self) -> None:
        self._held, self._defer_next = [], False  # never run: the rollback would undo them
        self._end(super().rollback)

    def _end(self, end: Callable[[], None]) -> None:
        pending, self._pending_begin = self._pending_begin, None
        if pending is not None or not self._in_transaction:  # nothing began: nothing to end
            return
        end()
        self._in_transaction = False

    def close(self) -> None:
        self._pending_begin = None
        self._held, self._defer_next = [], False
        super().close()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        # AsyncAdapt_aiosqlite_dbapi.connect, returning this module's connection class.
        creator_fn = kw.pop("async_creator_fn", None)
        if creator_fn:
            connection = creator_fn(*arg, **kw)
        else:
            connection = self.aiosqlite.connect(*arg, **kw)
            connection._thread.daemon = True  # aiosqlite >= 0.22: the connection holds a thread
        try:
            return OneTripConnection(self, await_(connection))
        except Exception:
            # A connection that failed to open (the database unreachable) has its thread told to
            # stop, but nobody waits for it: if the event loop closes first (a command giving up,
            # a test ending), the thread's last call_soon_threadsafe raises "Event loop is closed"
            # in that thread. Waiting here, on the failure path only, ends it with the loop alive.
            thread = getattr(connection, "_thread", None)
            if thread is not None and thread.is_alive():
                await_(asyncio.to_thread(thread.join, _STOP_WAIT_SECONDS))
            raise


_STOP_WAIT_SECONDS = 5.0


def dbapi() -> OneTripDBAPI:
    """The DB-API module to give create_async_engine(module=...) for a sqlite+aiosqlite URL."""
    return _DBAPI


_DBAPI = OneTripDBAPI(aiosqlite, sqlite3)

