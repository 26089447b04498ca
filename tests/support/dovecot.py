"""A real Dovecot IMAP server on loopback for the mail tests (scripts/dovecot-temp), and an IMAP
client to put mail in (APPEND) and look at what is there.

Without Dovecot the tests that need it skip, unless CASEWATCH_REQUIRE_DOVECOT=1 (as in CI), when
they fail instead.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioimaplib import aioimaplib

from integrations.mail_ingest.imap import mailbox_argument

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "dovecot-temp"
REQUIRE = os.environ.get("CASEWATCH_REQUIRE_DOVECOT") == "1"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


def need_dovecot() -> None:
    if dovecot_binary() is None:
        if REQUIRE:
            pytest.fail("CASEWATCH_REQUIRE_DOVECOT=1 but dovecot is not installed (dovecot-imapd)")
        pytest.skip("no Dovecot (apt-get install dovecot-imapd, or run scripts/test as root)")


@dataclass(frozen=True)
class Dovecot:
    directory: Path
    port: int
    username: str
    password: str

    def inbound_mail(self, **overrides: object) -> dict[str, object]:
        """An [inbound_mail] section reading this server's INBOX."""
        return {
            "mode": "imap", "host": "127.0.0.1", "port": self.port, "security": "none",
            "username": self.username, "password": self.password, "poll_seconds": 30.0, **overrides,
        }


@contextmanager
def dovecot_server() -> Iterator[Dovecot]:
    """A server in a fresh directory under the system temp dir (not pytest's: as root, Dovecot's
    own users must reach its files, and pytest's directories are private), removed afterwards."""
    need_dovecot()
    directory = Path(tempfile.mkdtemp(prefix="casewatch-dovecot-"))
    directory.chmod(0o755)
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(directory)], capture_output=True, text=True, timeout=60
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/dovecot-temp start failed: {started.stderr}")
    port, username, password = started.stdout.split()
    try:
        yield Dovecot(directory, int(port), username, password)
    finally:
        # Not waited for: its master takes ~2 s to wind down, and each test has its own server on
        # its own port. The directory goes once it is down (or is left in the temp dir).
        subprocess.run(["bash", str(SCRIPT), "kill", str(directory)], capture_output=True, timeout=60)
        _remove_when_down(directory)


class SharedDovecot:
    """One server for many tests, each with a user of its own (its own, empty mailboxes): what a
    server a test gave it, without starting one (0.5-3 s each). The users are all written at
    once, before any test logs in: Dovecot reads its passwd-file again only when it changed and
    at most once a second, so a user added between two logins could be refused."""

    def __init__(self, server: Dovecot, users: int) -> None:
        self.server = server
        self.spare: list[Dovecot] = []
        self._add(users)

    def _add(self, count: int) -> None:
        users = self.server.directory / "users"
        fields = users.read_text().splitlines()[0].split(":")  # user:{PLAIN}password:uid:gid::home::
        lines = []
        for _ in range(count):
            name, password = f"spoc{uuid.uuid4().hex[:10]}", secrets.token_hex(12)
            fields[0], fields[1] = name, "{PLAIN}" + password
            fields[5] = str(self.server.directory / "mail" / name)
            lines.append(":".join(fields) + "\n")
            self.spare.append(Dovecot(self.server.directory, self.server.port, name, password))
        with users.open("a", encoding="utf-8") as out:
            out.writelines(lines)
        time.sleep(1.1)  # past the second of Dovecot's last look at the file

    def user(self) -> Dovecot:
        if not self.spare:
            self._add(10)
        return self.spare.pop(0)


@asynccontextmanager
async def imap_client(server: Dovecot, mailbox: str = "INBOX") -> AsyncIterator[aioimaplib.IMAP4]:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=10)
    try:
        await client.wait_hello_from_server()
        assert (await client.login(server.username, server.password)).result == "OK"
        assert (await client.select(mailbox)).result == "OK"
        yield client
    finally:
        try:
            await client.logout()
        finally:
            # LOGOUT's answer comes before the server hangs up: close our end, and let the loop run
            # once so the socket is shut before the test's loop can close (tests/support/leaks.py).
            if client.protocol.transport is not None:
                client.protocol.transport.close()
            await asyncio.sleep(0)


async def create_mailbox(server: Dovecot, mailbox: str) -> None:
    async with imap_client(server) as client:
        response = await client.create(mailbox_argument(mailbox))
        assert response.result == "OK", response


async def append(server: Dovecot, raw: bytes, mailbox: str = "INBOX") -> None:
    async with imap_client(server) as client:
        response = await client.append(raw, mailbox=mailbox_argument(mailbox))
        assert response.result == "OK", response


async def mailbox_flags(server: Dovecot, mailbox: str = "INBOX") -> dict[int, set[str]]:
    """UID -> flags of every message in `mailbox` (so a test sees that nothing was deleted)."""
    async with imap_client(server, mailbox_argument(mailbox)) as client:
        response = await client.fetch("1:*", "(UID FLAGS)")
    found: dict[int, set[str]] = {}
    for line in response.lines:
        match = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", bytes(line)) or re.search(
            rb"FLAGS \(([^)]*)\) UID (\d+)", bytes(line)
        )
        if match is None:
            continue
        if match.re.pattern.startswith(rb"UID"):
            uid, flags = match.group(1), match.group(2)
        else:
            flags, uid = match.group(1), match.group(2)
        found[int(uid)] = set(flags.decode().split())
    return found


def _remove_when_down(directory: Path) -> None:
    """Remove the server's directory in the background, once its master has exited."""
    pid_file = directory / "run" / "master.pid"

    def remove() -> None:
        for _ in range(100):
            try:
                os.kill(int(pid_file.read_text().strip()), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.1)
        shutil.rmtree(directory, ignore_errors=True)

    thread = threading.Thread(target=remove, name="dovecot-cleanup", daemon=True)
    thread.start()
    _CLEANUPS.append(thread)


_CLEANUPS: list[threading.Thread] = []


@atexit.register
def _finish_cleanups() -> None:
    for thread in _CLEANUPS:
        thread.join(timeout=5)
