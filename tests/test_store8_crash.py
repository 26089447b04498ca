"""A real `casewatch serve` on SQLite, its WAL checkpointed meanwhile, killed with SIGKILL while
events are being answered: reopened, every event it answered 202 is stored and the database is
sound. Loopback only; fictional data. (serve leaves the checkpoint to SQLite's commits; with
store.checkpoint's WalCheckpointer started by casewatch.wiring, eighth session, it passed too.)"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select, text

from casewatch.store.checkpoint import read_wal_frames
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Event
from tests.support import envelope, nominal_data, signed_headers
from tests.test_robustness_kill import serve_process, started_fixture  # noqa: F401

pytestmark = pytest.mark.slow

CONFIG = (
    '[slack]\nmode = "off"\n[http]\nport = 0\n'
    '[[teams]]\nid = "north"\nname = "North (fictional)"\nchannel = "C0NORTH"\n'
    'spoc_email = "north.spoc@force.example"\n'
    '[[officers]]\nid = "PC1234"\nname = "PC Example"\nemail = "pc1234@force.example"\nteam = "north"\n'
)


async def _run(*args: str, env: dict[str, str] | None = None) -> None:
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "casewatch.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    output, _ = await done.communicate()
    assert done.returncode == 0, output.decode()


async def _post(http: aiohttp.ClientSession, port: int, n: int) -> str | None:
    """One nominal's upsert, alone in its request; its event id if answered 202."""
    event = envelope("nominal.upsert", nominal_data(), visor_ref=f"VS-C{n:06d}")
    body = json.dumps([event]).encode()
    headers = {"Content-Type": "application/json", **signed_headers(body, ts=int(time.time()))}
    async with http.post(f"http://127.0.0.1:{port}/api/v1/events", data=body, headers=headers) as resp:
        return str(event["id"]) if resp.status == 202 else None


async def test_sigkill_while_answering_loses_no_answered_event(
    tmp_path: Path, started: list[asyncio.subprocess.Process]
) -> None:
    db_path = tmp_path / "crash.db"
    config = tmp_path / "casewatch.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{db_path}"\n' + CONFIG, encoding="utf-8")
    await _run("db", "upgrade", "--config", str(config))
    process, port = await serve_process(config, started)

    answered: list[str] = []
    lost_in_flight = 0
    checkpointed = False
    rng = random.Random(8)
    async with aiohttp.ClientSession() as http:
        for n in range(360):
            event_id = await _post(http, port, n)
            assert event_id is not None
            answered.append(event_id)
            if n % 60 == 30:
                await asyncio.sleep(0.15)  # a quiet moment: the checkpointer's turn
            frames = read_wal_frames(str(db_path))
            checkpointed = checkpointed or (frames is not None and frames.copied > 0)
        # The kill lands while four more requests are being answered.
        in_flight = [asyncio.create_task(_post(http, port, 1000 + k)) for k in range(4)]
        await asyncio.sleep(rng.uniform(0.002, 0.012))
        process.send_signal(signal.SIGKILL)
        await process.wait()
        for outcome in await asyncio.gather(*in_flight, return_exceptions=True):
            if isinstance(outcome, str):
                answered.append(outcome)
            else:
                lost_in_flight += 1

    assert checkpointed  # the WAL was checkpointed while the service ran
    left = read_wal_frames(str(db_path))
    assert left is not None and left.waiting > 0  # committed frames only the WAL held at the kill

    engine = make_engine(f"sqlite+aiosqlite:///{db_path}")
    try:
        async with make_sessionmaker(engine)() as session:
            stored = set((await session.execute(select(Event.id))).scalars())
            integrity = (await session.execute(text("PRAGMA integrity_check"))).scalar_one()
    finally:
        await engine.dispose()
    assert integrity == "ok"
    assert len(answered) >= 360
    assert set(answered) <= stored  # every answered event survived the kill
