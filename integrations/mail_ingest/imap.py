"""Reading border-alert mail from an IMAP mailbox (aioimaplib): every mail without the processed
keyword is read, handled (integrations.mail_ingest.process) and only then marked with the
keyword and \\Seen. Nothing is ever deleted or expunged: a kept (unreadable) mail stays in the
mailbox too.

Which mail is new is the server's state (UID SEARCH UNKEYWORD), not ours: a crash between the
commit and the mark, or a mailbox rebuilt under a new UIDVALIDITY (keywords lost), means mail is
read again, and its deterministic event or item id makes that a duplicate. Waits with IDLE
(RFC 2177) when the server has it and [inbound_mail] idle is on, re-issued every poll_seconds
(at most 29 minutes), else polls every poll_seconds. A lost connection, a refused command or a
database that cannot be reached: reconnect after a backoff (1 s doubling to 60 s).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import ssl
from dataclasses import dataclass

from aioimaplib import aioimaplib

from casewatch.config.inbound_mail import InboundMailSection
from casewatch.store.errors import is_unavailable
from integrations.mail_ingest.process import MailProcessor, Tally

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 30.0
MAX_IDLE_SECONDS = 29 * 60.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_PERMANENTFLAGS = re.compile(rb"\[PERMANENTFLAGS \(([^)]*)\)\]")
_FETCH_START = re.compile(rb"\d+ FETCH \(")
_LITERAL = b"\x00"  # stands for a literal's place in a FETCH response's text (no server sends NUL)
_SIZE = re.compile(rb"[( ]RFC822\.SIZE (\d+)[ )]")
_UID = re.compile(rb"[( ]UID (\d+)[ )]")
# The body: a literal ({n} then its place), a quoted string or NIL (RFC 3501 7.4.2, 9: nstring).
_BODY = re.compile(rb'[( ]BODY\[\](?:<\d+>)? (?:\{\d+\}\x00|"((?:[^"\\]|\\.)*)"|NIL)', re.IGNORECASE)
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
EMPTY_REASON = "empty message"


@dataclass(frozen=True)
class Fetched:
    content: bytes  # the mail's first max_message_bytes bytes (b"": an empty message)
    size: int  # its whole size, as the server says (RFC822.SIZE)


def parse_fetch(lines: list[bytes], uid: int, limit: int) -> Fetched | None:
    """The FETCH response for `uid` among aioimaplib's response lines (text lines as bytes, literals
    as bytearray, the tagged status last): its body and RFC822.SIZE wherever they come in it (a
    server may put them in any order, before or after the literal). None: no FETCH for `uid` (the
    mail is gone), or one without its body. A response without RFC822.SIZE whose body fills
    `limit` counts as larger than `limit` (it may have been cut)."""
    for text, literals in _fetch_responses(lines[:-1]):
        uid_found = _UID.search(text)
        body = _BODY.search(text)
        if uid_found is None or int(uid_found.group(1)) != uid or body is None:
            continue
        if body.group(0).endswith(_LITERAL):
            content = literals[text[: body.end()].count(_LITERAL) - 1]
        elif body.group(1) is not None:
            content = _QUOTED_ESCAPE.sub(rb"\1", body.group(1))
        else:
            content = b""  # NIL
        size_found = _SIZE.search(text)
        if size_found is not None:
            size = int(size_found.group(1))
        else:
            size = len(content) + 1 if len(content) >= limit else len(content)
        return Fetched(content, max(size, len(content)))
    return None


def _fetch_responses(lines: list[bytes]) -> list[tuple[bytes, list[bytes]]]:
    """Each FETCH response: its text (a literal's place marked by _LITERAL) and its literals."""
    responses: list[tuple[bytes, list[bytes]]] = []
    for line in lines:
        if isinstance(line, bytearray):
            if responses:
                text, literals = responses[-1]
                responses[-1] = (text + _LITERAL, [*literals, bytes(line)])
        elif _FETCH_START.match(line):
            responses.append((bytes(line), []))
        elif responses:
            text, literals = responses[-1]
            responses[-1] = (text + bytes(line), literals)
    return responses


class ImapProblem(Exception):
    """The server refused something or answered what we cannot use; str() says what."""


class ImapFatal(ImapProblem):
    """A problem a reconnect cannot fix (the mailbox cannot hold keywords, or is read-only)."""


def mailbox_argument(name: str) -> str:
    """`name` as an IMAP mailbox argument: modified UTF-7 (RFC 3501 5.1.3), as a quoted string."""
    encoded: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            encoded.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            encoded.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    quoted = "".join(encoded).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}"'


def _ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        raise ImapProblem(f"{what}: the server answered {response.result}")
    return response


