"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util import await_

from casewatch.bell import Claimer, Handoff
from casewatch.store import sqlite_driver
from casewatch.store.models import AuditNominal


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    # hide_parameters: an error's text never carries bound values (names, payloads) into a log.
    if is_sqlite(url):
        # One connection per process: SQLite allows one writer at a time anyway, and a single
        # connection avoids "database is locked" between our own coroutines. Other processes
        # (an import beside a running service) wait up to 30 s for the lock.
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 30},
            **_sqlite_driver(url),
        )
        _sqlite_pragmas(engine)
        return engine
    # LIFO: the connection returned last is taken next, so the few connections steady work needs
    # stay the ones in use, their prepared statements warm (asyncpg prepares a statement once a
    # connection); a FIFO pool took each in turn, and a statement's first run on each paid its
    # preparation inside a request (bench/README, "(twelfth session)").
    engine = create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        hide_parameters=True, pool_use_lifo=True,
    )
    if ONE_TRIP_PING:
        ping_in_one_trip(engine)
    learn_array_types(engine)
    return engine


# The array types the service's statements bind or read on PostgreSQL (store.lists, ingest.arrays,
# audit, outbox): learn_array_types has asyncpg learn them when a connection opens.
# tests/test_store12_connect_types.py fails when a path uses one not listed here.
ARRAY_TYPES = (
    "varchar[]", "text[]", "int4[]", "int8[]", "bool[]", "json[]", "jsonb[]", "date[]", "timestamptz[]",
)
_LEARN_TYPES = "SELECT " + ", ".join(f"${n}::{t}" for n, t in enumerate(ARRAY_TYPES, 1))


def learn_array_types(engine: AsyncEngine) -> None:
    """asyncpg knows the scalar types of its own, but learns an array type by a catalogue query
    the first time a statement on a connection binds or reads one: 3-11 ms each on this machine,
    one type at a time, and on a connection the pool had not used for that statement yet it landed
    inside a request (the slowest events of the end-to-end bench, bench/README "(twelfth
    session)"). Preparing one statement that names them all when a connection opens makes that one
    query, before the connection serves anything."""

    def learn(dbapi_connection: Any, _record: Any) -> None:
        try:
            dbapi_connection.run_async(lambda driver: driver.prepare(_LEARN_TYPES))
        except Exception as error:
            # Through the adapter's own translation, as every statement's error (and the ping's):
            # a server shutting down or a dropped socket here is the database unavailable
            # (store.errors.is_unavailable: a 503 the sender retries), not an unknown error.
            dbapi_connection._handle_exception(error)

    event.listen(engine.sync_engine, "connect", learn)


# Whether make_engine's PostgreSQL pools ping in one trip (ping_in_one_trip) instead of
# SQLAlchemy's three.
ONE_TRIP_PING = True


def ping_in_one_trip(engine: AsyncEngine) -> None:
    """The pool's pre-ping on `engine` (asyncpg) as one trip, an empty query, instead of
    SQLAlchemy's three (BEGIN, `;`, ROLLBACK: a transaction made for pgbouncer's transaction
    mode). Every transaction on the writer pings once at checkout, and on this machine each trip's
    send() is the costly part of a statement (bench/README). A checked-in connection holds no
    transaction (the pool rolls back on return), so the query runs alone. A failure goes through
    the adapter's own translation, as in SQLAlchemy's ping: a lost connection is a disconnect and
    the pool connects afresh (tests/test_robustness_db_restart.py)."""
    dialect = engine.sync_engine.dialect

    def do_ping(dbapi_connection: Any) -> bool:
        try:
            await_(dbapi_connection.driver_connection.fetchrow(";"))
        except Exception as error:
            dbapi_connection._handle_exception(error)
        return True

    dialect.do_ping = do_ping  # type: ignore[method-assign]


def make_reader_engine(engine: AsyncEngine, *, pool_size: int = 4) -> AsyncEngine:
    """An engine for answers that read and then write only their audit entry (lookups), beside
    `engine`, which writes.

    On SQLite `engine` has one connection, so every transaction waits for the one before; here
    `pool_size` connections more, read-only (PRAGMA query_only), their transactions DEFERRED: in
    WAL mode they read beside the one writer and never wait for it (their audit entries go
    through the writer: audit.batch).

    On PostgreSQL `pool_size` connections in autocommit (commits_each_statement): each statement
    is its own transaction, committed durably before its result comes back, so a lookup makes no
    BEGIN and no COMMIT trip. Only for work whose one write is its last statement: a lookup's
    reads, then its audit entry (bot.commands). Under READ COMMITTED each statement of a
    transaction sees its own snapshot anyway, so the reads agree with each other no less than in
    one transaction. No pre-ping (SQLAlchemy's asyncpg ping is three trips: BEGIN, `;`,
    ROLLBACK): the lookup's first statement is a read, and bot.commands runs the lookup again on
    a new connection when that read finds its connection gone (found_connection_gone), which
    is what the ping would have done."""
    if engine.dialect.name != "sqlite":
        readers_pg = create_async_engine(
            engine.url, pool_size=pool_size, max_overflow=pool_size, hide_parameters=True,
            isolation_level="AUTOCOMMIT", pool_use_lifo=True,  # as make_engine's
        )
        learn_array_types(readers_pg)
        return readers_pg.execution_options(**{_COMMITS_EACH_STATEMENT: True})
    readers = create_async_engine(
        engine.url, hide_parameters=True, pool_size=pool_size, max_overflow=0, pool_timeout=60,
        connect_args={"timeout": 30}, **_sqlite_driver(engine.url),
    )
    _sqlite_pragmas(readers, read_only=True)
    return readers


