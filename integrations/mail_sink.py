"""An SMTP server on loopback that keeps what it receives: the demo's inbox and the tests' server.

Runs aiosmtpd in its own thread. Mails are kept in `messages` and, with `folder`, each is also
written there as an .eml file (named so that `ls` lists them in order; open it with any mail
client). `fail_next("451 4.3.0 Try again later")` makes the next DATA command answer with that
reply instead (tests of retry and dead letters).
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
from collections import deque
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Controller(Controller):
    """Port 0 means any free port: learn which before aiosmtpd connects to check readiness."""

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = getattr(self.server, "sockets")[0].getsockname()[1]  # noqa: B009
        super()._trigger_server()  # type: ignore[no-untyped-call]


class MailSink:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        folder: Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        authenticator: Any = None,
    ) -> None:
        """With `tls_context` the sink offers (and requires) STARTTLS; with `authenticator` (an
        aiosmtpd authenticator) it requires login, over TLS when TLS is offered."""
        self.host = host
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.replies: deque[str] = deque()
        self.folder = folder
        self._lock = threading.Lock()
        smtp_options: dict[str, Any] = {}
        if tls_context is not None:
            smtp_options.update(tls_context=tls_context, require_starttls=True)
        if authenticator is not None:
            smtp_options.update(authenticator=authenticator, auth_require_tls=tls_context is not None)
        self._controller = _Controller(self, hostname=host, port=port, **smtp_options)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> MailSink:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def fail_next(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` DATA commands with `reply` (e.g. "550 5.1.1 No such user")."""
        with self._lock:
            self.replies.extend([reply] * times)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            if self.replies:
                return self.replies.popleft()
            raw = envelope.original_content or envelope.content
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            if self.folder is not None:
                # This runs on the sink's own thread and event loop: a blocking write is fine here.
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                path = self.folder / f"{stamp}-{len(self.messages):05d}.eml"
                path.write_bytes(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode() + raw)
        return "250 2.0.0 OK: kept"
