"""`devloop bench-reload`: Tilt's live update of the gateway, measured under load in a
container-like setting.

The subject is `devloop gateway --reload` on a private copy of the package (as the pod holds
/app/scripts). Steady load runs against it the whole time: client threads, each with a
keep-alive connection as an OpenAI client keeps one, sending GET /health back to back. Each run
lands a change the way Tilt's live update does (a tar archive extracted into the package
directory: here a new `__version__` in devloop/__init__.py, which /health reports), and times,
from the moment the file landed:

  new code answers   the first response from the new code
  old code gone      the last response from the old code
  failed             requests that got no answer or an error, during the whole run (goal: 0)

Container-like (default; --no-container runs it as a plain process): the gateway is PID 1 of a
PID namespace of its own (`unshare --pid`, as in a pod, where PID 1 gets the signals and reaps
orphans) and, when this process may create one (root, cgroup v1 or v2), in a cgroup with the
dev overlay's CPU limit (--cpus, default 1).

`--package DIR` measures another copy of the package, e.g. an older commit's checkout, with the
same load and the same changes: how the comparison in the README was made.

Prints one JSON document and a short table on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

from devloop.common.errors import DevloopError, UsageError
from devloop.common.ports import free_port
from devloop.common.stats import percentile
from devloop.engine.serve import stop_server

TARGET_MS = 300.0  # issue 12: new code answers within 0.3 s of the file landing
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")


@dataclass
class ReloadRun:
    """One change, in milliseconds from the moment the file landed."""

    new_code_ms: float  # the first answer from the new code
    old_gone_ms: float  # the last answer from the old code


@dataclass
class ReloadReport:
    command: str
    setting: dict[str, object]
    clients: int
    runs: list[ReloadRun]
    requests: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)
    new_code_median_ms: float = 0.0
    new_code_p90_ms: float = 0.0
    old_gone_median_ms: float = 0.0
    target_ms: float = TARGET_MS
    meets_target: bool = False


class Load:
    """Client threads sending GET /health back to back; every answer is recorded as
    (time, version) and every failure by kind."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str]] = []
        self.failures: dict[str, int] = {}
        self.requests = 0
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        import requests

        session = requests.Session()
        while not self.stop.is_set():
            try:
                response = session.get(self.url, timeout=10)
                version = response.json()["version"] if response.status_code == 200 else None
                failure = None if version else f"HTTP {response.status_code}"
            except (requests.RequestException, ValueError, KeyError) as error:
                version, failure = None, type(error).__name__
            with self.lock:
                self.requests += 1
                if failure:
                    self.failures[failure] = self.failures.get(failure, 0) + 1
                else:
                    self.answers.append((time.perf_counter(), version))

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def since(self, moment: float) -> list[tuple[float, str]]:
        with self.lock:
            return [answer for answer in self.answers if answer[0] >= moment]