def _sqlite_driver(url: str | URL) -> dict[str, Any]:
    """aiosqlite with one trip to its thread a statement (store.sqlite_driver)."""
    if make_url(url).get_driver_name() != "aiosqlite":
        return {}
    return {"module": sqlite_driver.dbapi()}


# SQLite's own default: a commit that takes the WAL past this many pages checkpoints it.
WAL_AUTOCHECKPOINT_DEFAULT = 1000
_WAL_AUTOCHECKPOINT = "casewatch_wal_autocheckpoint"
# The wal_autocheckpoint each writer engine's connections are to have (set_wal_autocheckpoint).
_wal_autocheckpoint: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()


def set_wal_autocheckpoint(engine: AsyncEngine, pages: int) -> None:
    """SQLite's automatic checkpoint for `engine`'s connections (made by make_engine): after a
    commit that takes the WAL past `pages` pages; 0, never (store.checkpoint does it instead).
    Each connection takes it at its next checkout. Engines never asked keep no checkout hook."""
    sync_engine = engine.sync_engine
    if sync_engine not in _wal_autocheckpoint:

        @event.listens_for(sync_engine, "checkout")
        def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
            wanted = _wal_autocheckpoint.get(sync_engine, WAL_AUTOCHECKPOINT_DEFAULT)
            if record.info.get(_WAL_AUTOCHECKPOINT, WAL_AUTOCHECKPOINT_DEFAULT) != wanted:
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA wal_autocheckpoint={int(wanted)}")
                cursor.close()
                record.info[_WAL_AUTOCHECKPOINT] = wanted

    _wal_autocheckpoint[sync_engine] = pages


def _sqlite_pragmas(engine: AsyncEngine, *, read_only: bool = False) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, so an event answered 202 is never lost.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()
        record.info.pop(_WAL_AUTOCHECKPOINT, None)  # a new connection has SQLite's default

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a transaction that reads and then writes
        # cannot fail half-way with SQLITE_BUSY when another process wrote in between. A reader
        # (reader() below) must not: a long read would hold every writer off.
        # A lookup's reads (read_only) must agree with each other: one DEFERRED transaction, one
        # snapshot, which never takes the write lock.
        deferred = read_only or conn.get_execution_options().get(_READ_ONLY)
        begin = "BEGIN" if deferred else "BEGIN IMMEDIATE"
        dbapi_connection = conn.connection.dbapi_connection
        if isinstance(dbapi_connection, sqlite_driver.OneTripConnection):
            # Sent with the transaction's first statement, in its trip to the driver's thread.
            dbapi_connection.begin_on_next_statement(begin)
        else:
            conn.exec_driver_sql(begin)

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before_statement(
        conn: Connection, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
    ) -> None:
        if context is not None and _rides_with_next_trip(context):
            dbapi_connection = conn.connection.dbapi_connection
            if isinstance(dbapi_connection, sqlite_driver.OneTripConnection):
                dbapi_connection.defer_next_statement()


# Inserts whose outcome nothing reads, sent with the transaction's next trip on SQLite (the next
# statement's or the commit's: sqlite_driver.defer_next_statement): an audit entry's nominal
# index rows (casewatch.audit), written after the entry itself, so they go with the COMMIT.
_RIDE_ALONG_TABLES = frozenset({AuditNominal.__tablename__})


def _rides_with_next_trip(context: Any) -> bool:
    compiled = getattr(context, "compiled", None)
    if compiled is None or not context.isinsert or compiled.effective_returning:
        return False
    table = getattr(compiled.statement, "table", None)
    return table is not None and table.name in _RIDE_ALONG_TABLES


_READ_ONLY = "casewatch_read_only"


_COMMITS_EACH_STATEMENT = "casewatch_commits_each_statement"


def commits_each_statement(engine: AsyncEngine) -> bool:
    """Whether every statement on `engine` commits on its own (make_reader_engine on PostgreSQL)."""
    return bool(engine.get_execution_options().get(_COMMITS_EACH_STATEMENT))


def found_connection_gone(exc: BaseException) -> bool:
    """Whether `exc` is SQLAlchemy's word that the connection was lost (the server restarted or
    closed it): the connection has been invalidated, and the pool's older ones with it, so the
    next checkout connects afresh."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (and pool) for long reads that write nothing (audit verify, export): on
    SQLite their transactions begin DEFERRED, so they never take the write lock; in WAL mode the
    service goes on writing beside them."""
    if engine.dialect.name == "postgresql":
        # One snapshot for the whole read: a long export is not half before and half after a
        # purge or a seal running beside it.
        return engine.execution_options(**{_READ_ONLY: True}, isolation_level="REPEATABLE READ")
    return engine.execution_options(**{_READ_ONLY: True})


