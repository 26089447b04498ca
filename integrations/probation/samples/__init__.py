"""Fictional HMPPS domain events in the shapes the real producers send (docs/feeds/probation.md
says which shapes are confirmed and where from), for the tests, the bench and the demo. The JSON
files beside this module are examples of each, made by `python -m integrations.probation.samples`.

Every identifier here is made up: CRNs start with X (as in HMPPS's own test data), NOMS numbers
with A9, and nothing names a real person.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOPIC_ARN = "arn:aws:sns:eu-west-2:000000000000:cloud-platform-hmpps-domain-events-fictional"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def domain_event(
    event_type: str,
    *,
    occurred_at: datetime,
    crn: str | None = None,
    noms: str | None = None,
    info: dict[str, Any] | None = None,
    description: str = "A fictional domain event",
) -> dict[str, Any]:
    identifiers = []
    if crn is not None:
        identifiers.append({"type": "CRN", "value": crn})
    if noms is not None:
        identifiers.append({"type": "NOMS", "value": noms})
    return {
        "eventType": event_type,
        "version": 1,
        "occurredAt": iso(occurred_at),
        "detailUrl": None,
        "description": description,
        "personReference": {"identifiers": identifiers},
        "additionalInformation": info or {},
    }


def mappa_registration(
    event_type: str, *, crn: str, occurred_at: datetime, level: int | None = 3, category: int = 1,
    registration_id: str = "1234567890",
) -> dict[str, Any]:
    """probation-case.registration.* for a MAPPA register (shape: hmpps-integration-events' test
    helper and hmpps-probation-integration-services' messages)."""
    info: dict[str, Any] = {
        "registrationId": registration_id,
        "registerTypeCode": "MAPP",
        "registerTypeDescription": "MAPPA",
        "registrationCategoryCode": f"M{category}",
        "registrationCategoryDescription": f"MAPPA Cat {category}",
        "registrationLevelCode": f"M{level}" if level is not None else "",
        "registrationLevelDescription": f"MAPPA Level {level}" if level is not None else "",
        "createdDateAndTime": "Mon Nov 16 10:45:38 GMT 2026",
    }
    return domain_event(
        event_type, occurred_at=occurred_at, crn=crn, info=info,
        description="A registration has been changed on the probation case",
    )


def recall_added(*, crn: str, occurred_at: datetime, recall_type: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"eventNumber": "1"}
    if recall_type is not None:
        info["recallType"] = recall_type
    return domain_event(
        "probation-case.recall.added", occurred_at=occurred_at, crn=crn, info=info,
        description="A recall has been recorded in the probation system",
    )


def prisoner_moved(
    event_type: str, *, noms: str, occurred_at: datetime, reason: str, movement: str = "CR",
) -> dict[str, Any]:
    """prison-offender-events.prisoner.released / .received (shape: prison-offender-events'
    HMPPSDomainEventsEmitter)."""
    released = event_type.endswith("released")
    info = {
        "nomsNumber": noms,
        "reason": reason,
        "details": "Movement reason code " + movement,
        "currentLocation": "OUTSIDE_PRISON" if released else "IN_PRISON",
        "prisonId": "XYI",
        "nomisMovementReasonCode": movement,
        "currentPrisonStatus": "NOT_UNDER_PRISON_CARE" if released else "UNDER_PRISON_CARE",
    }
    return domain_event(event_type, occurred_at=occurred_at, noms=noms, info=info)


def sns_notification(event: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
    """The SNS notification an SQS subscriber of the topic receives (raw delivery off)."""
    return {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": TOPIC_ARN,
        "Message": json.dumps(event),
        "Timestamp": event["occurredAt"],
        "SignatureVersion": "1",
        "Signature": "fictional",
        "SigningCertURL": "https://sns.invalid/fictional.pem",
        "UnsubscribeURL": "https://sns.invalid/?Action=Unsubscribe",
        "MessageAttributes": {"eventType": {"Type": "String", "Value": event["eventType"]}},
    }


def write_examples() -> list[Path]:
    at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    examples = {
        "registration-added-mappa.json": mappa_registration(
            "probation-case.registration.added", crn="X000001", occurred_at=at
        ),
        "registration-deregistered-mappa.json": mappa_registration(
            "probation-case.registration.deregistered", crn="X000001", occurred_at=at, level=None
        ),
        "recall-added.json": recall_added(crn="X000001", occurred_at=at),
        "prisoner-released.json": prisoner_moved(
            "prison-offender-events.prisoner.released", noms="A9001AA", occurred_at=at, reason="RELEASED"
        ),
        "prisoner-received-recall.json": prisoner_moved(
            "prison-offender-events.prisoner.received", noms="A9001AA", occurred_at=at,
            reason="ADMISSION", movement="L",
        ),
        "sns-registration-updated.json": sns_notification(
            mappa_registration("probation-case.registration.updated", crn="X000001", occurred_at=at, level=2),
            message_id="00000000-0000-4000-8000-000000000001",
        ),
    }
    written = []
    for name, value in examples.items():
        path = HERE / name
        path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
