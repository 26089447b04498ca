"""Queries behind the chat commands (/flags, /tasks): typed views filtered by the requester's
roles, audited. No Slack here: any front end can use them."""

from casewatch.lookup.access import (
    DEFAULT_CLEARED_ROLES,
    FORCE_WIDE_ROLES,
    Requester,
    requester_by_slack_user,
    requester_from,
)
from casewatch.lookup.flags import (
    FlagsOutcome,
    Found,
    NotFound,
    ReadAhead,
    ReasonRequired,
    Several,
    Unreadable,
    Usage,
    look_up_flags,
    requester_and_reference,
)
from casewatch.lookup.query import Query, QueryError, clean_text, parse_query, pnc_key
from casewatch.lookup.tasks import list_tasks, service_today
from casewatch.lookup.views import (
    ActionLine,
    AlertLine,
    Candidate,
    FlagsView,
    LicenceView,
    MarkerView,
    OfficerContact,
    TasksView,
)

__all__ = [
    "DEFAULT_CLEARED_ROLES",
    "FORCE_WIDE_ROLES",
    "ActionLine",
    "AlertLine",
    "Candidate",
    "FlagsOutcome",
    "FlagsView",
    "Found",
    "LicenceView",
    "MarkerView",
    "NotFound",
    "OfficerContact",
    "Query",
    "QueryError",
    "ReadAhead",
    "ReasonRequired",
    "Requester",
    "Several",
    "TasksView",
    "Unreadable",
    "Usage",
    "clean_text",
    "list_tasks",
    "look_up_flags",
    "parse_query",
    "pnc_key",
    "requester_and_reference",
    "requester_by_slack_user",
    "requester_from",
    "service_today",
]