# Set on a session whose transaction queued deliveries (routing.outbox), or wrote audit entries
# (casewatch.audit); read after it commits.
_OUTBOX_QUEUED = "casewatch.outbox_queued"
_AUDITED = "casewatch.audited"
# The process's Handoff (every session of make_sessionmaker's), and the rows a transaction wrote
# claimed for its owner: (worker id, rows), handed over after the commit.
_HANDOFF = "casewatch.handoff"
_HANDED = "casewatch.handed"


def mark_outbox_queued(session: AsyncSession) -> None:
    session.info[_OUTBOX_QUEUED] = True


def mark_audited(session: AsyncSession) -> None:
    session.info[_AUDITED] = True


def outbox_claimer(session: AsyncSession, rows: int) -> Claimer | None:
    """Who `rows` new outbox rows of this transaction may be written claimed by (this process's
    running delivery worker, with room for them), or None: write them unclaimed."""
    handoff = session.info.get(_HANDOFF)
    if not isinstance(handoff, Handoff):
        return None
    _, already = session.info.get(_HANDED, ("", []))
    return handoff.room(len(already) + rows)


def mark_handed(session: AsyncSession, worker_id: str, rows: list[Any]) -> None:
    """`rows` were written claimed by `worker_id`: hand them to it once this transaction commits."""
    _, handed = session.info.setdefault(_HANDED, (worker_id, []))
    handed.extend(rows)


# What a transaction has pending for after its commit, when a savepoint began: (handed rows so
# far, outbox queued, audited); a savepoint rolled back goes back to it.
_SAVEPOINTS = "casewatch.savepoints"
_Pending = tuple[int, bool, bool]


def _pending(session: Session) -> _Pending:
    _, handed = session.info.get(_HANDED, ("", []))
    return len(handed), bool(session.info.get(_OUTBOX_QUEUED)), bool(session.info.get(_AUDITED))


def _restore(session: Session, before: _Pending) -> None:
    handed_count, outbox_queued, audited = before
    if handed_count == 0:
        session.info.pop(_HANDED, None)
    elif _HANDED in session.info:
        del session.info[_HANDED][1][handed_count:]
    for key, was in ((_OUTBOX_QUEUED, outbox_queued), (_AUDITED, audited)):
        if not was:
            session.info.pop(key, None)


def _drop_pending(session: Session) -> None:
    for key in (_OUTBOX_QUEUED, _AUDITED, _HANDED, _SAVEPOINTS):
        session.info.pop(key, None)


def make_sessionmaker(
    engine: AsyncEngine,
    *,
    after_outbox_commit: Callable[[], None] | None = None,
    after_audit_commit: Callable[[], None] | None = None,
    handoff: Handoff | None = None,
) -> async_sessionmaker[AsyncSession]:
    """Sessions for `engine`. `after_outbox_commit` is called after each commit that queued
    deliveries (and never for one rolled back), so this process's delivery workers can start at
    once instead of at their next poll; `after_audit_commit` likewise after each commit that wrote
    audit entries, for the sealer. With `handoff`, new alerts' deliveries may be written claimed by
    its owner (a delivery worker of this process) and are handed to it after the commit."""
    session_class = type("CasewatchSession", (Session,), {})

    @event.listens_for(session_class, "after_commit")
    def _committed(session: Session) -> None:
        handed = session.info.pop(_HANDED, None)
        if handed is not None and handoff is not None:
            handoff.hand(*handed)
        if session.info.pop(_OUTBOX_QUEUED, False) and after_outbox_commit is not None:
            after_outbox_commit()
        if session.info.pop(_AUDITED, False) and after_audit_commit is not None:
            after_audit_commit()

    # A savepoint's rollback must drop only what it added: the rows and marks the transaction
    # wrote before it are still committed with it (after_rollback also fires for a savepoint, and
    # cannot tell which transaction ended, so the pending work is kept per savepoint instead).
    @event.listens_for(session_class, "after_transaction_create")
    def _begun(session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            session.info.setdefault(_SAVEPOINTS, {})[transaction] = _pending(session)

    @event.listens_for(session_class, "after_soft_rollback")
    def _rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
        if previous_transaction.nested:
            before = session.info.get(_SAVEPOINTS, {}).pop(previous_transaction, None)
            if before is not None:
                _restore(session, before)
        else:
            _drop_pending(session)

    @event.listens_for(session_class, "after_transaction_end")
    def _ended(session: Session, transaction: SessionTransaction) -> None:
        # A savepoint's end comes before its after_soft_rollback: its snapshot stays until the
        # outer transaction's end (a released savepoint's added work stays with the outer one).
        if transaction.parent is None and not transaction.nested:
            _drop_pending(session)  # committed (already handed), rolled back or closed

    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=session_class,
        info={_HANDOFF: handoff} if handoff is not None else None,
    )
