"""The rules take a nominal's facts from the row the ingest holds (casewatch.triggers.dispatch
_held_facts) only when the instance's own dict holds every fact column as stored: it reads the
dict directly (seventh session), so a row with a fact expired, or changed and not flushed, must be
left to a read. Taken facts equal a read of the same rows, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from casewatch.ingest.pipeline import ingest
from casewatch.store.models import Nominal
from casewatch.triggers import dispatch, load
from casewatch.wiring import Service
from tests.test_ingest_single_fast import _parsed, _ref, _setup, service_fixture  # noqa: F401 (fixture)


async def test_only_rows_holding_every_fact_as_stored_are_taken(service: Service) -> None:
    await ingest(service.sessions, _parsed(_setup(7000, "held7")), service.ctx, source="test")
    whole, expired, changed = _ref(7000, "visit"), _ref(7000, "notified"), _ref(7000, "action")
    refs = sorted([whole, expired, changed])
    async with service.sessions() as session, session.begin():
        rows = (await session.execute(select(Nominal).where(Nominal.visor_ref.in_(refs)))).scalars()
        held: dict[str, Nominal | None] = {n.visor_ref: n for n in rows}
        assert set(held) == set(refs)
        session.expire(held[expired], ["mappa_level"])  # a fact column no longer loaded
        changed_row = held[changed]
        assert changed_row is not None
        changed_row.area = "Elsewhere (fictional)"  # changed, not flushed
        taken = dispatch._held_facts(held, refs)
        await session.flush()
        read = await load.nominals(session, refs)
    assert set(taken) == {whole}
    assert taken[whole] == read[whole]
    assert read[changed].area == "Elsewhere (fictional)"  # a read after the flush sees the change
