"""A real `casewatch serve` process killed with SIGKILL in the middle of a delivery, then started
again: afterwards every alert has reached every receiver. Delivery is at-least-once (documented
in casewatch/delivery/worker.py): a message Slack had already taken when the process died is
sent again once its claim's lease runs out, so duplicates are allowed only for deliveries that
were in flight ("sending") at the kill. Loopback only; fictional data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Delivery
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import SECRET, envelope, nominal_data, signed_headers

pytestmark = pytest.mark.slow
ALERTS = 8
TOKEN = "xoxb-kill-test-not-real"


def _config(path: Path, db_url: str, slack: SlackStandIn, mail: MailSink) -> None:
    path.write_text(
        f'[database]\nurl = "{db_url}"\n[http]\nport = 0\n'
        f'[slack]\nmode = "http"\nbot_token = "{TOKEN}"\nsigning_secret = "kill-test-not-real"\n'
        f'api_url = "{slack.url}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {mail.port}\n'
        "[delivery]\nworkers = 2\npoll_seconds = 0.1\nsend_timeout_seconds = 2\nlease_seconds = 10\n"
        "chat_interval_seconds = 0\nbackoff_base_seconds = 0.2\nbackoff_max_seconds = 1\n"
        '[[teams]]\nid = "north"\nname = "North (fictional)"\nchannel = "C0NORTH"\n'
        'spoc_email = "north.spoc@force.example"\n'
        '[[officers]]\nid = "PC1234"\nname = "PC Example"\nemail = "pc1234@force.example"\nteam = "north"\n'
    )


@pytest.fixture(name="started")
def started_fixture() -> Iterator[list[asyncio.subprocess.Process]]:
    """Every serve process the test starts: killed at the end whatever happened
    (tests/test_store8_crash.py uses it too)."""
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


async def serve_process(
    config: Path, started: list[asyncio.subprocess.Process]
) -> tuple[asyncio.subprocess.Process, int]:
    """`casewatch serve --config config` in a process of its own (its environment's CASEWATCH_
    settings left out but the ingest secret), once it says on which port it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWATCH_")}
    env["CASEWATCH_INGEST__SECRET"] = SECRET
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "casewatch.cli", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    started.append(process)
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            seen.append(line)
            assert line, "serve exited:\n" + "".join(seen)
            found = re.search(r"casewatch serving on http://127\.0\.0\.1:(\d+)", line)
            if found:
                break
    asyncio.get_running_loop().create_task(_drain(process))
    return process, int(found.group(1))


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.readline():
        pass


async def _upgrade(config: Path) -> None:
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "casewatch.cli", "db", "upgrade", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await done.communicate()
    assert done.returncode == 0, output.decode()


async def test_sigkill_mid_delivery_loses_nothing(
    tmp_path: Path, started: list[asyncio.subprocess.Process]
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'kill.db'}"
    config = tmp_path / "casewatch.toml"
    mail = MailSink().start()
    try:
        async with SlackStandIn(token=TOKEN) as slack:
            _config(config, db_url, slack, mail)
            await _upgrade(config)
            # Slack takes the first messages but answers late: the kill lands mid-delivery.
            for _ in range(4):
                slack.delay_next("chat.postMessage", 1.5, handle_first=True)  # < send timeout
            process, port = await serve_process(config, started)
            refs = [f"VS-K{n:06d}" for n in range(ALERTS)]
            now = time.time()
            events = [envelope("nominal.upsert", nominal_data(), visor_ref=r) for r in refs] + [
                envelope("travel.border_alert", {"port": "Mockport (fictional)", "direction": "outbound",
                                                 "checked_at": "2026-11-20T08:00:00Z"}, visor_ref=r)
                for r in refs
            ]
            body = json.dumps(events).encode()
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{port}/api/v1/events", data=body,
                    headers={"Content-Type": "application/json", **signed_headers(body, ts=int(now))},
                ) as resp:
                    assert resp.status == 202, await resp.text()
                    opened = (await resp.json())["alerts"]
            assert len(opened) >= ALERTS  # a border check may open more than one kind
            await slack.wait_for_calls("chat.postMessage", 1, within=15)
            process.send_signal(signal.SIGKILL)
            await process.wait()

            engine = make_engine(db_url)
            sessions = make_sessionmaker(engine)
            async with sessions() as session:
                in_flight = Counter((str(c), str(t), str(a)) for c, t, a in await session.execute(
                    select(Delivery.channel, Delivery.target, Delivery.alert_id)
                    .where(Delivery.state == "sending")
                ))

            assert sum(in_flight.values()) >= 1  # the kill did land mid-delivery
            process, _ = await serve_process(config, started)
            try:
                async with asyncio.timeout(40):
                    while True:
                        # The second query inside the block too: a session used after its block
                        # checks out a connection nobody returns (the garbage collector warned).
                        async with sessions() as session:
                            states = Counter((await session.execute(select(Delivery.state))).scalars())
                            if set(states) == {"sent"}:
                                expected = {
                                    (str(c), str(t), str(a)) for c, t, a in await session.execute(
                                        select(Delivery.channel, Delivery.target, Delivery.alert_id)
                                    )
                                }
                                break
                        await asyncio.sleep(0.2)
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
                await engine.dispose()

        ids = sorted({alert_id for _, _, alert_id in expected})
        received: Counter[tuple[str, str, str]] = Counter()
        for (channel, _), message in slack.messages.items():
            received.update(("slack", channel, i) for i in ids if i in str(message.get("text")))
        for mailed, (_, rcpts) in zip(mail.messages, mail.envelopes, strict=True):
            text = str(mailed["Subject"]) + str(mailed.get_body(preferencelist=("plain",)))
            received.update(("email", rcpt, i) for i in ids if i in text for rcpt in rcpts)
    finally:
        mail.stop()
    assert set(opened) <= set(ids) and any(channel == "slack" for channel, _, _ in expected)
    for key in expected:
        assert received[key] >= 1, key  # none lost
        assert received[key] - 1 <= in_flight[key], key  # a duplicate only where it was in flight
