"""/flags finds a nominal by any of their aliases as well as their surname, on SQLite and
PostgreSQL: through signed Slack requests and the real Bolt path, kept in step with ingest, and
backfilled by the migration that adds the alias table.

All names, dates and references are fictional.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.engine import make_engine
from casewatch.store.migrate import current_revision, upgrade
from casewatch.store.models import NominalAlias
from tests.conftest import PG_URL, _need_postgres, _pg_admin, pg_database_url
from tests.support import T0, envelope, insert_into, nominal_data
from tests.test_bot import (
    SAMPLE_A,
    SAMPLE_B,
    Bot,
    block_action_body,
    buttons,
    post_signed,
    running_bot,
    shown,
    slash,
)

ALIASED = "VS-0003001"  # Aliasholder: known as Quillfeather-Dunn and as Sampleton
OTHER = "VS-0003002"  # Otherperson, whose own surname is also one of their aliases


def upsert(ref: str, at: datetime, **overrides: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", nominal_data(**overrides), visor_ref=ref, occurred_at=at,
        id=f"alias-{ref}-{uuid.uuid4().hex[:8]}",
    )


async def ingest_raw(bot: Bot, *raws: dict[str, Any]) -> None:
    envelopes, errors = parse_envelopes(list(raws))
    assert errors == []
    await ingest(bot.service.sessions, envelopes, bot.service.ctx, source="test")


async def alias_rows(sessions: async_sessionmaker[AsyncSession], ref: str) -> list[tuple[str, str]]:
    async with sessions() as session:
        stmt = select(NominalAlias.alias, NominalAlias.alias_key).where(NominalAlias.visor_ref == ref)
        return sorted((a, k) for a, k in (await session.execute(stmt)).all())


@pytest.fixture
async def bot(db_url: str) -> AsyncIterator[Bot]:
    async with running_bot(db_url) as running:
        await ingest_raw(
            running,
            upsert(ALIASED, T0, surname="Aliasholder", forenames="Golf", date_of_birth="1972-08-09",
                   aliases=["Quillfeather-Dunn", "Sampleton", "SAMPLETON"]),
            upsert(OTHER, T0, surname="Otherperson", forenames="Hotel", date_of_birth="1966-06-06",
                   aliases=["Other Person", "Nicknamey"]),
        )
        yield running


async def test_an_alias_finds_the_nominal_and_says_so(bot: Bot) -> None:
    answer = await slash(bot, "/flags", "quillfeather-dunn")
    text = shown(answer)
    assert f"*{ALIASED}*" in text and "ALIASHOLDER, Golf" in text
    assert "Matched on alias: Quillfeather-Dunn" in text
    assert "Markers" in text  # the full flags, not a list
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["outcome"] == "found"
    assert entry.details["visor_refs_shown"] == [ALIASED]
    assert entry.details["matched_by"] == "alias"
    # The audit records how it matched, never the alias (a name) in the details.
    assert "quillfeather" not in json.dumps(entry.details).lower()


async def test_a_surname_match_is_not_called_an_alias_match(bot: Bot) -> None:
    # "Other Person" folds to Otherperson's own surname: the surname is what matched.
    text = shown(await slash(bot, "/flags", "otherperson"))
    assert "OTHERPERSON, Hotel" in text and "Matched on alias" not in text
    text = shown(await slash(bot, "/flags", "aliasholder"))
    assert "ALIASHOLDER, Golf" in text and "Matched on alias" not in text
    entries = await bot.audit("flags.lookup")
    assert [e.details["outcome"] for e in entries] == ["found", "found"]
    assert not any("matched_by" in e.details for e in entries)


@pytest.mark.parametrize(
    "typed", ["QUILLFEATHER DUNN", "  quill feather-dunn ", "Quillfeather.Dunn", "quill'featherdunn"]
)
async def test_aliases_forgive_case_spacing_and_punctuation(bot: Bot, typed: str) -> None:
    text = shown(await slash(bot, "/flags", typed))
    assert f"*{ALIASED}*" in text and "Matched on alias: Quillfeather-Dunn" in text


async def test_a_full_name_alias_is_found_by_its_surname_part(bot: Bot) -> None:
    await ingest_raw(bot, upsert("VS-0003003", T0, surname="Plainname", forenames="India",
                                 aliases=["Jon Smythe", "Jane Van Dykestra"]))
    for typed in ("smythe", "jon smythe", "van dykestra", "dykestra"):
        text = shown(await slash(bot, "/flags", typed))
        assert "*VS-0003003*" in text and "Matched on alias:" in text, typed
    assert "No nominal found" in shown(await slash(bot, "/flags", "jon"))  # a forename alone is not a surname
    keys = {k for _, k in await alias_rows(bot.service.sessions, "VS-0003003")}
    assert keys == {"jonsmythe", "smythe", "janevandykestra", "vandykestra", "dykestra"}


async def test_alias_with_date_of_birth(bot: Bot) -> None:
    text = shown(await slash(bot, "/flags", "nicknamey 06/06/1966"))
    assert f"*{OTHER}*" in text and "Matched on alias: Nicknamey" in text
    text = shown(await slash(bot, "/flags", "nicknamey 07/06/1966"))
    assert "No nominal found" in text


async def test_a_surname_that_is_another_nominals_alias_lists_both(bot: Bot) -> None:
    answer = await slash(bot, "/flags", "sampleton")
    text = shown(answer)
    assert "3 nominals match" in text
    # In name order: Aliasholder (by alias), then the two Sampletons (by surname).
    assert buttons(answer) == [
        ("casewatch_flags_show", ALIASED), ("casewatch_flags_show", SAMPLE_A),
        ("casewatch_flags_show", SAMPLE_B),
    ]
    lines = [b["text"]["text"] for b in answer["blocks"] if "accessory" in b]
    assert "Matched on alias: Sampleton" in lines[0] and ALIASED in lines[0]
    assert all("Matched on alias" not in line for line in lines[1:])
    assert "Markers" not in text
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["outcome"] == "several"
    assert entry.details["visor_refs_shown"] == [ALIASED, SAMPLE_A, SAMPLE_B]
    assert entry.details["matched_by"] == "surname_and_alias"
    assert entry.details["visor_refs_matched_by_alias"] == [ALIASED]
    # A duplicate alias (SAMPLETON and Sampleton) is one row, so one candidate, counted once.
    assert await alias_rows(bot.service.sessions, ALIASED) == [
        ("Quillfeather-Dunn", "quillfeatherdunn"), ("Sampleton", "sampleton"),
    ]


async def test_a_newer_upsert_without_the_alias_stops_it_matching(bot: Bot) -> None:
    await ingest_raw(bot, upsert(ALIASED, T0 + timedelta(hours=1), surname="Aliasholder",
                                 forenames="Golf", date_of_birth="1972-08-09", aliases=["Newalias"]))
    assert "No nominal found" in shown(await slash(bot, "/flags", "quillfeather-dunn"))
    assert "Matched on alias: Newalias" in shown(await slash(bot, "/flags", "newalias"))
    # An older upsert, arriving late, brings nothing back.
    await ingest_raw(bot, upsert(ALIASED, T0 - timedelta(hours=1), surname="Aliasholder",
                                 forenames="Golf", date_of_birth="1972-08-09",
                                 aliases=["Quillfeather-Dunn"]))
    assert "No nominal found" in shown(await slash(bot, "/flags", "quillfeather-dunn"))
    assert await alias_rows(bot.service.sessions, ALIASED) == [("Newalias", "newalias")]
    # No aliases at all: none left.
    await ingest_raw(bot, upsert(ALIASED, T0 + timedelta(hours=2), surname="Aliasholder",
                                 forenames="Golf", date_of_birth="1972-08-09"))
    assert await alias_rows(bot.service.sessions, ALIASED) == []
    assert "No nominal found" in shown(await slash(bot, "/flags", "newalias"))


async def test_several_upserts_of_one_nominal_in_one_batch_keep_the_newest_aliases(bot: Bot) -> None:
    ref = "VS-0003003"
    await ingest_raw(
        bot,
        upsert(ref, T0, surname="Batchperson", aliases=["Firstalias"]),
        upsert(ref, T0 + timedelta(hours=2), surname="Batchperson", aliases=["Thirdalias"]),
        upsert(ref, T0 + timedelta(hours=1), surname="Batchperson", aliases=["Secondalias"]),
    )
    assert await alias_rows(bot.service.sessions, ref) == [("Thirdalias", "thirdalias")]
    assert "Matched on alias: Thirdalias" in shown(await slash(bot, "/flags", "thirdalias"))
    assert "No nominal found" in shown(await slash(bot, "/flags", "firstalias"))


async def test_show_button_on_an_alias_candidate_answers_with_the_flags(bot: Bot) -> None:
    await slash(bot, "/flags", "sampleton")
    response_url = bot.slack.url + "response.alias"
    body = block_action_body("U0PC1234", "casewatch_flags_show", ALIASED, response_url=response_url)
    resp = await post_signed(bot.client, body)
    assert resp.status == 200
    [call] = await bot.slack.wait_for_calls("response.alias", 1)
    text = shown(call.args)
    assert "ALIASHOLDER, Golf" in text and "Markers" in text


# --- the migration backfills aliases already stored ---------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'backfill.db'}"
        return
    _need_postgres()
    assert PG_URL
    name = f"cw_alias_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f"CREATE DATABASE {name}")
    try:
        yield pg_database_url(name)
    finally:
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_migration_backfills_existing_aliases(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        await upgrade(engine, "0001")
        assert await current_revision(engine) == "0001"
        base = dict(
            forenames="Test", date_of_birth=date(1970, 1, 2), pnc_id=None, category="1",
            mappa_level=1, registered=True, risk_level="low", lead_agency="police", team="north",
            offender_manager="PC1234", area="N1", on_licence=False, no_fixed_abode=False,
            last_notification_on=None, release_date=None, licence_expiry=None,
            state_as_of=datetime(2026, 1, 1, tzinfo=UTC), level_as_of=None,
            updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        async with engine.begin() as conn:
            rows = [
                {**base, "visor_ref": "VS-B0001", "surname": "Backfillone", "surname_key": "backfillone",
                 "aliases": ["O'Oldname", "Van Alias", "oldname", "---"]},
                {**base, "visor_ref": "VS-B0002", "surname": "Backfilltwo", "surname_key": "backfilltwo",
                 "aliases": []},
            ]
            await conn.execute(insert_into("nominals", rows), rows)
        await upgrade(engine, "0002")
        assert await current_revision(engine) == "0002"
        async with engine.connect() as conn:
            rows = sorted((await conn.execute(
                select(NominalAlias.visor_ref, NominalAlias.alias, NominalAlias.alias_key)
            )).all())
        # One row per distinct key (a full-name alias also by its last words); an alias that
        # folds to nothing cannot be typed, so is not kept.
        assert [tuple(r) for r in rows] == [
            ("VS-B0001", "O'Oldname", "ooldname"), ("VS-B0001", "Van Alias", "alias"),
            ("VS-B0001", "Van Alias", "vanalias"), ("VS-B0001", "oldname", "oldname"),
        ]
    finally:
        await engine.dispose()
