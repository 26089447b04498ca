"""The probation feed against what a queue really does and what a sender gets wrong: SQS standard
queues reorder and redeliver, a clock can be years out, identifiers can disagree with the nominal
they match, one request can carry one MessageId twice, a re-publication can change its free text.
Through the real app on SQLite and PostgreSQL; all data is fictional."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from casewatch.store.models import Detention, InboundItem, LevelChange, Nominal
from casewatch.wiring import Service
from integrations.probation import samples
from tests.support import T0, envelope, nominal_data, service_client, signed_post
from tests.test_probation_endpoint import AT, CRN, NOMS, REF, alerts_of, count, metric, post, registration

Api = tuple[Service, TestClient[Any, Any]]
ADDED = "probation-case.registration.added"
UPDATED = "probation-case.registration.updated"
DEREGISTERED = "probation-case.registration.deregistered"


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    """The service, and a nominal at MAPPA level 1, category 1 (from ViSOR, 30 days ago)."""
    async with service_client(db_url, probation={"enabled": True}) as pair:
        service, client = pair
        upsert = envelope(
            "nominal.upsert",
            nominal_data(crn=CRN, noms_number=NOMS, pnc_id="2004/0012345X", mappa_level=1, category="1"),
            visor_ref=REF, occurred_at=T0 - timedelta(days=30),
        )
        resp = await signed_post(client, "/api/v1/events", upsert)
        assert resp.status == 202, await resp.text()
        yield pair


async def stored_level(service: Service) -> int | None:
    async with service.sessions() as session:
        nominal = await session.get(Nominal, REF)
    assert nominal is not None
    return nominal.mappa_level


async def level_changes(service: Service) -> list[tuple[int | None, int | None]]:
    async with service.sessions() as session:
        found = await session.execute(select(LevelChange).order_by(LevelChange.changed_at, LevelChange.id))
        return [(c.from_level, c.to_level) for c in found.scalars()]


# --- 1: a deregistration ends only the registration the level came from -----------------------------


async def test_deregistering_an_old_registration_leaves_the_newer_level(api: Api) -> None:
    """nDelius changes a level by deregistering the old registration and adding a new one; the
    queue delivered them the other way round."""
    service, client = api
    added = registration("added", level=2, registration_id="222")
    old_ended = samples.mappa_registration(DEREGISTERED, crn=CRN, occurred_at=AT + timedelta(minutes=1),
                                           level=1, registration_id="111")
    assert (await post(client, added))["accepted"] == 1
    reply = await post(client, old_ended)
    assert reply["items"][0]["outcome"] == "ignored"
    assert reply["items"][0]["reason"] == "not_current_registration"
    assert reply["alerts"] == []
    assert await stored_level(service) == 2
    assert await level_changes(service) == [(1, 2)]
    assert not [a for a in await alerts_of(service, "mappa.level_changed") if "none" in a.summary]
    assert await metric(client, "ignored_not_current_registration", DEREGISTERED) == 1.0

    current_ended = samples.mappa_registration(DEREGISTERED, crn=CRN, occurred_at=AT + timedelta(minutes=2),
                                               level=2, registration_id="222")
    assert (await post(client, current_ended))["accepted"] == 1
    assert await stored_level(service) is None


async def test_a_deregistration_of_another_level_than_visors_is_not_the_current_one(api: Api) -> None:
    """The level came from ViSOR (no registration id known): the deregistered registration's level
    must be the stored one."""
    service, client = api
    other = samples.mappa_registration(DEREGISTERED, crn=CRN, occurred_at=AT, level=3, registration_id="333")
    reply = await post(client, other)
    assert reply["items"][0]["reason"] == "not_current_registration"
    assert await stored_level(service) == 1 and await level_changes(service) == []
    same = samples.mappa_registration(DEREGISTERED, crn=CRN, occurred_at=AT, level=1, registration_id="111")
    assert (await post(client, same))["accepted"] == 1
    assert await stored_level(service) is None


async def test_in_one_request_a_deregistration_is_checked_against_a_new_registration(api: Api) -> None:
    service, client = api
    added = registration("added", level=2, registration_id="222")
    old_ended = samples.mappa_registration(DEREGISTERED, crn=CRN, occurred_at=AT + timedelta(seconds=1),
                                           level=1, registration_id="111")
    reply = await post(client, [added, old_ended])
    assert [i["outcome"] for i in reply["items"]] == ["accepted", "ignored"]
    assert reply["items"][1]["reason"] == "not_current_registration"
    assert await stored_level(service) == 2


# --- 2: a time in the future --------------------------------------------------------------------


@pytest.mark.parametrize("year", [2099, 9000])
async def test_an_event_in_the_future_is_kept_and_does_not_freeze_the_nominal(api: Api, year: int) -> None:
    service, client = api
    future = registration("updated", level=2)
    future["occurredAt"] = f"{year}-01-01T00:00:00Z"
    reply = await post(client, future)
    [item] = reply["items"]
    assert item["outcome"] == "kept" and item["reason"] == "occurredAt is in the future"
    assert len(await alerts_of(service, "feed.unreadable")) == 1
    assert await count(service, InboundItem) == 1
    later = samples.mappa_registration(UPDATED, crn=CRN, occurred_at=AT + timedelta(minutes=5), level=3)
    assert (await post(client, later))["accepted"] == 1
    assert await stored_level(service) == 3 and await level_changes(service) == [(1, 3)]


async def test_an_event_within_the_clock_skew_is_taken(api: Api) -> None:
    service, client = api
    ahead = samples.mappa_registration(UPDATED, crn=CRN, occurred_at=T0 + timedelta(seconds=200), level=2)
    assert (await post(client, ahead))["accepted"] == 1
    assert await stored_level(service) == 2


# --- 3: an event older than the stored level ----------------------------------------------------------


async def test_a_registration_event_older_than_the_stored_level_records_nothing(api: Api) -> None:
    service, client = api
    assert (await post(client, registration("added", level=2, registration_id="222")))["accepted"] == 1
    late = samples.mappa_registration(UPDATED, crn=CRN, occurred_at=AT - timedelta(minutes=30), level=3,
                                      registration_id="222")
    reply = await post(client, late)
    assert reply["items"][0]["outcome"] == "ignored" and reply["items"][0]["reason"] == "older_than_stored"
    late_end = samples.mappa_registration(DEREGISTERED, crn=CRN, occurred_at=AT - timedelta(minutes=1),
                                          level=None, registration_id="222")
    reply = await post(client, late_end)
    assert reply["items"][0]["reason"] == "older_than_stored"
    assert await stored_level(service) == 2
    assert await level_changes(service) == [(1, 2)]  # no false history row ("2 -> 3", "2 -> none")
    assert await metric(client, "ignored_older_than_stored", UPDATED) == 1.0
    assert await metric(client, "ignored_older_than_stored", DEREGISTERED) == 1.0


# --- 4: identifiers that disagree with the nominal they match -----------------------------------------


@pytest.mark.parametrize(
    "identifiers",
    [
        [{"type": "CRN", "value": CRN}, {"type": "NOMS", "value": "A9999ZZ"}],
        [{"type": "NOMS", "value": NOMS}, {"type": "CRN", "value": "X999999"}],
        [{"type": "CRN", "value": CRN}, {"type": "PNC", "value": "2004/0099999Z"}],
    ],
    ids=["other-noms", "other-crn", "other-pnc"],
)
async def test_an_identifier_that_differs_from_the_nominals_is_kept(
    api: Api, identifiers: list[dict[str, str]]
) -> None:
    service, client = api
    released = samples.prisoner_moved(
        "prison-offender-events.prisoner.released", noms=NOMS, occurred_at=AT, reason="RELEASED"
    )
    released["personReference"]["identifiers"] = identifiers
    reply = await post(client, released)
    [item] = reply["items"]
    assert item["outcome"] == "kept" and "differs from the nominal" in item["reason"]
    assert await count(service, Detention) == 0
    [alert] = await alerts_of(service, "feed.unreadable")
    assert "A9999ZZ" not in alert.summary and "X999999" not in alert.summary


async def test_a_pnc_written_another_way_is_the_same_pnc(api: Api) -> None:
    service, client = api
    released = samples.prisoner_moved(
        "prison-offender-events.prisoner.released", noms=NOMS, occurred_at=AT, reason="RELEASED"
    )
    released["personReference"]["identifiers"].append({"type": "PNC", "value": "04/12345X"})
    assert (await post(client, released))["accepted"] == 1
    assert await count(service, Detention) == 1


# --- 5: one MessageId twice in a request ----------------------------------------------------------------


async def test_the_same_message_id_twice_in_a_batch(api: Api) -> None:
    service, client = api
    message_id = "11111111-aaaa-4000-8000-000000000001"
    first = samples.sns_notification(registration("updated", level=2), message_id=message_id)
    same = dict(first)
    other = samples.sns_notification(
        samples.mappa_registration(UPDATED, crn=CRN, occurred_at=AT + timedelta(minutes=2), level=3),
        message_id=message_id,
    )
    reply = await post(client, [first, same, other])
    outcomes = [(i["outcome"], i.get("reason")) for i in reply["items"]]
    assert outcomes[0] == ("accepted", None)
    assert outcomes[1] == ("duplicate", None)
    assert outcomes[2][0] == "kept" and "MessageId" in str(outcomes[2][1])
    assert reply["accepted"] == 1 and reply["duplicates"] == 1 and reply["kept"] == 1
    assert await level_changes(service) == [(1, 2)]
    async with service.sessions() as session:
        kept = (await session.execute(select(InboundItem))).scalars().one()
    assert kept.external_id != f"sns-{message_id}"  # its own id: the first one's is taken


# --- 6: a bare event's id ignores its free text ----------------------------------------------------------


async def test_a_republished_bare_event_with_another_description_is_a_duplicate(api: Api) -> None:
    service, client = api
    recall = samples.recall_added(crn=CRN, occurred_at=AT)
    first = await post(client, recall)
    reworded = dict(recall, description="A recall has been recorded", detailUrl="https://x.invalid/1")
    again = await post(client, reworded)
    assert first["accepted"] == 1
    assert again["duplicates"] == 1 and again["items"][0]["events"] == first["items"][0]["events"]
    assert len(await alerts_of(service, "recall.issued")) == 1
    changed = dict(recall, additionalInformation={"eventNumber": "2"})
    assert (await post(client, changed))["accepted"] == 1  # another recall: another event


async def test_a_reworded_bare_event_in_the_same_request_is_a_duplicate(api: Api) -> None:
    service, client = api
    recall = samples.recall_added(crn=CRN, occurred_at=AT)
    reply = await post(client, [recall, dict(recall, description="Reworded")])
    assert [i["outcome"] for i in reply["items"]] == ["accepted", "duplicate"]
    assert len(await alerts_of(service, "recall.issued")) == 1


# --- 7: a change of category only --------------------------------------------------------------------------


async def test_a_category_only_change_is_ignored_as_such_and_keeps_nothing(api: Api) -> None:
    service, client = api
    reply = await post(client, registration("updated", level=1, category=3))
    expected = {"index": 0, "event_type": UPDATED, "outcome": "ignored", "reason": "category_only"}
    assert reply["items"][0] == expected
    assert await count(service, InboundItem) == 0 and await level_changes(service) == []
    assert await metric(client, "ignored_category_only", UPDATED) == 1.0
    same = await post(client, registration("updated", level=1, category=1, registration_id="5"))
    assert same["items"][0]["reason"] == "no_change"
