"""The supervisors' daily digest as data: pure functions from what the store holds (`DigestInput`,
read by casewatch.digest.query) and an instant to the digest's sections (`Digest`).

Sections: new alerts in the last 24 hours by kind; unacknowledged alerts with their age; overdue
actions by owner; missed notifications; what falls due in the next `due_days` days; border-travel
alerts; outstanding recalls; each officer's caseload with the share that is high or very high
risk against the guideline (default 20%); and oversight: per officer, their live alerts still
unacknowledged and those they acknowledged without saying what was done (no outcome).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

BORDER_KINDS = ("travel.unnotified", "travel.confirmed", "travel.record_fta", "travel.unmatched_nominal")
MISSED_KIND = "notification.missed"
# Reminders and alerts told for information ask nobody to acknowledge (they never escalate), so
# they count neither as unacknowledged nor as wanting an outcome; reminders with a due day are
# listed under "falls due" instead (the actions behind action.due_soon are listed from the store).
REMINDER_KINDS = ("notification.due_soon", "action.due_soon", "visit.due", "area.moved_out", "area.moved_in")
# Reminders while low (rmp.review_due: before the due day is over); medium is overdue work.
LOW_REMINDER_KINDS = ("rmp.review_due",)
# The reminders listed under "falls due", by what they are about.
DUE_REMINDERS = {
    "notification.due_soon": "notification",
    "visit.due": "visit",
    "rmp.review_due": "RMP review",
}
HIGH_RISK = ("high", "very_high")
LIVE = ("open", "acknowledged")


@dataclass(frozen=True)
class AlertRow:
    id: str
    kind: str
    severity: str
    visor_ref: str
    state: str
    opened_at: datetime
    owner: str | None = None
    due_on: date | None = None  # the due day a notification or action alert is about
    acknowledged_by: str | None = None
    has_outcome: bool = False  # the acknowledgement says what was done (`/ack <id> <outcome>`)


@dataclass(frozen=True)
class ActionRow:
    action_id: str
    visor_ref: str
    owner: str
    due_on: date


@dataclass(frozen=True)
class RecallRow:
    visor_ref: str
    recall_type: str
    issued_at: datetime
    alert_id: str | None = None


@dataclass(frozen=True)
class OfficerCases:
    officer_id: str
    name: str  # the officer's name (staff, not a nominal); "" for an id not in the directory
    total: int
    high: int  # high or very high risk


@dataclass(frozen=True)
class OfficerOversight:
    """One officer's open work without evidence: live alerts they own that nobody has
    acknowledged, and live alerts they acknowledged without an outcome."""

    officer_id: str  # "" for alerts with no owner
    name: str  # from the officer directory; "" when not in it
    unacknowledged: int
    without_outcome: int

    @property
    def total(self) -> int:
        return self.unacknowledged + self.without_outcome


@dataclass(frozen=True)
class DigestInput:
    """What the store holds for one team: live alerts and alerts opened in the last 24 hours,
    open actions due on or before the end of the look-ahead, outstanding recalls, caseloads."""

    team_id: str
    team_name: str
    alerts: list[AlertRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    recalls: list[RecallRow] = field(default_factory=list)
    caseloads: list[OfficerCases] = field(default_factory=list)
    officer_names: dict[str, str] = field(default_factory=dict)  # officer id -> name (directory)


@dataclass(frozen=True)
class DueItem:
    due_on: date
    what: str  # "action", "notification", "visit" or "RMP review"
    ref: str  # the action id or the alert id
    visor_ref: str
    owner: str | None


@dataclass(frozen=True)
class CaseloadShare:
    officer_id: str
    name: str
    total: int
    high: int
    percent: float
    over: bool


@dataclass(frozen=True)
class Digest:
    team_id: str
    team_name: str
    at: datetime
    local_day: date
    timezone: str
    guideline_percent: float
    due_days: int
    new_by_kind: list[tuple[str, int]]
    unacknowledged: list[tuple[AlertRow, timedelta]]
    overdue_by_owner: list[tuple[str, list[tuple[ActionRow, int]]]]
    missed_notifications: list[AlertRow]
    due_soon: list[DueItem]
    border_travel: list[AlertRow]
    recalls: list[tuple[RecallRow, timedelta]]
    caseload: list[CaseloadShare]
    oversight: list[OfficerOversight] = field(default_factory=list)

    @property
    def new_total(self) -> int:
        return sum(n for _, n in self.new_by_kind)

    @property
    def overdue_total(self) -> int:
        return sum(len(rows) for _, rows in self.overdue_by_owner)

    @property
    def over_guideline(self) -> list[CaseloadShare]:
        return [c for c in self.caseload if c.over]

    @property
    def nothing_to_report(self) -> bool:
        """Nothing new, nothing waiting, nothing late or due, no caseload over the guideline."""
        return not (
            self.new_by_kind
            or self.unacknowledged
            or self.overdue_by_owner
            or self.missed_notifications
            or self.due_soon
            or self.border_travel
            or self.recalls
            or self.over_guideline
            or self.oversight
        )


def build_digest(
    data: DigestInput,
    at: datetime,
    tz: ZoneInfo,
    *,
    guideline_percent: float = 20.0,
    due_days: int = 7,
) -> Digest:
    today = at.astimezone(tz).date()
    horizon = today + timedelta(days=due_days)
    since = at - timedelta(hours=24)

    new = Counter(a.kind for a in data.alerts if since < a.opened_at <= at)
    live = [a for a in data.alerts if a.state in LIVE and a.opened_at <= at]
    unacknowledged = sorted(
        ((a, at - a.opened_at) for a in live if a.state == "open" and not is_reminder(a)),
        key=lambda pair: (-pair[1], pair[0].id),
    )
    overdue: dict[str, list[tuple[ActionRow, int]]] = defaultdict(list)
    due: list[DueItem] = []
    for action in data.actions:
        if action.due_on < today:
            overdue[action.owner].append((action, (today - action.due_on).days))
        elif action.due_on <= horizon:
            due.append(DueItem(action.due_on, "action", action.action_id, action.visor_ref, action.owner))
    for alert in live:
        what = DUE_REMINDERS.get(alert.kind)
        if what and is_reminder(alert) and alert.due_on is not None and alert.due_on <= horizon:
            due.append(DueItem(alert.due_on, what, alert.id, alert.visor_ref, alert.owner))
    missed = sorted((a for a in live if a.kind == MISSED_KIND), key=lambda a: (a.opened_at, a.id))
    border = sorted(
        (a for a in data.alerts if a.kind in BORDER_KINDS and (a.state in LIVE or since < a.opened_at <= at)),
        key=lambda a: (a.opened_at, a.id),
    )
    recalls = sorted(
        ((r, at - r.issued_at) for r in data.recalls if r.issued_at <= at),
        key=lambda pair: (-pair[1], pair[0].visor_ref),
    )
    return Digest(
        team_id=data.team_id,
        team_name=data.team_name,
        at=at,
        local_day=today,
        timezone=str(tz),
        guideline_percent=guideline_percent,
        due_days=due_days,
        new_by_kind=sorted(new.items(), key=lambda kv: (-kv[1], kv[0])),
        unacknowledged=unacknowledged,
        overdue_by_owner=[
            (owner, sorted(rows, key=lambda r: (-r[1], r[0].action_id)))
            for owner, rows in sorted(overdue.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
        missed_notifications=missed,
        due_soon=sorted(due, key=lambda d: (d.due_on, d.what, d.ref)),
        border_travel=border,
        recalls=recalls,
        caseload=caseload_shares(data.caseloads, guideline_percent),
        oversight=oversight(live, data.officer_names),
    )


def is_reminder(alert: AlertRow) -> bool:
    """A reminder or an alert told for information (REMINDER_KINDS, LOW_REMINDER_KINDS)."""
    return alert.kind in REMINDER_KINDS or (alert.kind in LOW_REMINDER_KINDS and alert.severity == "low")


def oversight(live: list[AlertRow], names: dict[str, str]) -> list[OfficerOversight]:
    """Per officer: live alerts they own still open (unowned ones under ""), and live alerts they
    acknowledged without an outcome. Reminders and alerts told for information (is_reminder) ask
    nobody to act, so they count for neither.
    Officers with nothing in either column are left out; the most first."""
    unacknowledged: Counter[str] = Counter()
    without_outcome: Counter[str] = Counter()
    for alert in live:
        if is_reminder(alert):
            continue
        if alert.state == "open":
            unacknowledged[alert.owner or ""] += 1
        elif alert.state == "acknowledged" and not alert.has_outcome:
            without_outcome[alert.acknowledged_by or ""] += 1
    rows = [
        OfficerOversight(officer, names.get(officer, ""), unacknowledged[officer], without_outcome[officer])
        for officer in set(unacknowledged) | set(without_outcome)
    ]
    # The unowned row last: it belongs to nobody until a supervisor gives it to someone.
    return sorted(rows, key=lambda r: (r.officer_id == "", -r.total, -r.unacknowledged, r.officer_id))


def caseload_shares(caseloads: list[OfficerCases], guideline_percent: float) -> list[CaseloadShare]:
    """Each officer's share of high or very high risk nominals; `over` when it exceeds the
    guideline ("no officer's caseload more than 20% high or very high risk")."""
    shares = []
    for c in caseloads:
        percent = 100.0 * c.high / c.total if c.total else 0.0
        shares.append(
            CaseloadShare(c.officer_id, c.name, c.total, c.high, percent, percent > guideline_percent)
        )
    return sorted(shares, key=lambda s: (not s.over, -s.percent, s.officer_id))
