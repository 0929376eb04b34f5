"""What `devloop bench` computes from timed requests: percentiles, throughput, errors by kind,
the closing table. Pure Python, no I/O, so every number the benchmark prints is unit-tested.

The definitions follow vLLM's own `vllm bench serve`, so the two can be compared line by line:
TTFT is the time from sending the request to the first streamed chunk that carries a choice;
ITL is the gap between successive such chunks; TPOT is (e2e - TTFT) / (output tokens - 1) per
request; throughputs divide totals by the wall time of the whole run, not by summed latencies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from devloop.common.stats import percentile

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    """One request as the client saw it. Times are seconds from a monotonic clock."""

    ok: bool
    prompt_tokens: int = (
        0  # the server's count (usage) when it reports one, else the requested length
    )
    output_tokens: int = 0  # the server's count (usage) when it reports one, else chunks received
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    error_kind: str = ""  # http_503, timeout, connection, invalid_response, server_error, ...
    error: str = ""  # the first line of what went wrong, for the log

    @property
    def tpot(self) -> float | None:
        # One token has no inter-token time: vLLM's benchmark leaves such requests out of TPOT.
        if self.output_tokens <= 1:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def distribution(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """mean and percentiles of `values`, multiplied by `scale` (seconds to milliseconds by
    default); None where there are no samples, so JSON carries null, not NaN."""
    if not values:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    summary: dict[str, float | None] = {"mean": scale * sum(values) / len(values)}
    for q in PERCENTILES:
        summary[f"p{q}"] = scale * percentile(values, q)
    return summary


@dataclass
class LevelSummary:
    """The result of one load level (one concurrency, or one request rate)."""

    concurrency: int | None
    request_rate: float | None
    num_prompts: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    total_input_tokens: int
    total_output_tokens: int
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    ttft_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    e2e_ms: dict[str, float | None]
    errors: dict[str, int]
    error_examples: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    results: Iterable[RequestResult],
    duration_s: float,
    concurrency: int | None,
    request_rate: float | None = None,
) -> LevelSummary:
    results = list(results)
    good = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    input_tokens = sum(r.prompt_tokens for r in good)
    output_tokens = sum(r.output_tokens for r in good)
    examples: dict[str, str] = {}
    for r in bad:
        examples.setdefault(r.error_kind, r.error)
    # A zero-length run (every request refused at once) still gets a finite rate of 0.
    wall = duration_s if duration_s > 0 else math.inf
    return LevelSummary(
        concurrency=concurrency,
        request_rate=request_rate,
        num_prompts=len(results),
        completed=len(good),
        failed=len(bad),
        duration_s=duration_s,
        request_throughput=len(good) / wall,
        output_throughput=output_tokens / wall,
        total_token_throughput=(input_tokens + output_tokens) / wall,
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        mean_input_tokens=input_tokens / len(good) if good else None,
        mean_output_tokens=output_tokens / len(good) if good else None,
        ttft_ms=distribution([r.ttft for r in good]),
        tpot_ms=distribution([t for r in good if (t := r.tpot) is not None]),
        itl_ms=distribution([gap for r in good for gap in r.itl]),
        e2e_ms=distribution([r.e2e for r in good]),
        errors=dict(sorted(Counter(r.error_kind for r in bad).items())),
        error_examples=examples,
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


TABLE_COLUMNS = (
    ("conc", lambda s: str(s.concurrency) if s.concurrency is not None else "-"),
    ("rate", lambda s: _fmt(s.request_rate, 2) if s.request_rate is not None else "inf"),
    ("ok", lambda s: str(s.completed)),
    ("err", lambda s: str(s.failed)),
    ("req/s", lambda s: _fmt(s.request_throughput, 2)),
    ("out tok/s", lambda s: _fmt(s.output_throughput, 1)),
    ("TTFT p50", lambda s: _fmt(s.ttft_ms["p50"])),
    ("TTFT p90", lambda s: _fmt(s.ttft_ms["p90"])),
    ("TTFT p99", lambda s: _fmt(s.ttft_ms["p99"])),
    ("TPOT p50", lambda s: _fmt(s.tpot_ms["p50"])),
    ("TPOT p90", lambda s: _fmt(s.tpot_ms["p90"])),
    ("TPOT p99", lambda s: _fmt(s.tpot_ms["p99"])),
    ("ITL p50", lambda s: _fmt(s.itl_ms["p50"])),
    ("ITL p99", lambda s: _fmt(s.itl_ms["p99"])),
    ("E2E p50", lambda s: _fmt(s.e2e_ms["p50"])),
    ("E2E p90", lambda s: _fmt(s.e2e_ms["p90"])),
    ("E2E p99", lambda s: _fmt(s.e2e_ms["p99"])),
)


def format_table(summaries: Sequence[LevelSummary]) -> str:
    """One row per load level; latencies in milliseconds, then the errors by kind, if any."""
    header = [name for name, _ in TABLE_COLUMNS]
    rows = [[cell(s) for _, cell in TABLE_COLUMNS] for s in summaries]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(
        "latencies in ms; TTFT time to first token, TPOT time per output token, "
        "ITL inter-token latency, E2E end to end"
    )
    for s in summaries:
        for kind, count in s.errors.items():
            lines.append(
                f"errors at concurrency {s.concurrency}: {count} x {kind}: "
                f"{s.error_examples.get(kind, '')}"
            )
    return "\n".join(lines)
