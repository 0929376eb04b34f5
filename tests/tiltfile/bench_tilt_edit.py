"""Save to first answer: how long a gateway edit takes to answer through a running `tilt up`.

    tilt up -- --model=tiny                    # dev overlay, in another terminal; wait until ready
    .venv/bin/python -m tests.tiltfile.bench_tilt_edit --runs 3

Each run saves a gateway-only change the way an editor does (a new file renamed over
scripts/devloop/gateway/routes.py, whose /health then reports the run's own `version`), starts
the clock when the file is in place, and polls GET /health through the port-forward
(localhost:8080) every 10 ms until the new version answers. Requests that fail meanwhile are
counted. The file is restored at the end, and that reload is waited for too. Prints one JSON
document and a table of the median on stderr. Needs a real Tilt and cluster; `--package` points
it at another copy of the package (the test runs it against a local `devloop gateway --reload`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
# The line of routes.py whose value /health reports; the edit swaps it for a marker of the run.
VERSION_LINE = '        "version": __version__,\n'
POLL_SECONDS = 0.01


class BenchError(Exception):
    """What stops the benchmark, in words a user can act on."""


def _save(path: Path, text: str) -> float:
    """Write as editors do (temporary file, then rename) and return when the rename is done."""
    temporary = path.with_name(path.name + ".bench-tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return time.monotonic()


def _wait_for_version(url: str, version: str, timeout: float) -> tuple[float, int]:
    """(when `version` first answered, failed requests on the way)."""
    failed = 0
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while time.monotonic() < deadline:
            try:
                answer = session.get(url + "/health", timeout=2)
                if answer.ok and answer.json().get("version") == version:
                    return time.monotonic(), failed
                if not answer.ok:
                    failed += 1
            except (requests.RequestException, ValueError):
                failed += 1
            time.sleep(POLL_SECONDS)
    raise BenchError(f"{url}/health did not report version {version!r} within {timeout:.0f} s: "
                     "is `tilt up` running the dev overlay, and is the gateway resource green?")


def measure(url: str, runs: int, package: Path, timeout: float, settle: float) -> dict:
    routes = package / "gateway" / "routes.py"
    original = routes.read_text(encoding="utf-8")
    if original.count(VERSION_LINE) != 1:
        raise BenchError(f"{routes} no longer has the line {VERSION_LINE.strip()!r} this "
                         "benchmark edits: update VERSION_LINE")
    baseline = requests.get(url + "/health", timeout=5).json()["version"]
    seconds, failures = [], []
    try:
        for run in range(runs):
            marker = f"bench-tilt-edit-{os.getpid()}-{run}"
            saved = _save(routes, original.replace(VERSION_LINE, f'        "version": "{marker}",\n'))
            answered, failed = _wait_for_version(url, marker, timeout)
            seconds.append(round(answered - saved, 3))
            failures.append(failed)
            time.sleep(settle)
    finally:
        _save(routes, original)
    _wait_for_version(url, baseline, timeout)
    return {"url": url, "file": str(routes), "runs": runs, "save_to_answer_s": seconds,
            "median_s": statistics.median(seconds), "failed_requests": failures,
            "target_s": 0.5, "meets_target": statistics.median(seconds) <= 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://localhost:8080", help="the gateway (Tilt's port-forward)")
    parser.add_argument("--runs", type=int, default=3, help="edits to time (default 3)")
    parser.add_argument("--package", type=Path, default=ROOT / "scripts" / "devloop",
                        help="the devloop package Tilt syncs from (default: this checkout's)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one edit may take")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between edits")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        result = measure(args.url.rstrip("/"), args.runs, args.package, args.timeout, args.settle)
    except (BenchError, requests.RequestException) as error:
        print(f"bench_tilt_edit: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print(f"save -> first answer, median of {args.runs}: {result['median_s'] * 1000:.0f} ms "
          f"(runs: {', '.join(f'{s * 1000:.0f}' for s in result['save_to_answer_s'])} ms; "
          f"failed requests: {sum(result['failed_requests'])}; target 500 ms: "
          f"{'met' if result['meets_target'] else 'missed'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
