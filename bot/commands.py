"""What each command does, independent of how Slack delivered it (HTTP or Socket Mode): find the
requester, run the core query or state change in one transaction, and render the answer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import render
from bot.render import Message
from casewatch.alerts.authority import OutcomeError
from casewatch.alerts.lifecycle import acknowledge
from casewatch.audit import AuditSink, connection_sink, session_sink
from casewatch.audit.batch import AuditBatcher
from casewatch.context import Context
from casewatch.lookup import (
    DEFAULT_CLEARED_ROLES,
    Found,
    NotFound,
    ReadAhead,
    ReasonRequired,
    Requester,
    Several,
    Unreadable,
    Usage,
    clean_text,
    list_tasks,
    look_up_flags,
    requester_and_reference,
    requester_by_slack_user,
)
from casewatch.lookup.home import load_home
from casewatch.store.engine import found_connection_gone
from casewatch.store.lookup_connections import LookupConnections, Reads
from casewatch.store.models import Officer

log = logging.getLogger(__name__)

# How a command finds its requester in its transaction (the first statement it runs).
ReadRequester = Callable[[Reads, str], Awaitable[Requester | None]]
# A command's work for its requester: what it reads through (a session, or for a lookup a pooled
# connection: store.lookup_connections), who asks, where its audit entries go.
Work = Callable[[Reads, Requester, AuditSink], Awaitable[Message]]


@dataclass(frozen=True)
class BotDeps:
    """What the listeners need; built by the composition root."""

    ctx: Context
    sessions: async_sessionmaker[AsyncSession]
    cleared_roles: frozenset[str] = DEFAULT_CLEARED_ROLES
    # How long a slash command may work before it acknowledges with a holding reply and sends the
    # answer to the response URL instead: Slack gives up on an acknowledgement after 3 seconds.
    answer_budget_seconds: float = 2.0
    via: str = "slack"  # recorded in the audit entries' details
    # For answers that only read and audit (/flags): pooled connections, no ORM session
    # (store.lookup_connections). `lookup_readers`, store.make_reader_engine's, beside the writer:
    # on SQLite read-only, their audit entries through the group commit `audit_batcher` (or, when
    # it finds the writer idle, reads and entry in one transaction on `lookup_writer`, the
    # writer's); on PostgreSQL in autocommit, the audit entry written last, committed by its own
    # statement. Without them, /flags reads and audits in one `sessions` transaction.
    lookup_readers: LookupConnections | None = None
    lookup_writer: LookupConnections | None = None
    audit_batcher: AuditBatcher | None = None
    # /flags by reference reads the nominal in the requester's statement (lookup.flags.
    # requester_and_reference); False: the requester, then the view, as two statements.
    read_ahead: bool = True

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.ctx.settings.service.timezone)


async def _refuse(audit: AuditSink, slack_user_id: str, command: str) -> Message:
    await audit(
        actor=f"slack:{slack_user_id}"[:100], action="slack.refused",
        subject=command, purpose="refused: the Slack user is not in the officer directory",
    )
    log.warning("refused %s from a Slack user not in the directory", command)
    return render.text_message(render.REFUSAL)


async def _as_officer(
    deps: BotDeps,
    slack_user_id: str,
    command: str,
    work: Work,
    *,
    read_only: bool = False,
    read_requester: ReadRequester = requester_by_slack_user,
) -> Message:
    """Run `work` for the officer behind this Slack user, in one transaction; refuse strangers.
    `read_only` work reads on deps.lookup_readers' connections when the service gave them: on
    SQLite auditing through deps.audit_batcher's shared commit, unless the batcher finds the
    writer idle: then in one transaction on it (deps.lookup_writer); on PostgreSQL its audit
    entry its last statement. `read_requester` finds the requester (it may read what `work`
    needs beside them). Failures become a plain apology: exception text can carry query
    parameters (names), so only the exception's type is logged."""
    try:
        batcher = deps.audit_batcher
        readers = deps.lookup_readers if read_only else None
        if readers is not None and batcher is not None:
            asked = (slack_user_id, command, work, read_requester)
            with batcher.alone() as alone:
                if not alone:
                    return await _read_then_audit(readers, batcher.record, *asked)
                if deps.lookup_writer is not None:
                    return await _alone_on_the_writer(deps, deps.lookup_writer, *asked)
                return await _in_one_transaction(deps, *asked)
        if readers is not None and readers.each_statement_commits and slack_user_id:
            args = (deps, readers, slack_user_id, command, work, read_requester)
            try:
                return await _read_then_record(*args)
            except _GoneBeforeAnything:
                # What the pool's pre-ping would have done: the same work on a new connection.
                return await _read_then_record(*args)
        return await _in_one_transaction(deps, slack_user_id, command, work, read_requester)
    except Exception as exc:  # noqa: BLE001 - the user gets an answer whatever went wrong
        log.error("%s failed: %s", command, type(exc).__name__)
        return render.text_message(render.FAILURE)


