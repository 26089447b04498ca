"""The append-only audit log: what was shared or looked up, with whom, when and why.

Every entry is written in the transaction of what it records, with the hash of its content
(casewatch.audit.chain); the sealer (casewatch.audit.seal) then chains it. Writers never wait for
the chain: only sealers take its lock, for one short transaction at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache, partial
from typing import Any, Protocol

from sqlalchemy import String, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from casewatch.audit.chain import Hasher, content_hash
from casewatch.context import Context
from casewatch.store import sqlite_driver
from casewatch.store.direct_read import raise_as_executed
from casewatch.store.engine import mark_audited
from casewatch.store.held import Compiled, compiled_statement, hold
from casewatch.store.lookup_connections import Reads, connection_of
from casewatch.store.models import AuditEntry, AuditNominal

__all__ = [
    "AuditSink", "Entry", "connection_sink", "hasher_for", "record", "record_many", "session_sink",
]


def hasher_for(ctx: Context) -> Hasher:
    return Hasher(ctx.settings.audit.key.get_secret_value().encode())


def _values(
    ctx: Context,
    actor: str,
    action: str,
    subject: str,
    purpose: str,
    details: Mapping[str, Any] | None,
    nominals: Iterable[str],
) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        at=ctx.clock.now(), actor=actor[:100], action=action[:64], subject=subject[:200],
        purpose=purpose[:200], details=dict(details or {}), nominals=sorted({n for n in nominals if n}),
    )
    values["content_hash"] = content_hash(hasher_for(ctx), **values)
    return values


_ENTRIES = AuditEntry.metadata.tables[AuditEntry.__tablename__]
_INSERT = insert(_ENTRIES)
_INSERT_RETURNING_ID = insert(_ENTRIES).returning(_ENTRIES.c.id)
_NOMINALS = AuditNominal.metadata.tables[AuditNominal.__tablename__]
_INSERT_NOMINALS = insert(_NOMINALS)
_NOT_THE_WRITERS = ("id", "seq", "chain_hash")  # given by the database and the sealer
_NEW = (
    insert(_ENTRIES)
    .values({c.name: bindparam(c.name, type_=c.type) for c in _ENTRIES.c if c.name not in _NOT_THE_WRITERS})
    .returning(_ENTRIES.c.id)
    .cte("new_entry")
)
_INSERT_WITH_INDEX_PG = insert(_NOMINALS).from_select(
    ["visor_ref", "audit_id"],
    select(func.unnest(bindparam("refs", type_=postgresql.ARRAY(String))), _NEW.c.id),
)
# PostgreSQL: a batch's entries as one array a column, unnested, ids back in the rows' order.
# SQLAlchemy's multi-row VALUES (8 bound parameters a row, each through its type's processor)
# cost more to build, send and parse. The JSON columns go as json.dumps text, as JSON() sends
# them, cast back.
_PG_ENTRY_TYPES = {
    "at": "timestamptz", "actor": "varchar", "action": "varchar", "subject": "varchar",
    "purpose": "varchar", "details": "text", "nominals": "text", "content_hash": "varchar",
}
_PG_ENTRY_JSON = ("details", "nominals")
_PG_ENTRY_SELECT = ", ".join(
    f"CAST(r.{c} AS json)" if c in _PG_ENTRY_JSON else f"r.{c}" for c in _PG_ENTRY_TYPES
)
_INSERT_MANY_PG = text(
    f"INSERT INTO {_ENTRIES.name} ({', '.join(_PG_ENTRY_TYPES)}) "  # noqa: S608 (constants only)
    f"SELECT {_PG_ENTRY_SELECT} "
    f"FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in _PG_ENTRY_TYPES.items())}) "
    f"WITH ORDINALITY AS r ({', '.join(_PG_ENTRY_TYPES)}, n) ORDER BY r.n RETURNING id"
)
# Up to this many entries, record_many writes them in one statement (and, on PostgreSQL, their
# nominal index with them).
ONE_STATEMENT_ROWS = 16
_WRITTEN = tuple(c.name for c in _ENTRIES.c if c.name not in _NOT_THE_WRITERS)


@cache
def _insert_values_sqlite(count: int) -> ReturningInsert[Any]:
    """INSERT INTO audit_log .. VALUES (row 0), .. (row count-1) RETURNING id, built once a count
    (so SQLAlchemy's compiled cache keeps it); row n's values are bound as "<column>_<n>"."""
    return insert(_ENTRIES).values([
        {c: bindparam(f"{c}_{n}", type_=_ENTRIES.c[c].type) for c in _WRITTEN} for n in range(count)
    ]).returning(_ENTRIES.c.id)


def pg_entries_ctes(prefix: str = "", gate: str = "") -> str:
    """PostgreSQL: a few entries and their nominal index as the parts of a WITH: `{prefix}new`
    (the entries, RETURNING id), `{prefix}numbered` (each id with its place in the batch: the ids
    in ascending order are the rows', see _insert_many_pg) and `{prefix}indexed` (the index rows,
    each joined to its entry by its place). Parameters: pg_entries_params(rows, prefix). `gate`: a
    condition on the entries' SELECT (another part's outcome), none if empty."""
    where = f"WHERE {gate} " if gate else ""
    arrays = ", ".join(f"CAST(:{prefix}{c} AS {t}[])" for c, t in _PG_ENTRY_TYPES.items())
    return (
        f"{prefix}new AS (INSERT INTO {_ENTRIES.name} ({', '.join(_PG_ENTRY_TYPES)}) "  # noqa: S608 (constants only)
        f"SELECT {_PG_ENTRY_SELECT} FROM unnest({arrays}) "
        f"WITH ORDINALITY AS r ({', '.join(_PG_ENTRY_TYPES)}, n) {where}ORDER BY r.n RETURNING id), "
        f"{prefix}numbered AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM {prefix}new), "
        f"{prefix}indexed AS (INSERT INTO {_NOMINALS.name} (visor_ref, audit_id) "  # noqa: S608 (constants only)
        f"SELECT x.ref, {prefix}numbered.id FROM unnest(CAST(:{prefix}index_refs AS varchar[]), "
        f"CAST(:{prefix}index_rows AS bigint[])) AS x(ref, n) "
        f"JOIN {prefix}numbered ON {prefix}numbered.n = x.n)"
    )


# PostgreSQL: a few entries and their index in one statement (_insert_with_index_pg).
_INSERT_WITH_INDEX_MANY_PG = text(f"WITH {pg_entries_ctes()} SELECT count(*) FROM numbered")  # noqa: S608
# PostgreSQL: a batch's nominal index as two arrays, unnested: one execution, where an executemany
# ran one a row (~0.37 s of server time in the bench's first scan).
_INSERT_NOMINALS_PG = text(
    f"INSERT INTO {_NOMINALS.name} (visor_ref, audit_id) "  # noqa: S608 (constants only)
    "SELECT * FROM unnest(CAST(:refs AS varchar[]), CAST(:ids AS bigint[]))"
)


async def record(
    reads: Reads,
    ctx: Context,
    *,
    actor: str,
    action: str,
    subject: str = "",
    purpose: str = "",
    details: Mapping[str, Any] | None = None,
    nominals: Iterable[str] = (),
    direct: bool = False,
) -> None:
    """Add an audit entry to the caller's transaction. `nominals`: the ViSOR references of the
    nominals the entry is about (their chronology and disclosure log find it by them). `purpose`
    says why, in words a reviewer reads. Never put personal data in `details` beyond what the
    action itself shared (a ViSOR reference, an alert id, an officer id).

    Inserted at once as Core on the session's connection, not through the ORM: cheaper than a
    flush on hot read paths (/flags), and the entry needs its id at once for its nominal index.
    `direct` (a lookup's entry): handed to the driver itself where it can take it (_direct).
    `reads` may be a connection a lookup holds without a session (store.lookup_connections): on one
    whose every statement commits on its own (PostgreSQL's readers) the entry is committed when
    this returns, else with the connection's transaction; its caller then tells the sealer
    (LookupConnections.audited), as a session's commit does for an entry in the session."""
    values = _values(ctx, actor, action, subject, purpose, details, nominals)
    await _write(await connection_of(reads), values, direct=direct)
    if isinstance(reads, AsyncSession):
        mark_audited(reads)


async def _write(connection: AsyncConnection, values: dict[str, Any], *, direct: bool) -> None:
    if direct and DIRECT_ENTRIES and await _direct(connection, values):
        pass
    elif values["nominals"] and connection.dialect.name == "postgresql":
        # The entry and its index in one statement: one round trip fewer on every audited action.
        await connection.execute(_INSERT_WITH_INDEX_PG, {**values, "refs": values["nominals"]})
    elif values["nominals"]:
        entry_id = (await connection.execute(_INSERT_RETURNING_ID, values)).scalar_one()
        await connection.execute(
            _INSERT_NOMINALS, [{"visor_ref": ref, "audit_id": entry_id} for ref in values["nominals"]]
        )
    else:
        await connection.execute(_INSERT, values)


# Whether record(direct=True) hands the entry to the driver itself (_direct); False: through
# SQLAlchemy's execution, as every other entry (A/B).
DIRECT_ENTRIES = True
# The index row of the entry just inserted on this connection (SQLite's last_insert_rowid(): the
# entry's id, an INTEGER PRIMARY KEY; an insert's triggers do not change it once they are done).
# inline(): no RETURNING of the key SQLAlchemy would otherwise fetch.
_INSERT_NOMINAL_OF_LAST_SQLITE = insert(_NOMINALS).values(
    visor_ref=bindparam("visor_ref", type_=String()), audit_id=func.last_insert_rowid()
).inline()


async def _direct(connection: AsyncConnection, values: dict[str, Any]) -> bool:
    """The entry and its nominal index written as the SQL SQLAlchemy sends for them, each value
    through its column's bind processing (ingest.compiled_statement), but handed to the driver
    itself instead of each statement through SQLAlchemy's execution (~0.1-0.25 ms of the event
    loop a statement here). False, nothing written, where the driver cannot take it: the caller
    then writes it as before.
    - SQLite, one-trip driver (store.sqlite_driver), an entry about at most one nominal: the entry
      and its index row (audit_id = last_insert_rowid()) held for the transaction's next trip (a
      lookup's COMMIT), instead of a trip for the entry and its RETURNING. They run in order with
      nothing between them, so last_insert_rowid() is the entry's; if the database refuses
      either, the commit fails and nothing of the transaction is kept, as when it was refused at
      once.
    - PostgreSQL (asyncpg) in autocommit or inside a transaction already begun: the one statement
      (the entry, and its index with it) sent by asyncpg. Its errors are raised as SQLAlchemy's
      execution raises them (store.direct_read.raise_as_executed: a lost connection invalidated
      and `is_unavailable`)."""
    sync = connection.sync_connection
    driver = sync.connection.dbapi_connection if sync is not None else None
    if isinstance(driver, sqlite_driver.OneTripConnection) and len(values["nominals"]) <= 1:
        entry, index = _direct_statements(connection.dialect)
        hold(driver, entry, [values])
        if values["nominals"]:
            hold(driver, index, [{"visor_ref": values["nominals"][0]}])
        return True
    if isinstance(driver, AsyncAdapt_asyncpg_connection) and (driver.autocommit or driver._transaction):
        await _send_pg(connection, driver, values)
        return True
    return False


async def _send_pg(
    connection: AsyncConnection, driver: AsyncAdapt_asyncpg_connection, values: dict[str, Any]
) -> None:
    entry, with_index = _direct_statements(connection.dialect)
    sql, names, processors = with_index if values["nominals"] else entry
    given = {**values, "refs": values["nominals"]}
    pairs = zip(names, processors, strict=True)
    args = [given[name] if process is None else process(given[name]) for name, process in pairs]
    try:
        await driver.driver_connection.execute(sql, *args)
    except Exception as error:  # noqa: BLE001 - raised as SQLAlchemy's execution raises it
        await raise_as_executed(connection, driver, error, sql, args)


@lru_cache(maxsize=16)
def _direct_statements(dialect: Dialect) -> tuple[Compiled, Compiled]:
    """The entry's insert, and the insert of its index (SQLite) or of both (PostgreSQL)."""
    index = _INSERT_NOMINAL_OF_LAST_SQLITE if dialect.name == "sqlite" else _INSERT_WITH_INDEX_PG
    return compiled_statement(dialect, _INSERT, _WRITTEN), compiled_statement(dialect, index)


@dataclass(frozen=True)
class Entry:
    """One entry for record_many(); the fields are record()'s."""

    actor: str
    action: str
    subject: str = ""
    purpose: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    nominals: Sequence[str] = ()


async def record_many(session: AsyncSession, ctx: Context, entries: Sequence[Entry]) -> None:
    """record() for a batch (the alerts a scan opens, the reminders it sends): one multi-row
    INSERT for the entries and one for their nominal index."""
    if not entries:
        return
    rows = entry_rows(ctx, entries)
    connection = await session.connection()
    if connection.dialect.name == "postgresql" and len(rows) <= ONE_STATEMENT_ROWS:
        await _insert_with_index_pg(connection, rows)
        mark_audited(session)
        return
    if connection.dialect.name == "sqlite":
        ids = await _insert_many_sqlite(connection, rows)
    else:
        ids = await _insert_many_pg(connection, rows)
    index = [
        {"visor_ref": ref, "audit_id": i} for i, row in zip(ids, rows, strict=True) for ref in row["nominals"]
    ]
    if index:
        await _insert_index(connection, index)
    mark_audited(session)


def entry_rows(ctx: Context, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """The audit_log rows record_many writes for these entries (each with its content hash)."""
    return [_values(ctx, e.actor, e.action, e.subject, e.purpose, e.details, e.nominals) for e in entries]


async def _insert_index(connection: AsyncConnection, index: list[dict[str, Any]]) -> None:
    if connection.dialect.name == "postgresql":
        refs, ids = [row["visor_ref"] for row in index], [row["audit_id"] for row in index]
        await connection.execute(_INSERT_NOMINALS_PG, {"refs": refs, "ids": ids})
    else:
        await connection.execute(_INSERT_NOMINALS, index)


class AuditSink(Protocol):
    """Where an answer's audit entry goes: into the caller's transaction (session_sink), or a
    shared group commit (casewatch.audit.batch.AuditBatcher.record) for answers that only read.
    Either way it is committed before the answer goes out."""

    async def __call__(
        self,
        *,
        actor: str,
        action: str,
        subject: str = "",
        purpose: str = "",
        details: Mapping[str, Any] | None = None,
        nominals: Iterable[str] = (),
    ) -> None: ...


def session_sink(session: AsyncSession, ctx: Context, *, direct: bool = False) -> AuditSink:
    """record() into `session`'s transaction."""
    sink: AuditSink = partial(record, session, ctx, direct=direct)
    return sink


def connection_sink(connection: AsyncConnection, ctx: Context) -> AuditSink:
    """record() a lookup's entries on `connection` (direct: handed to the driver where it can)."""
    sink: AuditSink = partial(record, connection, ctx, direct=True)
    return sink


async def _insert_many_pg(connection: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
    """The rows' ids, in order. The rows are inserted in ordinality order, each drawing the next
    value of the id's sequence as it goes in, so the ids in ascending order are the rows' (what
    SQLAlchemy's sort_by_parameter_order relies on for PostgreSQL too)."""
    if any(row["at"].tzinfo is None for row in rows):
        raise ValueError("naive datetime given to a UTC column")  # as store.types.UTCDateTime
    params = {
        c: [json.dumps(row[c]) for row in rows] if c in _PG_ENTRY_JSON else [row[c] for row in rows]
        for c in _PG_ENTRY_TYPES
    }
    ids = sorted((await connection.execute(_INSERT_MANY_PG, params)).scalars())
    if len(ids) != len(rows):
        raise RuntimeError("audit entries' ids could not be matched to their rows")
    return ids


async def _insert_with_index_pg(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """_insert_many_pg and _insert_index in one statement (one round trip): the entries' ids, in
    ascending order, are the rows' (see _insert_many_pg); each index row names its entry by its
    place in the batch."""
    count = (await connection.execute(_INSERT_WITH_INDEX_MANY_PG, pg_entries_params(rows))).scalar_one()
    if count != len(rows):
        raise RuntimeError("audit entries' ids could not be matched to their rows")


def pg_entries_params(rows: Sequence[dict[str, Any]], prefix: str = "") -> dict[str, Any]:
    """pg_entries_ctes' parameters for these rows (entry_rows)."""
    if any(row["at"].tzinfo is None for row in rows):
        raise ValueError("naive datetime given to a UTC column")  # as store.types.UTCDateTime
    params: dict[str, Any] = {
        prefix + c: [json.dumps(row[c]) for row in rows] if c in _PG_ENTRY_JSON else [row[c] for row in rows]
        for c in _PG_ENTRY_TYPES
    }
    params[prefix + "index_refs"] = [ref for row in rows for ref in row["nominals"]]
    params[prefix + "index_rows"] = [n for n, row in enumerate(rows, 1) for _ in row["nominals"]]
    return params


async def _insert_many_sqlite(connection: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
    """The rows' ids, in order. SQLAlchemy returns them in order from SQLite only by one INSERT ..
    RETURNING a row. A few rows (a border check's alerts, a round's outcomes) go in one multi-row
    INSERT .. VALUES .. RETURNING id, its ids sorted: one statement, where the plain way below is
    three. Exact for both, because this transaction holds SQLite's write lock (BEGIN IMMEDIATE)
    and an INTEGER PRIMARY KEY takes the largest rowid plus one, row by row in the order the rows
    go in (a VALUES list's order). More rows: one executemany (one statement, prepared once, one
    hop to the driver's thread), then the ids above the largest before it."""
    if len(rows) <= ONE_STATEMENT_ROWS:
        statement = _insert_values_sqlite(len(rows))
        params = {f"{c}_{n}": row[c] for n, row in enumerate(rows) for c in _WRITTEN}
        ids = sorted((await connection.execute(statement, params)).scalars())
        if len(ids) != len(rows):
            raise RuntimeError("audit entries' ids could not be matched to their rows")
        return ids
    before = (await connection.execute(select(func.max(_ENTRIES.c.id)))).scalar() or 0
    await connection.execute(_INSERT, rows)
    new = select(_ENTRIES.c.id).where(_ENTRIES.c.id > before).order_by(_ENTRIES.c.id)
    ids = list((await connection.execute(new)).scalars())
    if len(ids) != len(rows):
        raise RuntimeError("audit entries' ids could not be matched to their rows")
    return ids
