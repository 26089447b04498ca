"""Who may acknowledge an alert, and what an acknowledgement's outcome text may hold.

Acknowledging stops an alert's escalation, so it is for the people the alert is for:
- the officers of the alert's own team, whatever their role (officer, supervisor, SPOC); for an
  alert whose team is not configured, the team that hears of it instead (Settings.fallback_team);
- the officer named as the alert's `owner`, even in another team: they are who must act;
- for an alert naming the neighbourhood it is for (details[model.alerts.NPT_AREA]: a move,
  area.moved_out / area.moved_in), the officers of the team whose configuration has that area's
  NPT channel (the channel routing sends it to: the alert's team first, else the first team
  listing it), so the old area's team can close what it was told when the nominal left;
- the control room and admins, for any alert about a nominal;
- for a system alert (kind `system.*`: a delivery that died, a job that stopped), which is
  routed to the admins only, the admins only.
Everyone else, and anyone not in the officer directory, is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from casewatch.config import Settings
from casewatch.model.alerts import NPT_AREA
from casewatch.model.text_rules import TextKind, text_problem

ANY_ALERT_ROLES: frozenset[str] = frozenset({"control_room", "admin"})
SYSTEM_ALERT_ROLES: frozenset[str] = frozenset({"admin"})
SYSTEM_KIND_PREFIX = "system."

OUTCOME_MAX_LENGTH = 500
OUTCOME_RULE = (
    f"one line of text, at most {OUTCOME_MAX_LENGTH} characters, with the characters a name may "
    "hold: no line breaks or tabs, no invisible format characters (bidi overrides, zero-width "
    "characters) and no line or paragraph separators"
)


class AlertTeamFacts(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def team(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def details(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Acknowledger:
    """Who is acknowledging, as the officer directory knows them."""

    officer_id: str
    team: str
    roles: frozenset[str]


def is_system_alert(alert: AlertTeamFacts) -> bool:
    return alert.kind.startswith(SYSTEM_KIND_PREFIX)


def answering_team(alert: AlertTeamFacts, settings: Settings) -> str | None:
    """The team whose officers the alert is for: its own, or the fallback team routing uses
    when its own is not configured."""
    if settings.team(alert.team) is not None:
        return alert.team
    fallback = settings.fallback_team()
    return fallback.id if fallback is not None else None


def npt_team(alert: AlertTeamFacts, settings: Settings) -> str | None:
    """The team whose NPT channel is told of an alert naming its area (NPT_AREA), as routing
    chooses it (casewatch.routing.routing._npt); None for an alert naming none."""
    area = (alert.details or {}).get(NPT_AREA)
    if not isinstance(area, str) or not area:
        return None
    first = answering_team(alert, settings)  # the team routing resolves receivers for
    return next(
        (t.id for t in sorted(settings.teams, key=lambda t: t.id != first) if t.npt_channels.get(area)),
        None,
    )


def may_acknowledge(alert: AlertTeamFacts, who: Acknowledger | None, settings: Settings) -> bool:
    """Whether `who` may acknowledge `alert` (the module docstring says who may)."""
    if who is None:
        return False
    if is_system_alert(alert):
        return _holds(who.roles, SYSTEM_ALERT_ROLES)
    if _holds(who.roles, ANY_ALERT_ROLES):
        return True
    if alert.owner and alert.owner == who.officer_id:
        return True
    return who.team in (answering_team(alert, settings), npt_team(alert, settings))


def _holds(roles: frozenset[str], wanted: Collection[str]) -> bool:
    return not roles.isdisjoint(wanted)


class OutcomeError(ValueError):
    """The outcome text is not acceptable; the message says why, naming nothing typed."""


def clean_outcome(text: str | None) -> str | None:
    """The outcome as stored: runs of spaces as one space, None when blank. Raises OutcomeError
    for a refused character or more than OUTCOME_MAX_LENGTH characters."""
    if text is None:
        return None
    # One line typed in Slack: the rules of a name field (casewatch.model.text_rules), the one checker.
    problem = text_problem(text, TextKind.NAME)
    if problem is not None:
        raise OutcomeError(f"The outcome {problem[1]}; write it as {OUTCOME_RULE}.")
    collapsed = " ".join(text.split())
    if not collapsed:
        return None
    if len(collapsed) > OUTCOME_MAX_LENGTH:
        raise OutcomeError(f"The outcome is longer than {OUTCOME_MAX_LENGTH} characters; shorten it.")
    return collapsed
