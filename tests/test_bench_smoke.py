"""The bench harness at a tiny size on SQLite, so that it cannot rot: every benchmark runs and
reports numbers of the right shape (the figures themselves mean nothing at this size)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from bench import cpu_share, loadgen
from bench.audit import WRITERS, bench_audit, table_rows, warmup_count
from bench.cases import (
    FLOOR_AUDIT,
    SINGLE_ROUNDS,
    flags_body,
    least_work_app,
    median_round,
    serve,
    slack_signed,
)
from bench.dataset import Sizes, generate, make_settings, visor_ref
from bench.feeds.__main__ import FeedOptions
from bench.feeds.__main__ import run_all as run_feeds
from bench.harness import Options, run_all, table
from bench.multi import SHARE_CORES, bench_multi
from casewatch.store.engine import make_engine


async def test_bench_harness_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    options = Options(
        sizes=Sizes.tiny(), quick=True, databases=["sqlite"], requests=10, out=tmp_path,
        e2e_alerts=4, singles=10, batches=1, quiet=True,
        # The cases asserted here; the audit and multi cases have tests of their own below.
        only=["flags", "e2e", "ingest", "scan", "digest"],
    )
    results = await run_all(options)
    r = results["results"]["sqlite"]
    assert r["dataset"]["rows"]["nominals"] == 200 and r["dataset"]["rows"]["actions"] == 500
    assert [lv["concurrency"] for lv in r["flags"]["levels"]] == [1, 8, 32]
    assert all(lv["flags"]["errors"] == 0 and lv["flags"]["n"] == 10 for lv in r["flags"]["levels"])
    for lv in r["flags"]["levels"]:
        least, tags = lv["baseline_least_work"], lv["flags"]["by_tag"]
        assert least["errors"] == 0 and least["n"] == 10 and least["server_cpu_ms_per_request"] > 0
        assert (tags["reference"]["n"], tags["surname"]["n"]) == (8, 2) and tags["surname"]["errors"] == 0
        assert lv["least_work_throughput_ratio"] is not None and lv["surname_vs_reference_p50"] is not None
    assert r["ingest"]["single"]["errors"] == 0 and r["ingest"]["batch"]["errors"] == 0
    for server in ("single", "single_least_work", "single_least_work_group"):  # its median round
        each = r["ingest"][server]
        assert len(each["rounds_per_s"]) == len(each["rounds_cpu_ms"]) == SINGLE_ROUNDS
        assert each["per_s"] == sorted(each["rounds_per_s"])[(SINGLE_ROUNDS - 1) // 2] and each["n"] == 10
    assert r["ingest"]["raw_insert_events_per_s"] > 0 and r["ingest"]["batch_ratio"] is not None
    assert r["ingest"]["level_changes"]["status"] == 202 and r["ingest"]["level_changes"]["alerts_opened"] > 0
    assert r["e2e"]["missing"] == {"slack": 0, "email": 0}
    assert r["scan"]["first"]["exit"] == 0 and r["scan"]["second"]["exit"] == 0
    assert r["scan"]["first"]["peak_rss_mb"] > 0
    assert "exit" in r["digest"]  # the digest command is being built in parallel (issue 6)
    rendered = table(results)
    assert "/flags c=32" in rendered and "target:" in rendered and "vs least work" in rendered


def test_a_single_event_figure_is_its_median_round_whole() -> None:
    """bench.cases.median_round: the round of median throughput, all its figures from that one
    round (not each figure's median from different rounds), with every round's listed."""
    rounds = [
        {"per_s": 900.0, "p50_ms": 12.0, "server_cpu_ms_per_request": 0.8},
        {"per_s": 700.0, "p50_ms": 7.0, "server_cpu_ms_per_request": 0.6},
        {"per_s": 1100.0, "p50_ms": 11.0, "server_cpu_ms_per_request": 1.0},
    ]
    # p50 12.0 from the median round; the median of the three p50s would be 11.0.
    assert median_round(rounds) == {
        "per_s": 900.0, "p50_ms": 12.0, "server_cpu_ms_per_request": 0.8,
        "rounds_per_s": [900.0, 700.0, 1100.0], "rounds_cpu_ms": [0.8, 0.6, 1.0],
    }
    assert median_round(rounds[:2])["per_s"] == 700.0  # even: the lower of the middle two
    assert median_round(rounds[:1])["rounds_per_s"] == [900.0]


async def test_the_least_work_floor_checks_the_signature_and_commits_one_audit_row(db_url: str) -> None:
    """The floor does what an answer must (bench.cases.least_work_app): a signed request reads
    its nominal and commits one audit row before the answer; a forged one is refused, unaudited."""
    sizes = Sizes.tiny()
    engine = make_engine(db_url)
    await generate(engine, sizes, make_settings(db_url, sizes))
    app, floor_engine = await least_work_app(db_url, 2)
    body = flags_body(visor_ref(3), "UB0000001")
    forged = {**slack_signed(body), "X-Slack-Signature": "v0=" + "0" * 64}
    try:
        async with serve(app) as url, aiohttp.ClientSession() as http:
            async with http.post(f"{url}/slack/events", data=body, headers=slack_signed(body)) as r:
                assert r.status == 200 and visor_ref(3) in (await r.json())["text"]
            async with http.post(f"{url}/slack/events", data=body, headers=forged) as r:
                assert r.status == 401
        async with engine.connect() as conn:
            rows = (await conn.execute(select(FLOOR_AUDIT.c.subject, FLOOR_AUDIT.c.nominals))).all()
            assert [tuple(row) for row in rows] == [(visor_ref(3), [visor_ref(3)])]
            assert (await conn.execute(select(func.count()).select_from(FLOOR_AUDIT))).scalar_one() == 1
    finally:
        await floor_engine.dispose()
        await engine.dispose()


async def test_audit_bench_runs_at_a_tiny_size_and_leaves_an_intact_chain(db_url: str) -> None:
    r = await bench_audit(db_url, Sizes.tiny(), entries=100)
    assert [lv["writers"] for lv in r["writes"]] == list(WRITERS)
    for lv in r["writes"]:
        assert lv["chained"]["errors"] == 0 and lv["chained"]["n"] == 100 and lv["baseline"]["n"] == 100
        assert lv["chained"]["sealer"]["entries_sealed"] == 100 and lv["p99_ratio"] is not None
    two = r.get("two_processes", {"entries": 0})
    # Every chained write (warm-ups too) is sealed and verified; the baseline's rows are gone.
    assert r["verify"]["entries"] == len(WRITERS) * 2 * (100 + warmup_count(100)) + two["entries"]
    assert r["verify"]["entries_per_s"]["verify"] > 0 and r["verify"]["canonicalisation"]["entries"] > 0
    if db_url.startswith("postgresql"):
        assert r["two_processes"]["verify"]["intact"]
        assert r["two_processes"]["verify"]["checked"] == r["two_processes"]["verify"]["entries_in_log"]
    assert "audit verify" in "\n".join(" ".join(row) for row in table_rows("db", r))


@pytest.mark.postgres
async def test_two_serve_processes_on_one_port_deliver_once_and_scan_once(pg_url: str) -> None:
    """bench.multi at a tiny size: 1 then 2 real `casewatch serve` processes on one port and one
    PostgreSQL; every message arrived once, each scan slot ran once, one digest a team."""
    sizes = Sizes.tiny()
    engine = make_engine(pg_url)
    try:
        await generate(engine, sizes, make_settings(pg_url, sizes))
    finally:
        await engine.dispose()
    try:
        r = await bench_multi(pg_url, sizes, 20)
    finally:
        loadgen.shutdown()  # the requesters' process pool, before the loop closes
    assert r["p1"]["errors"] == 0 and r["p2"]["errors"] == 0 and r["p2"]["n"] == 20
    assert r["p1"]["exit_codes"] == [0] and r["p2"]["exit_codes"] == [0, 0]
    assert sum(r["p2"]["leading"]) == 1
    checks = r["checks"]
    assert checks["ok"], checks  # over all four phases where the shares ran
    assert checks["alerts"] >= 20 and checks["digest_teams"] == sizes.teams
    share = r["share"]
    if "skipped" in share:  # no writable cgroup v1 cpu controller here: said, not hidden
        assert share["skipped"] == cpu_share.unavailable()
        return
    assert share["cores_each"] == SHARE_CORES and share["scaling"] > 0
    assert share["p1"]["errors"] == 0 and share["p2"]["errors"] == 0 and share["p2"]["n"] == 20
    assert share["p1"]["exit_codes"] == [0] and share["p2"]["exit_codes"] == [0, 0]
    for run in (share["p1"], share["p2"]):  # each process's CPU and its share's held-back time
        loaded = run["while_loaded"]
        assert len(loaded["cores"]) == len(loaded["throttled_ms"]) == len(run["cgroups"]) == run["processes"]
        assert not any(map(os.path.exists, run["cgroups"]))  # each group removed


async def test_the_feed_benches_run_at_a_tiny_size(tmp_path: Path) -> None:
    """Issue 18: each feed's bench runs its real adapter and its least-work baseline, on SQLite."""
    options = FeedOptions(databases=["sqlite"], quick=True, work_dir=tmp_path, rows=30)
    results = await run_feeds(options, ["snapshot", "mail", "probation"])
    snap = results["snapshot"]["sqlite"]
    assert snap["first"]["new"] == 30 and snap["rerun"]["events"] == 0
    assert snap["first"]["baseline_rows_per_s"] > 0
    mail = results["mail"]["sqlite"]
    assert mail["lmtp"]["ingested"] == mail["lmtp"]["mails"] > 0 and mail["baseline"]["per_s"] > 0
    probation = results["probation"]["sqlite"]
    for senders in ("senders_1", "senders_8"):
        assert all(probation[senders][case]["errors"] == 0 for case in ("mapped", "ignored", "baseline"))
