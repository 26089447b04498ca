"""Which nominal a domain event names: personReference's CRN -> nominals.crn, NOMS ->
nominals.noms_number, PNC -> nominals.pnc_id, read for a whole request in one statement."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import LevelChange, Nominal
from integrations.probation.mapping import NominalView, registration_in

_COLUMNS = {"CRN": Nominal.crn, "NOMS": Nominal.noms_number, "PNC": Nominal.pnc_id}


@dataclass(frozen=True)
class Match:
    nominal: NominalView | None  # None: no nominal (the normal case on a national topic)
    conflict: bool = False  # the identifiers name different nominals: for a person to look at


class Directory:
    """The nominals the identifiers of a request name, looked up once."""

    def __init__(self, rows: Iterable[tuple[NominalView, Mapping[str, str | None]]]) -> None:
        self._views: dict[str, NominalView] = {}
        self._by: dict[tuple[str, str], list[str]] = {}
        for view, keys in rows:
            self._views[view.visor_ref] = view
            for kind, value in keys.items():
                if value is not None:
                    self._by.setdefault((kind, value), []).append(view.visor_ref)

    @classmethod
    async def load(cls, session: AsyncSession, wanted: Iterable[Mapping[str, str]]) -> Directory:
        values: dict[str, set[str]] = {kind: set() for kind in _COLUMNS}
        for identifiers in wanted:
            for kind, value in identifiers.items():
                values[kind].add(value)
        clauses = [_COLUMNS[kind].in_(sorted(found)) for kind, found in values.items() if found]
        if not clauses:
            return cls([])
        rows = await session.execute(
            select(
                Nominal.visor_ref, Nominal.mappa_level, Nominal.category, Nominal.level_as_of,
                Nominal.crn, Nominal.noms_number, Nominal.pnc_id,
            ).where(or_(*clauses))
        )
        return cls(
            (NominalView(ref, level, category, level_as_of), {"CRN": crn, "NOMS": noms, "PNC": pnc})
            for ref, level, category, level_as_of, crn, noms, pnc in rows
        )

    async def load_level_registrations(self, session: AsyncSession, refs: Iterable[str]) -> None:
        """For these nominals, which probation registration their stored level came from: the
        one named by their latest level change, if this feed recorded it and it set the level
        they still have. One read each: only deregistrations need it, and they are few."""
        for ref in sorted(set(refs) & self._views.keys()):
            view = self._views[ref]
            latest = (
                await session.execute(
                    select(LevelChange.to_level, LevelChange.rationale, LevelChange.recorded_by)
                    .where(LevelChange.visor_ref == ref)
                    .order_by(LevelChange.changed_at.desc(), LevelChange.id.desc())
                    .limit(1)
                )
            ).first()
            if latest is not None and latest.to_level == view.mappa_level:
                registration = registration_in(latest.rationale, latest.recorded_by)
                self._views[ref] = replace(view, level_registration=registration)

    def match(self, identifiers: Mapping[str, str]) -> Match:
        found = {ref for kind, value in identifiers.items() for ref in self._by.get((kind, value), [])}
        if len(found) > 1:
            return Match(None, conflict=True)
        return Match(self._views[found.pop()] if found else None)
