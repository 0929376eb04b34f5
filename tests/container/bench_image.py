"""Image build and start-up times with podman, measured side by side in one run.

    .venv/bin/python -m tests.container.bench_image --repeats 3 --json image-bench.json

Prints JSON (with --json, to a file) and a table of medians: a cold build of image/Dockerfile on
the base image (`--no-cache`: every layer of this Dockerfile again, the dependency step
downloading), a rebuild with no change, the same with a new `--label` and with a repeated one
(Tilt's case), a code-only change, the image's size, and the time from `podman run` of the engine
container (the dev overlay's pod spec, tiny model) to its first served completion. Every rebuild
runs with `--network=none`. Uses the same helpers as tests/container; needs podman and the base
image (the container tests make it: `pytest tests/container`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from devloop.manifests import kustomize

from . import local_images, podman, stack
from .context import DOCKERFILE, ROOT, copy_context, edit_code
from .hostpip import build_volumes

TAG = "localhost/vllm-devloop:bench"


def _build(context: Path, *extra: str) -> float:
    result = podman.run(["build", *extra, "-f", str(context / DOCKERFILE.relative_to(ROOT)),
                         "-t", TAG, str(context)], timeout=3600)
    return result.seconds


def _timed(times: int, measure) -> list[float]:
    return [round(measure(), 2) for _ in range(times)]


def _engine_start(run_id: str) -> float:
    objects = kustomize.load_objects(kustomize.render_overlay(stack.OVERLAY))
    try:
        network = stack.create_network(run_id)
        _, _, _, seconds = stack.start_engine(objects, TAG, run_id, network)
        return seconds
    finally:
        podman.remove_run_objects(run_id)


def measure(repeats: int, cold_repeats: int, run_repeats: int) -> dict:
    offline = "--network=none"
    results: dict[str, list[float]] = {}
    results["cold build (--no-cache)"] = _timed(
        cold_repeats, lambda: _build(ROOT, "--no-cache", *build_volumes()))
    results["no change"] = _timed(repeats, lambda: _build(ROOT, offline))
    results["no change, new --label"] = _timed(
        repeats, lambda: _build(ROOT, offline, f"--label=x={uuid.uuid4().hex[:8]}"))
    results["no change, same --label"] = _timed(repeats, lambda: _build(ROOT, offline, "--label=x=y"))
    with tempfile.TemporaryDirectory(prefix="devloop-bench-context-") as workdir:
        context = copy_context(Path(workdir))

        def code_change() -> float:
            edit_code(context, f"BENCH_{uuid.uuid4().hex[:8].upper()}")
            return _build(context, offline)

        results["code-only change"] = _timed(repeats, code_change)
    _build(ROOT, offline)  # the tag back on the repository's own code
    results["podman run -> served completion"] = _timed(
        run_repeats, lambda: _engine_start(f"devloop-bench-{uuid.uuid4().hex[:8]}"))
    base_ref, _ = local_images.base_refs()
    size = int(podman.inspect(TAG)["Size"])
    base_size = int(podman.inspect(base_ref)["Size"])
    return {
        "seconds": results,
        "median_seconds": {name: statistics.median(values) for name, values in results.items()},
        "image_bytes": size,
        "base_image_bytes": base_size,
        "added_bytes": size - base_size,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average": os.getloadavg(),
                    "podman": podman.run(["version", "--format", "{{.Client.Version}}"])
                    .stdout.strip()},
    }


def table(report: dict) -> str:
    lines = ["| measurement | median s | runs (s) |", "| --- | --- | --- |"]
    for name, values in report["seconds"].items():
        lines.append(f"| {name} | {report['median_seconds'][name]:.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in values)} |")
    lines.append(f"| image size | {report['image_bytes'] / 1e9:.2f} GB "
                 f"(+{report['added_bytes'] / 1e6:.1f} MB over the base) | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each rebuild (default 3)")
    parser.add_argument("--cold-repeats", type=int, default=1, help="cold builds (default 1)")
    parser.add_argument("--run-repeats", type=int, default=1,
                        help="engine starts to a served completion (default 1)")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    # A stopped benchmark still removes its engine container (the `finally` in _engine_start).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if podman.podman_path() is None:
        print("podman is not installed", file=sys.stderr)
        return 2
    started = time.monotonic()
    report = measure(args.repeats, args.cold_repeats, args.run_repeats)
    report["total_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