def _close(client: aioimaplib.IMAP4) -> None:
    transport = client.protocol.transport
    if transport is not None:
        transport.close()


async def _starttls(client: aioimaplib.IMAP4, host: str, context: ssl.SSLContext) -> None:
    """aioimaplib has no STARTTLS: send it, then upgrade the connection in place (RFC 3501 6.2.1)."""
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise ImapFatal("security = starttls, but the server does not offer STARTTLS")
    response = await protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop))
    _ok(response, "STARTTLS")
    loop = asyncio.get_running_loop()
    transport = await loop.start_tls(protocol.transport, protocol, context, server_hostname=host)
    if transport is None:
        raise ImapProblem("STARTTLS: the TLS handshake did not complete")
    protocol.transport = transport
    await protocol.capability()  # RFC 3501: capabilities may change after STARTTLS


class ImapReader:
    def __init__(
        self,
        processor: MailProcessor,
        config: InboundMailSection,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.processor = processor
        self.config = config
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.uidvalidity: int | None = None
        self.handled = Tally()  # this process's outcomes (the summary; the last few for tests)
        self.reconnects = 0
        self.idling = asyncio.Event()  # set while an IDLE is under way (tests wait for it)
        self._lost = asyncio.Event()  # set when the current connection is lost
        self._skipped: set[int] = set()  # failed by a fault of ours: left for the next session

    async def connect(self) -> aioimaplib.IMAP4:
        config = self.config
        client: aioimaplib.IMAP4
        if config.security == "tls":
            client = aioimaplib.IMAP4_SSL(
                host=config.host, port=config.port, timeout=TIMEOUT_SECONDS, ssl_context=self.ssl_context
            )
        else:
            client = aioimaplib.IMAP4(host=config.host, port=config.port, timeout=TIMEOUT_SECONDS)
        lost = asyncio.Event()
        client.protocol.conn_lost_cb = lambda exc: lost.set()
        self._lost = lost
        try:
            await client.wait_hello_from_server()
            if config.security == "starttls":
                await _starttls(client, config.host, self.ssl_context)
            response = await client.login(config.username, config.password.get_secret_value())
            if response.result != "OK":
                raise ImapProblem("login refused (check username and password)")
        except BaseException:
            _close(client)  # a connection that never became a session is not left to the collector
            raise
        return client

    async def select(self, client: aioimaplib.IMAP4) -> None:
        response = _ok(await client.select(mailbox_argument(self.config.mailbox)), "SELECT")
        text = b"\n".join(bytes(line) for line in response.lines)
        if b"[READ-ONLY]" in text:
            raise ImapFatal(f"mailbox {self.config.mailbox} is read-only: processed mail could not be marked")
        flags = _PERMANENTFLAGS.search(text)
        permitted = flags.group(1).split() if flags is not None else None
        for keyword in (self.config.processed_keyword, self.config.ignored_keyword):
            if permitted is not None and b"\\*" not in permitted and keyword.encode() not in permitted:
                raise ImapFatal(f"mailbox {self.config.mailbox} does not keep the keyword {keyword}")
        found = _UIDVALIDITY.search(text)
        validity = int(found.group(1)) if found else None
        if self.uidvalidity is not None and validity != self.uidvalidity:
            log.warning(
                "mail-ingest: UIDVALIDITY of %s changed (%s -> %s): the mailbox was rebuilt; mail "
                "without the keyword is read again and comes back as duplicates",
                self.config.mailbox, self.uidvalidity, validity,
            )
            self._skipped.clear()
        self.uidvalidity = validity

    async def unprocessed(self, client: aioimaplib.IMAP4) -> list[int]:
        response = _ok(
            await client.uid_search(
                "UNKEYWORD", self.config.processed_keyword, "UNKEYWORD", self.config.ignored_keyword,
                "UNDELETED", charset=None,
            ),
            "UID SEARCH",
        )
        uids: list[int] = []
        for line in response.lines[:-1]:
            uids.extend(int(word) for word in bytes(line).split() if word.isdigit())
        return sorted(set(uids) - self._skipped)

    async def fetch(self, client: aioimaplib.IMAP4, uid: int) -> Fetched | None:
        """The mail's first max_message_bytes bytes and its whole size; None if it is gone."""
        limit = self.config.max_message_bytes
        response = _ok(
            await client.uid("fetch", str(uid), f"(RFC822.SIZE BODY.PEEK[]<0.{limit}>)"), "UID FETCH"
        )
        return parse_fetch(list(response.lines), uid, limit)

    def empty_id(self, uid: int) -> str:
        """The kept item's id for the empty message `uid` (the same message: the same id)."""
        mailbox = hashlib.sha256(self.config.mailbox.encode()).hexdigest()[:12]
        return f"empty-imap-{mailbox}-{self.uidvalidity}-{uid}"

    async def mark(self, client: aioimaplib.IMAP4, uid: int) -> None:
        _ok(
            await client.uid("store", str(uid), f"+FLAGS.SILENT (\\Seen {self.config.processed_keyword})"),
            "UID STORE",
        )

    async def mark_ignored(self, client: aioimaplib.IMAP4, uid: int) -> None:
        """Not from an allowed sender: only the ignored keyword, so it is not looked at again and
        stays unseen for the person whose mail it is."""
        keyword = self.config.ignored_keyword
        _ok(await client.uid("store", str(uid), f"+FLAGS.SILENT ({keyword})"), "UID STORE")

    async def read_new(self, client: aioimaplib.IMAP4) -> int:
        """Handle every unprocessed mail, oldest first; each is marked after its outcome committed."""
        count = 0
        for uid in await self.unprocessed(client):
            fetched = await self.fetch(client, uid)
            if fetched is None:
                continue
            try:
                if fetched.content:
                    outcome = await self.processor.handle(fetched.content, size=fetched.size)
                else:  # nothing to read, or to check the sender of: kept (marked, not fetched again)
                    outcome = await self.processor.keep_as_is(b"", self.empty_id(uid), EMPTY_REASON)
            except Exception as exc:
                if is_unavailable(exc):
                    raise  # not marked: read again once the database is back
                # The type only: the exception's text may quote the mail.
                log.error(
                    "mail-ingest: mail uid %d could not be handled (%s); left unmarked for a retry",
                    uid, type(exc).__name__,
                )
                self._skipped.add(uid)
                self.handled.unhandled += 1
                continue
            if outcome.kind == "ignored":
                await self.mark_ignored(client, uid)
            else:
                await self.mark(client, uid)
            self.handled.add(outcome)
            count += 1
        return count

    async def wait_for_mail(self, client: aioimaplib.IMAP4, stop: asyncio.Event) -> None:
        """Until new mail may be there: an IDLE push (EXISTS), poll_seconds, or stop."""
        wait = min(self.config.poll_seconds, MAX_IDLE_SECONDS)
        if not (self.config.idle and client.has_capability("IDLE")):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            return
        queue = client.protocol.idle_queue
        while not queue.empty():  # pushes or a stop marker left from an earlier IDLE
            queue.get_nowait()
        idle = await client.idle_start(timeout=wait)
        stopping = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        self.idling.set()
        try:
            while True:
                push = asyncio.ensure_future(client.wait_server_push(timeout=wait + TIMEOUT_SECONDS))
                done, _ = await asyncio.wait({push, stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
                if push not in done:
                    push.cancel()
                    if lost in done:
                        raise ImapProblem("the server closed the connection")
                    return
                lines = push.result()  # raises TimeoutError if the server went quiet: reconnect
                if any(bytes(x).startswith(b"* BYE") or bytes(x).startswith(b"BYE") for x in lines):
                    raise ImapProblem("the server ended the session (BYE)")
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH or any(b"EXISTS" in bytes(x) for x in lines):
                    return
        finally:
            self.idling.clear()
            stopping.cancel()
            lost.cancel()
            if client.has_pending_idle() and not self._lost.is_set():
                client.idle_done()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(idle, TIMEOUT_SECONDS)

    async def session(self, stop: asyncio.Event, *, once: bool) -> None:
        client = await self.connect()
        try:
            await self.select(client)
            while not stop.is_set():
                count = await self.read_new(client)
                if count:
                    log.info("mail-ingest: %d mail(s) handled from %s", count, self.config.mailbox)
                if once:
                    return
                await self.wait_for_mail(client, stop)
        finally:
            try:
                if not self._lost.is_set():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.logout(), 5)
            finally:
                _close(client)  # also when the LOGOUT failed, timed out or was cancelled

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Read until `stop` is set (with `once`: one pass, and a failure raises)."""
        delay = BACKOFF_FIRST
        while not stop.is_set():
            try:
                await self.session(stop, once=once)
                if once:
                    return
                delay = BACKOFF_FIRST
            except ImapFatal:
                raise
            except (TimeoutError, aioimaplib.AioImapException, ImapProblem, OSError) as exc:
                if once:
                    raise
                log.warning(
                    "mail-ingest: IMAP %s (%s); reconnecting in %.0f s", type(exc).__name__, exc, delay
                )
            except Exception as exc:
                if once or not is_unavailable(exc):
                    raise
                log.warning("mail-ingest: database unavailable; reconnecting in %.0f s", delay)
            self.reconnects += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX)
