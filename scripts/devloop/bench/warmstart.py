"""Model-cache directories of benchmark servers, for cold and warm starts side by side.

A candidate of devloop.bench.plans with `cache` set gets its own model-cache directory (the
pod's /models: vLLM's compile cache and the warm-start entries, docs/warm-start.md) under the
run's workdir, kept from one start to the next; with `cold` it is emptied first, so that start
computes everything, as a pod's first start on a new volume does. A cold and a warm candidate
naming the same directory then measure the first start and the next one: the plan lists the
cold one first, so the warm one always finds what it wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from devloop.bench import plans

CACHES_SUBDIR = "caches"


def cache_dir(candidate: plans.Candidate, workdir: Path) -> Path:
    """The directory `candidate`'s server uses as /models, emptied first for a cold start."""
    if not candidate.cache:
        return workdir
    directory = workdir / CACHES_SUBDIR / candidate.cache
    if candidate.cold:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory
