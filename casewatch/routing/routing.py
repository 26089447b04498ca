"""Resolving receiver names (config.routing.RECEIVERS) to addresses for one alert.

Only configured addresses are ever produced: team channels, SPOC and supervisor inboxes and
officer emails from the configuration, the control room, NPT channels.

`npt` means the NPT of the nominal's area, except for an alert whose details name the area
(model.alerts.NPT_AREA: a move, rules.risk): that area's NPT, in whichever team's configuration
maps it (the alert's team first), told without personal data whatever personal_data_targets says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from casewatch.config import Settings
from casewatch.config.sections import OfficerSection, TeamSection
from casewatch.model.alerts import NPT_AREA

log = logging.getLogger(__name__)

Channel = Literal["slack", "email"]


@dataclass(frozen=True)
class Target:
    receiver: str  # who, for people: "team:north", "spoc:north", "officer:PC1234", "npt:north:N1"
    channel: Channel
    address: str  # Slack channel or user id, or an email address
    personal_data: bool = False  # cleared for the nominal's name and non-restricted markers
    inbox: bool = False  # a team inbox (SPOC): may carry a little more than chat

    @property
    def may_acknowledge(self) -> bool:
        """Whether the people reading this address may acknowledge (casewatch.alerts.authority):
        a neighbourhood team's channel is told for information; it is not the alert's team."""
        return not self.receiver.startswith("npt:")


def chat_enabled(settings: Settings) -> bool:
    """Slack deliveries are queued only when something will carry them (Slack or the chat log)."""
    return settings.slack.mode != "off" or bool(settings.delivery.chat_log_path)


def allowed_emails(settings: Settings) -> frozenset[str]:
    """Every address casewatch may email: the configured team, officer and control-room ones."""
    addresses = {settings.routing.control_room_email} if settings.routing.control_room_email else set()
    for team in settings.teams:
        addresses.add(team.spoc_email)
        addresses.update(team.supervisor_emails)
    addresses.update(o.email for o in settings.officers if o.email)
    return frozenset(a.lower() for a in addresses)


def configured_slack_ids(settings: Settings) -> frozenset[str]:
    """Every Slack channel or user id casewatch may post to: team channels, NPT channels, the
    control room and officers' DMs."""
    ids = {settings.routing.control_room_channel}
    for team in settings.teams:
        ids.add(team.channel)
        ids.update(team.npt_channels.values())
    ids.update(o.slack_user_id for o in settings.officers)
    return frozenset(i for i in ids if i)


@dataclass(frozen=True)
class Directory:
    """Teams and officers by id: built once per batch, so that routing thousands of alerts does
    not scan the configured lists for each one."""

    teams: Mapping[str, TeamSection]
    officers: Mapping[str, OfficerSection]

    @classmethod
    def of(cls, settings: Settings) -> Directory:
        return cls({t.id: t for t in settings.teams}, {o.id: o for o in settings.officers})


NOMINAL_RECEIVERS = ("npt", "owner", "owner_email", "owner_dm")


