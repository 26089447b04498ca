"""SQLite's WAL checkpoints, off the request path.

In WAL mode a commit appends the pages it changed to the -wal file; a checkpoint copies them into
the database file and, with synchronous=FULL, syncs the WAL before and the database after. By
default SQLite runs one inside the commit that takes the WAL past 1000 pages
(wal_autocheckpoint): that commit, a request's, then copies ~4 MB and syncs twice more (bench/
README, end to end, eighth session).

WalCheckpointer takes that out of the service's commits: its writer engine gets
wal_autocheckpoint=0 (store.engine.set_wal_autocheckpoint) and the checkpoints run on a
connection and a thread of their own, never on the event loop:

- PASSIVE once the writer has made no commit for `quiet` seconds (it is between pieces of work)
  and the WAL holds `soft_frames` not yet copied (SQLite's own bound, 1000); any at all once no
  commit has come for `idle` seconds;
- PASSIVE, commits or not, once `busy_frames` wait: under steady writes there is no quiet moment;
- once the WAL is `hard_frames` long, PASSIVE then RESTART: the bound on its size. A PASSIVE
  checkpoint runs beside the writer and never waits, but the WAL starts again from its beginning
  only when a write begins with every frame copied, which steady writes may never allow. RESTART
  makes it start again: it takes the write lock once the write under way ends and waits for
  readers to leave the WAL, at most `restart_hold` seconds in all (its busy timeout, 50 ms; the
  PASSIVE before it copied the frames, so it holds writers only to reset the WAL). When a write or
  a reader is still in the way it gives up, and tries again a look (`quiet`) later, then twice as
  long each time up to `restart_wait` seconds. A long reader (audit verify, export) pins the WAL:
  nothing can bound it then, as with SQLite's own checkpoint, and writers are held at most
  `restart_hold` every `restart_wait`.

Durability is SQLite's and unchanged: every commit is synced to the WAL before it returns
(synchronous=FULL on the writer); the checkpoint connection syncs as the writer's would
(synchronous=FULL). A crash leaves committed frames in the WAL, which the next connection reads.

If a checkpoint fails (a disk error), the writer gets SQLite's automatic checkpoint back and this
checkpointer stops: the service goes on as before, with the checkpoints inside its commits.

The WAL's frame counts come from its index (the -shm file), read without a lock: mxFrame (frames
in the WAL since it last began again) at byte 16 of the index header, nBackfill (frames already
copied) at byte 96, in the machine's byte order; the header is written twice (bytes 0-47 and
48-95) and a read that finds the two copies different is torn and ignored. Source:
https://www.sqlite.org/walformat.html ("The WAL-Index Header", "WAL-Index Header Format"), and
SQLite's wal.c (struct WalIndexHdr, struct WalCkptInfo).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import struct
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.store.engine import WAL_AUTOCHECKPOINT_DEFAULT, set_wal_autocheckpoint

log = logging.getLogger(__name__)

SOFT_FRAMES = WAL_AUTOCHECKPOINT_DEFAULT
BUSY_FRAMES = 4 * SOFT_FRAMES
HARD_FRAMES = 16 * SOFT_FRAMES  # ~64 MB of WAL with 4 kB pages
QUIET_SECONDS = 0.05
IDLE_SECONDS = 1.0
RESTART_WAIT_SECONDS = 1.0  # after a RESTART that found a write or a reader in the way
RESTART_HOLD_SECONDS = 0.05

_INDEX_VERSION = 3007000  # WALINDEX_MAX_VERSION: the only version of the WAL index there is
_HEADER = struct.Struct("=IIIBBHII")  # iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage
_HEADER_BYTES = 48
_BACKFILL = struct.Struct("=I")
_BACKFILL_AT = 96


@dataclass(frozen=True)
class WalFrames:
    length: int  # frames in the WAL since it last began again (mxFrame)
    copied: int  # of those, copied into the database (nBackfill)

    @property
    def waiting(self) -> int:
        return max(0, self.length - self.copied)


def read_wal_frames(db_path: str) -> WalFrames | None:
    """The WAL's frame counts from its index, or None when there is no index to read or the read
    was torn (a writer was updating the header)."""
    try:
        with open(db_path + "-shm", "rb") as index:
            head = index.read(_BACKFILL_AT + _BACKFILL.size)
    except OSError:
        return None
    if len(head) < _BACKFILL_AT + _BACKFILL.size:
        return None
    if head[:_HEADER_BYTES] != head[_HEADER_BYTES:2 * _HEADER_BYTES]:
        return None  # torn: a writer is between the two copies
    version, _unused, _change, is_init, _big_end, _page_size, length, _pages = _HEADER.unpack_from(head, 0)
    if version != _INDEX_VERSION or not is_init:
        return None
    (copied,) = _BACKFILL.unpack_from(head, _BACKFILL_AT)
    return WalFrames(length, copied)


@dataclass
class CheckpointCounts:
    passive: int = 0
    restart: int = 0
    restart_busy: int = 0  # RESTARTs that gave up waiting (tried again later)


class WalCheckpointer:
    """Checkpoints the WAL of `engine`'s SQLite database file off the request path (module doc).
    `start()` in the running loop, `await stop()` when done."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        soft_frames: int = SOFT_FRAMES,
        busy_frames: int = BUSY_FRAMES,
        hard_frames: int = HARD_FRAMES,
        quiet: float = QUIET_SECONDS,
        idle: float = IDLE_SECONDS,
        restart_wait: float = RESTART_WAIT_SECONDS,
        restart_hold: float = RESTART_HOLD_SECONDS,
        quiet_for: Callable[[], float] | None = None,
    ) -> None:
        """`quiet_for`, if given, says how long the process has had nothing in flight (casewatch.
        wiring: no request being answered, no transaction open); a quiet moment is then one where
        both it and the time since the writer's last commit reach `quiet`."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
            raise ValueError("WalCheckpointer needs a SQLite database file")
        if not 0 < soft_frames <= busy_frames <= hard_frames:
            raise ValueError("frame bounds must be 0 < soft <= busy <= hard")
        self._engine = engine
        self._path = path
        self._soft, self._busy, self._hard = soft_frames, busy_frames, hard_frames
        self._quiet, self._idle, self._restart_wait = quiet, idle, restart_wait
        self._restart_hold = restart_hold
        self._quiet_for = quiet_for
        self._next_restart = 0.0  # time.monotonic() before which no RESTART is tried (after a busy one)
        self._restart_backoff = 0.0
        self._last_commit = float("-inf")
        self._committed = asyncio.Event()  # a commit since the WAL was last looked at
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None  # used on the executor's thread only
        self._task: asyncio.Task[None] | None = None
        self.counts = CheckpointCounts()
        self.failed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="casewatch-wal-checkpoint")
        event.listen(self._engine.sync_engine, "commit", self._on_commit)
        set_wal_autocheckpoint(self._engine, 0)
        self._task = asyncio.create_task(self._run(), name="casewatch-wal-checkpointer")

    async def stop(self) -> None:
        """Stop checkpointing, copy what the WAL holds once more (PASSIVE), close the connection,
        and give the writer SQLite's automatic checkpoint back."""
        if event.contains(self._engine.sync_engine, "commit", self._on_commit):
            event.remove(self._engine.sync_engine, "commit", self._on_commit)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            try:
                if not self.failed:
                    await loop.run_in_executor(self._executor, self._checkpoint_if, 1, False)
            except Exception as error:  # noqa: BLE001 (stopping: the next start will checkpoint)
                log.warning("last WAL checkpoint failed: %s", type(error).__name__)
            finally:
                await loop.run_in_executor(self._executor, self._close)
                self._executor.shutdown(wait=True)
                self._executor = None
        set_wal_autocheckpoint(self._engine, WAL_AUTOCHECKPOINT_DEFAULT)

    def _on_commit(self, _conn: Any) -> None:
        # On the event loop (the engine is async): its commits run there, in SQLAlchemy's greenlet.
        self._last_commit = time.monotonic()
        self._committed.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        executor = self._executor
        assert executor is not None
        left = 0
        try:
            while True:
                await self._committed.wait()
                # Past the busy bound (writes with no pause), look five times as often: the WAL's
                # length past the hard bound is what one look's writes add.
                await asyncio.sleep(self._quiet if left < self._busy else self._quiet / 5)
                quiet = self._is_quiet()
                if quiet:
                    self._committed.clear()
                left = await loop.run_in_executor(executor, self._step, quiet)
                if quiet and left and not await self._commit_within(self._idle):
                    await loop.run_in_executor(executor, self._checkpoint_if, 1, False)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 (logged by type; SQLite's own checkpoint takes over)
            self.failed = True
            log.warning("WAL checkpoints failed (%s): SQLite checkpoints in the commits again",
                        type(error).__name__)
            set_wal_autocheckpoint(self._engine, WAL_AUTOCHECKPOINT_DEFAULT)

    def _is_quiet(self) -> bool:
        if time.monotonic() - self._last_commit < self._quiet:
            return False
        return self._quiet_for is None or self._quiet_for() >= self._quiet

    async def _commit_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._committed.wait()
        except TimeoutError:
            return False
        return True

    # On the executor's thread from here on.

    def _step(self, quiet: bool) -> int:
        """Checkpoint if a bound says so; returns the frames still waiting."""
        frames = read_wal_frames(self._path)
        if frames is None:
            return 0
        if frames.length >= self._hard and time.monotonic() >= self._next_restart:
            self._checkpoint(restart=False)
            return self._checkpoint(restart=True)
        if frames.waiting >= self._busy or (quiet and frames.waiting >= self._soft):
            return self._checkpoint(restart=False)
        return frames.waiting

    def _checkpoint_if(self, at_least: int, restart: bool) -> int:
        frames = read_wal_frames(self._path)
        if frames is None or frames.waiting < at_least:
            return 0 if frames is None else frames.waiting
        return self._checkpoint(restart=restart)

    def _checkpoint(self, *, restart: bool) -> int:
        connection = self._open()
        mode = "RESTART" if restart else "PASSIVE"
        busy, _length, _copied = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        if restart:
            self.counts.restart += 1
            self.counts.restart_busy += int(busy != 0)
            # After a busy one, the next no sooner than a look later, then twice as long each time,
            # up to restart_wait: a write that was under way is soon past, a long reader is not.
            self._restart_backoff = (
                min(self._restart_wait, max(self._quiet, 2 * self._restart_backoff)) if busy else 0.0
            )
            self._next_restart = time.monotonic() + self._restart_backoff
        else:
            self.counts.passive += 1
        after = read_wal_frames(self._path)
        return 0 if after is None else after.waiting

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            # The busy timeout is RESTART's wait (module doc); PASSIVE never waits.
            connection = sqlite3.connect(
                self._path, timeout=self._restart_hold, isolation_level=None, check_same_thread=True
            )
            # The checkpoint's syncs are this connection's: as durable as the writer's commits.
            connection.execute("PRAGMA synchronous=FULL")
            self._connection = connection
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def start_wal_checkpoints(
    engine: AsyncEngine, quiet_for: Callable[[], float] | None = None
) -> Callable[[], Awaitable[None]] | None:
    """A running WalCheckpointer's stop for `engine`, or None where there is nothing to
    checkpoint (PostgreSQL, an in-memory SQLite database)."""
    try:
        checkpointer = WalCheckpointer(engine, quiet_for=quiet_for)
    except ValueError:
        return None
    checkpointer.start()
    return checkpointer.stop
