"""Issue 15 end to end on SQLite and PostgreSQL: signed nominal.upsert events in through the real
HTTP app, the alerts API, the outbox rows and the Slack stand-in.

- `risk.changed`: a rise of risk level is high, a fall medium, a category changed alone medium
  ("changed"); to the team channel, the offender manager and the NPT of the nominal's area;
- `area.moved_out` / `area.moved_in`: the NPT of the old area and the NPT of the new one, even
  when the old area is another team's; the ViSOR reference and the move only: no name, no
  address, even to NPT channels cleared for personal data (issue 15: "no personal data in chat");
- an older upsert heard of late (stale), a duplicate, and the nominal's first upsert change nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from casewatch.clock import FixedClock
from casewatch.store.models import Delivery, RiskChange
from casewatch.triggers.scan import run_scan
from casewatch.wiring import Service
from tests.slack_standin import SlackStandIn
from tests.support import TEAMS, envelope, nominal_data, service_client, signed_get, signed_post
from tests.test_delivery_support import TOKEN, make_worker, setup_directory
from tests.test_triggers_case_data import utc

REF = "VIS-TEST-0161"
OTHER = "VIS-TEST-0162"  # a category changed alone
NEW = "VIS-TEST-0163"  # a first upsert only
NPT_N01, NPT_N02, NPT_S01 = "C0NPTN01", "C0NPTN02", "C0NPTS01"
NORTH, SOUTH = "C0NORTH", "C0SOUTH"
OWNER_NORTH, OWNER_SOUTH = "U0PC1234", "U0PC5678"
ADDRESS = "1 Fictional Street, Testtown"  # never in chat


def _teams() -> list[dict[str, Any]]:
    areas = {"north": {"N01": NPT_N01, "N02": NPT_N02}, "south": {"S01": NPT_S01}}
    return [{**team, "npt_channels": areas[team["id"]]} for team in TEAMS]


@asynccontextmanager
async def _service(db_url: str, slack: SlackStandIn) -> AsyncIterator[tuple[Service, Any, FixedClock]]:
    clock = FixedClock(utc("2026-11-20T09:00:00Z"))
    overrides: dict[str, Any] = {
        "slack": {"mode": "http", "bot_token": TOKEN, "signing_secret": "s", "api_url": slack.url},
        "teams": _teams(),
        # Every NPT channel cleared for personal data: a move still carries none.
        "routing": {"personal_data_targets": [NPT_N01, NPT_N02, NPT_S01]},
    }
    async with service_client(db_url, clock=clock, **overrides) as (service, client):
        await setup_directory(service.sessions, service.ctx.settings)
        yield service, client, clock


def _upsert(ref: str, n: int, occurred: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", nominal_data(home_address=ADDRESS, **data), id=f"risk-{ref}-{n}",
        visor_ref=ref, occurred_at=occurred,
    )


async def _post(client: Any, *events: dict[str, Any]) -> dict[str, Any]:
    resp = await signed_post(client, "/api/v1/events", list(events))
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _alerts(client: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Open alerts by (kind, visor_ref, subject), from the alerts API."""
    resp = await signed_get(client, "/api/v1/alerts", params={"state": "open"})
    assert resp.status == 200
    return {(a["kind"], a["visor_ref"], a["subject"]): a for a in (await resp.json())["alerts"]}


async def _opened(service: Service, alert_id: str) -> set[tuple[str, str]]:
    async with service.sessions() as s:
        rows = await s.execute(
            select(Delivery.channel, Delivery.target).where(
                Delivery.alert_id == alert_id, Delivery.purpose == "opened"
            )
        )
        return {(channel, target) for channel, target in rows}


def _said(slack: SlackStandIn, channel: str) -> list[str]:
    """Everything posted to `channel`, each message as one JSON text (text and blocks)."""
    return [
        json.dumps(call.args, ensure_ascii=False)
        for call in slack.calls_to("chat.postMessage")
        if call.args.get("channel") == channel
    ]


