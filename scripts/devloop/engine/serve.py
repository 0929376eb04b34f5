"""`devloop serve`: run an overlay's engine on this machine, no cluster needed.

It renders the overlay with the real kustomize, takes the engine ConfigMap's data as the
environment, and runs the same `devloop entrypoint` the pod runs, so what works here works in
the pod. Only what must differ on a laptop changes: paths on the pod's model volume (/models/...)
move under a local cache directory, and the server listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from devloop.common import logs
from devloop.common.cachedirs import user_cache_dir
from devloop.common.errors import DevloopError, UsageError
from devloop.common.ports import check_port
from devloop.engine import crash, health, int4kernel, phases
from devloop.engine import settings as engine_settings
from devloop.engine.llamacpp import local as llamacpp_local
from devloop.manifests import kustomize

log = logging.getLogger("devloop.serve")

ENGINE_CONFIGMAP = "llm-engine-config"
POD_MODEL_VOLUME = "/models"
CACHE_DIR_ENV = "DEVLOOP_CACHE_DIR"
# Ctrl-C: how long vLLM may finish its requests in flight before it is killed.
STOP_GRACE_SECONDS = 30.0


ENGINES = ("vllm", "llamacpp")


def default_cache_dir() -> Path:
    """Where the pod's /models lives locally: $DEVLOOP_CACHE_DIR or ~/.cache/vllm-devloop."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    return user_cache_dir() / "vllm-devloop"


def overlay_engine_settings(overlay: str) -> dict[str, str]:
    """The engine ConfigMap's data as the overlay renders it (base env + overlay literals)."""
    objects = kustomize.load_objects(kustomize.render_overlay(overlay))
    configmap = kustomize.find_object(objects, "ConfigMap", ENGINE_CONFIGMAP)
    return {key: str(value) for key, value in (configmap.get("data") or {}).items()}


def local_environment(
    overlay: str,
    model: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    overrides: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
) -> dict[str, str]:
    """The engine settings for a local run: the overlay's, with pod-only paths remapped.

    `model` replaces MODEL_NAME and clears SERVED_MODEL_NAME (an overlay's served name belongs
    to its own model); `overrides` (KEY=VALUE from --set) apply last and win.
    """
    settings = overlay_engine_settings(overlay)
    if model is not None:
        settings["MODEL_NAME"] = model
        settings["SERVED_MODEL_NAME"] = ""
    if port is not None:
        settings["PORT"] = str(port)
    settings["HOST"] = host
    settings.update(overrides or {})
    local_cache = cache_dir or default_cache_dir()
    for key, value in settings.items():
        if value == POD_MODEL_VOLUME or value.startswith(POD_MODEL_VOLUME + "/"):
            settings[key] = str(local_cache / value[len(POD_MODEL_VOLUME):].lstrip("/"))
    return settings


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


# Looked up here, in the parent: a preexec_fn runs between fork and exec, where a process with
# threads (bench-compare samples memory in one) may safely make a system call but not import
# or dlopen.
_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def stop_with_parent() -> None:
    """Run in the child before exec: on Linux, have the kernel SIGTERM it when the parent dies,
    even by SIGKILL, so no vLLM outlives `devloop serve` holding the port. The setting survives
    the entrypoint's exec into vLLM. Elsewhere Ctrl-C and SIGTERM still stop it (stop_server)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_server(settings: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start `devloop entrypoint` with `settings` on top of this environment, output to
    `log_path`, in its own session so that stopping it stops vLLM's engine processes too."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "devloop", "entrypoint"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=stop_with_parent,  # noqa: PLW1509 - one system call
        )


def stop_server(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the server's process group (vLLM shuts its engine down), SIGKILL after `grace`.
    Returns once every process of the group is gone, not only the one started: vLLM's engine
    core and workers can outlive its API server for seconds, still holding their memory and
    cores, and a server started again at once (a restart, the next test) would share them."""
    deadline = time.monotonic() + grace
    if process.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if not _signal_group(process.pid, sig):
                return
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    elif _group_alive(process.pid):  # the leader died first: its engine processes get told too
        _signal_group(process.pid, signal.SIGTERM)
    _wait_group_gone(process.pid, deadline)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # macOS: a group whose processes are all zombies
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a live process of the group is left. Zombies do not count: an orphan's zombie
    waits for PID 1 to reap it, and in a container whose PID 1 never does, it would wait
    forever. Linux reads /proc; elsewhere a signal 0 tells (zombies included)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return _signal_group(pgid, 0)
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, deadline: float) -> None:
    """Wait for the rest of the group (the leader is reaped), SIGKILL what is left at
    `deadline`, then wait for that too (a few seconds at most)."""
    killed = False
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            if killed:
                return  # unkillable (uninterruptible I/O): nothing more to do from here
            _signal_group(pgid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 10.0
        time.sleep(0.1)


def read_log(log_path: Path) -> str:
    try:
        return log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def log_tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(read_log(log_path).splitlines()[-lines:]) or "(no log)"


def explain_failure(
    process: subprocess.Popen, log_path: Path, report: health.HealthReport | None = None
) -> str:
    """Why the server is not serving: the engine's cause of death from the log and the exit
    code when it died (never just "exited with code 0": vLLM's API server exits 0 after its
    engine crashed), else what the health check last waited for, with the log's tail."""
    code = process.poll()
    if code is None and report is not None and report.engine_dead:
        # vLLM's API server shuts itself down right after its engine died: let it finish.
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    diagnosis = crash.diagnose(read_log(log_path), code)
    if diagnosis is not None:
        return f"{diagnosis}\nfull log: {log_path}"
    waiting = f" (last: {report.waiting_for})" if report is not None else ""
    return f"the server is not ready{waiting}; last lines of {log_path}:\n{log_tail(log_path)}"


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve an overlay's engine locally (no cluster), the same entrypoint as the pod",
        description="Render OVERLAY, take its engine ConfigMap as the environment, and run "
        "`devloop entrypoint` here: the vLLM server the pod would run, on 127.0.0.1. Paths on "
        "the pod's /models volume move to the local cache directory. Prints the URL once "
        "ready; Ctrl-C stops the server.",
    )
    parser.add_argument("--overlay", default="dev", help="overlay name (default: dev)")
    parser.add_argument("--engine", choices=ENGINES,
                        help="which engine of an overlay that has both (multi): vllm or llamacpp; "
                        "one serve runs one engine")
    parser.add_argument("--model", help="replace MODEL_NAME, e.g. `tiny` for the offline model")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one engine setting (repeatable)")
    parser.add_argument("--cache-dir", type=Path,
                        help=f"local stand-in for the pod's /models (default: ${CACHE_DIR_ENV} "
                        "or ~/.cache/vllm-devloop)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for ready before giving up (default: 900)")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="stop the server and exit 0 once it is ready (a smoke test, for CI)")
    parser.set_defaults(handler=run)


