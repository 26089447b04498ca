"""Review (tenth session) of the ninth session's fast paths, end to end: a delivery differential
driver. The same traffic (signed requests to the events API: lone requests, batches, singles the
group committer gathers, a nominal moved in the batch of its border check, actions whose ids hold
quotes, JSON-special and non-ASCII characters, a batch opening more alerts than audit.record_many's
one statement takes) goes through a started service (its delivery workers, the Slack stand-in, a
real SMTP sink on loopback) twice, into two fresh databases of one kind: once with every ninth-
session fast path on (Batch.keys_as_array, Batch.combine_writes, outbox.TAKE_HELD_NOMINALS,
audit.ONE_STATEMENT_ROWS, SmtpNotifier's arm_idle), once with all of them off. Everything stored
(alerts, deliveries and their states, audit entries, records, actions, nominals) and everything
sent (each mail's envelope and content, each Slack message) must be the same, ids made neutral;
every delivery sent once, no mail twice, none lost. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Text, cast, event, select

import casewatch.alerts.lifecycle as lifecycle
import casewatch.audit as audit
import casewatch.ingest.group as group
import casewatch.ingest.pipeline as pipeline
import casewatch.routing.outbox as outbox
import casewatch.store.engine as store_engine
import integrations.smtp_notifier as smtp_notifier
from casewatch.clock import FixedClock
from casewatch.ingest.apply import Batch
from casewatch.store.models import Action, Alert, AuditEntry, BorderCheck, Delivery, Event, Nominal, Visit
from casewatch.wiring import Service, start_background, stop
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import TEAMS, client_for, envelope, make_service, nominal_data, signed_post
from tests.test_audit9_folds import backing, two_urls  # noqa: F401 (fixtures)
from tests.test_ingest8_border_folds import _check, _ref, _requests, _setup
from tests.test_review10_audit import index_mismatches
from tests.test_triggers_case_data import utc

NOW = "2026-11-20T09:00:00Z"
TOKEN = "xoxb-review10-not-real"
NPT = {"N01": "C0NPTN01", "S02": "C0NPTS02"}
ROUTING = {
    "routes": {kind: ["team_channel", "spoc", "npt", "owner_email"]
               for kind in ("travel.unnotified", "travel.record_fta", "travel.confirmed")},
    "personal_data_targets": ["north.spoc@force.example"],
}
# Identifiers the events' validation lets through, each a key of the batch's locking reads (one
# JSON array on SQLite, one text[] on PostgreSQL): quotes, backslash, JSON's brackets and braces,
# SQL's LIKE and comment characters, non-ASCII letters and an astral character, 100 characters.
HOSTILE_IDS = (
    'A"quote', "A'apos", "A\\back\\slash", '["array"]', '{"k": 1}', "A%_--;", "Ação-é-ß",
    "漢字-行動", "A-\U0001f600-emoji", "L" * 100, "A,comma", "null",
)
FAST_SWITCHES = ("keys_as_array", "combine_writes")


# The tenth session's switches, as they land (each set only where it exists): the driver then
# compares them too.
LATER_SWITCHES: tuple[tuple[Any, str], ...] = (
    (Batch, "hold_writes"), (Batch, "array_events"), (audit, "ENTRY_RIDES_ALONG"), (audit, "DIRECT_ENTRIES"),
    (store_engine, "ONE_TRIP_PING"), (group, "KEEP_CONNECTION"), (lifecycle, "FOLD_OPEN_WRITES"),
    (pipeline, "DEFER_WRITES"),
)


@contextmanager
def _fast_paths(on: bool, patch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every ninth-session fast path on, or every one off (the plain paths they replaced); the
    tenth session's switches that exist likewise."""
    for name in FAST_SWITCHES:
        patch.setattr(Batch, name, on)
    for owner, name in LATER_SWITCHES:
        if hasattr(owner, name):
            patch.setattr(owner, name, on)
    patch.setattr(outbox, "TAKE_HELD_NOMINALS", on)
    patch.setattr(audit, "ONE_STATEMENT_ROWS", 16 if on else 0)
    plain_init = smtp_notifier.SmtpNotifier.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["arm_idle"] = on
        plain_init(self, *args, **kwargs)

    patch.setattr(smtp_notifier.SmtpNotifier, "__init__", init)
    yield


def _traffic(tag: str) -> list[list[list[dict[str, Any]]]]:
    """Steps of requests: the requests of a step are posted at once (the group committer gathers
    them), the steps one after another."""
    base = 1000

    def upsert(role: str, n: int, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-move-{role}-{n}",
                        visor_ref=_ref(base, role), occurred_at=f"2026-11-20T08:1{n}:00Z")

    def action(n: int, action_id: str) -> dict[str, Any]:
        return envelope("action.upsert", id=f"{tag}-act-{n}", visor_ref=_ref(base, "trip"),
                        occurred_at="2026-11-20T08:20:00Z", action_id=action_id,
                        summary=f"Fictional action {n}: review \"plan\" {action_id[:20]}")

    steps: list[list[list[dict[str, Any]]]] = [[_setup(base, tag)]]
    steps += [[request] for request in _requests(base, tag)]
    # The known nominal moves (manager, area, name) in the batch of its check, then back alone.
    steps.append([[upsert("batch", 1, offender_manager="PC5678", area="S02", surname="Example"),
                   _check(base, tag, "batch", 11, "outbound", "2026-11-20T08:40:00Z")]])
    steps.append([[upsert("batch", 2, offender_manager="PC1234", area="N01", surname="Testperson")]])
    steps.append([[_check(base, tag, "batch", 12, "inbound", "2026-11-20T08:45:00Z")]])
    # A new nominal (its first upsert buffered, then promoted by the next), its check, moved twice
    # and a stale upsert (older than its state), all in one batch: the alert goes by the nominal as
    # the batch leaves it.
    def born(n: int, at: str, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-born-{n}", visor_ref="VS-0009001",
                        occurred_at=at)

    steps.append([[born(1, "2026-11-20T08:00:00Z", area="N01", offender_manager="PC1234"),
                   envelope("travel.border_alert", id=f"{tag}-born-check", visor_ref="VS-0009001",
                            occurred_at="2026-11-20T08:46:00Z", port="Port born", direction="outbound",
                            checked_at="2026-11-20T08:46:00Z"),
                   born(2, "2026-11-20T08:01:00Z", area="S02", offender_manager="PC1234", surname="Example"),
                   born(3, "2026-11-20T08:02:00Z", area="S02", offender_manager="PC5678", surname="Sample"),
                   born(4, "2026-11-20T07:00:00Z", area="N01", offender_manager="PC1234")]])
    # Actions with hostile ids: new in one batch, then each upserted again alone (the locking read
    # must find the row the first batch wrote, or the upsert would insert it twice).
    # With a visit and a clock notification beside them: on PostgreSQL one combined statement.
    steps.append([[*(action(n, i) for n, i in enumerate(HOSTILE_IDS)),
                   envelope("visit.recorded", id=f"{tag}-visit-0", visor_ref=_ref(base, "cancel"),
                            occurred_at="2026-11-20T08:20:00Z", visited_on="2026-11-19"),
                   envelope("notification.received", id=f"{tag}-note-0", visor_ref=_ref(base, "late"),
                            occurred_at="2026-11-20T08:20:00Z", kind="periodic", notified_on="2026-11-18")]])
    steps.append([[action(100 + n, i)] for n, i in enumerate(HOSTILE_IDS[:6])])
    # Singles gathered by the group committer: checks of different nominals, a visit, a notice.
    steps.append([
        [_check(base, tag, "lone", 21, "inbound", "2026-11-20T08:50:00Z")],
        [_check(base, tag, "late", 21, "inbound", "2026-11-20T08:50:00Z")],
        [envelope("visit.recorded", id=f"{tag}-visit-1", visor_ref=_ref(base, "trip"),
                  occurred_at="2026-11-20T08:50:00Z", visited_on="2026-11-19")],
        [envelope("notification.received", id=f"{tag}-note-1", visor_ref=_ref(base, "cancel"),
                  occurred_at="2026-11-20T08:50:00Z", kind="periodic", notified_on="2026-11-19")],
    ])
    # Border checks whose event ids (the alerts' subjects, the live-alert read's keys: an array on
    # PostgreSQL) are hostile, then the same nominals' checks the other way (the live read finds
    # the alerts by those subjects).
    steps.append([[envelope("travel.border_alert", id=f'{tag}-"q"-{{b}}-[x]-é-{n}',
                            visor_ref=_ref(base, role), occurred_at="2026-11-20T08:52:00Z",
                            port="Port <b>&amp;", direction="outbound", checked_at="2026-11-20T08:52:00Z")]
                  for n, role in enumerate(("trip", "free", "cancel"))])
    steps.append([[_check(base, f"{tag}-back", role, 40, "inbound", "2026-11-20T08:53:00Z")]
                  for role in ("trip", "free", "cancel")])
    # More alerts in one batch than record_many's one statement takes (unknown references).
    at = "2026-11-20T08:55:00Z"
    steps.append([[_check(2000 + n, f"{tag}{n}", "lone", 30, "outbound", at) for n in range(20)]])
    return steps


