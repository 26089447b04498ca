"""`http.reuse_port`: several services bind one port (SO_REUSEPORT) and each answers on it;
without it the second cannot bind."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from casewatch.wiring import start_http, stop
from tests.support import make_service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_two_services_share_one_port_with_reuse_port(db_url: str) -> None:
    port = _free_port()
    http = {"host": "127.0.0.1", "port": port, "reuse_port": True}
    first, second = await make_service(db_url, http=http), await make_service(db_url, http=http)
    try:
        assert await start_http(first) == port
        assert await start_http(second) == port
        async with aiohttp.ClientSession() as client:
            for _ in range(4):  # fresh connections, whichever process the kernel picks
                url = f"http://127.0.0.1:{port}/healthz"
                async with client.get(url, headers={"Connection": "close"}) as r:
                    assert r.status == 200
    finally:
        await stop(second)
        await stop(first)


async def test_without_reuse_port_the_second_bind_fails(db_url: str) -> None:
    port = _free_port()
    http = {"host": "127.0.0.1", "port": port}
    first, second = await make_service(db_url, http=http), await make_service(db_url, http=http)
    try:
        assert await start_http(first) == port
        with pytest.raises(OSError):
            await start_http(second)
    finally:
        await stop(second)
        await stop(first)
