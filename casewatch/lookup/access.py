"""Who is asking, and what they may see."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from casewatch.store import direct_read
from casewatch.store.lookup_connections import Reads, connection_of
from casewatch.store.models import Officer

# Roles cleared for restricted markers by default: people who must act on them at once (control
# room, SPOC) or who answer for the case (supervisor, admin). An officer sees them through a
# supervisor, on need to know.
DEFAULT_CLEARED_ROLES: frozenset[str] = frozenset({"supervisor", "spoc", "control_room", "admin"})

# Roles that look up any team's nominals as part of the job (need to know is theirs by role): an
# officer of another team must say why they need a nominal's flags (/flags ... reason: ...).
FORCE_WIDE_ROLES: frozenset[str] = frozenset({"supervisor", "spoc", "control_room", "admin"})


@dataclass(frozen=True)
class Requester:
    officer_id: str
    name: str
    team: str
    roles: frozenset[str]

    @property
    def is_supervisor(self) -> bool:
        return "supervisor" in self.roles

    @property
    def force_wide(self) -> bool:
        return not self.roles.isdisjoint(FORCE_WIDE_ROLES)

    def owns_case(self, nominal_team: str, offender_manager: str | None) -> bool:
        """The nominal is managed by the requester's team, or by the requester."""
        return nominal_team == self.team or (bool(offender_manager) and offender_manager == self.officer_id)

    def needs_reason_for(self, nominal_team: str, offender_manager: str | None) -> bool:
        """Need to know: an officer without a force-wide role must give a reason to see the flags
        of a nominal another team manages."""
        return not self.force_wide and not self.owns_case(nominal_team, offender_manager)

    def cleared_for_restricted(self, cleared_roles: Collection[str] = DEFAULT_CLEARED_ROLES) -> bool:
        return not self.roles.isdisjoint(cleared_roles)


def requester_from(officer: Officer) -> Requester:
    return Requester(officer.id, officer.name, officer.team, frozenset(str(r) for r in officer.roles))


_OFFICERS = Officer.metadata.tables[Officer.__tablename__].c
# Core on the table, built once: every chat command starts here.
_BY_SLACK_USER = select(_OFFICERS.id, _OFFICERS.name, _OFFICERS.team, _OFFICERS.roles).where(
    _OFFICERS.slack_user_id == bindparam("slack_user_id")
)


async def requester_by_slack_user(reads: Reads, slack_user_id: str) -> Requester | None:
    """The officer whose directory entry carries this Slack user id, or None."""
    if not slack_user_id:
        return None
    conn = await connection_of(reads)
    rows = await direct_read.fetch(conn, _BY_SLACK_USER, {"slack_user_id": slack_user_id})
    if not rows:
        return None  # slack_user_id is unique: at most one
    row = rows[0]
    return Requester(row.id, row.name, row.team, frozenset(str(r) for r in row.roles or ()))
