"""Oversight with evidence in the supervisors' digest (issue 15): per officer, the live alerts they
own that nobody has acknowledged, and the live alerts they acknowledged without saying what was
done. On the known data set (tests/digest_data.py) plus a few alerts here, through the store's
queries on SQLite and PostgreSQL, with acknowledgements made by the real lifecycle (`/ack`'s path);
officer names from the directory, escaped in every version."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.digest import render
from casewatch.digest.build import AlertRow, Digest, DigestInput, OfficerOversight, build_digest
from casewatch.digest.send import build_team_digest
from casewatch.directory import sync_directory
from casewatch.safe_text import mrkdwn
from tests.digest_data import AT, alert, load_known_set
from tests.support import make_settings

LONDON = ZoneInfo("Europe/London")
H = timedelta(hours=1)


async def _north(sessions: async_sessionmaker[AsyncSession], db_url: str) -> Digest:
    settings = make_settings(db_url)
    ctx = Context(settings, FixedClock(AT))
    team = settings.team("north")
    assert team is not None
    async with sessions() as session:
        return await build_team_digest(session, ctx, team, AT)


def _counts(d: Digest) -> list[tuple[str, str, int, int]]:
    return [(r.officer_id, r.name, r.unacknowledged, r.without_outcome) for r in d.oversight]


async def test_counts_per_officer_from_the_store_and_the_ack_path(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(db_url)
    ctx = Context(settings, FixedClock(AT - H))
    async with sessions.begin() as session:
        await sync_directory(session, settings)
    await load_known_set(sessions)
    async with sessions.begin() as session:
        resolved = alert("A-RES001", "action.overdue", "VS-0000003", AT - 9 * H, state="resolved")
        resolved.acknowledged_by = "SGT0001"  # acknowledged without an outcome, but over
        session.add_all(
            [
                alert("A-OWN001", "notification.missed", "VS-0000003", AT - 8 * H, owner="SGT0001"),
                alert("A-OWN002", "notification.missed", "VS-0000005", AT - 7 * H, owner="SGT0001"),
                alert("A-NOBODY", "travel.unnotified", "VS-0000004", AT - 6 * H, owner=None),
                # An officer of another team owns an alert of this team: they must act, so they count.
                alert("A-SOUTHPC", "action.overdue", "VS-0000005", AT - 3 * H, owner="PC5678"),
                resolved,
            ]
        )
    # Known set: PC1234 owns A-NEW001, A-OLD001 and A-REC001 (open) and acknowledged A-NEW002
    # without an outcome; reminders (A-DUE001, A-DUE002) count for nobody; A-SOUTH1 is south's.
    before = await _north(sessions, db_url)
    assert _counts(before) == [
        ("PC1234", "PC Example", 3, 1),
        ("SGT0001", "Sgt Example", 2, 0),
        ("PC5678", "PC Sample", 1, 0),
        ("", "", 1, 0),
    ]
    assert sum(r.unacknowledged for r in before.oversight) == len(before.unacknowledged)

    async with sessions.begin() as session:
        # With an outcome: evidence, so out of both columns.
        done = await acknowledge(
            session, "A-OWN001", "SGT0001", "slack_command", ctx, outcome="called at home"
        )
        assert done.status == "acknowledged"
        # Without one: out of "unacknowledged", into "without an outcome" for who acknowledged it.
        bare = await acknowledge(session, "A-OLD001", "SGT0001", "slack_button", ctx)
        assert bare.status == "acknowledged"
        blank = await acknowledge(session, "A-SOUTHPC", "PC1234", "slack_command", ctx, outcome="   ")
        assert blank.status == "acknowledged"
    after = await _north(sessions, db_url)
    assert _counts(after) == [
        ("PC1234", "PC Example", 2, 2),
        ("SGT0001", "Sgt Example", 1, 1),
        ("", "", 1, 0),
    ]

    text = render.email_text(after)
    assert "Oversight per officer: 4 unacknowledged, 3 acknowledged without an outcome" in text
    assert "  PC1234 (PC Example): 2 unacknowledged, 2 acknowledged without an outcome" in text
    assert "  SGT0001 (Sgt Example): 1 unacknowledged, 1 acknowledged without an outcome" in text
    assert "  no owner: 1 unacknowledged, 0 acknowledged without an outcome" in text
    html = render.email_html(after)
    assert "<h2>Oversight per officer: 4 unacknowledged, 3 acknowledged without an outcome</h2>" in html
    assert (
        "<li><code>PC1234 (PC Example): 2 unacknowledged, 2 acknowledged without an outcome</code></li>"
        in html
    )
    line = (
        "Per officer, unacknowledged / acknowledged without an outcome: 4 / 3: "
        "PC1234 2/2, SGT0001 1/1, no owner 1/0"
    )
    assert line in render.channel_lines(after)
    assert line in render.channel_blocks(after)[1]["text"]["text"]
    for version in (text, html, render.channel_text(after), str(render.channel_blocks(after))):
        assert "Fictional" not in version and "Testname" not in version  # never a nominal's name
        assert "called at home" not in version  # outcomes are evidence for the audit, not the digest
    channel = render.channel_text(after) + str(render.channel_blocks(after))
    assert "PC Example" not in channel and "Sgt Example" not in channel  # the channel names nobody


def _row(
    alert_id: str, state: str, owner: str | None, *, by: str | None = None, outcome: bool = False
) -> AlertRow:
    return AlertRow(
        alert_id,
        "action.overdue",
        "high",
        "VS-0000001",
        state,
        AT - 48 * H,  # not "new": only the oversight section has anything to say about it
        owner,
        acknowledged_by=by,
        has_outcome=outcome,
    )


def test_a_quiet_team_has_no_oversight_rows_and_an_unanswered_ack_is_something_to_report() -> None:
    quiet = build_digest(
        DigestInput(
            "north", "North MOSOVO", alerts=[_row("A-1", "acknowledged", "PC1", by="PC1", outcome=True)]
        ),
        AT,
        LONDON,
    )
    assert quiet.oversight == [] and quiet.nothing_to_report
    assert "Oversight per officer: 0 unacknowledged, 0 acknowledged without an outcome" in render.email_text(
        quiet
    )

    bare = build_digest(
        DigestInput("north", "North MOSOVO", alerts=[_row("A-1", "acknowledged", "PC1", by="PC2")]),
        AT,
        LONDON,
    )
    assert bare.oversight == [OfficerOversight("PC2", "", 0, 1)]
    assert not bare.nothing_to_report  # an acknowledgement with no outcome is for a supervisor to see


def test_officer_names_from_the_directory_are_shown_never_obeyed() -> None:
    name = "<b>Sgt</b> <!channel> @here *bold*\u202e\nforged line"
    d = build_digest(
        DigestInput(
            "north", "North MOSOVO", alerts=[_row("A-1", "open", "SGT9")], officer_names={"SGT9": name}
        ),
        AT,
        LONDON,
    )
    assert d.oversight == [OfficerOversight("SGT9", name, 1, 0)]
    text = render.email_text(d)
    assert "\u202e" not in text and "\nforged line" not in text
    html = render.email_html(d)
    assert "<b>Sgt</b>" not in html and "&lt;b&gt;Sgt&lt;/b&gt;" in html
    blocks = str(render.channel_blocks(d))
    assert "<!channel>" not in blocks and "Sgt" not in blocks  # the channel has the id only
    assert "SGT9 1/0" in render.channel_text(d)
    assert mrkdwn(name) not in blocks


# (kind, severity, state, owner, acknowledged by, counted as (unacknowledged, without an outcome),
# listed under "falls due" as, why): reminders and alerts told for information ask nobody to act,
# so no officer is chased for them (issue 15 review); each against its registry entry.
# fmt: off
REMINDER_ROWS = [
    ("visit.due", "low", "open", "PC1", None, (0, 0), "visit", "a reminder before the due day"),
    ("rmp.review_due", "low", "open", "PC1", None, (0, 0), "RMP review", "low: the due day not over"),
    ("rmp.review_due", "medium", "open", "PC1", None, (1, 0), None, "medium: overdue (para 8.30)"),
    ("area.moved_out", "low", "open", None, None, (0, 0), None, "told to the old NPT for information"),
    ("area.moved_in", "medium", "acknowledged", "PC1", "PC1", (0, 0), None, "information, high risk"),
    ("visit.overdue", "medium", "open", "PC1", None, (1, 0), None, "no visit by the due day"),
    ("risk.changed", "high", "acknowledged", "PC1", "PC1", (0, 1), None, "the outcome is evidence"),
]
# fmt: on


@pytest.mark.parametrize(("kind", "severity", "state", "owner", "by", "counts", "due", "why"), REMINDER_ROWS)
def test_reminders_and_alerts_for_information_are_nobody_s_unanswered_work(
    kind: str,
    severity: str,
    state: str,
    owner: str | None,
    by: str | None,
    counts: tuple[int, int],
    due: str | None,
    why: str,
) -> None:
    row = AlertRow(
        "A-ROW1",
        kind,
        severity,
        "VS-0000001",
        state,
        AT - 48 * H,
        owner,
        due_on=AT.date() + timedelta(days=3),
        acknowledged_by=by,
    )
    d = build_digest(DigestInput("north", "North MOSOVO", alerts=[row]), AT, LONDON)
    got = (sum(r.unacknowledged for r in d.oversight), sum(r.without_outcome for r in d.oversight))
    assert got == counts, why
    assert len(d.unacknowledged) == counts[0], why
    assert [(i.what, i.ref) for i in d.due_soon] == ([(due, "A-ROW1")] if due else []), why
