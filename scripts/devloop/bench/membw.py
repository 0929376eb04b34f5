"""`devloop membw`: this machine's memory bandwidth, and what it allows a CPU decoder.

Decoding one token at batch 1 reads every weight once, so tokens/s can be at most the memory
read bandwidth divided by the bytes of weights. This measures that bandwidth the simple way, a
large array read (a reduction) and a large array copy, from one thread and from every core
together (numpy releases the GIL in both, so threads share the memory bus for real), and with
--model or --weights-gb prints the decode ceiling for those weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from devloop.common.errors import DevloopError, UsageError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass
class BandwidthResult:
    kind: str  # "read": bytes read per second; "copy": bytes read plus bytes written per second
    threads: int
    gb_per_s: float  # 1 GB = 1e9 bytes, as memory bandwidth is quoted
    size_mib: int
    repeats: int


def _numpy():
    try:
        import numpy
    except ImportError:
        raise DevloopError("devloop membw needs numpy: .venv/bin/pip install numpy") from None
    return numpy


def measure(kind: str, size_mib: int, threads: int, repeats: int) -> BandwidthResult:
    """Best of `repeats` passes over `size_mib` MiB (far above any cache), split into one slice
    per thread. Best, not mean: the question is what the memory can do, and a pass that another
    process interrupted says nothing about that."""
    np = _numpy()
    if kind not in ("read", "copy"):
        raise UsageError(f"unknown bandwidth kind {kind!r}: read or copy")
    words = size_mib * (1 << 20) // 8
    src = np.ones(words, dtype=np.uint64)  # touch every page before timing
    dst = np.empty_like(src) if kind == "copy" else None
    if dst is not None:
        dst.fill(0)
    bounds = [(words * i // threads, words * (i + 1) // threads) for i in range(threads)]

    def work(bound: tuple[int, int]) -> None:
        lo, hi = bound
        if dst is None:
            # An integer OR-reduction is a few SIMD ops per cache line: the loads are the limit.
            np.bitwise_or.reduce(src[lo:hi])
        else:
            np.copyto(dst[lo:hi], src[lo:hi])

    moved = src.nbytes * (2 if dst is not None else 1)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, bounds))  # warm the threads and the TLB
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(work, bounds))
            best = min(best, time.perf_counter() - start)
    return BandwidthResult(kind, threads, moved / best / 1e9, size_mib, repeats)


def weight_bytes(model_dir: Path) -> int:
    """Bytes of weight files under a model directory (safetensors, bin, pt, gguf)."""
    if not model_dir.is_dir():
        raise UsageError(f"--model {model_dir} is not a directory")
    total = sum(
        p.stat().st_size
        for p in model_dir.rglob("*")
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )
    if total == 0:
        raise UsageError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {model_dir}")
    return total


def _safetensors_sizes(path: Path) -> dict[str, int]:
    """Bytes of each tensor in a .safetensors file, read from its JSON header only."""
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    return {
        name: info["data_offsets"][1] - info["data_offsets"][0]
        for name, info in header.items()
        if name != "__metadata__"
    }


def bytes_read_per_token(model: Path) -> int:
    """Weight bytes a batch-1 decode step reads: every weight, except the input embedding table
    when the LM head is a separate matrix (then only one embedding row is read per token). The
    same for a GGUF file (an `output.weight` tensor is a separate LM head), read with llama.cpp's
    gguf-py when its sources are here; else the file counts whole."""
    if model.is_file():
        return _gguf_bytes_read(model) if model.suffix == ".gguf" else model.stat().st_size
    config_path = model / "config.json"
    tied = json.loads(config_path.read_text()).get("tie_word_embeddings", False) \
        if config_path.is_file() else True
    sizes: dict[str, int] = {}
    for shard in sorted(model.glob("*.safetensors")):
        sizes.update(_safetensors_sizes(shard))
    if not sizes:
        return weight_bytes(model)
    if not tied:
        sizes = {name: size for name, size in sizes.items() if not name.endswith("embed_tokens.weight")}
    return sum(sizes.values())


def gguf_tensor_bytes(sizes: dict[str, int]) -> int:
    """A decode step's bytes of a GGUF model's tensors: all but token_embd.weight when the model
    has a separate LM head (output.weight)."""
    if "output.weight" in sizes:
        sizes = {name: size for name, size in sizes.items() if name != "token_embd.weight"}
    return sum(sizes.values())


def _gguf_bytes_read(path: Path) -> int:
    from devloop.engine.llamacpp import binary

    try:
        source = binary.find_converter()
    except DevloopError:
        return path.stat().st_size
    if str(source / "gguf-py") not in sys.path:
        sys.path.insert(0, str(source / "gguf-py"))
    import gguf

    reader = gguf.GGUFReader(str(path))
    return gguf_tensor_bytes({tensor.name: int(tensor.n_bytes) for tensor in reader.tensors})


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "membw",
        help="measure memory bandwidth and the batch-1 decode ceiling it sets",
        description="Measure memory read and copy bandwidth with large numpy arrays, from one "
        "thread and from all cores; with --model or --weights-gb also print the decode "
        "tokens/s ceiling (read bandwidth / weight bytes).",
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="array size (default 1024 MiB)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="passes, best one counts (default 5)"
    )
    parser.add_argument(
        "--threads", help="comma-separated thread counts (default: 1 and every usable core)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--model", type=Path, help="model directory whose weight files set the ceiling"
    )
    group.add_argument("--weights-gb", type=float, help="weight bytes in GB (1e9) for the ceiling")
    parser.add_argument("--json", dest="json_path", help="write the results as JSON here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cores = len(os.sched_getaffinity(0))
    if args.threads:
        try:
            thread_counts = sorted({int(t) for t in args.threads.split(",") if t.strip()})
        except ValueError:
            raise UsageError(f"--threads takes numbers like 1,2, got {args.threads!r}") from None
    else:
        thread_counts = sorted({1, cores})
    if args.size_mib < 64 or args.repeats < 1 or not thread_counts or min(thread_counts) < 1:
        raise UsageError(
            "--size-mib must be at least 64 (beyond the caches), --repeats and --threads at least 1"
        )
    results = [
        measure(kind, args.size_mib, threads, args.repeats)
        for kind in ("read", "copy")
        for threads in thread_counts
    ]
    weights = None
    if args.model:
        if not args.model.is_file():
            weight_bytes(args.model)  # a clear error for a directory without weights
        weights = bytes_read_per_token(args.model)
    elif args.weights_gb:
        weights = int(args.weights_gb * 1e9)
    print(
        f"memory bandwidth, {args.size_mib} MiB arrays, best of {args.repeats} "
        f"({cores} usable cores)"
    )
    print(
        f"{'kind':>5}  {'threads':>7}  {'GB/s':>6}" + ("  decode ceiling tok/s" if weights else "")
    )
    for r in results:
        ceiling = f"  {r.gb_per_s * 1e9 / weights:>21.1f}" if weights and r.kind == "read" else ""
        print(f"{r.kind:>5}  {r.threads:>7}  {r.gb_per_s:>6.1f}{ceiling}")
    if weights:
        print(
            f"weights read per token: {weights / 1e9:.3f} GB; ceiling = read GB/s / that "
            "(batch-1 decode reads every weight once per token, the input embedding only a row)"
        )
    if args.json_path:
        report = {
            "usable_cores": cores,
            "weight_bytes": weights,
            "results": [asdict(r) for r in results],
            "decode_ceiling_tok_s": {
                str(r.threads): r.gb_per_s * 1e9 / weights for r in results if r.kind == "read"
            }
            if weights
            else None,
        }
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_path}", file=sys.stderr)
    return 0
