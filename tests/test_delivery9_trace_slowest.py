"""bench.e2e_trace.slowest_events: the events whose mail arrived last, each with its largest gaps
between marks up to the mail's acceptance, what ran beside it and the collections in it."""

from __future__ import annotations

from bench.e2e_trace import slowest_events


def test_the_slowest_events_name_their_largest_gaps() -> None:
    marks = [
        # event 1 (window 0-1 s): a quick one
        (0.000, "other", "signature_problem.start", 0.0), (0.010, "ingest", "commit.end", 0.0),
        (0.016, "sink", "accepted", 0.0),
        # event 2 (window 1-2 s): its commit waits 40 ms (the sealer beside it), then the mail
        (1.000, "other", "signature_problem.start", 0.0), (1.004, "seal", "commit.start", 0.0),
        (1.050, "ingest", "commit.end", 0.0), (1.053, "deliver", "smtp_rcpt.start", 0.0),
        (1.058, "sink", "accepted", 0.0), (1.300, "deliver", "record.start", 0.0),
    ]
    gcs = [(1.020, 2, 0.012), (1.500, 0, 0.001)]
    slow = slowest_events(marks, gcs, [(0.0, 1.0), (1.0, 2.0)], count=2)
    assert [e["email_ms"] for e in slow] == [58.0, 16.0]
    worst = slow[0]
    assert worst["answer_ms"] == 50.0
    assert worst["gaps_ms"][0] == (46.0, "seal:commit.start", "ingest:commit.end")
    assert worst["beside"] == ["seal:commit"]  # the record after the mail is not counted
    assert worst["gc"] == [(20.0, 2, 12.0)]  # within the event, before its mail; not the later one
    assert slow[1]["gc"] == [] and slow[1]["beside"] == []