class AlertFacts(Protocol):
    """What routing and payloads read of an alert: an Alert row, or the record of one just
    opened (alerts.lifecycle.OpenedAlert)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def visor_ref(self) -> str: ...
    @property
    def team(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def due_at(self) -> datetime | None: ...
    @property
    def opened_at(self) -> datetime: ...
    @property
    def acknowledged_by(self) -> str | None: ...
    @property
    def acknowledged_outcome(self) -> str | None: ...
    @property
    def resolved_reason(self) -> str | None: ...
    @property
    def escalation_step(self) -> int: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


class NominalPlace(Protocol):
    """What routing reads of a nominal: a Nominal row, or just these columns of it."""

    @property
    def area(self) -> str: ...

    @property
    def offender_manager(self) -> str: ...


def needs_nominal(receivers: Sequence[str]) -> bool:
    """Whether resolving these receivers reads the nominal (its area or offender manager)."""
    return any(r in NOMINAL_RECEIVERS for r in receivers)


def targets_for(
    alert: AlertFacts,
    receivers: Sequence[str],
    nominal: NominalPlace | None,
    settings: Settings,
    directory: Directory,
) -> tuple[list[Target], bool]:
    """The addresses the named receivers stand for, for this alert, without duplicates, and
    whether they are a fallback: the fallback team's receivers for an alert whose team is not
    configured, or the SPOC inbox when none resolves to anything (no alert goes unrouted)."""
    team = directory.teams.get(alert.team)
    fell_back = team is None
    if team is None:  # an unknown reference, or a team not configured: never route to nobody
        team = settings.fallback_team()
    chat = chat_enabled(settings)
    found: list[Target] = []
    for name in receivers:
        found += _resolve_one(name, alert, team, nominal, settings, chat, directory)
    if not found and team is not None:
        found = [_email(f"spoc:{team.id}", team.spoc_email, settings, inbox=True)]
        fell_back = True
    unique: dict[tuple[str, str], Target] = {}
    for target in found:
        unique.setdefault((target.channel, target.address.lower()), target)
    return list(unique.values()), fell_back


def log_fallbacks(alerts: Sequence[AlertFacts], receivers: Sequence[str]) -> None:
    """One warning for a whole batch routed to SPOC inboxes, not one per alert."""
    if not alerts:
        return
    first = alerts[0]
    log.warning(
        "%d alert(s) (first %s, %s): routed by fallback (team not configured, or receivers %s "
        "resolve to no address): the fallback team's receivers or the SPOC inbox",
        len(alerts), first.id, first.kind, ",".join(receivers),
    )


def _resolve_one(
    name: str,
    alert: AlertFacts,
    team: TeamSection | None,
    nominal: NominalPlace | None,
    settings: Settings,
    chat: bool,
    directory: Directory,
) -> list[Target]:
    routing = settings.routing
    if name == "control_room":
        targets = []
        if routing.control_room_channel and chat:
            targets.append(_slack("control_room", routing.control_room_channel, settings))
        if routing.control_room_email:
            targets.append(_email("control_room", routing.control_room_email, settings))
        return targets
    if name in ("owner", "owner_email", "owner_dm"):
        officer_id = alert.owner or (nominal.offender_manager if nominal else None)
        officer = directory.officers.get(officer_id) if officer_id else None
        if officer is None:
            return []
        return _officer_targets(name, officer, settings, chat)
    if name == "admins":
        return [
            target
            for admin in settings.officers if "admin" in admin.roles
            for target in _officer_targets("owner", admin, settings, chat)
        ]
    if team is None:
        return []
    if name == "team_channel":
        return [_slack(f"team:{team.id}", team.channel, settings)] if team.channel and chat else []
    if name == "spoc":
        return [_email(f"spoc:{team.id}", team.spoc_email, settings, inbox=True)]
    if name == "supervisors":
        return [_email(f"supervisors:{team.id}", a, settings) for a in team.supervisor_emails]
    if name == "npt":
        return _npt(alert, team, nominal, settings, chat, directory)
    raise ValueError(f"unknown receiver {name!r}")  # config validation makes this unreachable


def _npt(
    alert: AlertFacts,
    team: TeamSection,
    nominal: NominalPlace | None,
    settings: Settings,
    chat: bool,
    directory: Directory,
) -> list[Target]:
    named = (alert.details or {}).get(NPT_AREA)
    if not isinstance(named, str) or not named:
        area = nominal.area if nominal else ""
        channel = team.npt_channels.get(area, "")
        return [_slack(f"npt:{team.id}:{area}", channel, settings)] if channel and chat else []
    # A move: the area may be another team's (a nominal who moved across teams).
    for owner in (team, *directory.teams.values()):
        channel = owner.npt_channels.get(named, "")
        if channel:
            return [Target(f"npt:{owner.id}:{named}", "slack", channel)] if chat else []
    return []


def _officer_targets(name: str, officer: OfficerSection, settings: Settings, chat: bool) -> list[Target]:
    receiver = f"officer:{officer.id}"
    dm = [_slack(receiver, officer.slack_user_id, settings)] if officer.slack_user_id and chat else []
    mail = [_email(receiver, officer.email, settings)] if officer.email else []
    if name == "owner_dm":
        return dm
    if name == "owner_email":
        return mail
    via = settings.routing.owner_via
    if via == "both":
        return dm + mail
    if via == "email":
        return mail or dm
    return dm or mail


def _slack(receiver: str, address: str, settings: Settings) -> Target:
    return Target(receiver, "slack", address, address in settings.routing.personal_data_targets)


def _email(receiver: str, address: str, settings: Settings, *, inbox: bool = False) -> Target:
    cleared = address.lower() in {t.lower() for t in settings.routing.personal_data_targets}
    return Target(receiver, "email", address, cleared, inbox)