async def _in_one_transaction(
    deps: BotDeps,
    slack_user_id: str,
    command: str,
    work: Work,
    read_requester: ReadRequester = requester_by_slack_user,
) -> Message:
    async with deps.sessions() as session, session.begin():
        # A lookup's entry (or a refusal's) goes to the driver directly (audit.record).
        audit = session_sink(session, deps.ctx, direct=True)
        requester = await read_requester(session, slack_user_id)
        return await _answer_as(session, requester, audit, slack_user_id, command, work)


async def _answer_as(
    reads: Reads,
    requester: Requester | None,
    audit: AuditSink,
    slack_user_id: str,
    command: str,
    work: Work,
) -> Message:
    """`work` for the requester, or the refusal of a Slack user not in the directory."""
    if requester is None:
        return await _refuse(audit, slack_user_id, command)
    return await work(reads, requester, audit)


def _holding() -> tuple[AuditSink, list[dict[str, Any]]]:
    """An audit sink that holds its entries, to be written once the work has finished, and them."""
    held: list[dict[str, Any]] = []

    async def hold(**entry: Any) -> None:
        held.append(entry)

    return hold, held


async def _alone_on_the_writer(
    deps: BotDeps,
    writer: LookupConnections,
    slack_user_id: str,
    command: str,
    work: Work,
    read_requester: ReadRequester = requester_by_slack_user,
) -> Message:
    """`work` and its audit entries in one transaction on the writer's connection (SQLite, when
    nobody shares its commits: AuditBatcher.alone), as _in_one_transaction without the session;
    the sealer is told once the entries are committed."""
    audited: list[bool] = []
    async with writer.connect() as connection:
        record = connection_sink(connection, deps.ctx)

        async def audit(**entry: Any) -> None:
            await record(**entry)
            audited.append(True)

        requester = await read_requester(connection, slack_user_id)
        answer = await _answer_as(connection, requester, audit, slack_user_id, command, work)
    if audited:
        writer.audited()
    return answer


async def _read_then_audit(
    readers: LookupConnections,
    audit: AuditSink,
    slack_user_id: str,
    command: str,
    work: Work,
    read_requester: ReadRequester = requester_by_slack_user,
) -> Message:
    """`work` in a read-only transaction on one of `readers`' connections; its audit entries held
    until that transaction has ended (so no pooled connection is held while the group commit needs
    one), then committed through `audit`; only then the answer."""
    hold, held = _holding()
    async with readers.connect() as connection:
        requester = await read_requester(connection, slack_user_id)
        answer = await _answer_as(connection, requester, hold, slack_user_id, command, work)
    for entry in held:
        await audit(**entry)
    return answer


def _session(reads: Reads) -> AsyncSession:
    """The session of work that is not read-only: it always runs in one transaction."""
    if not isinstance(reads, AsyncSession):
        raise TypeError("work that writes runs in a session's transaction")
    return reads


class _GoneBeforeAnything(Exception):
    """The first statement (a read) found its pooled connection gone: nothing was done yet."""


async def _read_then_record(
    deps: BotDeps,
    readers: LookupConnections,
    slack_user_id: str,
    command: str,
    work: Work,
    read_requester: ReadRequester = requester_by_slack_user,
) -> Message:
    """`work` on a connection whose every statement commits on its own (PostgreSQL autocommit:
    no BEGIN, no COMMIT; no ORM session: store.lookup_connections), its audit entries held until
    it has finished and then written on the same connection, each entry one statement (with its
    nominal index) that is committed before it returns: so the answer goes out only after the
    commit holding its entry, and nothing is written for work that failed, as in one transaction.
    Needs a Slack user id: its first statement must be the requester's read
    (_GoneBeforeAnything)."""
    hold, held = _holding()
    async with readers.connect() as connection:
        try:
            requester = await read_requester(connection, slack_user_id)
        except Exception as exc:
            if found_connection_gone(exc):  # the connection died in the pool (no pre-ping here)
                raise _GoneBeforeAnything from exc
            raise
        answer = await _answer_as(connection, requester, hold, slack_user_id, command, work)
        audit = connection_sink(connection, deps.ctx)
        written = 0
        try:
            for entry in held:
                await audit(**entry)
                written += 1
        finally:
            if written:  # each committed by its own statement
                readers.audited()
    return answer


