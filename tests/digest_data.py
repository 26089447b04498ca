"""A known, fictional data set for the digest, retention and schedules tests (team north, with a
little of team south that must never show in north's digest). Used by tests/test_digest*.py,
tests/test_retention*.py and tests/test_schedules*.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.store.models import Action, Alert, Nominal, Recall

AT = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # 07:00 GMT, Monday


def nominal(ref: str, manager: str, risk: str, team: str = "north") -> Nominal:
    return Nominal(
        visor_ref=ref,
        surname="Fictional",
        surname_key="fictional",
        forenames="Testname Nobody",
        date_of_birth=date(1970, 1, 2),
        pnc_id=None,
        category="1",
        mappa_level=1,
        registered=True,
        risk_level=risk,
        lead_agency="police",
        team=team,
        offender_manager=manager,
        area="N01",
        on_licence=False,
        no_fixed_abode=False,
        last_notification_on=None,
        release_date=None,
        licence_expiry=None,
        aliases=[],
        state_as_of=AT,
        level_as_of=None,
        updated_at=AT,
    )


def alert(
    alert_id: str,
    kind: str,
    ref: str,
    opened: datetime,
    *,
    state: str = "open",
    team: str = "north",
    severity: str = "high",
    owner: str | None = "PC1234",
    details: dict[str, Any] | None = None,
    resolved: datetime | None = None,
) -> Alert:
    return Alert(
        id=alert_id,
        kind=kind,
        severity=severity,
        visor_ref=ref,
        team=team,
        subject=alert_id,
        live_key=None if state == "resolved" else f"{kind}|{ref}|{alert_id}",
        state=state,
        summary=f"{kind} {ref}",
        details=details or {},
        owner=owner,
        due_at=None,
        opened_at=opened,
        opened_by_event=None,
        acknowledged_by="PC1234" if state == "acknowledged" else None,
        acknowledged_at=opened if state == "acknowledged" else None,
        resolved_at=resolved if state == "resolved" else None,
        resolved_reason="test" if state == "resolved" else None,
        escalation_chain=[],
        escalation_step=0,
        next_escalation_at=None,
        version=1,
    )


def action(action_id: str, ref: str, owner: str, due: date, status: str = "open") -> Action:
    return Action(
        action_id=action_id,
        visor_ref=ref,
        summary="Fictional action",
        owner=owner,
        due_on=due,
        status=status,
        source="mapp_meeting",
        state_as_of=AT,
        done_at=AT if status == "done" else None,
    )


async def load_known_set(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        session.add_all(
            [
                nominal("VS-0000001", "PC1234", "high"),
                nominal("VS-0000002", "PC1234", "very_high"),
                nominal("VS-0000003", "PC1234", "low"),
                nominal("VS-0000004", "PC1234", "medium"),
                nominal("VS-0000005", "PC1234", "low"),
                nominal("VS-0000006", "SGT0001", "low"),
                nominal("VS-0000009", "PC5678", "high", team="south"),
            ]
        )
        h = timedelta(hours=1)
        session.add_all(
            [
                alert("A-NEW001", "travel.unnotified", "VS-0000001", AT - 2 * h),
                alert(
                    "A-NEW002",
                    "notification.missed",
                    "VS-0000004",
                    AT - 5 * h,
                    state="acknowledged",
                    details={"due_on": "2026-11-20"},
                ),
                alert("A-OLD001", "action.overdue", "VS-0000001", AT - 72 * h),
                alert(
                    "A-OLD002",
                    "travel.confirmed",
                    "VS-0000003",
                    AT - 30 * h,
                    state="resolved",
                    resolved=AT - 29 * h,
                ),
                alert("A-REC001", "recall.issued", "VS-0000002", AT - 25 * h, severity="critical"),
                alert(
                    "A-DUE001",
                    "notification.due_soon",
                    "VS-0000005",
                    AT - h,
                    severity="low",
                    details={"due_on": "2026-11-27"},
                ),
                alert(
                    "A-DUE002",
                    "notification.due_soon",
                    "VS-0000006",
                    AT - 240 * h,
                    severity="low",
                    details={"due_on": "2026-12-05"},
                ),
                alert("A-SOUTH1", "travel.unnotified", "VS-0000009", AT - h, team="south", owner="PC5678"),
            ]
        )
        await session.flush()
        # The recall alert's subject is the recall event id (as the recall rule sets it).
        rec = await session.get(Alert, "A-REC001")
        assert rec is not None
        rec.subject = "ev-recall-1"
        session.add_all(
            [
                action("ACT-1", "VS-0000001", "PC1234", date(2026, 11, 20)),
                action("ACT-2", "VS-0000002", "PC1234", date(2026, 11, 22)),
                action("ACT-3", "VS-0000006", "SGT0001", date(2026, 11, 1)),
                action("ACT-4", "VS-0000003", "PC1234", date(2026, 11, 25)),
                action("ACT-5", "VS-0000003", "PC1234", date(2026, 11, 1), status="done"),
                action("ACT-6", "VS-0000009", "PC5678", date(2026, 11, 1)),
                action("ACT-7", "VS-0000004", "PC1234", date(2026, 12, 10)),
                Recall(
                    visor_ref="VS-0000002",
                    recall_type="standard",
                    issued_at=AT - 25 * h,
                    returned_at=None,
                    event_id="ev-recall-1",
                    return_event_id=None,
                ),
                Recall(
                    visor_ref="VS-0000003",
                    recall_type="fixed_term",
                    issued_at=AT - 200 * h,
                    returned_at=AT - 100 * h,
                    event_id="ev-recall-2",
                    return_event_id="ev-return-2",
                ),
                Recall(
                    visor_ref="VS-0000009",
                    recall_type="emergency",
                    issued_at=AT - 5 * h,
                    returned_at=None,
                    event_id="ev-recall-3",
                    return_event_id=None,
                ),
            ]
        )
