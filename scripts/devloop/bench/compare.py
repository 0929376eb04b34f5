"""`devloop bench-compare`: several servers, benchmarked alternately in one run, summarized as
medians and ratios against a baseline, next to the memory-bandwidth ceiling of each model.

On a shared, noisy machine a number is only worth comparing with one measured beside it. So a
plan's servers (devloop.bench.plans) are all started first (or, for big models, one at a time),
then driven in rounds with `devloop bench`'s own client, the order reversed every round so no
candidate always runs first; each round records the load average. The report gives per
candidate the load time, the peak PSS of all its processes, and per concurrency the medians
over rounds of output tok/s, TTFT and TPOT (p50, p99), with ratios to the baseline, and at
concurrency 1 the fraction of the batch-1 decode ceiling (read bandwidth / weight bytes read per
token, measured by devloop.bench.membw in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from devloop.bench import launcher, membw, plans, procmem
from devloop.bench.client import BenchConfig
from devloop.bench.command import parse_int_list
from devloop.bench.driver import run_benchmark
from devloop.common.errors import DevloopError, UsageError
from devloop.engine import cpus

GIB = 1 << 30
METRICS = (  # (report key, level field, percentile or None)
    ("output_tok_s", "output_throughput", None),
    ("ttft_p50_ms", "ttft_ms", "p50"), ("ttft_p99_ms", "ttft_ms", "p99"),
    ("tpot_p50_ms", "tpot_ms", "p50"), ("tpot_p99_ms", "tpot_ms", "p99"),
)


def machine() -> dict[str, Any]:
    """Which CPU the numbers are from (design.md: machines of one kind differ a lot)."""
    model = platform.processor()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model,
        "usable_cpus": cpus.usable_cpu_count(cpus.available_cpus(), cpus.cgroup_cpu_limit()),
        "amx": sorted(f for f in flags if re.fullmatch(r"amx_[a-z0-9]+", f)),
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gib": round(cpus.physical_memory() / GIB, 1),
    }


def bandwidth(threads: int) -> dict[str, float]:
    """Best read bandwidth (GB/s) from one thread and from every usable core."""
    return {
        str(n): membw.measure("read", 1024, n, 5).gb_per_s for n in sorted({1, threads})
    }


def _metric(level: dict[str, Any], field: str, percentile: str | None) -> float | None:
    value = level[field]
    return value if percentile is None else value[percentile]


def summarize(plan: plans.Plan, rounds: list[dict[str, Any]], servers: dict[str, dict],
              read_gb_s: float) -> dict[str, Any]:
    """Medians over rounds per candidate and concurrency, ratios to the baseline, and the
    fraction of the decode ceiling reached at concurrency 1."""
    medians: dict[str, dict[str, dict[str, float | None]]] = {}
    for candidate in plan.candidates:
        if candidate.name not in servers:
            continue
        per_level: dict[str, dict[str, float | None]] = {}
        runs = [r["results"][candidate.name] for r in rounds if candidate.name in r["results"]]
        for level_index, level in enumerate(runs[0]["levels"] if runs else []):
            values = {}
            for key, field, percentile in METRICS:
                samples = [_metric(run["levels"][level_index], field, percentile) for run in runs]
                samples = [s for s in samples if s is not None]
                values[key] = statistics.median(samples) if samples else None
            per_level[str(level["concurrency"])] = values
        medians[candidate.name] = per_level
    base = medians.get(plan.baseline, {})
    summary: dict[str, Any] = {}
    for name, per_level in medians.items():
        info = servers[name]
        ceiling = read_gb_s * 1e9 / info["bytes_read_per_token"]
        entry = {"levels": per_level, "decode_ceiling_tok_s": ceiling, "ratio_to_baseline": {}}
        for conc, values in per_level.items():
            reference = base.get(conc, {}).get("output_tok_s")
            if reference and values["output_tok_s"] is not None:
                entry["ratio_to_baseline"][conc] = values["output_tok_s"] / reference
        if per_level.get("1", {}).get("output_tok_s"):
            entry["c1_fraction_of_ceiling"] = per_level["1"]["output_tok_s"] / ceiling
        summary[name] = entry
    return summary


def format_table(plan: plans.Plan, report: dict[str, Any]) -> str:
    """One row per candidate and concurrency: medians, ratio to the baseline, ceiling share."""
    header = ("candidate", "conc", "out tok/s", "x base", "TTFT p50", "TTFT p99", "TPOT p50",
              "TPOT p99", "of ceiling")
    rows = [header]
    for name, entry in report["summary"].items():
        for conc, v in entry["levels"].items():
            fraction = entry.get("c1_fraction_of_ceiling") if conc == "1" else None
            ratio = entry["ratio_to_baseline"].get(conc)
            rows.append((name, conc, *(f"{v[k]:.1f}" if v[k] is not None else "-" for k in (
                "output_tok_s",)), f"{ratio:.2f}" if ratio else "-",
                *(f"{v[k]:.0f}" if v[k] is not None else "-" for k in (
                    "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")),
                f"{fraction:.0%}" if fraction else ""))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"medians of {report['rounds']} rounds; latencies in ms; baseline "
                 f"{plan.baseline}; ceiling = {report['read_gb_s']:.1f} GB/s read / weight bytes "
                 "read per token")
    for name, info in report["servers"].items():
        limit = f" (limit {plan.memory_limit_gib:g} GiB)" if plan.memory_limit_gib else ""
        if "error" in info:
            lines.append(f"{name}: FAILED ({info['error']}) after {info['load_seconds']:.0f} s, "
                         f"peak PSS {info['peak_pss_gib']:.2f} GiB{limit}")
            continue
        lines.append(f"{name}: load {info['load_seconds']:.0f} s, peak PSS "
                     f"{info['peak_pss_gib']:.2f} GiB over {info['peak_processes']} processes "
                     f"({info['peak_anon_shmem_pss_gib']:.2f} GiB anonymous + shmem){limit}, "
                     f"{info['bytes_read_per_token'] / 1e9:.2f} GB read per token")
    return "\n".join(lines)


def _bench(server: launcher.RunningServer, args: argparse.Namespace) -> dict[str, Any]:
    config = BenchConfig(
        url=server.url, concurrency=list(args.concurrency), input_len=args.input_len,
        output_len=args.output_len, num_prompts=args.num_prompts, warmup=1, seed=args.seed,
        ignore_eos=True,  # vLLM and llama-server alike: exactly --output-len tokens each
    )
    return asyncio.run(run_benchmark(config, log=sys.stderr))


def _record_server(servers: dict[str, dict], server: launcher.RunningServer) -> None:
    info = servers.setdefault(server.candidate.name, {
        "kind": server.candidate.kind, "model": server.candidate.model.label(),
        "model_path": str(server.model), "description": server.candidate.description,
        "settings": server.candidate.settings, "load_seconds_each": [], "peak_pss_gib": 0.0,
        "peak_processes": 0, "bytes_read_per_token": membw.bytes_read_per_token(server.model),
        "log": str(server.log_path),
    })
    info["load_seconds_each"].append(round(server.load_seconds, 1))
    info["load_seconds"] = statistics.median(info["load_seconds_each"])
    peak = server.memory.result
    if peak.peak_pss / GIB > info["peak_pss_gib"]:
        info["peak_pss_gib"] = round(peak.peak_pss / GIB, 3)
        info["peak_processes"] = peak.peak_processes
        info["peak_pss_at_s"] = round(peak.peak_at_s, 1)
    info["peak_anon_shmem_pss_gib"] = max(info.get("peak_anon_shmem_pss_gib", 0.0),
                                          round(peak.peak_unreclaimable_pss / GIB, 3))


def _start(candidate: plans.Candidate, args: argparse.Namespace,
           servers: dict[str, dict]) -> launcher.RunningServer | None:
    """The running server, or None when it failed to start: the failure, its log and the memory
    it had reached go into the report, and the other candidates still run."""
    print(f"starting {candidate.name}", file=sys.stderr)
    try:
        return launcher.start(candidate, args.models_dir, args.workdir)
    except launcher.StartFailed as failure:
        print(f"devloop bench-compare: {failure}", file=sys.stderr)
        _record_server(servers, failure.server)
        servers[candidate.name]["error"] = str(failure).splitlines()[0]
        return None


def _round(index: int, order: tuple[plans.Candidate, ...], results: dict[str, Any]
           ) -> dict[str, Any]:
    return {"round": index + 1, "order": [c.name for c in order], "results": results}


def _write_partial(json_path: str | None, plan: plans.Plan, runs: list[dict[str, Any]],
                   servers: dict[str, dict]) -> None:
    """The report so far (`"partial": true`): what `summarize` needs, for a run stopped early."""
    if json_path:
        partial = {"partial": True, "plan": plan.name, "runs": runs, "servers": servers}
        Path(json_path).write_text(json.dumps(partial, indent=2) + "\n")


def run_plan(plan: plans.Plan, args: argparse.Namespace) -> dict[str, Any]:
    """Start, drive in alternating rounds, stop; the report as a JSON-ready dict. Long: it
    prints progress on stderr."""
    for candidate in plan.candidates:  # generation and conversion happen before any timing
        print(f"model for {candidate.name}: {candidate.model.label()}", file=sys.stderr)
        launcher.model_path(candidate.model, args.models_dir)
    threads = machine()["usable_cpus"]
    bandwidth_before = bandwidth(threads)
    running: dict[str, launcher.RunningServer] = {}
    servers: dict[str, dict] = {}
    runs: list[dict[str, Any]] = []
    try:
        if not plan.one_at_a_time:
            for candidate in plan.candidates:
                if server := _start(candidate, args, servers):
                    running[candidate.name] = server
        for index in range(args.rounds):
            order = plan.candidates if index % 2 == 0 else tuple(reversed(plan.candidates))
            results: dict[str, Any] = {}
            for candidate in order:
                if plan.one_at_a_time and (server := _start(candidate, args, servers)):
                    running[candidate.name] = server
                if candidate.name not in running:
                    continue
                server = running[candidate.name]
                load = os.getloadavg()
                print(f"round {index + 1}: {candidate.name} (load average {load[0]:.1f})",
                      file=sys.stderr)
                results[candidate.name] = {**_bench(server, args), "loadavg_1m": load[0],
                                           "loadavg_after_1m": os.getloadavg()[0]}
                if plan.one_at_a_time:
                    running.pop(candidate.name).stop()
                    _record_server(servers, server)
                # A long run stopped early keeps every candidate's turn it finished.
                _write_partial(args.json_path, plan, [*runs, _round(index, order, results)],
                               servers)
            runs.append(_round(index, order, results))
    finally:
        for server in running.values():
            server.stop()
            _record_server(servers, server)
    bandwidth_after = bandwidth(threads)
    read_gb_s = max(bandwidth_before[str(threads)], bandwidth_after[str(threads)])
    report: dict[str, Any] = {
        "tool": "devloop bench-compare", "plan": plan.name, "description": plan.description,
        "command": " ".join(["devloop", *sys.argv[1:]]), "machine": machine(),
        "rounds": args.rounds,
        "workload": {"input_len": args.input_len, "output_len": args.output_len,
                     "num_prompts": args.num_prompts, "concurrency": args.concurrency},
        "bandwidth_gb_s": {"before": bandwidth_before, "after": bandwidth_after},
        "read_gb_s": read_gb_s, "baseline": plan.baseline, "servers": servers,
        "memory_limit_gib": plan.memory_limit_gib, "runs": runs,
    }
    report["summary"] = summarize(plan, runs, servers, read_gb_s)
    return report


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-compare",
        help="benchmark several servers side by side in one run: medians, ratios, ceiling",
        description="Start every server of a plan (vLLM with an overlay's settings, vLLM's "
        "defaults, llama.cpp on GGUF files of the same random-weight model), drive them in "
        "alternating rounds with devloop bench's client, and print medians, ratios to the "
        "baseline, load time, peak PSS and the share of the memory-bandwidth decode ceiling. "
        f"Plans: {', '.join(f'{p.name} ({p.description})' for p in plans.PLANS.values())}.",
    )
    parser.add_argument("--plan", required=True, choices=sorted(plans.PLANS))
    parser.add_argument("--only", help="comma-separated candidate names of the plan to run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per candidate (default 3)")
    parser.add_argument("--concurrency", default="1,4,8", help="load levels (default 1,4,8)")
    parser.add_argument("--input-len", type=int, default=64, help="prompt tokens (default 64)")
    parser.add_argument("--output-len", type=int, default=64, help="output tokens (default 64)")
    parser.add_argument("--num-prompts", type=int, default=16, help="per level (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--models-dir", type=Path,
                        help="where generated models and GGUF files go (default: the model "
                        "generator's cache, $HF_HOME/devloop-models)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(os.path.expanduser("~/.cache/vllm-devloop/bench-compare")),
                        help="server logs and vLLM's compile cache (default: "
                        "~/.cache/vllm-devloop/bench-compare)")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="start each server only for its own turn, every round (less memory: "
                        "one server at a time; load times are then medians over rounds)")
    parser.add_argument("--json", dest="json_path", help="write the full report as JSON here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    plan = plans.plan_by_name(args.plan, only)
    if args.one_at_a_time:
        plan = dataclasses.replace(plan, one_at_a_time=True)
    args.concurrency = parse_int_list(args.concurrency, "--concurrency")
    if args.rounds < 1 or args.num_prompts < 1 or args.input_len < 1 or args.output_len < 1:
        raise UsageError("--rounds, --num-prompts, --input-len and --output-len must be 1 or more")
    if not procmem.available():
        raise DevloopError("bench-compare reads /proc/PID/smaps_rollup (Linux 4.14+) for memory")
    from devloop.engine import tinymodel

    args.models_dir = args.models_dir or tinymodel.default_cache_dir()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = run_plan(plan, args)
    report["wall_seconds"] = round(time.time() - started)
    print(format_table(plan, report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_path}", file=sys.stderr)
    return 0