async def _until_settled(service: Service, within: float = 60.0, *, move_clock: bool = False) -> None:
    """Until every delivery is sent or dead, twice in a row (`move_clock`: the fixed clock moved on
    a minute each look, so that retries fall due). 6-8 s alone; the bound was 20 s until it ran out
    three times in the twelfth session on a machine running two suites at once (nothing stuck: rows
    still sending and pending, each test passing alone), so it asserts the outcome, not a speed."""
    deadline = asyncio.get_running_loop().time() + within
    settled = 0
    while settled < 2:
        if move_clock:
            clock = service.ctx.clock
            assert isinstance(clock, FixedClock)
            clock.advance(timedelta(minutes=1))
        async with service.sessions() as session:
            states = list((await session.execute(select(Delivery.state))).scalars())
        settled = settled + 1 if states and all(s in ("sent", "dead") for s in states) else 0
        assert asyncio.get_running_loop().time() < deadline, Counter(states)
        await asyncio.sleep(0.05)


async def _drive(
    url: str, *, fast: bool, patch: pytest.MonkeyPatch, failing: bool = False
) -> dict[str, Any]:
    """The traffic through a started service; what it answered, stored and sent. `failing`: the
    SMTP sink refuses some mails (451) and Slack some messages (503) on the way."""
    mail = MailSink().start()
    try:
        async with SlackStandIn(token=TOKEN) as slack:
            teams = [{**team, "npt_channels": NPT} for team in TEAMS]
            with _fast_paths(fast, patch):
                service = await make_service(
                    url, clock=FixedClock(utc(NOW)), routing=ROUTING, teams=teams,
                    slack={"mode": "http", "bot_token": TOKEN, "signing_secret": "review10-not-real",
                           "api_url": slack.url},
                    smtp={"host": "127.0.0.1", "port": mail.port, "timeout_seconds": 5},
                    delivery={"send_timeout_seconds": 5, "chat_interval_seconds": 0,
                              "email_interval_seconds": 0, "poll_seconds": 0.05},
                    schedules={"enabled": False},
                )
                seen: list[str] = []
                event.listen(service.engine.sync_engine, "before_cursor_execute",
                             lambda *args: seen.append(args[2]))
                try:
                    await start_background(service)
                    if failing:
                        mail.fail_next("451 4.3.0 Try again later (review10)", times=4)
                        slack.fail_next("chat.postMessage", status=503, times=3)
                    answers = await _post_all(service, "run")
                    await _until_settled(service, move_clock=failing)
                    stored = await _stored(service)
                    assert await index_mismatches(service.sessions) == []
                finally:
                    await stop(service)
            posts = [c.args for c in slack.calls_to("chat.postMessage")]
            messages = dict(slack.messages)
    finally:
        mail.stop()
    names = stored["names"]
    used = {
        "combined": sum(q.startswith("WITH w0 AS (INSERT INTO ") for q in seen),
        "audit one statement": sum(
            q.startswith("WITH new AS (INSERT INTO audit_log")
            or (q.startswith("INSERT INTO audit_log") and "RETURNING" in q and "), (" in q)
            or q.startswith("WITH fold_alerts AS (")  # the entries and their index a part of the fold
            for q in seen
        ),
        "folded open writes": sum(q.startswith("WITH fold_alerts AS (INSERT INTO alerts") for q in seen),
        "keys as one": sum(("= ANY (" in q or "json_each(" in q) and q.endswith("FOR UPDATE") or
                           ("json_each(" in q and "ORDER BY" in q) for q in seen),
    }
    sent = {"mails": _mails(mail, names), "slack": _slack(posts, messages, names)}
    return {"answers": answers, **stored, **sent, "used": used}


