"""The numbers `devloop bench` prints: TPOT, throughput, errors by kind."""

from __future__ import annotations

import json

import pytest

from devloop.bench.stats import LevelSummary, RequestResult, format_table, summarize


def test_tpot_leaves_out_the_first_token():
    result = RequestResult(ok=True, output_tokens=11, ttft=0.5, e2e=1.5)
    assert result.tpot == pytest.approx(0.1)


def test_tpot_of_a_one_token_answer_is_undefined():
    assert RequestResult(ok=True, output_tokens=1, ttft=0.2, e2e=0.2).tpot is None


def _ok(ttft: float, e2e: float, tokens: int = 5, prompt: int = 10) -> RequestResult:
    gaps = [(e2e - ttft) / (tokens - 1)] * (tokens - 1)
    return RequestResult(
        ok=True, prompt_tokens=prompt, output_tokens=tokens, ttft=ttft, e2e=e2e, itl=gaps
    )


def test_throughput_divides_by_wall_time_not_by_summed_latency():
    # Four requests of 1 s each, run two at a time, finish in 2 s of wall time.
    summary = summarize([_ok(0.2, 1.0)] * 4, duration_s=2.0, concurrency=2)
    assert summary.request_throughput == pytest.approx(2.0)
    assert summary.output_throughput == pytest.approx(4 * 5 / 2.0)
    assert summary.total_token_throughput == pytest.approx(4 * 15 / 2.0)
    assert summary.ttft_ms["p50"] == pytest.approx(200.0)
    assert summary.tpot_ms["mean"] == pytest.approx(200.0)
    assert summary.itl_ms["p99"] == pytest.approx(200.0)


def test_failed_requests_are_counted_by_kind_and_kept_out_of_latency():
    results = [
        _ok(0.1, 0.5),
        RequestResult(ok=False, error_kind="http_503", error="Service Unavailable", e2e=0.0),
        RequestResult(ok=False, error_kind="http_503", error="again"),
        RequestResult(ok=False, error_kind="timeout", error="no answer"),
    ]
    summary = summarize(results, duration_s=1.0, concurrency=4)
    assert (summary.completed, summary.failed) == (1, 3)
    assert summary.errors == {"http_503": 2, "timeout": 1}
    assert summary.error_examples["http_503"] == "Service Unavailable"
    assert summary.e2e_ms["p50"] == pytest.approx(500.0)
    assert summary.request_throughput == pytest.approx(1.0)


def test_a_level_where_everything_failed_has_no_latency_and_zero_throughput():
    summary = summarize(
        [RequestResult(ok=False, error_kind="connection", error="refused")], 0.0, concurrency=1
    )
    assert summary.request_throughput == 0.0
    assert summary.ttft_ms == {"mean": None, "p50": None, "p90": None, "p99": None}
    # JSON has no NaN: a machine reading the report must be able to parse it strictly.
    json.loads(json.dumps(summary.to_dict()), parse_constant=lambda name: pytest.fail(name))


def test_summary_round_trips_through_json():
    summary = summarize([_ok(0.1, 0.5)], 1.0, concurrency=1, request_rate=2.0)
    again = LevelSummary(**json.loads(json.dumps(summary.to_dict())))
    assert again == summary


def test_table_has_one_row_per_level_and_lists_errors():
    summaries = [
        summarize([_ok(0.1, 0.5)], 1.0, concurrency=1),
        summarize(
            [_ok(0.3, 0.9), RequestResult(ok=False, error_kind="http_429", error="slow down")],
            1.0,
            concurrency=8,
        ),
    ]
    table = format_table(summaries).splitlines()
    assert table[0].split()[:4] == ["conc", "rate", "ok", "err"]
    assert table[2].split()[:4] == ["1", "inf", "1", "0"]
    assert table[3].split()[:4] == ["8", "inf", "1", "1"]
    assert "errors at concurrency 8: 1 x http_429: slow down" in table
