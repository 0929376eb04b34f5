"""`devloop entrypoint --prepare`: compute the warm-start entry once, before a serving pod needs it.

The engine Deployment's init container runs it with the serving container's settings. When the
model-cache volume already holds a complete entry written by a launch with the same launch key
(devloop.engine.warmcache.launch_key: the vLLM arguments, versions, CPU, kernel environment and
model files), it exits 0 in about a second. Otherwise it runs the vLLM server the serving
container would run, which loads cold and writes the entry (devloop.engine.warmloader), waits
until it answers, stops it and checks that the entry is there. An init container has no
startup probe, so this cold start of 20 minutes is never killed half-way, and the serving
container's startup probe only has to cover a warm start.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from devloop.engine import health, serve, warmcache

log = logging.getLogger("devloop.warmprepare")

PREPARE_TIMEOUT = 4 * 3600.0  # a cold load of an 8B AWQ model on a slow, busy node, with headroom


def prepare(argv: list[str], env: Mapping[str, str], port: int) -> int:
    """0 when the entry exists (found, or computed now), 1 when vLLM failed to produce it."""
    root = Path(env[warmcache.DIR_ENV])
    launch = env[warmcache.LAUNCH_ENV]
    if entry := warmcache.prepared_entry(root, launch):
        log.info("warm-start entry ready: %s", entry, extra={"entry": str(entry)})
        return 0
    log.info("no warm-start entry for this launch in %s: starting vLLM once to compute it",
             root, extra={"root": str(root)})
    started = time.monotonic()
    process = subprocess.Popen(argv, env=dict(env), stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        report = health.wait_until_ready(
            f"http://127.0.0.1:{port}", PREPARE_TIMEOUT, api_key=env.get("VLLM_API_KEY"),
            interval=5.0,
            give_up=lambda: None if process.poll() is None else f"vLLM exited ({process.returncode})")
    finally:
        serve.stop_server(process)
    seconds = round(time.monotonic() - started)
    if not report.ready:
        log.error("vLLM did not start (%s) after %d s: no warm-start entry", report.waiting_for,
                  seconds)
        return 1
    entry = warmcache.prepared_entry(root, launch)
    if entry is None:
        log.error("vLLM started in %d s but wrote no warm-start entry under %s (its log says "
                  "why: 'warm-start entry not written')", seconds, root)
        return 1
    log.info("warm-start entry computed in %d s: %s", seconds, entry,
             extra={"entry": str(entry), "seconds": seconds})
    return 0