async def _post_all(service: Service, tag: str) -> list[Any]:
    answers: list[Any] = []
    async with client_for(service) as client:
        for step in _traffic(tag):

            async def post(request: list[dict[str, Any]]) -> Any:
                resp = await signed_post(client, "/api/v1/events", request)
                body = await resp.json()
                return resp.status, body.get("accepted"), body.get("duplicates"), len(body.get("alerts", []))

            answers.append(await asyncio.gather(*(post(r) for r in step)))
    return answers


async def _stored(service: Service) -> dict[str, Any]:
    async with service.sessions() as session:
        alerts = list((await session.execute(select(Alert))).scalars())
        deliveries = list((await session.execute(select(Delivery))).scalars())
        entries = list((await session.execute(select(AuditEntry))).scalars())
        actions = list((await session.execute(select(Action))).scalars())
        nominals = list((await session.execute(select(Nominal))).scalars())
        checks = (await session.execute(select(BorderCheck.visor_ref, BorderCheck.event_id,
                                               BorderCheck.port, BorderCheck.direction))).all()
        visits = (await session.execute(select(Visit.visor_ref, Visit.event_id))).all()
        events = (await session.execute(select(Event.id, Event.type, Event.visor_ref, Event.occurred_at,
                                               Event.source, cast(Event.data, Text)))).all()
    # (JSON-safe: the names replace ids inside JSON text)
    names = {a.id: f"<alert {re.sub(r'[^A-Za-z0-9 ._-]', '_', a.opened_by_event or '')} {a.kind}>"
             for a in alerts}
    # A delivery by what it is (its alert, purpose, receiver, target), its id and content hash too.
    delivery_of = {d.id: f"<delivery {names.get(d.alert_id or '')} {d.purpose} {d.receiver} {d.target}>"
                   for d in deliveries}
    hashes = {d.content_hash: f"<hash of {delivery_of[d.id]}>" for d in deliveries}

    def entry_details(details: dict[str, Any]) -> dict[str, Any]:
        out = dict(details)
        if isinstance(out.get("delivery"), int):
            out["delivery"] = delivery_of.get(out["delivery"], out["delivery"])
        if out.get("content_hash") in hashes:
            out["content_hash"] = hashes[out["content_hash"]]
        return out

    def neutral(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
        for old, new in names.items():
            if old.startswith("A-"):
                text = text.replace(old, new)
        return text

    skip = ("alert_id", "ack_url")
    return {
        "names": names,
        "alerts": sorted(neutral([a.id, a.kind, a.visor_ref, a.subject, a.state, a.severity, a.team,
                                  a.owner, a.summary, a.details, a.resolved_reason, a.version])
                         for a in alerts),
        "deliveries": sorted(neutral([d.alert_id, d.purpose, d.receiver, d.channel, d.target, d.state,
                                      d.attempts, d.last_error,
                                      {k: v for k, v in d.payload.items() if k not in skip}])
                             for d in deliveries),
        "audit": sorted(neutral([e.actor, e.action, e.subject, e.purpose, entry_details(e.details),
                                 e.nominals]) for e in entries),
        "actions": sorted(neutral([a.action_id, a.visor_ref, a.summary, a.status, a.owner]) for a in actions),
        "nominals": sorted(neutral([n.visor_ref, n.area, n.offender_manager, n.surname, n.forenames,
                                    n.last_notification_on, n.state_as_of]) for n in nominals),
        "records": sorted(neutral(list(r)) for r in [*checks, *visits]),
        "events": sorted(neutral(list(e)) for e in events),
    }


def _mails(mail: MailSink, names: dict[str, str]) -> list[str]:
    out = []
    for (sender, rcpts), message in zip(mail.envelopes, mail.messages, strict=True):
        parts = [sender, rcpts, message["Subject"], message["To"], message["X-Casewatch-Alert"]]
        for part in message.walk():
            if not part.is_multipart():
                parts.append(part.get_content())
        text = json.dumps(parts, ensure_ascii=False)
        for old, new in names.items():
            if old.startswith("A-"):
                text = text.replace(old, new)
        out.append(re.sub(r"/alerts/[^\"\s<]*", "/alerts/<link>", text))
    return sorted(out)


def _slack(
    posts: list[dict[str, Any]], messages: dict[tuple[str, str], Any], names: dict[str, str]
) -> list[str]:
    """Each message posted; a reply's thread_ts as the message it replies to, by that message's
    channel and metadata (a ts depends on the order of sends)."""
    threads = {ts: f"<thread of {channel} {json.dumps(m.get('metadata'), sort_keys=True)}>"
               for (channel, ts), m in messages.items()}
    out = []
    for args in posts:
        shown = {k: v for k, v in args.items() if k != "token"}
        if shown.get("thread_ts") in threads:
            shown["thread_ts"] = threads[shown["thread_ts"]]
        text = json.dumps(shown, sort_keys=True, ensure_ascii=False)
        for old, new in names.items():
            if old.startswith("A-"):
                text = text.replace(old, new)
        out.append(text)
    return sorted(out)


async def test_the_fast_paths_store_and_send_what_the_plain_paths_do(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    plain_url, fast_url = two_urls
    with monkeypatch.context() as patch:
        plain = await _drive(plain_url, fast=False, patch=patch)
    with monkeypatch.context() as patch:
        fast = await _drive(fast_url, fast=True, patch=patch)
    plain.pop("names"), fast.pop("names")
    used, plain_used = fast.pop("used"), plain.pop("used")
    # Each fast path ran in the fast run, none in the plain one.
    postgres = plain_url.startswith("postgresql")
    assert used["keys as one"] > 0 and used["audit one statement"] > 0, used
    assert (used["combined"] > 0) == postgres, used
    assert (used["folded open writes"] > 0) == postgres, used
    assert not any(plain_used.values()), plain_used
    for key in plain:
        assert fast[key] == plain[key], key
    # The traffic did what it is for: alerts opened and resolved, mails and Slack messages sent,
    # every delivery sent (none dead, none twice), the hostile actions stored once each.
    kinds = Counter(json.loads(a)[1] for a in plain["alerts"])
    assert kinds["travel.unnotified"] >= 4 and kinds["travel.unmatched_nominal"] >= 20, kinds
    unsent = [d for d in plain["deliveries"] if '"sent"' not in d]
    assert not unsent, unsent
    emails = [d for d in plain["deliveries"] if '"email"' in d]
    assert emails and len(plain["mails"]) == len(emails)
    assert len(plain["slack"]) == len(plain["deliveries"]) - len(emails)
    assert {json.loads(a)[0] for a in plain["actions"]} == set(HOSTILE_IDS)
    # The check between two moves in one batch went by the nominal as the batch left it.
    moved = [json.loads(d) for d in plain["deliveries"] if "run-born-check " in d]
    assert moved, [a for a in plain["alerts"] if "born" in a]
    assert {d[4] for d in moved if d[2].startswith("npt:")} == {"C0NPTS02"}, moved
    assert {d[2] for d in moved if d[2].startswith("officer:")} == {"officer:PC5678"}, moved
    assert all(status == 202 for step in plain["answers"] for status, *_ in step), plain["answers"]



async def test_with_refusing_receivers_every_delivery_is_sent_once_either_way(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The same traffic while the SMTP sink refuses four mails (451) and Slack three messages
    (503): every delivery ends sent, each mail in the sink once (none twice, none lost), with the
    fast paths as without. Which deliveries met a refusal depends on the order of sends, so their
    attempts, errors and audit entries are not compared; everything else is."""
    plain_url, fast_url = two_urls
    with monkeypatch.context() as patch:
        plain = await _drive(plain_url, fast=False, patch=patch, failing=True)
    with monkeypatch.context() as patch:
        fast = await _drive(fast_url, fast=True, patch=patch, failing=True)
    for run in (plain, fast):
        retried = [d for d in run["deliveries"] if json.loads(d)[6] > 1]
        assert len(retried) >= 4, run["deliveries"]  # the refusals were met, and retried
        run.pop("names"), run.pop("used"), run.pop("audit")
        run["deliveries"] = sorted(_without_attempts(d) for d in run["deliveries"])
        # A refused Slack call was made twice (refused, then sent): each message once.
        run["slack"] = sorted(set(run["slack"]))
    for key in plain:
        assert fast[key] == plain[key], key
    unsent = [d for d in plain["deliveries"] if '"sent"' not in d]
    assert not unsent, unsent
    emails = [d for d in plain["deliveries"] if '"email"' in d]
    assert len(plain["mails"]) == len(emails) and len(set(plain["mails"])) == len(plain["mails"])


def _without_attempts(delivery: str) -> str:
    """A delivery's neutral row without its attempts and last error (see _stored)."""
    row = json.loads(delivery)
    return json.dumps(row[:6] + row[8:], sort_keys=True, ensure_ascii=False)
