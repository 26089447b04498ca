"""What several commands share: the database-at-head check and logging set-up."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import IO

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.config import Settings
from casewatch.context import Context
from casewatch.store.revision import HEAD, stored_revision

# Chatter that says nothing to a person running a command (alembic announces its plugins
# and its migration context).
QUIET_LOGGERS = ("alembic", "aiosqlite", "asyncio")


def quiet_libraries() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(settings: Settings) -> None:
    quiet_libraries()
    logging.getLogger().setLevel(settings.service.log_level)


def quietly(write: Callable[[], None], stream: IO[str]) -> None:
    """Write, unless the reader has gone (a pipe closed: `... | head -2`): then drop this and all
    later output to that stream, so neither this write nor the flush at exit raises."""
    try:
        write()
    except BrokenPipeError:
        drop_output(stream)


def drop_output(stream: IO[str]) -> None:
    """Send what is still written to `stream`, whose reader has gone, nowhere (so that the flush
    at exit raises no BrokenPipeError either)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a file descriptor (a test's capture): nothing to keep open
        pass


def directory_problem(settings: Settings, command: str) -> str | None:
    """Alerts opened with no teams configured would reach nobody (and a directory sync would
    empty the officer table the running service answers Slack from): refuse instead."""
    if settings.teams:
        return None
    return (
        f"casewatch {command}: no [[teams]] in the configuration, so alerts would reach nobody. "
        "Pass --config with the service's own configuration (see config.example.toml)"
    )


def connect_problem(exc: BaseException) -> str:
    """The database could not be reached: said without the URL (a password may be in it)."""
    return f"database: cannot connect ({type(exc).__name__}); check database.url"


async def schema_problem(engine: AsyncEngine, config_hint: str = "") -> str | None:
    """Why the database cannot be used yet (unreachable, or not migrated to the head revision),
    or None when it can. The message says what to run; it never shows the URL (a password may
    be in it)."""
    try:
        current = await stored_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        return connect_problem(exc)
    except ValueError as exc:
        return f"database: {exc}"
    head = HEAD
    if current == head:
        return None
    upgrade = "casewatch db upgrade" + (f" --config {config_hint}" if config_hint else "")
    if current is None:
        return f"database: not set up yet (no migrations applied). Run `{upgrade}` first"
    return f"database: at revision {current}, this version needs {head}. Run `{upgrade}` first"


async def seal_audit(sessions: async_sessionmaker[AsyncSession], ctx: Context) -> None:
    """Chain the audit entries this command wrote before it exits (a running service would, at
    its next round; this makes a command complete on its own)."""
    from casewatch.audit.seal import AuditKeyMismatch, seal_pending

    try:
        await seal_pending(sessions, ctx)
    except AuditKeyMismatch as exc:
        logging.getLogger("casewatch.audit").error("audit entries left unsealed: %s", exc)


async def on_database(
    settings: Settings, config_hint: str, command: str, body: Callable[[AsyncEngine], Awaitable[int]]
) -> int:
    """Run `body` on the configured database, or say why it cannot be used (exit 2); the engine
    is disposed of either way."""
    from casewatch.store.engine import make_engine

    engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
    try:
        if problem := await schema_problem(engine, config_hint):
            print(f"casewatch {command}: {problem}", file=sys.stderr)
            return 2
        return await body(engine)
    finally:
        await engine.dispose()
