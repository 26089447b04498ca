"""A peer baseline for the end-to-end benchmark: Prometheus Alertmanager (Debian's
`prometheus-alertmanager`) on loopback, group_wait 0, one group per alert, a webhook receiver
served here. Measured: POST /api/v2/alerts -> the webhook receiving that alert, at the same rate
as casewatch's events. It keeps alerts in memory and writes nothing durable before notifying."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.measure import summary

BINARIES = ("prometheus-alertmanager", "alertmanager")


def binary() -> str | None:
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(hook_url: str) -> str:
    return json.dumps({  # YAML is a superset of JSON
        "route": {"receiver": "bench", "group_by": ["..."], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "bench", "webhook_configs": [{"url": hook_url, "send_resolved": False}]}],
    })


async def bench_alertmanager(count: int, rate: float) -> dict[str, Any]:
    """p50/p99 from POST to webhook; {"skipped": reason} when Alertmanager is not installed."""
    exe = binary()
    if exe is None:
        reason = "prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)"
        print(f"  alertmanager baseline skipped: {reason}")
        return {"skipped": reason}
    received: dict[str, float] = {}
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        at = time.monotonic()
        for alert in (await request.json()).get("alerts", []):
            received.setdefault(alert["labels"].get("ref", ""), at)
        if len(received) >= count:
            all_in.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory(prefix="casewatch-bench-am-") as tmp:
        config = Path(tmp) / "alertmanager.yml"
        config.write_text(_config(f"http://127.0.0.1:{hook_port}/hook"))
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            exe, f"--config.file={config}", f"--storage.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            return await _measure(f"http://127.0.0.1:{port}", count, rate, received, all_in, exe)
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            await runner.cleanup()


async def _measure(
    url: str, count: int, rate: float, received: dict[str, float], all_in: asyncio.Event, exe: str
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # until it answers
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/-/ready") as r:
                    if r.status == 200:
                        break
            await asyncio.sleep(0.1)
        else:
            return {"skipped": f"{exe} did not become ready"}
        for i in range(count):
            ref = f"AM-{i:06d}"
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            body = [{"labels": {"alertname": "travel.unnotified", "ref": ref, "severity": "high"},
                     "annotations": {"summary": f"border check for {ref}, no travel notified"},
                     "startsAt": now}]
            sent[ref] = time.monotonic()
            async with http.post(f"{url}/api/v2/alerts", json=body) as r:
                await r.read()
            await asyncio.sleep(1 / rate)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), timeout=30)
    latencies = [received[r] - sent[r] for r in sent if r in received]
    out: dict[str, Any] = {"alerts": count, "rate_per_s": rate, **summary(latencies, 1.0)}
    out.pop("per_s", None)
    out["missing"] = count - len(latencies)
    return out
