"""Errors aiohttp answers by itself (a malformed request line, a bad header, broken chunking:
before any middleware runs) and the router's 404 and 405 are JSON like every other error, and
nothing of the request is logged. Raw bytes over a socket to the real app on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import TransferEncodingError
from aiohttp.test_utils import TestClient, TestServer

from casewatch.api.common import json_errors
from casewatch.wiring import Service
from tests.support import service_client

NAME = "Fictionalson"  # a fictional surname that must never reach a log line


@pytest.fixture
async def api(sqlite_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(sqlite_url) as pair:
        yield pair


async def exchange(client: TestClient[Any, Any], raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Send `raw` as it is; return the reply's status, headers (lower-case) and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(raw)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)


MALFORMED = {
    "request line": b"GARBAGE " + NAME.encode() + b"\r\n\r\n",
    "method": b"G(T /healthz?surname=" + NAME.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Name" + NAME.encode() + b"\x01: y\r\n\r\n",
    "header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Name: " + NAME.encode() + b"\x00\r\n\r\n",
    "chunking": (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\nzz" + NAME.encode() + b"\r\nabc\r\n0\r\n\r\n"),
    "two lengths": (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                    b"Content-Length: 3\r\n\r\n[]"),
    "line too long": b"GET /api/v1/alerts?q=" + NAME.encode() * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_request_gets_a_json_400_and_is_not_logged(
    api: tuple[Service, TestClient[Any, Any]], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = await exchange(api[1], MALFORMED[case])
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert body["error"] == "bad_request" and "not well-formed HTTP" in body["message"]
    assert NAME not in json.dumps(body)
    logged = [r for r in caplog.records if r.name.startswith(("aiohttp", "casewatch"))]
    assert any("malformed HTTP request refused" in r.getMessage() for r in logged)
    for record in logged:
        assert NAME not in record.getMessage() and record.exc_info is None, record.getMessage()[:200]


async def test_405_is_json_and_keeps_allow(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    for method, path, allowed in (("DELETE", "/api/v1/events", "POST"), ("POST", "/api/v1/alerts", "GET"),
                                  ("PUT", "/healthz", "GET")):
        resp = await client.request(method, path)
        assert resp.status == 405, (method, path)
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "method_not_allowed"
        assert allowed in resp.headers["Allow"]


async def test_404_is_json(api: tuple[Service, TestClient[Any, Any]]) -> None:
    status, headers, body = await exchange(
        api[1], b"GET /nowhere?surname=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 404 and headers["content-type"].startswith("application/json")
    assert body["error"] == "not_found"


async def test_a_body_whose_framing_breaks_while_read_is_a_json_400(caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp's own parser raises from the handler's read (e.g. a bad chunk after a good one):
    the JSON middleware answers 400 and logs only the exception type, not its message (which
    quotes the bytes)."""

    async def reads(request: web.Request) -> web.Response:
        raise TransferEncodingError(f"bad chunk {NAME}")

    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/", reads)
    caplog.set_level(logging.DEBUG)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.post("/", data=b"x")
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_request"
    assert any("TransferEncodingError" in r.getMessage() for r in caplog.records)
    assert not any(NAME in r.getMessage() for r in caplog.records)


async def test_unknown_methods_share_one_metrics_label(api: tuple[Service, TestClient[Any, Any]]) -> None:
    """Any method token a client sends would otherwise be a new time series, kept for good."""
    client = api[1]
    for method in ("PROPFIND", "MKCOL", "PURGE"):
        resp = await client.request(method, "/healthz")
        assert resp.status == 405 and resp.content_type == "application/json"
    text = await (await client.get("/metrics")).text()
    assert 'method="OTHER"' in text
    for method in ("PROPFIND", "MKCOL", "PURGE"):
        assert method not in text


async def test_a_bad_chunk_after_a_good_one_is_a_json_400_not_a_hang(
    api: tuple[Service, TestClient[Any, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """The handler is already reading the body when its framing breaks (aiohttp's C parser used
    to leave that body open, so the request hung until the client gave up)."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", api[1].port)
    try:
        writer.write(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\n[{\"a\"\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body now
        writer.write(b"zz" + NAME.encode() + b"\r\nabc\r\n0\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body)["error"] == "bad_request"
    assert not any(NAME in r.getMessage() or r.exc_info for r in caplog.records if r.name != "asyncio")
