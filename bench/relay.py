"""The e2e bench's SMTP sink as a process of its own, as a relay is.

The sink beside it in bench.cases (TimedMailSink) is a thread of the bench process: each SMTP
reply it writes (MAIL, RCPT, DATA, the message) waits for the GIL, which the service's event loop
holds while it works (up to the interpreter's switch interval, 5 ms, each time), and it parses
every message on that same GIL. A relay is another process on another core; this one is
(aiosmtpd in a child started with "spawn", so nothing of the bench's loop or threads is copied).
It accepts like the thread sink (250 after parsing the message) and reports each accepted mail's
Subject and the time it was accepted, on time.monotonic (CLOCK_MONOTONIC: one clock for every
process of the machine, so the bench subtracts it from its own send times).
"""

from __future__ import annotations

import email
import email.policy
import multiprocessing
import queue
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Self


def _serve(ready: Connection, accepted: Any, stop: Any) -> None:
    """The child: aiosmtpd on loopback, a free port, until `stop` is set."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            raw = envelope.original_content or envelope.content
            message = email.message_from_bytes(raw, policy=email.policy.default)
            accepted.put((str(message["Subject"]), time.monotonic()))
            return "250 2.0.0 OK: kept"

    class FreePort(Controller):
        def _trigger_server(self) -> None:
            if self.port == 0 and self.server is not None:
                self.port = getattr(self.server, "sockets")[0].getsockname()[1]  # noqa: B009
            super()._trigger_server()  # type: ignore[no-untyped-call]

    controller = FreePort(Handler(), hostname="127.0.0.1", port=0)
    controller.start()
    ready.send(int(controller.port))
    stop.wait()
    controller.stop()


class ChildServer:
    """A loopback server in a child started with "spawn" (nothing of the bench's loop or threads
    copied): `target(ready, rows, stop, *args)` sends its port on `ready`, puts what it records on
    `rows` and serves until `stop` is set. The relay here and bench.slack_process's stand-in."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], *, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready, child_end = context.Pipe(duplex=False)
        self._rows: Any = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=target, args=(child_end, self._rows, self._stop, *args), name=name, daemon=True
        )
        self._name = name
        self._received: list[Any] = []
        self.port = 0

    def received(self) -> list[Any]:
        """What the child has recorded so far, in its order (a row recorded just now may still be
        on its way: the queue feeds this process from a thread)."""
        while True:
            try:
                self._received.append(self._rows.get_nowait())
            except queue.Empty:
                return self._received

    def start(self) -> Self:
        self._process.start()
        if not self._ready.poll(30):
            self._process.kill()
            raise RuntimeError(f"{self._name} did not start within 30 s")
        self.port = int(self._ready.recv())
        return self

    def stop(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


class ProcessMailSink(ChildServer):
    """start(), port, accepted_at (subject, monotonic time) and stop(), as TimedMailSink."""

    def __init__(self) -> None:
        super().__init__(_serve, (), name="bench-relay")

    @property
    def accepted_at(self) -> list[tuple[str, float]]:
        return self.received()
