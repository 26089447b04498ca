"""Which nominal a domain event names: personReference's CRN -> nominals.crn, NOMS ->
nominals.noms_number, PNC -> nominals.pnc_id, read for a whole request in one statement."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import LevelChange, Nominal
from integrations.probation.mapping import NominalView, registration_in

_COLUMNS = {"CRN": Nominal.crn, "NOMS": Nominal.noms_number, "PNC": Nominal.pnc_id}


_PNC = re.compile(r"([0-9]{2}|[0-9]{4})/([0-9]{1,7})([A-Z])")


@dataclass(frozen=True)
class Match:
    nominal: NominalView | None  # None: no nominal (the normal case on a national topic)
    # Why the identifiers cannot be trusted to name one nominal (fixed words): for a person.
    conflict: str | None = None


def _same(kind: str, stored: str, sent: str) -> bool:
    """Whether two values of one identifier type are the same; a PNC ID is written with a 2 or
    4 digit year and with or without the serial's leading zeros."""
    if stored == sent:
        return True
    if kind == "PNC":
        ours, theirs = _PNC.fullmatch(stored), _PNC.fullmatch(sent)
        if ours and theirs:
            year, serial, letter = ours.groups()
            other_year, other_serial, other_letter = theirs.groups()
            return (year[-2:], int(serial), letter) == (other_year[-2:], int(other_serial), other_letter)
    return False


class Directory:
    """The nominals the identifiers of a request name, looked up once."""

    def __init__(self, rows: Iterable[tuple[NominalView, Mapping[str, str | None]]]) -> None:
        self._views: dict[str, NominalView] = {}
        self._keys: dict[str, Mapping[str, str | None]] = {}
        self._by: dict[tuple[str, str], list[str]] = {}
        for view, keys in rows:
            self._views[view.visor_ref] = view
            self._keys[view.visor_ref] = keys
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
        """The one nominal the identifiers name. Identifiers that name two nominals, or one the
        nominal holds another value for (a CRN of ours with someone else's prison number), are
        a conflict: acting on either half could be about the wrong person."""
        found = {ref for kind, value in identifiers.items() for ref in self._by.get((kind, value), [])}
        if len(found) > 1:
            return Match(None, conflict="the identifiers name different nominals")
        if not found:
            return Match(None)
        ref = found.pop()
        for kind, value in identifiers.items():
            stored = self._keys[ref].get(kind)
            if stored is not None and not _same(kind, stored, value):
                return Match(None, conflict=f"the {kind} differs from the nominal's {kind} in casewatch")
        return Match(self._views[ref])
