"""Fresh PostgreSQL databases for the tests, without paying CREATE DATABASE for each one.

Copying the migrated template (CREATE DATABASE ... TEMPLATE) costs 0.4-1 s on the 2-core dev
machine, whatever the template holds: it copies the whole catalog. A test's database is instead
put back as the template is after the test, and the next test takes it:

- every other session on it is ended (the test's leftovers, a killed process's) and it is renamed,
  so a leftover that would reconnect finds no database by that name (as when it was dropped);
- its state is compared with the template's: the schema (tables, columns, indexes, constraints,
  triggers, functions, sequences, views, schemas, extensions), the database's settings (ALTER
  DATABASE ... SET), alembic_version, and no planner statistics (an ANALYZE, by a test or by
  autovacuum, changes plans; the template has none);
- the tables that hold rows are truncated (their sequences restarted), other sequences a test
  moved are restarted, and the template's own rows (the audit chain's head) are written back;
- the state is read once more and must now be the template's exactly: every table as the
  template has it (empty, or the same rows), every sequence at its start.

A database that differs in anything else, or whose reset fails, is dropped and a new copy made,
as before. So a test gets a database it cannot tell from a new copy of the template.
"""

# ruff: noqa: S608  (every name put into SQL here comes from the database's own catalog, quoted)
from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from casewatch.store.engine import make_engine

log = logging.getLogger(__name__)

