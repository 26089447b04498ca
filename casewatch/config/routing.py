"""Which alerts go to which receivers. Extended by the routing work (issue 4)."""

from __future__ import annotations

from casewatch.config.sections import Section


class RoutingSection(Section):
    control_room_channel: str = ""
