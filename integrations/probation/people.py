"""Which nominal a domain event names: personReference's CRN -> nominals.crn, NOMS ->
nominals.noms_number, PNC -> nominals.pnc_id, read for a whole request in one statement."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import Nominal
from integrations.probation.mapping import NominalView

_COLUMNS = {"CRN": Nominal.crn, "NOMS": Nominal.noms_number, "PNC": Nominal.pnc_id}


@dataclass(frozen=True)
class Match:
    nominal: NominalView | None  # None: no nominal (the normal case on a national topic)
    conflict: bool = False  # the identifiers name different nominals: for a person to look at


class Directory:
    """The nominals the identifiers of a request name, looked up once."""

    def __init__(self, rows: Iterable[tuple[NominalView, Mapping[str, str | None]]]) -> None:
        self._by: dict[tuple[str, str], list[NominalView]] = {}
        for view, keys in rows:
            for kind, value in keys.items():
                if value is not None:
                    self._by.setdefault((kind, value), []).append(view)

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

    def match(self, identifiers: Mapping[str, str]) -> Match:
        found: dict[str, NominalView] = {}
        for kind, value in identifiers.items():
            for view in self._by.get((kind, value), []):
                found[view.visor_ref] = view
        if len(found) > 1:
            return Match(None, conflict=True)
        return Match(next(iter(found.values()), None))
