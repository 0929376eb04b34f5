"""What this process may use: CPUs (affinity and cgroup quota) and memory (cgroup limit).

A container sees every core of its node in /proc/cpuinfo, but the kubelet enforces the pod's CPU
limit as a CFS quota (cgroup `cpu.max`) and its memory limit as `memory.max`. Sizing vLLM from
/proc would start more OpenMP threads than the quota lets run, or a KV cache the OOM killer
ends. cgroup v2 is read first (every current distribution), v1 as the fallback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a huge page-aligned number rather than "max".
_V1_UNLIMITED = 1 << 60


def available_cpus() -> list[int]:
    """The CPU ids this process may run on, ascending (cpuset / taskset / sched_setaffinity)."""
    return sorted(os.sched_getaffinity(0))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU limit in cores (quota / period), or None when the cgroup sets none."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    quota_v1 = _read(root / "cpu" / "cpu.cfs_quota_us")
    period_v1 = _read(root / "cpu" / "cpu.cfs_period_us")
    if quota_v1 is None or period_v1 is None or int(quota_v1) <= 0:
        return None
    return int(quota_v1) / int(period_v1)


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit in bytes, or None when the cgroup sets none."""
    v2 = _read(root / "memory.max")
    if v2 is not None:
        return None if v2 == "max" else int(v2)
    v1 = _read(root / "memory" / "memory.limit_in_bytes")
    if v1 is None or int(v1) >= _V1_UNLIMITED:
        return None
    return int(v1)


def physical_memory() -> int:
    """Total RAM in bytes: the ceiling when no cgroup limit is set."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def usable_cpu_count(cpus: list[int], cpu_limit: float | None) -> int:
    """Threads worth starting: the CPUs we may run on, capped by the quota. A fractional quota
    rounds down (1.5 cores cannot keep 2 busy threads fed), but never below one thread."""
    if cpu_limit is None:
        return len(cpus)
    return max(1, min(len(cpus), math.floor(cpu_limit)))


def format_cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5": the list syntax VLLM_CPU_OMP_THREADS_BIND and taskset read."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in ordered + [None]:
        if start is not None and (cpu is None or cpu != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if cpu is not None and start is None:
            start = cpu
        prev = cpu
    return ",".join(parts)