def _parse_pairs(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set MAX_NUM_SEQS=2")
        overrides[key] = value
    return overrides


def _parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = _parse_pairs(items)
    unknown = engine_settings.unknown_settings(overrides)
    if unknown:
        raise UsageError(
            f"--set: unknown engine setting {', '.join(unknown)}; {engine_settings.SETTINGS_HELP}"
        )
    return overrides


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def check_settings(settings: Mapping[str, str]) -> None:
    """Raise the entrypoint's own ConfigError (exit 2) for any setting it would reject, here,
    before the port check and the server start: a bad value fails at once, not a second after
    "serving ..." with the server's exit code."""
    environment = {**os.environ, **settings}  # what the entrypoint will read
    engine_settings.load_config(environment, engine_settings.Limits.of_this_process())
    refusal = int4kernel.refusal(environment.get("MODEL_NAME", ""))
    if refusal is not None:  # the entrypoint refuses it too; here it is before "serving ..."
        raise engine_settings.ConfigError(f"invalid engine settings for this machine:\n  - {refusal}")


def _starting(process: subprocess.Popen, log_path: Path) -> Callable[[], str]:
    """What the progress line says before the port opens: the process is alive, and the phase
    its log names (devloop.engine.phases)."""
    def describe() -> str:
        phase = phases.phase_of_file(log_path) or "no phase logged yet"
        return f"server process {process.pid} running, {phase}"
    return describe


def _chosen_llamacpp_settings(overlay: str, engine: str | None) -> dict[str, str] | None:
    """The llama.cpp settings when serve is to run llama-server, None for vLLM. An overlay with
    both engines (multi) needs --engine: serve runs one server, and guessing would leave the
    user wondering where the other model went."""
    llama = llamacpp_local.overlay_settings(overlay)
    has_vllm = _has_vllm_engine(overlay)
    if llama is not None and has_vllm and engine is None:
        raise UsageError(
            f"overlay {overlay} has two engines, vLLM and llama.cpp: serve one with "
            "--engine vllm or --engine llamacpp (each on its own --port), and put "
            "`devloop gateway --upstream URL --upstream URL` in front (docs/routing.md)"
        )
    if engine == "llamacpp" and llama is None:
        raise UsageError(f"--engine llamacpp: overlay {overlay} has no llama.cpp engine")
    if engine == "vllm" and not has_vllm:
        raise UsageError(f"--engine vllm: overlay {overlay} has no vLLM engine")
    return None if engine == "vllm" else llama


def _has_vllm_engine(overlay: str) -> bool:
    objects = kustomize.load_objects(kustomize.render_overlay(overlay))
    return any(obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(ENGINE_CONFIGMAP)
               for obj in objects)


def run(args: argparse.Namespace) -> int:
    logs.configure_logging()
    # Every argument and setting first (overlay name, --set keys and values, then the port):
    # each mistake is named as itself, with exit code 2, before anything starts.
    # An overlay whose engine is llama.cpp (the gguf overlay) runs llama-server instead, with
    # its own settings (LLAMA_ARG_*, checked by devloop.engine.llamacpp.settings).
    llama = _chosen_llamacpp_settings(args.overlay, args.engine)
    overrides = _parse_pairs(args.overrides) if llama is not None else _parse_overrides(args.overrides)
    for key, flag in (("PORT", "--port"), ("HOST", "--host")):
        if key in overrides:
            # serve checks, polls and prints the address of its flags: a --set would move the
            # server away from where serve looks for it.
            raise UsageError(f"--set {key}: pass {flag} instead (serve listens where {flag} says)")
    cache_dir = args.cache_dir or default_cache_dir()
    if llama is not None:
        settings = llamacpp_local.local_environment(
            llama, cache_dir, model=args.model, port=args.port, host=args.host,
            overrides=overrides,
        )
        model_name = settings.get("LLAMA_ARG_MODEL") or settings.get("LLAMA_ARG_HF_REPO")
    else:
        settings = local_environment(
            args.overlay, model=args.model, port=args.port, host=args.host,
            overrides=overrides, cache_dir=cache_dir,
        )
        model_name = settings.get("MODEL_NAME")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: give a port from 1 to 65535")
    if llama is None:
        check_settings(settings)
    check_port(args.host, args.port, "pass --host with an address of this machine (default "
               "127.0.0.1)", "stop it or pass --port")
    log_path = cache_dir / "logs" / f"serve-{args.overlay}-{args.port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    url = f"http://{args.host}:{args.port}"
    log.info("serving overlay %s (model %s) at %s", args.overlay, model_name, url)
    log.info("server log: %s", log_path)

    if llama is not None:
        process = llamacpp_local.start_server(settings, log_path, stop_with_parent)
    else:
        process = start_server(settings, log_path)
    # A SIGTERM to `devloop serve` (a supervisor, CI) must stop vLLM too, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        def exited() -> str | None:
            code = process.poll()
            return None if code is None else f"the server {crash.describe_exit(code)}"

        report = health.wait_until_ready(
            url, args.timeout, api_key=settings.get("VLLM_API_KEY") or None,
            progress=health.Progress(), give_up=exited, starting=_starting(process, log_path),
        )
        if not report.ready:
            raise DevloopError(
                f"the server did not become ready: {explain_failure(process, log_path, report)}"
            )
        log.info(f"{url}/v1 is ready: model {report.model!r}\n"
                 f"  try:  curl {url}/v1/completions -H 'Content-Type: application/json' "
                 f"-d '{{\"model\": \"{report.model}\", \"prompt\": \"Hello\", \"max_tokens\": 8}}'\n"
                 f"  check: devloop health --url {url}\n"
                 f"  logs:  tail -f {log_path}")
        if args.exit_when_ready:
            return 0
        log.info("Ctrl-C stops the server.")
        process.wait()
        raise DevloopError(f"the server stopped: {explain_failure(process, log_path)}")
    except KeyboardInterrupt:
        log.info("stopping the server: vLLM finishes the requests in flight (killed after "
                 "%g s), then its engine processes exit", STOP_GRACE_SECONDS)
        stop_server(process, STOP_GRACE_SECONDS)
        log.info("server stopped (exit code %s)", process.returncode)
        return 0
    finally:
        stop_server(process, STOP_GRACE_SECONDS)
        signal.signal(signal.SIGTERM, previous)