async def flags_reply(deps: BotDeps, slack_user_id: str, text: str) -> Message:
    read_ahead: list[ReadAhead] = []  # what the requester's read found for a query by reference

    async def read_requester(reads: Reads, user: str) -> Requester | None:
        read_ahead.clear()  # a retry on a new connection reads again
        if not deps.read_ahead:
            return await requester_by_slack_user(reads, user)
        requester, found = await requester_and_reference(reads, user, text, deps.cleared_roles)
        read_ahead.extend([found] if found is not None else [])
        return requester

    async def work(reads: Reads, requester: Requester, audit: AuditSink) -> Message:
        outcome = await look_up_flags(
            reads, requester, text, deps.ctx, cleared_roles=deps.cleared_roles, via=deps.via,
            audit_sink=audit, read_ahead=read_ahead[0] if read_ahead else None,
        )
        if isinstance(outcome, Usage):
            return render.text_message(render.FLAGS_USAGE)
        if isinstance(outcome, Unreadable):
            return render.text_message(f"{render.esc(outcome.message)}\n{render.FLAGS_USAGE}")
        if isinstance(outcome, NotFound):
            return render.not_found_message(outcome)
        if isinstance(outcome, Several):
            return render.candidates_message(outcome)
        if isinstance(outcome, ReasonRequired):
            return render.reason_required_message(outcome)
        assert isinstance(outcome, Found)
        return render.flags_message(outcome.view, deps.zone, outcome.reason)

    return await _as_officer(
        deps, slack_user_id, "/flags", work, read_only=True, read_requester=read_requester
    )


async def tasks_reply(deps: BotDeps, slack_user_id: str) -> Message:
    async def work(reads: Reads, requester: Requester, _audit: AuditSink) -> Message:
        view = await list_tasks(_session(reads), requester, deps.ctx, via=deps.via)
        return render.tasks_message(view, deps.zone)

    return await _as_officer(deps, slack_user_id, "/tasks", work)


def split_ack_text(text: str) -> tuple[str, str | None]:
    """`/ack <alert id> [outcome]` as (id, outcome or None). The id is the first word (`A 7K3Q9M`,
    typed with a space, is joined up); control and format characters in it are dropped, as for
    any typed query. The outcome is left exactly as typed: authority.clean_outcome judges it."""
    words = text.strip().split(maxsplit=1)
    if not words:
        return "", None
    alert_id, rest = words[0], (words[1] if len(words) > 1 else None)
    if alert_id.upper() in ("A", "A-") and rest:
        more = rest.split(maxsplit=1)
        alert_id, rest = alert_id + more[0], (more[1] if len(more) > 1 else None)
    return clean_text(alert_id), rest


async def ack_reply(deps: BotDeps, slack_user_id: str, typed: str, via: str) -> Message:
    """Acknowledge an alert as the requester; `via` is "slack_command" (`typed` is the command's
    text: an id and an optional outcome) or "slack_button" (`typed` is the button's alert id)."""
    if via == "slack_command":
        alert_id, outcome = split_ack_text(typed)
    else:
        alert_id, outcome = clean_text(typed), None

    async def work(reads: Reads, requester: Requester, _audit: AuditSink) -> Message:
        if not alert_id:
            return render.text_message(render.ACK_USAGE)
        session = _session(reads)
        try:
            result = await acknowledge(
                session, alert_id, requester.officer_id, via, deps.ctx, outcome=outcome
            )
        except OutcomeError as exc:
            return render.text_message(f"{render.esc(exc)}\n{render.ACK_USAGE}")
        by_name = ""
        if result.alert is not None and result.alert.acknowledged_by:
            officer = await session.get(Officer, result.alert.acknowledged_by)
            by_name = f"{officer.name} ({officer.id})" if officer else result.alert.acknowledged_by
        return render.ack_message(
            result, alert_id[:40], requester.officer_id, by_name, deps.zone, outcome_given=outcome is not None
        )

    return await _as_officer(deps, slack_user_id, "/ack" if via == "slack_command" else "Acknowledge", work)


async def home_view(deps: BotDeps, slack_user_id: str) -> dict[str, Any]:
    """The App Home view for this Slack user, read afresh. A Slack user not in the directory gets
    a view that says so and nothing else (the refusal is audited, as for a command)."""
    try:
        async with deps.sessions() as session, session.begin():
            requester = await requester_by_slack_user(session, slack_user_id)
            if requester is None:
                await _refuse(session_sink(session, deps.ctx), slack_user_id, "app_home")
                return render.home_text_view(render.HOME_NOT_SET_UP)
            view = await load_home(session, requester, deps.ctx, via=deps.via)
            return render.home_view(view, deps.zone)
    except Exception as exc:  # noqa: BLE001 - the tab shows an apology whatever went wrong
        log.error("App Home failed: %s", type(exc).__name__)
        return render.home_text_view(render.HOME_FAILURE)
