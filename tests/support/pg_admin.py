"""One connection to the test server's maintenance database, kept for the whole run.

Every PostgreSQL test's database is renamed and handed back through it after the test
(tests.support.pg_pool), and copies are made and dropped through it. A connection made for each
statement cost 15-35 ms (a server process started, SQLAlchemy's dialect set up, then torn down),
two or three times a test. Each test has an event loop of its own, which an asyncpg connection
cannot outlive, so the link's connection lives on an event loop in a thread of its own; a
caller on any loop awaits its statements there, one at a time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

T = TypeVar("T")


class AdminLink:
    def __init__(self, url: str) -> None:
        # asyncpg takes the plain postgresql:// form of the SQLAlchemy URL. None without a server
        # (TEST_PG_URL unset): the PostgreSQL tests then skip and never use the link.
        self.dsn: str | None = None
        if url:
            self.dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connection: asyncpg.Connection | None = None
        self._turn: asyncio.Lock | None = None  # made on the link's loop

    async def execute(self, sql: str) -> None:
        """Runs one statement outside any transaction (CREATE, DROP and ALTER DATABASE need that)."""
        await self._on_link(self._execute(sql))

    def close(self) -> None:
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    async def _on_link(self, work: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._started()))

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pg-admin-link", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _execute(self, sql: str) -> None:
        if self.dsn is None:
            raise RuntimeError("no PostgreSQL server for the admin link: TEST_PG_URL is not set")
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(self.dsn)
            try:
                await self._connection.execute(sql)
            except (OSError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError):
                # the connection was lost (a test restarted the server): once more on a new one
                self._connection.terminate()
                self._connection = await asyncpg.connect(self.dsn)
                await self._connection.execute(sql)

    async def _close(self) -> None:
        if self._connection is not None:
            await self._connection.close(timeout=5)
            self._connection = None
