"""`devloop health`: is the vLLM server ready to answer? (Tilt's health button, users, tests.)

Three checks, each a step further than the last: `/health` (the process is up and the engine
loop is alive: what the pod's probes call), `/v1/models` (the API answers and which model it
serves), and a one-token completion (the model actually generates). `--wait` polls until all
three pass, showing what it is waiting for, because a model load takes from 20 seconds to many
minutes and a silent wait looks like a hang.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from devloop.common import logs
from devloop.common.errors import UsageError
from devloop.engine import crash, phases

log = logging.getLogger("devloop.health")

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

READY = "ready"
NOT_READY = "not_ready"
UNREACHABLE = "unreachable"
_EXIT_CODES = {READY: EXIT_READY, NOT_READY: EXIT_NOT_READY, UNREACHABLE: EXIT_UNREACHABLE}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class HealthReport:
    url: str
    status: str  # READY, NOT_READY or UNREACHABLE
    model: str | None = None
    checks: list[Check] = field(default_factory=list)
    waited_seconds: float = 0.0
    # The API server answered, but its engine is gone (EngineDeadError): waiting is pointless,
    # vLLM does not recover from it; the server exits and its log holds the cause.
    engine_dead: bool = False

    @property
    def ready(self) -> bool:
        return self.status == READY

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self.status]

    @property
    def waiting_for(self) -> str:
        """The first failing check, as the progress line shows it."""
        for check in self.checks:
            if not check.ok:
                return f"{check.name}: {check.detail}"
        return "nothing"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ready": self.ready}, ensure_ascii=False)


def normalize_url(url: str) -> str:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--url {url!r} is not an http(s) URL like http://127.0.0.1:8000")
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"


class _Probe:
    """The three checks against one server, sharing its report, headers and the model the
    second check finds (the third asks that model for a token)."""

    def __init__(self, base: str, api_key: str | None, model: str | None, timeout: float) -> None:
        self.base, self.model, self.timeout = base, model, timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.report = HealthReport(url=base, status=NOT_READY)

    def step(self, name: str, call: Callable[[], tuple[bool, str]]) -> bool:
        import requests

        started = time.monotonic()
        try:
            ok, detail = call()
        except requests.ConnectionError as error:
            self.report.status = UNREACHABLE
            ok, detail = False, f"cannot connect ({_short(error)})"
        except requests.Timeout:
            ok, detail = False, f"no answer within {self.timeout:g} s"
        except ValueError as error:  # a body that is not the JSON the API promises
            ok, detail = False, f"unexpected response ({error})"
        self.report.checks.append(Check(name, ok, detail, round(time.monotonic() - started, 3)))
        return ok

    def health(self) -> tuple[bool, str]:
        import requests

        response = requests.get(f"{self.base}/health", timeout=self.timeout)
        return response.status_code == 200, f"HTTP {response.status_code}"

    def models(self) -> tuple[bool, str]:
        import requests

        response = requests.get(f"{self.base}/v1/models", headers=self.headers,
                                timeout=self.timeout)
        if response.status_code == 401:
            return False, "HTTP 401: the server wants an API key (--api-key or $VLLM_API_KEY)"
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        served = [entry["id"] for entry in response.json().get("data", [])]
        if not served:
            return False, "no model listed"
        if self.model is None:
            self.model = served[0]
        elif self.model not in served:
            return False, f"model {self.model!r} not served (serving: {', '.join(served)})"
        self.report.model = self.model
        return True, f"serving {', '.join(served)}"

    def completion(self) -> tuple[bool, str]:
        import requests

        response = requests.post(
            f"{self.base}/v1/completions",
            headers=self.headers,
            json={"model": self.model, "prompt": "Hello", "max_tokens": 1, "temperature": 0},
            timeout=self.timeout,
        )
        if response.status_code >= 500 and any(
            marker in response.text for marker in crash.ENGINE_DEAD_MARKERS
        ):
            self.report.engine_dead = True
            return False, f"HTTP {response.status_code}: {ENGINE_DIED}"
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}: {response.text[:200]}"
        usage = response.json().get("usage") or {}
        return True, f"{usage.get('completion_tokens', '?')} token generated"


def check(
    url: str, api_key: str | None = None, model: str | None = None, timeout: float = 10.0
) -> HealthReport:
    """Run the three checks once; stop at the first that fails."""
    probe = _Probe(normalize_url(url), api_key, model, timeout)
    if (probe.step("/health", probe.health) and probe.step("/v1/models", probe.models)
            and probe.step("one-token completion", probe.completion)):
        probe.report.status = READY
    return probe.report


ENGINE_DIED = (
    "the vLLM engine died (EngineDeadError): the server answers but cannot generate, and does "
    "not recover; the server's log has the cause (in a cluster: kubectl logs deploy/llm-engine "
    "--previous)"
)


def _short(error: Exception) -> str:
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    return text[:120]


class Progress:
    """One status line on stderr: rewritten in place on a terminal; in a log (Tilt, CI), a new
    line when the state changes and at least every `every` seconds while it does not. Off a
    terminal the lines are JSON log records (devloop.common.logs) unless DEVLOOP_LOG_FORMAT=text; the
    message keeps the readable text, the fields carry elapsed_s and waiting_for."""

    def __init__(self, stream=sys.stderr, every: float = 15.0) -> None:
        self.stream = stream
        self.every = every
        self.tty = stream.isatty()
        self.json = not self.tty and logs.resolve_format(stream) == logs.JSON
        self._last_text = ""
        self._last_time = 0.0

    def update(self, elapsed: float, what: str, waiting_for: str | None = None) -> None:
        """Show `what` (the line's text); `waiting_for` (the failing check) goes in the JSON
        record's field of that name, `what` when not given."""
        text = f"[{elapsed:5.0f} s] {what}"
        if self.tty:
            self.stream.write("\r\033[K" + text[:150])
            self.stream.flush()
            return
        now = time.monotonic()
        if what != self._last_text or now - self._last_time >= self.every:
            self._line(text, logging.INFO, elapsed_s=round(elapsed, 1),
                       waiting_for=waiting_for or what)
            self._last_text, self._last_time = what, now

    def done(self, text: str, ok: bool = True) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + "\n")
            self.stream.flush()
            return
        self._line(text, logging.INFO if ok else logging.WARNING)

    def _line(self, text: str, level: int, **fields: object) -> None:
        if self.json:
            record = log.makeRecord(log.name, level, __file__, 0, text, (), None, extra=fields)
            self.stream.write(logs.JsonFormatter().format(record) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def progress_text(report: HealthReport, starting: str | None = None) -> str:
    """What the progress line says while not ready. Before the server listens, "connection
    refused" is what every vLLM start looks like (its port opens last), so it is said as such,
    with `starting` (what the caller knows of the start: the process, the phase from its log)
    when there is any."""
    if report.status == UNREACHABLE:
        if starting:
            return f"starting: {starting}; the API port opens when the model is loaded"
        detail = next((check.detail for check in report.checks if not check.ok), "")
        reason = detail.removeprefix("cannot connect (").removesuffix(")") or detail
        return (f"nothing answers at {report.url} yet ({reason}): a server still loading its "
                "model looks like this")
    return f"waiting for {report.waiting_for}"


def wait_until_ready(
    url: str,
    timeout: float,
    api_key: str | None = None,
    model: str | None = None,
    interval: float = 1.0,
    progress: Progress | None = None,
    give_up: Callable[[], str | None] | None = None,
    starting: Callable[[], str | None] | None = None,
) -> HealthReport:
    """Poll `check` until ready or `timeout` seconds. Stops early when the engine died, or when
    `give_up` returns a reason (the local server process exited, say). `starting` says what is
    known of a server that does not listen yet (progress_text)."""
    started = time.monotonic()
    while True:
        report = check(url, api_key=api_key, model=model, timeout=min(10.0, max(timeout, 1.0)))
        elapsed = time.monotonic() - started
        report.waited_seconds = round(elapsed, 1)
        if report.ready:
            if progress:
                progress.done(f"[{elapsed:5.0f} s] ready: {url} serves {report.model}")
            return report
        reason = give_up() if give_up else None
        if reason or report.engine_dead or elapsed >= timeout:
            if progress:
                why = reason or (
                    "giving up" if report.engine_dead else f"not ready after {timeout:g} s"
                )
                progress.done(f"[{elapsed:5.0f} s] {why}; last: {report.waiting_for}", ok=False)
            return report
        if progress:
            progress.update(elapsed, progress_text(report, starting() if starting else None),
                            report.waiting_for)
        time.sleep(min(interval, max(0.0, timeout - elapsed)))


EPILOG = """\
exit codes:
  0  ready: /health, /v1/models and a one-token completion all answered
  1  not ready: the server answered but a check failed (with --wait: still failing at --timeout,
     or at once when the engine died: EngineDeadError)
  2  bad usage: invalid arguments
  3  unreachable: nothing answers at --url (with --wait: still nothing at --timeout)
"""


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check that a vLLM server is up and generating",
        description="Check /health, /v1/models and a one-token completion against --url.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="server base URL (default: http://127.0.0.1:8000)")
    parser.add_argument("--wait", action="store_true",
                        help="poll until ready, with a progress line on stderr")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="with --wait: give up after this many seconds (default: 600); "
                        "without: per-request timeout (default then: 10)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="with --wait: seconds between polls (default: 2)")
    parser.add_argument("--model", help="model for the completion (default: the first listed)")
    parser.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY") or None,
                        help="bearer token, if the server requires one (default: $VLLM_API_KEY)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object on stdout")
    parser.add_argument("--log", type=Path, metavar="FILE",
                        help="with --wait: the server's log (devloop serve's, or `kubectl logs "
                        "-f deploy/llm-engine -c vllm > FILE`), to show the start-up phase "
                        "while the port is still closed")
    parser.set_defaults(handler=run)


def _log_phase(path: Path) -> Callable[[], str | None]:
    """The start-up phase from a log file, or what is missing (the file, a phase line)."""
    def describe() -> str:
        if not path.exists():
            return f"no log at {path} yet"
        return phases.phase_of_file(path) or f"nothing in {path} says a phase yet"
    return describe


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0 or args.interval <= 0:
        raise UsageError("--timeout and --interval must be positive")
    logs.configure_logging()
    url = normalize_url(args.url)
    if args.log is not None and not args.wait:
        raise UsageError("--log is read while waiting: pass --wait with it")
    if args.wait:
        report = wait_until_ready(
            url, args.timeout, api_key=args.api_key, model=args.model,
            interval=args.interval, progress=Progress(),
            starting=_log_phase(args.log) if args.log is not None else None,
        )
    else:
        report = check(url, api_key=args.api_key, model=args.model, timeout=min(args.timeout, 10))
    if args.json:
        print(report.to_json())
    elif not args.wait or not report.ready:
        for item in report.checks:
            print(f"{'ok  ' if item.ok else 'FAIL'}  {item.name:<22} {item.detail}")
        print(f"{report.status}: {url}")
    return report.exit_code
