"""`devloop bench-reload`: the in-container half of Tilt's live update, measured.

After Tilt syncs a file into a pod, the process that uses it must notice and restart before the
new code answers. This benchmark runs that process on a private copy of the package (as the pod
holds /app/scripts), writes a change into the copy, and times the write until the first HTTP
answer from the restarted process. The restart is recognised without help from the server: the
old process keeps answering until the reloader stops it, so the first success after the port has
refused a connection comes from the new process, which imported the changed file.

Default subject: `devloop gateway --reload` (watchfiles restarting the gateway). `--command`
times any other reloader, e.g. the floor, a bare http.server under the watchfiles CLI:

    devloop bench-reload --command 'watchfiles --filter python "python -m http.server {port}" {dir}'

Prints one JSON document (runs, milliseconds per run, median, p90) and a short table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from devloop.benchstats import percentile
from devloop.errors import DevloopError, UsageError
from devloop.ports import free_port as _free_port
from devloop.serve import stop_server

POLL_INTERVAL = 0.005  # seconds between probes; well under any Python process start
TARGET_MEDIAN_MS = 500.0  # issue 7: new code answers within half a second of the sync


@dataclass
class ReloadRun:
    """One change, in milliseconds from the write."""

    stopped_ms: float  # the old process stopped answering
    answered_ms: float  # the new process answered


@dataclass
class ReloadReport:
    command: str
    probe_path: str
    runs: list[ReloadRun]
    median_ms: float
    p90_ms: float
    median_stopped_ms: float
    target_median_ms: float
    meets_target: bool



def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return 200 <= response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _wait_until(predicate, timeout: float) -> float | None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(POLL_INTERVAL)
    return None


def _copy_package(workdir: Path) -> Path:
    """A copy of the devloop package, like the pod's /app/scripts, so the benchmark's writes
    never touch the checkout (or restart a developer's own --reload server)."""
    import devloop

    source = Path(devloop.__file__).resolve().parent
    scripts = workdir / "scripts"
    shutil.copytree(source, scripts / "devloop",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return scripts


def measure(command: str | None, runs: int, settle: float, start_timeout: float,
            reload_timeout: float) -> ReloadReport:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="devloop-reloadbench-") as tmp:
        scripts = _copy_package(Path(tmp))
        touched = scripts / "devloop" / "gateway.py"
        env = dict(os.environ, PYTHONPATH=str(scripts), PYTHONDONTWRITEBYTECODE="1",
                   UPSTREAM_URL="http://127.0.0.1:9", REDIS_URL="")
        if command is None:
            argv = [sys.executable, "-m", "devloop", "gateway", "--reload", "--host", "127.0.0.1",
                    "--port", str(port), "--redis-url", ""]
            shown = "devloop gateway --reload"
            probe = "/health"
        else:
            argv = shlex.split(command.format(port=port, dir=shlex.quote(str(scripts))))
            shown = command
            probe = "/"
        url = f"http://127.0.0.1:{port}{probe}"
        # Own process group, so the reloader and the server it started stop together.
        process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if _wait_until(lambda: _answers(url), start_timeout) is None:
                raise DevloopError(f"{shown!r} did not answer {url} within {start_timeout:.0f} s")
            results = []
            for index in range(runs):
                time.sleep(settle)  # let the reloader's watcher settle after the last restart
                with touched.open("a", encoding="utf-8") as handle:
                    handle.write(f"\n# devloop bench-reload change {index}\n")
                written = time.perf_counter()
                stopped = _wait_until(lambda: not _answers(url), reload_timeout)
                if stopped is None:
                    raise DevloopError(
                        f"{shown!r} kept its old process {reload_timeout:.0f} s after a change to "
                        f"{touched.name}: is it reloading on changes?")
                answered = _wait_until(lambda: _answers(url), reload_timeout)
                if answered is None:
                    raise DevloopError(f"{shown!r} did not come back within {reload_timeout:.0f} s")
                results.append(ReloadRun(round((stopped - written) * 1000, 1),
                                         round((answered - written) * 1000, 1)))
        finally:
            stop_server(process, grace=5)
    answered = sorted(run.answered_ms for run in results)
    median = round(statistics.median(answered), 1)
    p90 = round(percentile(answered, 90), 1)
    return ReloadReport(
        command=shown, probe_path=probe, runs=results, median_ms=median, p90_ms=p90,
        median_stopped_ms=round(statistics.median(run.stopped_ms for run in results), 1),
        target_median_ms=TARGET_MEDIAN_MS, meets_target=median < TARGET_MEDIAN_MS,
    )


def format_table(report: ReloadReport) -> str:
    rows = [
        ("command", report.command),
        ("runs", str(len(report.runs))),
        ("old process gone (median)", f"{report.median_stopped_ms:.0f} ms"),
        ("new code answers (median)", f"{report.median_ms:.0f} ms"),
        ("new code answers (p90)", f"{report.p90_ms:.0f} ms"),
        ("target (median)", f"< {report.target_median_ms:.0f} ms: "
                            + ("met" if report.meets_target else "NOT met")),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-reload",
        help="time a code change until the reloaded process answers (live update, in the pod)",
        description="Run a reloading server on a copy of the package, change a file, and time "
        "until the restarted process answers HTTP. Default: `devloop gateway --reload`.",
    )
    parser.add_argument("--runs", type=int, default=10, help="changes to time (default 10)")
    parser.add_argument("--command", help="another reloader to time instead; {port} and {dir} "
                        "(the package copy's parent) are filled in; probed at /")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to wait between changes (default 0.5)")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="seconds for the first start (default 60)")
    parser.add_argument("--reload-timeout", type=float, default=30.0,
                        help="seconds for one reload (default 30)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise UsageError(f"--runs is {args.runs}; it must be at least 1")
    report = measure(args.command, args.runs, args.settle, args.start_timeout, args.reload_timeout)
    json.dump(asdict(report), sys.stdout, indent=2)
    sys.stdout.write("\n")
    print(format_table(report), file=sys.stderr)
    return 0
