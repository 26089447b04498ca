"""Which alerts go to which receivers, and how unanswered alerts escalate.

Receivers (the names a route or an escalation step may use):
  team_channel   the alert's team Slack channel (teams[].channel)
  spoc           the team's SPOC inbox (teams[].spoc_email), by email
  supervisors    each of the team's supervisor_emails, by email
  owner          the officer who must act (the alert's owner, else the nominal's offender
                 manager): Slack DM or email, per `owner_via`
  owner_email    that officer by email only
  owner_dm       that officer by Slack DM only
  control_room   the control-room Slack channel (`control_room_channel`) and, if set, the
                 control-room email address (`control_room_email`)
  npt            the neighbourhood policing team channel for the nominal's area
                 (teams[].npt_channels maps neighbourhood code -> Slack channel id); for a
                 move (area.moved_out, area.moved_in) the old or the new area's, with no
                 personal data
  admins         every officer with the role "admin" (as `owner`: DM or email per `owner_via`);
                 system alerts such as system.job_stale go to them

Routes map an alert kind to receivers. The defaults (DEFAULT_ROUTES, from the alert-kind registry
casewatch.model.alerts.ALERT_KINDS) cover every kind; a `routes` table in the configuration
replaces the defaults only for the kinds it names, and the kind "default" catches kinds not
listed, so no alert is ever unrouted. If a route resolves to no
address at all (no channel configured, no owner email), the team's SPOC inbox gets it instead.

Escalation: an alert that stays open (not acknowledged, not resolved) walks its chain. Each step
waits `after_seconds` (from the opening for the first step, from the previous step after that),
then notifies its receivers. The chain is chosen per kind (`escalation_by_kind`) or else per
severity (`escalation`), and snapshotted onto the alert when it opens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from casewatch.config.sections import Section, check_email
from casewatch.model.alerts import ALERT_KINDS, FALLBACK_RECEIVERS, RECEIVERS, SEVERITIES, SEVERITY_ESCALATION

DEFAULT_KIND = "default"

# Every alert kind's default receivers, from the registry; "default" catches kinds not listed.
DEFAULT_ROUTES: dict[str, list[str]] = {
    **{kind.kind: list(kind.receivers) for kind in ALERT_KINDS.values()},
    DEFAULT_KIND: list(FALLBACK_RECEIVERS),
}


def _check_receiver(name: str) -> str:
    if name not in RECEIVERS:
        raise ValueError(f"unknown receiver {name!r} (known: {', '.join(RECEIVERS)})")
    return name


class EscalationStep(Section):
    after_seconds: int = Field(ge=0, le=30 * 86400, description="wait before this step")
    receivers: list[str] = Field(min_length=1, description="receiver names (see module docstring)")

    @field_validator("receivers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return [_check_receiver(r) for r in value]


DEFAULT_ESCALATION: dict[str, list[EscalationStep]] = {
    severity: [EscalationStep(after_seconds=s.after_seconds, receivers=list(s.receivers)) for s in chain]
    for severity, chain in SEVERITY_ESCALATION.items()
}
# Kinds that never escalate (reminders, the admins' alerts), from the registry.
DEFAULT_ESCALATION_BY_KIND: dict[str, list[EscalationStep]] = {
    kind.kind: [] for kind in ALERT_KINDS.values() if not kind.escalates
}


class RoutingSection(Section):
    control_room_channel: str = Field("", description="control-room Slack channel id; empty: none")
    control_room_email: str = Field("", description="control-room email address; empty: none")
    routes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="alert kind -> receivers, replacing DEFAULT_ROUTES for each kind named; the "
        "kind \"default\" catches kinds with no route",
    )
    owner_via: Literal["slack", "email", "both"] = Field(
        "slack",
        description="how `owner` reaches the officer: Slack DM (email if they have no Slack id), "
        "email (Slack DM if they have no email), or both",
    )
    personal_data_targets: list[str] = Field(
        default_factory=list,
        description="Slack channel ids or email addresses cleared to receive the nominal's name and "
        "non-restricted markers; everything else gets only reference, kind, severity, due and owner",
    )
    escalation: dict[str, list[EscalationStep]] = Field(
        default_factory=dict,
        description="severity -> escalation chain, replacing DEFAULT_ESCALATION for each severity named",
    )
    escalation_by_kind: dict[str, list[EscalationStep]] = Field(
        default_factory=dict,
        description="alert kind -> escalation chain, overriding the severity's chain; "
        "DEFAULT_ESCALATION_BY_KIND (reminders never escalate) stays unless overridden",
    )

    @field_validator("control_room_email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value) if value else value

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, receivers in value.items():
            if not receivers:
                raise ValueError(f"routes.{kind}: names no receiver (an alert must reach someone)")
            for name in receivers:
                if name not in RECEIVERS:
                    raise ValueError(
                        f"routes.{kind}: unknown receiver {name!r} (known: {', '.join(RECEIVERS)})"
                    )
        return value

    @model_validator(mode="after")
    def _severities(self) -> RoutingSection:
        unknown = sorted(set(self.escalation) - set(SEVERITIES))
        if unknown:
            raise ValueError(
                f"escalation: unknown severity {unknown[0]!r} (known: {', '.join(SEVERITIES)})"
            )
        return self

    def receivers_for(self, kind: str) -> list[str]:
        """The receivers of an alert kind: the configured route, else the default for the kind,
        else the configured or built-in catch-all."""
        if kind in self.routes:
            return list(self.routes[kind])
        if kind in DEFAULT_ROUTES:
            return list(DEFAULT_ROUTES[kind])
        return list(self.routes.get(DEFAULT_KIND, DEFAULT_ROUTES[DEFAULT_KIND]))

    def chain_for(self, kind: str, severity: str) -> list[EscalationStep]:
        by_kind = {**DEFAULT_ESCALATION_BY_KIND, **self.escalation_by_kind}
        if kind in by_kind:
            return list(by_kind[kind])
        return list({**DEFAULT_ESCALATION, **self.escalation}.get(severity, []))