def _land(scripts: Path, version: str) -> float:
    """Write a new devloop/__init__.py as Tilt does (a tar archive extracted in place); the
    moment the extraction finished."""
    init = scripts / "devloop" / "__init__.py"
    text = init.read_text(encoding="utf-8")
    start = text.index("__version__")
    end = text.index("\n", start)
    data = (text[:start] + f'__version__ = "{version}"' + text[end:]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("devloop/__init__.py")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(["tar", "-x", "-f", "-", "-C", str(scripts)], input=archive.getvalue(),
                   check=True)
    return time.perf_counter()


def _cgroup(cpus: float) -> tuple[Path | None, str]:
    """A cgroup limited to `cpus` CPUs (the pod's limit), or None and why not."""
    name = f"devloop-reloadbench-{os.getpid()}"
    period = 100_000
    try:
        if (CGROUP_V2 / "cgroup.controllers").is_file():
            group = CGROUP_V2 / name
            group.mkdir()
            (group / "cpu.max").write_text(f"{int(cpus * period)} {period}")
        elif (CGROUP_V1_CPU / "cpu.cfs_quota_us").is_file():
            group = CGROUP_V1_CPU / name
            group.mkdir()
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
        else:
            return None, "no cgroup cpu controller found"
    except OSError as error:
        return None, f"cannot create a cgroup ({error.strerror}; needs root)"
    return group, f"{cpus:g} CPU (cgroup {group})"


def _start(argv: list[str], env: dict[str, str], workdir: str, container: bool,
           cpus: float) -> tuple[subprocess.Popen, Path | None, dict[str, object]]:
    setting: dict[str, object] = {"container": container}
    group = None
    if container:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise DevloopError("`unshare` (util-linux) is not installed; use --no-container")
        argv = [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--", *argv]
        group, setting["cpu_limit"] = _cgroup(cpus)
        setting["pid_namespace"] = "the gateway is PID 1 of its own PID namespace"

    def enter_cgroup() -> None:  # in the child, before exec: everything it starts inherits it
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    process = subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=enter_cgroup if group is not None else None)  # noqa: PLW1509 - no thread yet
    return process, group, setting


def measure(package: Path, runs: int, settle: float, clients: int, container: bool,
            cpus: float, start_timeout: float, reload_timeout: float) -> ReloadReport:
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    with tempfile.TemporaryDirectory(prefix="devloop-reloadbench-") as tmp:
        scripts = Path(tmp) / "scripts"
        shutil.copytree(package, scripts / "devloop",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env = dict(os.environ, PYTHONPATH=str(scripts), UPSTREAM_URL="http://127.0.0.1:9",
                   REDIS_URL="", GATEWAY_ADMIN_PORT="0", DEVLOOP_LOG_LEVEL="warning")
        argv = [sys.executable, "-m", "devloop", "gateway", "--reload", "--host", "127.0.0.1",
                "--port", str(port)]
        process, group, setting = _start(argv, env, tmp, container, cpus)
        try:
            _wait_for(lambda: _answers(url), start_timeout, "did not answer")
            results: list[ReloadRun] = []
            with Load(url, clients) as load:
                for index in range(runs):
                    time.sleep(settle)
                    old = load.since(0)[-1][1] if load.since(0) else None
                    landed = _land(scripts, f"bench-{index}")
                    results.append(_one_change(load, landed, old, f"bench-{index}",
                                               reload_timeout))
                time.sleep(settle)
        finally:
            stop_server(process, grace=10)
            if group is not None:
                _remove_cgroup(group)
    return _report(argv, setting, clients, results, load)


def _one_change(load: Load, landed: float, old: str | None, new: str,
                timeout: float) -> ReloadRun:
    deadline = landed + timeout
    while time.perf_counter() < deadline:
        answers = load.since(landed)
        first_new = next((t for t, version in answers if version == new), None)
        if first_new is not None and time.perf_counter() - first_new > 0.5:
            # Half a second of answers after the first new one: any old answer left is in.
            last_old = max((t for t, version in answers if version == old), default=landed)
            return ReloadRun(round((first_new - landed) * 1000, 1),
                             round((max(last_old, landed) - landed) * 1000, 1))
        time.sleep(0.01)
    raise DevloopError(f"the new code ({new}) did not answer within {timeout:.0f} s")


def _report(argv: list[str], setting: dict[str, object], clients: int, runs: list[ReloadRun],
            load: Load) -> ReloadReport:
    new = sorted(run.new_code_ms for run in runs)
    failed = sum(load.failures.values())
    report = ReloadReport(
        command=" ".join(argv[argv.index("-m") + 1:]), setting=setting, clients=clients,
        runs=runs, requests=load.requests, failed=failed, failures=dict(load.failures),
        new_code_median_ms=round(statistics.median(new), 1),
        new_code_p90_ms=round(percentile(new, 90), 1),
        old_gone_median_ms=round(statistics.median(run.old_gone_ms for run in runs), 1),
    )
    report.meets_target = report.new_code_median_ms < TARGET_MS and failed == 0
    return report


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise DevloopError(f"the gateway {what} within {timeout:.0f} s")


def _remove_cgroup(group: Path) -> None:
    for _ in range(50):  # the processes may take a moment to leave it after being stopped
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def format_table(report: ReloadReport) -> str:
    rows = [
        ("command", report.command),
        ("setting", ", ".join(f"{k}: {v}" for k, v in report.setting.items())),
        ("load", f"{report.clients} keep-alive clients, {report.requests} requests"),
        ("runs", str(len(report.runs))),
        ("new code answers (median)", f"{report.new_code_median_ms:.0f} ms"),
        ("new code answers (p90)", f"{report.new_code_p90_ms:.0f} ms"),
        ("old code gone (median)", f"{report.old_gone_median_ms:.0f} ms"),
        ("failed requests", f"{report.failed} {report.failures or ''}".strip()),
        ("target", f"< {report.target_ms:.0f} ms and no failure: "
                   + ("met" if report.meets_target else "NOT met")),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-reload",
        help="time a live update of the gateway under load (new code latency, failed requests)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=10, help="changes to time (default 10)")
    parser.add_argument("--clients", type=int, default=4,
                        help="client threads keeping the load up (default 4)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between changes (default 1)")
    parser.add_argument("--cpus", type=float, default=1.0,
                        help="the gateway's CPU limit in container mode (default 1, the pod's)")
    parser.add_argument("--no-container", dest="container", action="store_false",
                        help="run the gateway as a plain process (no PID namespace, no cgroup)")
    parser.add_argument("--package", type=Path,
                        help="the devloop package directory to measure (default: this one)")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="seconds for the first start (default 60)")
    parser.add_argument("--reload-timeout", type=float, default=30.0,
                        help="seconds for one reload (default 30)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.clients < 1:
        raise UsageError(f"--runs and --clients must be at least 1 (got {args.runs}, "
                         f"{args.clients})")
    import devloop

    package = args.package or Path(devloop.__file__).resolve().parent
    if not (package / "__init__.py").is_file():
        raise UsageError(f"--package {package} is not a devloop package directory")
    report = measure(package, args.runs, args.settle, args.clients, args.container, args.cpus,
                     args.start_timeout, args.reload_timeout)
    json.dump(asdict(report), sys.stdout, indent=2)
    sys.stdout.write("\n")
    print(format_table(report), file=sys.stderr)
    return 0
