"""The bench harness at a tiny size on SQLite, so that it cannot rot: every benchmark runs and
reports numbers of the right shape (the figures themselves mean nothing at this size)."""

from __future__ import annotations

from pathlib import Path

from bench.audit import WRITERS, bench_audit, table_rows, warmup_count
from bench.dataset import Sizes
from bench.harness import Options, run_all, table


async def test_bench_harness_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    options = Options(
        sizes=Sizes.tiny(), quick=True, databases=["sqlite"], requests=10, out=tmp_path,
        e2e_alerts=4, singles=10, batches=1, quiet=True,
    )
    results = await run_all(options)
    r = results["results"]["sqlite"]
    assert r["dataset"]["rows"]["nominals"] == 200 and r["dataset"]["rows"]["actions"] == 500
    assert [lv["concurrency"] for lv in r["flags"]["levels"]] == [1, 8, 32]
    assert all(lv["flags"]["errors"] == 0 and lv["flags"]["n"] == 10 for lv in r["flags"]["levels"])
    assert r["ingest"]["single"]["errors"] == 0 and r["ingest"]["batch"]["errors"] == 0
    assert r["ingest"]["raw_insert_events_per_s"] > 0 and r["ingest"]["batch_ratio"] is not None
    assert r["ingest"]["level_changes"]["status"] == 202 and r["ingest"]["level_changes"]["alerts_opened"] > 0
    assert r["e2e"]["missing"] == {"slack": 0, "email": 0}
    assert r["scan"]["first"]["exit"] == 0 and r["scan"]["second"]["exit"] == 0
    assert r["scan"]["first"]["peak_rss_mb"] > 0
    assert "exit" in r["digest"]  # the digest command is being built in parallel (issue 6)
    rendered = table(results)
    assert "/flags c=32" in rendered and "target:" in rendered


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
