"""Percentiles as vLLM's benchmark computes them (numpy's linear interpolation)."""

from __future__ import annotations

import math

import pytest

from devloop.common.stats import percentile


def test_percentile_interpolates_between_ranks_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    # numpy.percentile(values, q) with its default (linear) method gives these.
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0


def test_percentile_does_not_depend_on_sample_order():
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


def test_percentile_of_nothing_is_nan_and_out_of_range_is_refused():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)
