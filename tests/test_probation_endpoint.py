"""POST /api/v1/probation/events through the real aiohttp app built by casewatch.wiring, on
SQLite and PostgreSQL: each mapped domain event becomes the right event and alert, a redelivery
is a duplicate, what is not for us is acknowledged and counted, what cannot be read is kept with a
feed.unreadable alert, and a bad signature keeps nothing. All data is fictional."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from casewatch.store.models import Alert, Detention, Event, InboundItem, LevelChange, Recall
from casewatch.wiring import Service
from integrations.probation import samples
from tests.support import T0, envelope, nominal_data, service_client, signed_post

PATH = "/api/v1/probation/events"
CRN, NOMS = "X000001", "A9001AA"
REF = "VS-P000001"
AT = T0 - timedelta(hours=1)

Api = tuple[Service, TestClient[Any, Any]]


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async with service_client(db_url, probation={"enabled": True}) as pair:
        service, client = pair
        upsert = envelope(
            "nominal.upsert", nominal_data(crn=CRN, noms_number=NOMS, mappa_level=1, category="1"),
            visor_ref=REF, occurred_at=T0 - timedelta(days=30),
        )
        resp = await signed_post(client, "/api/v1/events", upsert)
        assert resp.status == 202, await resp.text()
        yield pair


async def post(client: TestClient[Any, Any], body: Any) -> dict[str, Any]:
    resp = await signed_post(client, PATH, body)
    assert resp.status == 202, await resp.text()
    reply = await resp.json()
    assert isinstance(reply, dict)
    return reply


async def count(service: Service, model: Any, *where: Any) -> int:
    async with service.sessions() as session:
        query = select(func.count()).select_from(model)
        for clause in where:
            query = query.where(clause)
        return int((await session.execute(query)).scalar_one())


async def alerts_of(service: Service, kind: str) -> list[Alert]:
    async with service.sessions() as session:
        return list((await session.execute(select(Alert).where(Alert.kind == kind))).scalars())


async def metric(client: TestClient[Any, Any], outcome: str, event_type: str) -> float:
    text = await (await client.get("/metrics")).text()
    line = f'casewatch_probation_events_total{{event_type="{event_type}",outcome="{outcome}"}} '
    for row in text.splitlines():
        if row.startswith(line):
            return float(row[len(line):])
    return 0.0


def registration(event_type: str, level: int | None = 3, **kw: Any) -> dict[str, Any]:
    return samples.mappa_registration(f"probation-case.registration.{event_type}", crn=CRN, occurred_at=AT,
                                      level=level, **kw)


# --- each mapped type ------------------------------------------------------------------------------


async def test_a_mappa_registration_changes_the_level_from_the_stored_one(api: Api) -> None:
    service, client = api
    reply = await post(client, registration("added", level=3, category=2))
    assert reply["accepted"] == 1 and reply["ignored"] == 0 and reply["kept"] == 0
    [item] = reply["items"]
    assert item["outcome"] == "accepted" and item["event_type"] == "probation-case.registration.added"
    async with service.sessions() as session:
        found = await session.execute(select(LevelChange).where(LevelChange.visor_ref == REF))
        change = found.scalars().one()
        event = await session.get(Event, item["events"][0])
    assert (change.from_level, change.to_level) == (1, 3)
    assert change.recorded_by == "probation"
    assert "probation-case.registration.added" in change.rationale
    assert "registration 1234567890" in change.rationale
    assert "category 2" in change.rationale and "casewatch has category 1" in change.rationale
    assert event is not None and event.source == "probation" and event.type == "mappa.level_changed"
    [alert] = await alerts_of(service, "mappa.level_changed")
    assert alert.visor_ref == REF and alert.id in reply["alerts"]


async def test_an_sns_notification_is_unwrapped_and_its_message_id_is_the_event_id(api: Api) -> None:
    service, client = api
    message_id = "1a2b3c4d-0000-4000-8000-0000000000aa"
    note = samples.sns_notification(registration("updated", level=2), message_id=message_id)
    reply = await post(client, note)
    assert reply["items"][0]["events"] == ["probation-sns-1a2b3c4d-0000-4000-8000-0000000000aa"]
    assert await count(service, LevelChange, LevelChange.to_level == 2) == 1


async def test_a_deregistration_ends_the_mappa_level(api: Api) -> None:
    service, client = api
    reply = await post(client, registration("deregistered", level=None))
    assert reply["accepted"] == 1
    async with service.sessions() as session:
        change = (await session.execute(select(LevelChange))).scalars().one()
    assert (change.from_level, change.to_level) == (1, None)
    assert "MAPPA registration ended" in change.rationale


async def test_a_registration_of_another_register_is_ignored_and_counted(api: Api) -> None:
    service, client = api
    event = registration("added")
    event["additionalInformation"]["registerTypeCode"] = "RVHR"
    reply = await post(client, event)
    assert reply["items"][0] == {
        "index": 0, "event_type": "probation-case.registration.added", "outcome": "ignored",
        "reason": "not_mappa",
    }
    assert await count(service, LevelChange) == 0
    assert await metric(client, "ignored_not_mappa", "probation-case.registration.added") == 1.0


async def test_the_same_level_again_changes_nothing(api: Api) -> None:
    service, client = api
    reply = await post(client, registration("updated", level=1))
    assert reply["items"][0]["reason"] == "no_change" and reply["accepted"] == 0
    assert await count(service, LevelChange) == 0


async def test_a_recall_opens_the_recall_alert_and_a_return_on_recall_closes_it(api: Api) -> None:
    service, client = api
    reply = await post(client, samples.recall_added(crn=CRN, occurred_at=AT, recall_type="EMERGENCY"))
    assert reply["accepted"] == 1
    [alert] = await alerts_of(service, "recall.issued")
    assert alert.severity == "critical" and alert.visor_ref == REF and alert.id in reply["alerts"]
    async with service.sessions() as session:
        recall = (await session.execute(select(Recall))).scalars().one()
    assert recall.recall_type == "emergency" and recall.returned_at is None

    back = samples.prisoner_moved(
        "prison-offender-events.prisoner.received", noms=NOMS, occurred_at=AT + timedelta(minutes=30),
        reason="ADMISSION", movement="L",
    )
    reply = await post(client, back)
    assert reply["accepted"] == 1 and reply["items"][0]["outcome"] == "accepted"
    async with service.sessions() as session:
        recall = (await session.execute(select(Recall))).scalars().one()
        alert = (await session.execute(select(Alert).where(Alert.kind == "recall.issued"))).scalars().one()
    assert recall.returned_at == AT + timedelta(minutes=30)
    assert alert.state == "resolved"


async def test_an_admission_that_is_not_a_recall_is_ignored(api: Api) -> None:
    service, client = api
    event = samples.prisoner_moved(
        "prison-offender-events.prisoner.received", noms=NOMS, occurred_at=AT, reason="ADMISSION",
        movement="N",
    )
    reply = await post(client, event)
    assert reply["items"][0]["reason"] == "not_a_recall_return"
    assert await count(service, Event, Event.source == "probation") == 0


async def test_a_release_ends_detention_and_a_transfer_does_not(api: Api) -> None:
    service, client = api
    released = samples.prisoner_moved(
        "prison-offender-events.prisoner.released", noms=NOMS, occurred_at=AT, reason="RELEASED"
    )
    moved = samples.prisoner_moved(
        "prison-offender-events.prisoner.released", noms=NOMS, occurred_at=AT, reason="TRANSFERRED"
    )
    reply = await post(client, [released, moved])
    assert [i["outcome"] for i in reply["items"]] == ["accepted", "ignored"]
    assert reply["items"][1]["reason"] == "not_a_release"
    async with service.sessions() as session:
        ended = (await session.execute(select(Detention))).scalars().one()
    assert ended.started is False and ended.on_date == AT.date() and ended.visor_ref == REF


# --- redelivery, unknown types and people ------------------------------------------------------------


async def test_a_redelivery_is_a_duplicate_even_after_the_level_it_set(api: Api) -> None:
    service, client = api
    note = samples.sns_notification(registration("added", level=3))
    first = await post(client, note)
    again = await post(client, note)
    bare = registration("added", level=2, registration_id="77")
    await post(client, bare)
    bare_again = await post(client, bare)
    assert first["accepted"] == 1
    assert again["accepted"] == 0 and again["duplicates"] == 1 and again["items"][0]["outcome"] == "duplicate"
    assert bare_again["duplicates"] == 1
    assert await count(service, LevelChange) == 2
    assert len(await alerts_of(service, "mappa.level_changed")) >= 1
    assert await metric(client, "duplicate", "probation-case.registration.added") == 2.0


async def test_an_unknown_type_is_acknowledged_ignored_and_counted(api: Api) -> None:
    service, client = api
    event = samples.domain_event("probation-case.address.created", occurred_at=AT, crn=CRN)
    reply = await post(client, samples.sns_notification(event))
    expected = {"index": 0, "event_type": "other", "outcome": "ignored", "reason": "unknown_type"}
    assert reply["items"][0] == expected
    assert await count(service, Event, Event.source == "probation") == 0
    assert await count(service, InboundItem) == 0
    assert await metric(client, "ignored_unknown_type", "other") == 1.0


async def test_a_person_who_is_not_a_nominal_is_ignored_and_counted(api: Api) -> None:
    service, client = api
    event = samples.mappa_registration("probation-case.registration.added", crn="X999999", occurred_at=AT)
    reply = await post(client, event)
    assert reply["items"][0]["reason"] == "unknown_person" and reply["ignored"] == 1
    assert await count(service, Event, Event.source == "probation") == 0
    assert await metric(client, "ignored_unknown_person", "probation-case.registration.added") == 1.0


# --- unreadable: kept for a person ---------------------------------------------------------------


async def test_an_unreadable_known_event_is_kept_with_an_alert_once(api: Api) -> None:
    service, client = api
    event = registration("added")
    event["personReference"]["identifiers"][0]["value"] = "X00\u202e001"  # hostile: a bidi control
    raw = json.dumps(event).encode()
    reply = await post(client, raw)
    [item] = reply["items"]
    assert item["outcome"] == "kept" and "CRN" in item["reason"] and reply["kept"] == 1
    [alert] = await alerts_of(service, "feed.unreadable")
    assert alert.id in reply["alerts"] and alert.severity == "high"
    assert "X00" not in alert.summary  # the reason names the field, never its value
    async with service.sessions() as session:
        kept = (await session.execute(select(InboundItem))).scalars().one()
    assert kept.id == item["item"] and kept.source == "probation" and kept.content == raw
    assert kept.media_type == "application/json"

    again = await post(client, raw)  # redelivered: the same item, no second alert
    assert again["items"][0]["item"] == kept.id and again["alerts"] == []
    assert await count(service, InboundItem) == 1
    assert len(await alerts_of(service, "feed.unreadable")) == 1
    assert await metric(client, "kept", "probation-case.registration.added") == 2.0


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", "not valid JSON"),
        (b'{"eventType": "probation-case.registration.added"}', "occurredAt"),
        (b'{"Type": "Notification", "MessageId": "m-1", "Message": "{broken"}', "Message is not valid JSON"),
        (b'{"eventType": "probation-case.recall.added\\u0000", "occurredAt": "2026-11-20T08:00:00Z"}',
         "eventType"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    ],
    ids=["bad-json", "missing-fields", "bad-sns-message", "control-character-type", "deep-nesting"],
)
async def test_a_body_that_cannot_be_read_is_kept(api: Api, body: bytes, reason: str) -> None:
    service, client = api
    reply = await post(client, body)
    [item] = reply["items"]
    assert item["outcome"] == "kept" and reason in item["reason"]
    assert len(await alerts_of(service, "feed.unreadable")) == 1
    assert await count(service, InboundItem) == 1


async def test_a_missing_level_code_on_a_mappa_registration_is_kept(api: Api) -> None:
    service, client = api
    event = registration("updated")
    event["additionalInformation"]["registrationLevelCode"] = "M9"
    reply = await post(client, event)
    assert reply["items"][0]["outcome"] == "kept" and "registrationLevelCode" in reply["items"][0]["reason"]
    assert await count(service, LevelChange) == 0


# --- authentication and hostile bodies -------------------------------------------------------------


async def test_a_bad_signature_is_401_and_keeps_nothing(api: Api) -> None:
    service, client = api
    resp = await signed_post(client, PATH, b"{not json", secret="not-the-secret")
    assert resp.status == 401
    v1 = await signed_post(client, PATH, registration("added"), scheme="v1")
    assert v1.status == 401  # the body-only scheme is for POST /api/v1/events alone
    assert await count(service, InboundItem) == 0
    assert await count(service, Event, Event.source == "probation") == 0
    assert await metric(client, "kept", "other") == 0.0


async def test_a_huge_body_is_refused_before_it_is_read(api: Api) -> None:
    _, client = api
    resp: ClientResponse = await signed_post(client, PATH, b'"' + b"x" * (1024 * 1024 + 10) + b'"')
    assert resp.status == 413


async def test_only_json_is_accepted(api: Api) -> None:
    _, client = api
    resp = await signed_post(client, PATH, b"{}", headers={"Content-Type": "text/plain"})
    assert resp.status == 415


async def test_many_made_up_event_types_do_not_grow_the_label_set(api: Api) -> None:
    _, client = api
    batch = [samples.domain_event(f"made-up.type.n{i}", occurred_at=AT, crn=CRN) for i in range(10)]
    reply = await post(client, batch)
    assert {i["event_type"] for i in reply["items"]} == {"other"}
    text = await (await client.get("/metrics")).text()
    assert "made-up" not in text
    assert await metric(client, "ignored_unknown_type", "other") == 10.0


async def test_a_batch_larger_than_allowed_is_kept_whole(api: Api) -> None:
    service, client = api
    batch = [registration("added")] * 11
    reply = await post(client, batch)
    assert reply["kept"] == 1 and "1 to 10" in reply["items"][0]["reason"]
    assert await count(service, LevelChange) == 0


async def test_a_batch_in_order_chains_its_level_changes(api: Api) -> None:
    service, client = api
    ended = registration("deregistered", level=None, registration_id="1")
    added = samples.mappa_registration(
        "probation-case.registration.added", crn=CRN, occurred_at=AT + timedelta(seconds=1), level=2,
        registration_id="2",
    )
    reply = await post(client, [ended, added])
    assert reply["accepted"] == 2
    async with service.sessions() as session:
        found = await session.execute(select(LevelChange).order_by(LevelChange.changed_at))
        changes = found.scalars().all()
    assert [(c.from_level, c.to_level) for c in changes] == [(1, None), (None, 2)]


async def test_the_endpoint_is_absent_unless_enabled(sqlite_url: str) -> None:
    async with service_client(sqlite_url) as (_, client):
        resp = await signed_post(client, PATH, registration("added"))
        assert resp.status == 404

