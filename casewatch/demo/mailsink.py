"""The demo's local mail sink: an SMTP server on loopback that writes each message it receives
into a folder as an .eml file (open it with any mail client, or read it as text)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class MailFolder:
    """aiosmtpd handler: one .eml file per message, named so that `ls` lists them in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(1)
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8")
        recipients = ", ".join(envelope.rcpt_tos)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.folder / f"{stamp}-{next(self._numbers):05d}.eml"
        data = f"X-Envelope-To: {recipients}\r\n".encode() + content
        await asyncio.to_thread(path.write_bytes, data)
        self.received += 1
        return "250 Message accepted for delivery"


class MailSink:
    def __init__(self, folder: Path) -> None:
        self.handler = MailFolder(folder)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self.handler, hostname="casewatch-demo.localhost"), host, port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