# One text that changes with anything of the database a reset does not put back.
_FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
  SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || c.relpersistence::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'
  UNION ALL
  SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
  UNION ALL
  SELECT 'con ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'trg ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'fun ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  SELECT 'seq ' || seqrelid::regclass::text || ' ' || seqstart || ' ' || seqincrement || ' '
         || seqmin || ' ' || seqmax || ' ' || seqcycle FROM pg_sequence
  UNION ALL
  SELECT 'view ' || viewname || ' ' || md5(definition) FROM pg_views WHERE schemaname = 'public'
  UNION ALL
  SELECT 'nsp ' || nspname FROM pg_namespace
    WHERE nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
  UNION ALL
  SELECT 'ext ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL
  SELECT 'set ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  SELECT 'db ' || datallowconn || ' ' || datconnlimit || ' ' || datistemplate
    FROM pg_database WHERE datname = current_database()
  -- What else a test could change that a reset does not undo (format() keeps a NULL visible).
  UNION ALL
  SELECT format('relx %s %s %s %s %s %s %s', c.oid::regclass, c.relacl, c.reloptions, c.relowner::regrole,
                c.relrowsecurity, c.relforcerowsecurity, c.relreplident)
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('colx %s.%s %s %s %s %s %s %s', a.attrelid::regclass, a.attname, a.attstattarget,
                a.attoptions, a.attacl, a.attidentity, a.attgenerated, a.attcollation)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('trgon %s %s %s %s', tgrelid::regclass, tgenabled, tgisinternal, count(*))
    FROM pg_trigger GROUP BY tgrelid, tgenabled, tgisinternal
  UNION ALL
  SELECT format('rule %s.%s %s %s', schemaname, tablename, rulename, md5(definition)) FROM pg_rules
  UNION ALL
  SELECT format('type %s %s', t.oid::regtype, t.typtype)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'
  UNION ALL
  SELECT format('enum %s %s %s', enumtypid::regtype, enumsortorder, enumlabel) FROM pg_enum
  UNION ALL
  SELECT format('pol %s %s %s %s %s', polrelid::regclass, polname, polcmd,
                pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)) FROM pg_policy
  UNION ALL
  SELECT format('evt %s %s %s', evtname, evtevent, evtenabled) FROM pg_event_trigger
  UNION ALL
  SELECT format('stx %s', stxname) FROM pg_statistic_ext
  UNION ALL
  SELECT format('desc %s %s %s %s', classoid, objoid, objsubid, md5(description)) FROM pg_description
    WHERE objoid >= 16384
  UNION ALL
  SELECT format('lo %s', count(*)) FROM pg_largeobject_metadata
  UNION ALL
  SELECT format('pub %s', pubname) FROM pg_publication
  UNION ALL
  SELECT format('opr %s', oid::regoperator) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('coll %s', collname) FROM pg_collation WHERE collnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('cast %s %s', castsource::regtype, casttarget::regtype) FROM pg_cast WHERE oid >= 16384
  UNION ALL
  SELECT format('opc %s', opcname) FROM pg_opclass WHERE opcnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('tsc %s', cfgname) FROM pg_ts_config WHERE cfgnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('defacl %s %s %s', defaclrole::regrole, defaclobjtype, defaclacl) FROM pg_default_acl
  UNION ALL
  SELECT format('nspx %s %s %s', nspname, nspowner::regrole, nspacl) FROM pg_namespace
    WHERE nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
  UNION ALL
  SELECT format('funx %s %s %s %s %s', p.oid::regprocedure, p.proconfig, p.prosecdef, p.provolatile, p.proacl)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
) AS items(item)
"""

# What the planner knows of each table's and index's contents, besides its statistics: a new copy
# has never-counted tables and just-built indexes (TRUNCATE leaves both tables and indexes as
# never counted, and keeps statistics).
_RELATION_COUNTS = """
SELECT c.relname, coalesce(t.relname, c.relname), c.relpages, c.reltuples, c.relallvisible
FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
WHERE c.relnamespace = 'public'::regnamespace
"""
_STATISTICS = """
SELECT count(*) FROM pg_statistic s JOIN pg_class c ON c.oid = s.starelid
WHERE c.relnamespace = 'public'::regnamespace
"""

_TABLES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.relname
"""
_SEQUENCES = """
SELECT s.seqrelid::regclass::text, s.seqstart FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1
"""
# Ends every other session on the database, waiting (up to 5 s each) until it has ended.
_END_OTHER_SESSIONS = """
SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""

Rows = list[dict[str, Any]]
Counts = tuple[str, int, float, int]  # the table (for an index, its table), pages, tuples, all-visible pages


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _comparable(rows: Rows) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


class _Template:
    """What a database copied from the template holds, read once from the first copy."""

    def __init__(
        self,
        fingerprint: str,
        counts: dict[str, Counts],
        tables: list[str],
        sequences: dict[str, int],
        rows: dict[str, Rows],
    ):
        self.fingerprint = fingerprint
        self.counts = counts
        self.tables = tables
        self.sequences = sequences  # name -> start
        self.rows = rows  # the rows of the tables the template fills (alembic_version, audit_chain)


async def _filled(conn: AsyncConnection, tables: list[str]) -> list[str]:
    """Which of `tables` hold a row (one statement for all)."""
    if not tables:
        return []
    probe = " UNION ALL ".join(
        f"SELECT {i} FROM (SELECT 1 FROM {_quoted(t)} LIMIT 1) AS t{i}" for i, t in enumerate(tables)
    )
    return [tables[i] for (i,) in (await conn.execute(text(probe))).all()]


async def _rows(conn: AsyncConnection, table: str) -> Rows:
    return [dict(row._mapping) for row in (await conn.execute(text(f"SELECT * FROM {_quoted(table)}"))).all()]


async def _sequences(conn: AsyncConnection) -> dict[str, tuple[int, bool]]:
    """Every sequence of the database: (last_value, is_called)."""
    names = [n for n, _ in (await conn.execute(text(_SEQUENCES))).all()]
    if not names:
        return {}
    union = " UNION ALL ".join(f"SELECT {i}, last_value, is_called FROM {n}" for i, n in enumerate(names))
    return {names[i]: (int(v), bool(c)) for i, v, c in (await conn.execute(text(union))).all()}


async def _restore(conn: AsyncConnection, table: str, row: dict[str, Any]) -> None:
    columns = ", ".join(map(_quoted, row))
    values = ", ".join(f":v{i}" for i in range(len(row)))
    params = {f"v{i}": value for i, value in enumerate(row.values())}
    await conn.execute(text(f"INSERT INTO {_quoted(table)} ({columns}) VALUES ({values})"), params)


async def relation_counts(conn: AsyncConnection) -> dict[str, Counts]:
    rows = (await conn.execute(text(_RELATION_COUNTS))).all()
    return {
        name: (table, int(pages), float(tuples), int(visible))
        for name, table, pages, tuples, visible in rows
    }


async def statistics(conn: AsyncConnection) -> int:
    return int((await conn.execute(text(_STATISTICS))).scalar_one())


class PgPool:
    """Databases copied from `template`, handed out one a test and taken back clean."""

    def __init__(
        self,
        template: str,
        admin: Callable[[str], Awaitable[None]],
        url_of: Callable[[str], str],
        *,
        reuse: bool = True,
    ) -> None:
        self.template = template
        self.reuse = reuse
        self.admin = admin
        self.url_of = url_of
        self.free: list[str] = []
        self.made: set[str] = set()
        self.expected: _Template | None = None
        self.created = 0
        self.reused = 0
        self.dropped = 0

    async def take(self) -> str:
        if self.free:
            self.reused += 1
            return self.free.pop()
        name = f"cw_{uuid.uuid4().hex[:12]}"
        await self.admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        self.made.add(name)
        self.created += 1
        if self.expected is None:
            self.expected = await self._read_template(name)
        return name

    async def give_back(self, name: str) -> None:
        if not self.reuse:
            await self._drop(name)
            return
        try:
            # Renamed first, with every session on it ended: whatever of the test is left (an
            # engine that reconnects, a child process not yet stopped) finds no database by the
            # old name, as when it was dropped, and cannot write into the next test's.
            await self.admin(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            renamed = f"cw_{uuid.uuid4().hex[:12]}"
            await self.admin(f"ALTER DATABASE {name} RENAME TO {renamed}")
        except Exception as exc:  # noqa: BLE001 - a session came back: drop it as before
            log.debug("pg pool: %s not renamed (%s)", name, type(exc).__name__)
            self.dropped += 1
            await self._drop(name)
            return
        self.made.discard(name)
        self.made.add(renamed)
        try:
            clean = await self._reset(renamed)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the database is not known clean
            log.debug("pg pool: %s not reset (%s)", renamed, type(exc).__name__)
            clean = False
        if clean:
            self.free.append(renamed)
        else:
            self.dropped += 1
            await self._drop(renamed)

    async def drop_all(self) -> None:
        for name in list(self.made):
            await self._drop(name)

    async def _drop(self, name: str) -> None:
        self.made.discard(name)
        await self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    async def _read_template(self, name: str) -> _Template:
        engine = make_engine(self.url_of(name))
        try:
            async with engine.connect() as conn:
                fingerprint = str((await conn.execute(text(_FINGERPRINT))).scalar_one())
                counts = await relation_counts(conn)
                assert await statistics(conn) == 0, "the template has planner statistics"
                tables = [t for (t,) in (await conn.execute(text(_TABLES))).all()]
                sequences = {n: int(s) for n, s in (await conn.execute(text(_SEQUENCES))).all()}
                rows = {t: await _rows(conn, t) for t in await _filled(conn, tables)}
        finally:
            await engine.dispose()
        return _Template(fingerprint, counts, tables, sequences, rows)

    async def _differing_tables(self, conn: AsyncConnection) -> list[str]:
        """The tables whose rows are not the template's."""
        expected = self.expected
        assert expected is not None
        filled = set(await _filled(conn, expected.tables))
        differing = [t for t in filled if t not in expected.rows]
        for table, rows in expected.rows.items():
            if table not in filled or _comparable(await _rows(conn, table)) != _comparable(rows):
                differing.append(table)
        return sorted(differing)

    async def _put_back_what_the_planner_knows(self, conn: AsyncConnection) -> None:
        """Statistics and counts as a new copy has them. TRUNCATE leaves a table and its indexes
        "never counted" and keeps the statistics an ANALYZE (a test's, autovacuum's) made, where
        a new copy has no statistics and indexes counted when they were built; the planner reads
        both (a partial index's count, for one). Written to the catalog directly, as the
        template's exact values (needs the superuser scripts/pg-temp makes; else the database
        is dropped instead)."""
        expected = self.expected
        assert expected is not None
        if await statistics(conn):
            await conn.execute(
                text(
                    "DELETE FROM pg_statistic WHERE starelid IN "
                    "(SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)"
                )
            )
        for relation, counts in (await relation_counts(conn)).items():
            want = expected.counts.get(relation)
            if want is not None and counts != want:
                await conn.execute(
                    text(
                        "UPDATE pg_class SET relpages = :pages, reltuples = :tuples, "
                        "relallvisible = :visible WHERE oid = CAST(:relation AS regclass)"
                    ),
                    {"pages": want[1], "tuples": want[2], "visible": want[3], "relation": _quoted(relation)},
                )
        # The activity counters (autovacuum's triggers among them) start from zero, as a new copy's.
        await conn.execute(text("SELECT pg_stat_reset()"))

    async def _reset(self, name: str) -> bool:
        expected = self.expected
        assert expected is not None
        # A plain engine, without the service's connect-time set-up (make_engine's): one
        # connection, used once.
        engine = create_async_engine(self.url_of(name), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                if (await conn.execute(text(_END_OTHER_SESSIONS))).scalar_one() != 0:
                    return False  # a session that did not end might still write
                if (await conn.execute(text(_FINGERPRINT))).scalar_one() != expected.fingerprint:
                    return False
                differing = await self._differing_tables(conn)
                if differing:
                    listed = ", ".join(map(_quoted, differing))
                    await conn.execute(text(f"TRUNCATE {listed} RESTART IDENTITY CASCADE"))
                    # The template's own rows, where they are gone now (CASCADE may take more).
                    filled = set(await _filled(conn, list(expected.rows)))
                    for table, rows in expected.rows.items():
                        if table not in filled:
                            for row in rows:
                                await _restore(conn, table, row)
                for seq, (value, called) in (await _sequences(conn)).items():
                    if called or value != expected.sequences[seq]:
                        await conn.execute(text(f"ALTER SEQUENCE {seq} RESTART"))
                await self._put_back_what_the_planner_knows(conn)
                # Read back: the database must now hold exactly what a new copy holds.
                fresh = {seq: (start, False) for seq, start in expected.sequences.items()}
                return (
                    await self._differing_tables(conn) == []
                    and await _sequences(conn) == fresh
                    and await relation_counts(conn) == expected.counts
                    and await statistics(conn) == 0
                )
        finally:
            await engine.dispose()
