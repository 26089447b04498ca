"""Clocks of the five triggers. Each default is law or policy as commonly applied (see
shared/domain.md, "The triggers and their clocks"); forces vary, so each is a setting."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from pydantic import Field, field_validator, model_validator

from casewatch.config.sections import Section
from casewatch.model.alerts import ALERT_KINDS, SEVERITY_RANK, Severity


def _missed_steps() -> dict[int, Severity]:
    return {1: "high", 28: "critical"}


def _action_steps() -> dict[int, Severity]:
    return {1: "medium", 28: "high"}


def _repeat_hours() -> dict[str, int]:
    return {"action.overdue": 72, "recall.unlawfully_at_large": 12}


def _visit_bands() -> dict[str, int]:
    return {"very_high": 30, "high": 90, "medium": 180, "low": 365}


RISK_LEVELS = ("low", "medium", "high", "very_high")


def _check_steps(steps: dict[int, Severity]) -> dict[int, Severity]:
    """A days-overdue -> severity table: says day 1, days 1 to 3650, never falling."""
    if not steps or 1 not in steps:
        raise ValueError("must say the severity from day 1 (a line `1 = \"high\"`)")
    if min(steps) < 1 or max(steps) > 3650:
        raise ValueError("days overdue must be 1 to 3650")
    ordered = [SEVERITY_RANK[steps[day]] for day in sorted(steps)]
    if any(later > earlier for earlier, later in zip(ordered, ordered[1:], strict=False)):
        raise ValueError("severity must not fall as the days overdue rise")
    return dict(sorted(steps.items()))


def _first_high_day(steps: Mapping[int, Severity]) -> int | None:
    return next((day for day in sorted(steps) if SEVERITY_RANK[steps[day]] <= SEVERITY_RANK["high"]), None)


class TriggerSection(Section):
    # Sexual Offences Act 2003 s.83(1) (and s.84(1)(d) on a release): initial notification
    # "within the period of N days beginning with" the release. The release day is day 1: with
    # 3, released 16 Nov -> due by the end of 18 Nov, missed from 19 Nov (local time).
    initial_notification_days: int = Field(3, ge=1, le=60)
    # SOA 2003 s.85(1), (5)(b): periodic notification within N years *after* the last initial,
    # change, periodic or weekly notification (notified 20 Nov 2025 -> due by the end of 20 Nov 2026).
    periodic_notification_years: int = Field(1, ge=1, le=5)
    # SOA 2003 s.85(5)(a), (6) and SI 2012/1876 (one week): no sole or main residence, the
    # periodic notification is due N days *after* the last one instead of a year (notified
    # 16 Nov -> due by the end of 23 Nov).
    weekly_notification_days: int = Field(7, ge=1, le=31)
    # Foreign travel (SOA 2003 s.86; SI 2004/1220 as amended by SI 2012/1876): notice at least
    # 7 days before departure, else (details not known earlier) at least 12 hours before.
    # Notice under N days (calendar days, local time) is flagged medium; 0 turns that flag off
    # (the 12-hour breach, high, stays: it is the law, not policy).
    travel_notice_days: int = Field(7, ge=0, le=60)
    # Policy default: remind this many days before a notification falls due.
    notification_reminder_days: int = Field(14, ge=0, le=120)
    # Border checks match a travel notification within this many days either side of its dates.
    border_match_window_days: int = Field(2, ge=0, le=30)
    # Local choice: a trip notified with no return date matches an inbound check only within
    # this many days of its departure (a 2024 trip must not "confirm" a 2026 return).
    open_trip_max_days: int = Field(90, ge=1, le=730)
    # Policy default: remind an action's owner this many days before its due date.
    action_reminder_days: int = Field(7, ge=0, le=120)
    # Policy default (domain.md): a MAPPA level change must reach ViSOR within 3 days.
    visor_update_days: int = Field(3, ge=1, le=30)
    # Local choice: remind this many days before a weekly (no fixed abode) notification falls
    # due. Kept below weekly_notification_days, or a reminder would be open all the time.
    weekly_notification_reminder_days: int = Field(1, ge=0, le=30)
    # Local choice, after the 2011 inspection (actions outstanding for up to 18 months): an
    # action this many days past its due date is high, not medium. Kept for configurations
    # written before action_overdue_severity: set alone, it is that table's high step
    # ({1: "medium", N: "high"}); set with the table, both must agree.
    action_very_overdue_days: int = Field(28, ge=1, le=3650)
    # Local choice: the team for alerts about a ViSOR reference not (yet) in the case store,
    # for example a border check for an unknown reference. "" = none: such alerts, and alerts
    # for nominals on a team not configured, are routed to the first [[teams]] entry instead.
    unmatched_team: str = ""
    # Local choice (issue 14): a missed notification's severity by days overdue, so a
    # notification missed by a day and one missed by three months are not the same alert. Keys
    # are days overdue (1 = the day after the due day), values the severity from that day on;
    # a step up re-notifies the alert's receivers. In TOML: [triggers.missed_notification_severity]
    # with lines such as `28 = "critical"`.
    missed_notification_severity: dict[int, Severity] = Field(default_factory=_missed_steps)
    # Local choice (issue 15: overdue actions escalate in severity): an overdue action's
    # severity by days overdue, as missed_notification_severity (1 = the day after the due day;
    # a step up re-notifies). In TOML: [triggers.action_overdue_severity].
    action_overdue_severity: dict[int, Severity] = Field(default_factory=_action_steps)
    # Local choice (issue 15: an acknowledgement means "owned", not "done"): a live alert (open or
    # acknowledged) of each kind named is sent again to its kind's receivers this many hours
    # after its opening or its last reminder, until it resolves. The table replaces these
    # defaults: a kind left out does not repeat. In TOML: [triggers.repeat_reminder_hours] with
    # lines such as `"action.overdue" = 72`.
    repeat_reminder_hours: dict[str, int] = Field(default_factory=_repeat_hours)
    # ACPO NPIA 2010 Guidance (2011 MAPPA inspection para 8.30): RMP actions reviewed at least
    # every 16 weeks; a review is due this many weeks after the last (rules.rmp_review).
    rmp_review_weeks: int = Field(16, ge=1, le=52)
    # Local choice: remind the offender manager this many days before an RMP review falls due.
    rmp_review_reminder_days: int = Field(14, ge=0, le=120)
    # The day this force's feed of rmp.reviewed events became complete (local date). A plan never
    # reviewed counts from the later of the newest MAPPA level change and this day; unset (None,
    # the default): no clock for a plan never reviewed (first deployment: no flood).
    rmp_reviews_recorded_from: date | None = None
    # Local choice (issue 15: home visits): the days between home visits by risk level, used when
    # the RMP sets no frequency (nominal.upsert visit_every_days). Since 2017 the plan sets it;
    # these are the older bands (domain.md; the 2005 joint inspection, Table 1, Forces B and E:
    # monthly very high, 3-monthly high, 6-monthly medium, annual low). A level left out has no
    # routine visits (reactive management). In TOML: [triggers.visit_every_days_by_risk].
    visit_every_days_by_risk: dict[str, int] = Field(default_factory=_visit_bands)
    # Local choice: remind the offender manager this many days before a home visit falls due.
    visit_reminder_days: int = Field(7, ge=0, le=120)
    # The day this force's feed of visit.recorded events became complete (local date). A nominal
    # never visited counts from the latest of the relevant date, the release date and this day;
    # unset (None, the default): no clock for a nominal never visited, as casewatch cannot tell
    # one never visited from one visited before the feed began (first deployment: no flood).
    visits_recorded_from: date | None = None
    # Local choice (issue 15: court orders): tell the offender manager and the SPOC this many days
    # before an active order expires (8 weeks: time to apply for a renewal, SOA 2003 s.103E, s.122D).
    order_expiry_notice_days: int = Field(56, ge=1, le=730)

    @field_validator("missed_notification_severity", "action_overdue_severity")
    @classmethod
    def _steps_rise(cls, steps: dict[int, Severity]) -> dict[int, Severity]:
        return _check_steps(steps)

    @field_validator("repeat_reminder_hours")
    @classmethod
    def _repeat_kinds(cls, hours: dict[str, int]) -> dict[str, int]:
        for kind, every in hours.items():
            if kind not in ALERT_KINDS:
                raise ValueError(f"unknown alert kind {kind!r}")
            if not 1 <= every <= 720:
                raise ValueError(f"{kind}: hours must be 1 to 720 (30 days)")
        return hours

    @field_validator("visit_every_days_by_risk")
    @classmethod
    def _visit_bands_known(cls, bands: dict[str, int]) -> dict[str, int]:
        for level, every in bands.items():
            if level not in RISK_LEVELS:
                raise ValueError(f"unknown risk level {level!r} (one of {', '.join(RISK_LEVELS)})")
            if not 1 <= every <= 730:
                raise ValueError(f"{level}: days must be 1 to 730")
        return bands

    @model_validator(mode="after")
    def _action_steps_agree(self) -> TriggerSection:
        both = {"action_very_overdue_days", "action_overdue_severity"} <= self.model_fields_set
        if both and _first_high_day(self.action_overdue_severity) != self.action_very_overdue_days:
            raise ValueError(
                "triggers.action_very_overdue_days disagrees with the first high step of "
                "triggers.action_overdue_severity: set only the table"
            )
        return self

    @property
    def action_overdue_steps(self) -> Mapping[int, Severity]:
        """The action.overdue steps in force: action_overdue_severity, or, where a configuration
        sets only action_very_overdue_days, {1: "medium", that day: "high"}."""
        if (
            "action_very_overdue_days" in self.model_fields_set
            and "action_overdue_severity" not in self.model_fields_set
        ):
            return {1: "medium", self.action_very_overdue_days: "high"}
        return self.action_overdue_severity

    @model_validator(mode="after")
    def _rmp_reminder_inside_period(self) -> TriggerSection:
        if self.rmp_review_reminder_days >= self.rmp_review_weeks * 7:
            raise ValueError("triggers.rmp_review_reminder_days must be less than triggers.rmp_review_weeks")
        return self

    @model_validator(mode="after")
    def _weekly_reminder_inside_week(self) -> TriggerSection:
        if self.weekly_notification_reminder_days >= self.weekly_notification_days:
            raise ValueError(
                "triggers.weekly_notification_reminder_days must be less than "
                "triggers.weekly_notification_days"
            )
        return self
