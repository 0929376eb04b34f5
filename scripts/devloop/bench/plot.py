"""`devloop bench --plot`: latency and throughput against the load, as a PNG (matplotlib, an
optional dependency: `pip install -e '.[plot]'`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from devloop.common.errors import DevloopError


def require_matplotlib() -> None:
    """Fail with the fix before a long run, not after it."""
    try:
        import matplotlib  # noqa: F401 - only whether it imports
    except ImportError:
        raise DevloopError(
            "--plot needs matplotlib: .venv/bin/pip install matplotlib (or -e '.[plot]')"
        ) from None


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Latency and throughput against concurrency (or request rate when that is what varies)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the plot goes to a file
    import matplotlib.pyplot as plt

    levels = report["levels"]
    by_rate = len({lv["concurrency"] for lv in levels}) == 1 and len(levels) > 1
    xs = [lv["request_rate"] if by_rate else lv["concurrency"] for lv in levels]
    xs = [x if x is not None else math.inf for x in xs]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")):
        for q, style in (("p50", "-o"), ("p99", "--x")):
            ys = [lv[key][q] if lv[key][q] is not None else math.nan for lv in levels]
            lat.plot(xs, ys, style, label=f"{name} {q}")
    lat.set_yscale("log")
    lat.set_ylabel("latency (ms)")
    thr.plot(xs, [lv["output_throughput"] for lv in levels], "-o", label="output tok/s")
    thr.set_ylabel("output tokens/s")
    req = thr.twinx()
    req.plot(
        xs, [lv["request_throughput"] for lv in levels], "--s", color="tab:orange", label="req/s"
    )
    req.set_ylabel("requests/s")
    for axis in (lat, thr):
        axis.set_xlabel("request rate (req/s)" if by_rate else "concurrency")
        axis.grid(True, alpha=0.3)
    lat.legend(fontsize=8)
    thr.legend(loc="upper left", fontsize=8)
    req.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"{report['model']} at {report['url']}: {report['config']['input_len']} in / "
        f"{report['config']['output_len']} out"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
