"""A batch's first upserts of new nominals, written with Core executemany instead of ORM objects.

A nominal.upsert for a ViSOR reference with no nominal stored, none made earlier in the batch and
no history its first upsert must take into account (casewatch.ingest.apply.Batch.with_history)
makes a nominal row, its marker rows and its alias rows from the event alone. Those rows are kept
here, as the same values the ORM objects would have carried (apply builds both from one function),
and written by `write` (one INSERT executemany a table) in the ingest transaction after every
event is applied and before the rules read anything: a first import of a whole force then builds
no ORM object, identity-map entry or unit-of-work state per nominal.

A later event of the same batch that touches such a nominal (a second upsert, a level change, a
clock-restarting notification) first `promote`s its rows into the pending ORM objects the plain
path would have added, and then changes them as it would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import Base, Marker, Nominal, NominalAlias

Row = dict[str, Any]


@dataclass
class Promoted:
    nominal: Nominal
    markers: list[Marker]
    aliases: list[NominalAlias]


@dataclass
class FreshNominals:
    """Rows of first upserts not written yet, by ViSOR reference."""

    nominals: dict[str, Row] = field(default_factory=dict)
    markers: dict[str, list[Row]] = field(default_factory=dict)
    aliases: dict[str, list[Row]] = field(default_factory=dict)

    def __contains__(self, visor_ref: str) -> bool:
        return visor_ref in self.nominals

    def add(self, nominal: Row, markers: list[Row], aliases: list[Row]) -> None:
        ref = nominal["visor_ref"]
        self.nominals[ref], self.markers[ref], self.aliases[ref] = nominal, markers, aliases

    def promote(self, session: AsyncSession, visor_ref: str) -> Promoted:
        """Take a reference's rows out of the buffer as pending ORM objects added to `session`."""
        promoted = Promoted(
            Nominal(**self.nominals.pop(visor_ref)),
            [Marker(**row) for row in self.markers.pop(visor_ref)],
            [NominalAlias(**row) for row in self.aliases.pop(visor_ref)],
        )
        session.add(promoted.nominal)
        session.add_all(promoted.markers)
        session.add_all(promoted.aliases)
        return promoted

    async def write(self, session: AsyncSession) -> None:
        """Insert every buffered row (nothing is left to promote afterwards)."""
        tables: list[tuple[type[Base], list[Row]]] = [
            (Nominal, list(self.nominals.values())),
            (Marker, [row for rows in self.markers.values() for row in rows]),
            (NominalAlias, [row for rows in self.aliases.values() for row in rows]),
        ]
        self.nominals, self.markers, self.aliases = {}, {}, {}
        for model, rows in tables:
            if rows:
                await session.execute(insert(model.__table__), rows)  # type: ignore[arg-type]
