"""Memory of a whole server: the PSS of every process in its session, sampled while it runs.

vLLM is several processes (API server, engine core, one worker per rank) that share pages: the
weights mapped from the page cache, tensors in /dev/shm. Adding their RSS counts shared pages
once per process; PSS (proportional set size, from /proc/PID/smaps_rollup) splits each shared
page among its sharers, so the sum over the processes is what they occupy together, the number
to hold against a container's memory limit. Linux only (it reads /proc).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

PROC = Path("/proc")


def session_pids(session_id: int, proc: Path = PROC) -> list[int]:
    """Every process whose session is `session_id` (a server started with start_new_session
    keeps all its children in its own session, whatever they exec)."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session_id:  # state ppid pgrp session ...
            pids.append(int(entry.name))
    return sorted(pids)


def pss_breakdown(pid: int, proc: Path = PROC) -> dict[str, int]:
    """Pss and, where the kernel splits it (5.x+), Pss_Anon, Pss_File and Pss_Shmem, in bytes;
    empty when the process has exited. File pages (a memory-mapped checkpoint) are reclaimable
    under a cgroup limit; anonymous and shmem pages are not."""
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"):
            values[key] = int(rest.split()[0]) * 1024  # the kernel reports kB
    return values


def pss_bytes(pid: int, proc: Path = PROC) -> int:
    """The process's proportional set size in bytes; 0 when it has exited."""
    return pss_breakdown(pid, proc).get("Pss", 0)


@dataclass
class MemorySample:
    seconds: float  # since the sampler started
    total_pss: int
    processes: int
    unreclaimable_pss: int = 0  # Pss_Anon + Pss_Shmem: what a cgroup limit cannot take back


@dataclass
class PeakMemory:
    """The largest total PSS seen, when, and over how many processes."""

    peak_pss: int = 0
    peak_at_s: float = 0.0
    peak_processes: int = 0
    peak_unreclaimable_pss: int = 0
    samples: int = 0
    history: list[MemorySample] = field(default_factory=list)


class SessionMemorySampler:
    """Samples the total PSS of a session every `interval` seconds in a thread until stopped."""

    def __init__(self, session_id: int, interval: float = 0.5, keep_history: bool = False):
        self.session_id = session_id
        self.interval = interval
        self.keep_history = keep_history
        self.result = PeakMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def sample(self) -> MemorySample:
        pids = session_pids(self.session_id)
        parts = [pss_breakdown(pid) for pid in pids]
        total = sum(p.get("Pss", 0) for p in parts)
        pinned = sum(p.get("Pss_Anon", 0) + p.get("Pss_Shmem", 0) for p in parts)
        return MemorySample(time.monotonic() - self._start, total, len(pids), pinned)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record(self.sample())
            self._stop.wait(self.interval)

    def _record(self, sample: MemorySample) -> None:
        result = self.result
        result.samples += 1
        if self.keep_history:
            result.history.append(sample)
        result.peak_unreclaimable_pss = max(result.peak_unreclaimable_pss,
                                            sample.unreclaimable_pss)
        if sample.total_pss > result.peak_pss:
            result.peak_pss = sample.total_pss
            result.peak_at_s = sample.seconds
            result.peak_processes = sample.processes

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def available() -> bool:
    """Whether this kernel exposes what the sampler reads (Linux 4.14+)."""
    return (PROC / str(os.getpid()) / "smaps_rollup").is_file()
