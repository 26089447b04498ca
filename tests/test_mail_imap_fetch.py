"""How the IMAP reader reads a server's FETCH response, against a scripted IMAP server on
loopback (Dovecot always answers in one order and refuses empty messages, so these answers need
a server of our own), with aioimaplib's real parser: RFC822.SIZE and UID before or after the
literal, an unsolicited FETCH for another message first, and empty messages ("", NIL, {0}) kept
for a person and marked rather than fetched again at every pass. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from casewatch.config.inbound_mail import InboundMailSection
from integrations.mail_ingest.imap import EMPTY_REASON, Fetched, ImapReader, parse_fetch
from integrations.mail_ingest.samples import border_alert_mail
from tests.test_mail_support import alert_kinds, border_events, kept_items, mail_service

LIMIT = 2048
PROCESSED = "casewatch-processed"
_COMMAND = re.compile(rb"(\S+) (.+)")
_UID_FETCH = re.compile(rb"UID fetch (\d+) ", re.IGNORECASE)
_UID_STORE = re.compile(rb"UID store (\d+) \+FLAGS\.SILENT \(([^)]*)\)", re.IGNORECASE)


def _report(minute: int) -> bytes:
    return border_alert_mail(checked=f"19/11/2026 16:{minute:02d}", message_id=f"<f{minute}@x.example>")


BIG = _report(1) + b"x" * 5000
# What the server answers to UID FETCH, per UID ({tag} is not part of it: the OK follows).
ANSWERS: dict[int, Callable[[int], bytes]] = {
    # Oversize, RFC822.SIZE after the literal: the first LIMIT bytes, the whole size after them.
    1: lambda uid: b"* 1 FETCH (UID 1 BODY[]<0> {%d}\r\n%s RFC822.SIZE %d)\r\n"
    % (LIMIT, BIG[:LIMIT], len(BIG)),
    2: lambda uid: b'* 2 FETCH (UID 2 RFC822.SIZE 0 BODY[]<0> "")\r\n',
    3: lambda uid: b"* 3 FETCH (BODY[]<0> NIL UID 3 RFC822.SIZE 0)\r\n",
    # UID and size after the literal.
    4: lambda uid: b"* 4 FETCH (BODY[]<0> {%d}\r\n%s UID 4 RFC822.SIZE %d)\r\n"
    % (len(_report(4)), _report(4), len(_report(4))),
    # An unsolicited FETCH (another message's flags) before ours.
    5: lambda uid: b"* 9 FETCH (FLAGS (\\Seen))\r\n* 5 FETCH (UID 5 RFC822.SIZE %d BODY[]<0> {%d}\r\n%s)\r\n"
    % (len(_report(5)), len(_report(5)), _report(5)),
    6: lambda uid: b"* 6 FETCH (UID 6 RFC822.SIZE 0 BODY[]<0> {0}\r\n)\r\n",
}


class ScriptedImap:
    """Just enough IMAP4rev1 for the reader: LOGIN, SELECT, UID SEARCH (the UIDs not yet marked),
    UID FETCH (ANSWERS), UID STORE (recorded), LOGOUT."""

    def __init__(self) -> None:
        self.flags: dict[int, set[str]] = {uid: set() for uid in ANSWERS}
        self.fetched: list[int] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK scripted IMAP ready\r\n")
        while line := await reader.readline():
            found = _COMMAND.fullmatch(line.rstrip(b"\r\n"))
            if found is None:
                break
            tag, command = found.groups()
            verb = command.split()[0].upper()
            if verb == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1\r\n")
            elif verb == b"SELECT":
                writer.write(
                    b"* FLAGS (\\Seen)\r\n* OK [PERMANENTFLAGS (\\Seen \\*)] ok\r\n"
                    b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" % len(ANSWERS)
                )
            elif command.upper().startswith(b"UID SEARCH"):
                unmarked = [uid for uid, flags in self.flags.items() if PROCESSED not in flags]
                writer.write(b"* SEARCH" + b"".join(b" %d" % uid for uid in unmarked) + b"\r\n")
            elif fetch := _UID_FETCH.match(command):
                uid = int(fetch.group(1))
                self.fetched.append(uid)
                writer.write(ANSWERS[uid](uid))
            elif store := _UID_STORE.match(command):
                self.flags[int(store.group(1))] |= set(store.group(2).decode().split())
            elif verb == b"LOGOUT":
                writer.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                break
            writer.write(tag + b" OK done\r\n")
            await writer.drain()
        writer.close()


@asynccontextmanager
async def scripted_imap() -> AsyncIterator[ScriptedImap]:
    imap = ScriptedImap()
    server = await asyncio.start_server(imap.serve, "127.0.0.1", 0)
    imap.port = server.sockets[0].getsockname()[1]
    try:
        yield imap
    finally:
        server.close()
        await server.wait_closed()


async def test_size_anywhere_and_empty_messages_kept_and_marked(db_url: str) -> None:
    async with scripted_imap() as imap, mail_service(db_url, max_message_bytes=LIMIT) as (service, processor):
        config = InboundMailSection.model_validate({
            "mode": "imap", "host": "127.0.0.1", "port": imap.port, "security": "none",
            "username": "u", "password": "p", "max_message_bytes": LIMIT,
        })
        reader = ImapReader(processor, config)
        await reader.run(asyncio.Event(), once=True)
        assert [o.kind for o in reader.handled] == ["kept", "kept", "kept", "ingested", "ingested", "kept"]
        # Every message marked: the next pass fetches none of them again.
        assert all({"\\Seen", PROCESSED} <= flags for flags in imap.flags.values())
        again = ImapReader(processor, config)
        await again.run(asyncio.Event(), once=True)
        assert imap.fetched == [1, 2, 3, 4, 5, 6] and len(again.handled) == 0

        items = await kept_items(service)
        big = items[0]
        assert big.content == BIG[:LIMIT] and f"larger than max_message_bytes ({len(BIG)} bytes" in big.reason
        empties = items[1:]
        assert [item.reason for item in empties] == [EMPTY_REASON] * 3
        assert all(item.content == b"" for item in empties)
        assert len({item.external_id for item in empties}) == 3  # one item per message
        assert len(await border_events(service)) == 2
        assert (await alert_kinds(service)).count("feed.unreadable") == 4


def test_parse_fetch_reads_the_size_wherever_it_is() -> None:
    body = bytearray(b"x" * 10)
    # Size before and after the literal, UID after it: the same reading.
    before = [b"1 FETCH (UID 3 RFC822.SIZE 99 BODY[]<0> {10}", body, b")", b"done"]
    after = [b"1 FETCH (BODY[]<0> {10}", body, b" UID 3 RFC822.SIZE 99)", b"done"]
    assert parse_fetch(before, 3, 10) == parse_fetch(after, 3, 10) == Fetched(b"x" * 10, 99)
    # Another UID's response only: gone. A response for ours without a body: gone too.
    assert parse_fetch([b"1 FETCH (UID 4 RFC822.SIZE 99 BODY[]<0> {10}", body, b")", b"done"], 3, 10) is None
    assert parse_fetch([b"1 FETCH (UID 3 FLAGS (\\Seen))", b"done"], 3, 10) is None
    # No RFC822.SIZE: a body that fills the limit may have been cut, so it counts as larger.
    no_size = [b"1 FETCH (UID 3 BODY[]<0> {10}", body, b")", b"done"]
    assert parse_fetch(no_size, 3, 10) == Fetched(b"x" * 10, 11)
    assert parse_fetch(no_size, 3, 20) == Fetched(b"x" * 10, 10)
    # A quoted body, escapes undone; a size smaller than what came is not believed.
    quoted = [b'1 FETCH (UID 3 RFC822.SIZE 2 BODY[]<0> "a\\"b\\\\c")', b"done"]
    assert parse_fetch(quoted, 3, 10) == Fetched(b'a"b\\c', 5)