async def test_risk_changes_and_moves_reach_the_team_the_owner_and_both_npts(db_url: str) -> None:
    async with SlackStandIn(token=TOKEN) as slack, _service(db_url, slack) as (service, client, clock):
        # First upserts: no change yet, nothing opened.
        first = await _post(
            client,
            _upsert(REF, 1, "2026-11-01T00:00:00Z", risk_level="medium", area="N01"),
            _upsert(OTHER, 1, "2026-11-01T00:00:00Z", category="1", area="N02"),
            _upsert(NEW, 1, "2026-11-01T00:00:00Z"),
        )
        assert first["alerts"] == [] and await _alerts(client) == {}

        # REF: risk up to high and a move from N01 to N02 (both north); OTHER: category 1 -> 3.
        await _post(
            client,
            _upsert(REF, 2, "2026-11-10T00:00:00Z", risk_level="high", area="N02"),
            _upsert(OTHER, 2, "2026-11-10T00:00:00Z", category="3", area="N02"),
        )
        up, other = f"risk-{REF}-2", f"risk-{OTHER}-2"
        alerts = await _alerts(client)
        assert {key: (a["severity"], a["summary"]) for key, a in alerts.items()} == {
            ("risk.changed", REF, up): ("high", f"Risk level medium -> high (increase): {REF}"),
            ("area.moved_out", REF, up): ("medium", f"{REF} has moved out of your area"),
            ("area.moved_in", REF, up): ("medium", f"{REF} has moved into your area"),
            ("risk.changed", OTHER, other): ("medium", f"MAPPA category 1 -> 3 (changed): {OTHER}"),
        }
        # Routes: the team channel, the offender manager and the NPT of the area now; each move to
        # one NPT.
        assert await _opened(service, alerts[("risk.changed", REF, up)]["id"]) == {
            ("slack", NORTH), ("slack", OWNER_NORTH), ("slack", NPT_N02),
        }
        assert await _opened(service, alerts[("area.moved_out", REF, up)]["id"]) == {("slack", NPT_N01)}
        assert await _opened(service, alerts[("area.moved_in", REF, up)]["id"]) == {("slack", NPT_N02)}

        # REF moves again, across teams (north N02 -> south S01), its risk down to medium: the old
        # area's NPT is north's, the new one south's.
        await _post(
            client,
            _upsert(REF, 3, "2026-11-15T00:00:00Z", risk_level="medium", area="S01", team="south",
                    offender_manager="PC5678"),
        )
        down = f"risk-{REF}-3"
        alerts = await _alerts(client)
        fell = alerts[("risk.changed", REF, down)]
        assert (fell["severity"], fell["team"]) == ("medium", "south")
        assert await _opened(service, fell["id"]) == {
            ("slack", SOUTH), ("slack", OWNER_SOUTH), ("slack", NPT_S01),
        }
        assert alerts[("area.moved_out", REF, down)]["severity"] == "low"  # medium risk now
        assert await _opened(service, alerts[("area.moved_out", REF, down)]["id"]) == {("slack", NPT_N02)}
        assert await _opened(service, alerts[("area.moved_in", REF, down)]["id"]) == {("slack", NPT_S01)}

        # An older upsert heard of late, and a duplicate: no change recorded, nothing opened.
        before = set(alerts)
        late = await _post(
            client,
            _upsert(REF, 4, "2026-11-05T00:00:00Z", risk_level="very_high", area="N01"),
            _upsert(REF, 3, "2026-11-15T00:00:00Z", risk_level="medium", area="S01", team="south",
                    offender_manager="PC5678"),
        )
        assert late["alerts"] == [] and set(await _alerts(client)) == before
        async with service.sessions() as s:
            history = (await s.execute(
                select(RiskChange.event_id, RiskChange.from_risk, RiskChange.to_risk, RiskChange.from_area,
                       RiskChange.to_area).where(RiskChange.visor_ref == REF).order_by(RiskChange.changed_at)
            )).all()
        assert [tuple(row) for row in history] == [
            (up, "medium", "high", "N01", "N02"), (down, "high", "medium", "N02", "S01"),
        ]

        # The scan leaves them be: told, open until acknowledged.
        clock.set(utc("2026-11-21T09:00:00Z"))
        await run_scan(service.sessions, service.ctx, utc("2026-11-21T09:00:00Z"))
        assert set(await _alerts(client)) >= before

        # Through the Slack stand-in: each NPT hears of each move with the reference only.
        worker, _ = make_worker(service.sessions, service.ctx)
        await worker.run_until_idle()
        out_n01, in_n02 = _said(slack, NPT_N01), _said(slack, NPT_N02)
        assert len(out_n01) == 1 and f"{REF} has moved out of your area" in out_n01[0]
        assert any(f"{REF} has moved into your area" in m for m in in_n02)
        assert any(f"{REF} has moved out of your area" in m for m in in_n02)
        assert any(f"{REF} has moved into your area" in m for m in _said(slack, NPT_S01))
        moves = [m for channel in (NPT_N01, NPT_N02, NPT_S01) for m in _said(slack, channel) if "moved" in m]
        assert len(moves) == 4
        for message in moves:
            assert "Testperson" not in message and "Alex Sample" not in message and ADDRESS not in message
            assert "Violence" not in message  # no markers either
        # The same cleared channel does get the name with a risk change (routing's ordinary rule):
        # it is the move alone that carries none.
        [risen] = [m for m in in_n02 if "Risk level medium -&gt; high" in m]  # escaped for Slack
        assert "Testperson" in risen
        # No address anywhere in chat.
        assert all(ADDRESS not in json.dumps(c.args) for c in slack.calls_to("chat.postMessage"))
