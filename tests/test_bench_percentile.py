"""bench.measure.percentile is the nearest-rank percentile: the smallest value with at least q% of
the values at or below it (rank ceil(q/100 * n)). With 100 values p99 is the 99th, not the largest."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.measure import percentile

HUNDRED = [float(i) for i in range(1, 101)]  # the values 1..100


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0, 1.0), (1, 1.0), (1.5, 2.0), (50, 50.0), (90, 90.0), (99, 99.0), (99.5, 100.0), (99.9, 100.0),
        (100, 100.0),
    ],
)
def test_nearest_rank_of_one_to_a_hundred(q: float, expected: float) -> None:
    assert percentile(list(reversed(HUNDRED)), q) == expected


def test_small_and_empty_samples() -> None:
    assert percentile([], 99) == 0.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # rank ceil(1.5) = 2
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # rank 2: half the values at or below it


@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
    st.sampled_from([0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100]),
)
def test_at_least_q_percent_at_or_below_and_no_smaller_rank_qualifies(values: list[float], q: float) -> None:
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(repr(q)) * len(ordered) / 100))
    assert percentile(values, q) == ordered[rank - 1]
    assert Fraction(rank, len(ordered)) * 100 >= Fraction(repr(q)) or rank == 1
    if rank > 1:
        assert Fraction(rank - 1, len(ordered)) * 100 < Fraction(repr(q))
