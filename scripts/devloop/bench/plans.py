"""The servers `devloop bench-compare` puts side by side: named plans of candidates.

A candidate is one server: vLLM through `devloop entrypoint` with an overlay's engine settings
(what the pod runs), vLLM with its own defaults (the baseline every tuning claim is measured
against), or llama.cpp's `llama-server` on a GGUF file, started as `devloop serve --overlay gguf`
starts it (devloop.engine.llamacpp.local: the overlay's LLAMA_ARG_* settings, the AMX rule).
Models are the generator's random-weight shapes (devloop.engine.tinymodel), so every number here
can be made again offline on any machine.

vLLM candidates run without the reasoning and tool-call parsers the optimized overlay enables
(EXTRA_ARGS empty): they change nothing for throughput, and a reasoning parser can break an
`ignore_eos` run of a random-weight model. llama.cpp candidates get as many parallel slots as
the vLLM candidates decode sequences (SEQS), and a context of CONTEXT_PER_SLOT tokens per slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devloop.common.errors import UsageError

VLLM = "vllm"  # devloop entrypoint with an overlay's settings
VLLM_DEFAULTS = "vllm-defaults"  # the vLLM server with its own defaults
LLAMACPP = "llamacpp"  # llama.cpp's llama-server on a GGUF file
KINDS = (VLLM, VLLM_DEFAULTS, LLAMACPP)


@dataclass(frozen=True)
class ModelRef:
    """A generated model: a shape, optionally AWQ-quantized, optionally as a GGUF file."""

    shape: str
    quant: str | None = None
    # bf16, q8_0, q4_0, q4_k_m: the (unquantized) model converted to GGUF, then quantized by
    # llama-quantize (devloop.engine.llamacpp.gguf.model_gguf)
    gguf: str | None = None
    # the GGUF file written directly with random blocks of the quantized types
    # (devloop.engine.llamacpp.randomgguf: q8_0 or q4_k_m), for shapes too big to convert
    random_gguf: bool = False

    def label(self) -> str:
        return self.shape + (f" {self.quant}" if self.quant else "") + (
            f" GGUF {self.gguf}" if self.gguf else ""
        ) + (" (random blocks)" if self.random_gguf else "")


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str
    model: ModelRef
    overlay: str = "optimized"
    settings: dict[str, str] = field(default_factory=dict)  # engine settings (--set) for vllm
    args: tuple[str, ...] = ()  # extra server arguments for vllm-defaults
    description: str = ""
    # The server's model-cache directory (devloop.bench.warmstart): "" the run's workdir; a name,
    # its own directory kept across starts; cold=True empties it before every start.
    cache: str = ""
    cold: bool = False


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    candidates: tuple[Candidate, ...]
    baseline: str  # the candidate the ratios divide by
    memory_limit_gib: float | None = None  # the overlay's container limit, for the report
    one_at_a_time: bool = False  # start each server only for its own turn (big models)


BF16 = ModelRef("qwen3-0.6b")
AWQ = ModelRef("qwen3-0.6b", quant="awq")
SEQS = 8  # the optimized overlay's MAX_NUM_SEQS (tests/unit/bench/test_plans.py checks it)
CONTEXT_PER_SLOT = 1024  # llama.cpp's context per slot: prompt + output of a benchmark request
NO_PARSERS = {"EXTRA_ARGS": ""}  # the overlay's --reasoning-parser and --tool-call-parser off
# The optimized overlay's settings scaled to a 2-core laptop VM: threads from the CPUs there are
# (the overlay asks for 6), a KV cache and context that fit beside several servers at once.
SCALED = {"CPU_THREADS": "auto", "VLLM_CPU_KVCACHE_SPACE": "1", "MAX_MODEL_LEN": "2048",
          "MAX_NUM_SEQS": str(SEQS), **NO_PARSERS}
# llama-server as the gguf overlay runs it, with SEQS slots (LLAMA_ARG_N_PARALLEL), threads
# scaled to here like CPU_THREADS=auto, and a context for every slot.
LLAMA_SLOTS = {"LLAMA_ARG_N_PARALLEL": str(SEQS),
               "LLAMA_ARG_CTX_SIZE": str(SEQS * CONTEXT_PER_SLOT)}
GGUF_KINDS = ("bf16", "q8_0", "q4_0", "q4_k_m")
GGUF_TEXT = {"bf16": "GGUF bf16", "q8_0": "GGUF Q8_0", "q4_0": "GGUF Q4_0",
             "q4_k_m": "GGUF Q4_K_M (the guide's format)"}


def llamacpp_candidate(kind: str, shape: str = "qwen3-0.6b", random_gguf: bool = False,
                       name: str | None = None) -> Candidate:
    """llama-server on `shape` as a GGUF file of `kind`, the gguf overlay's settings with SEQS
    parallel slots."""
    return Candidate(
        name or f"llamacpp-{kind}", LLAMACPP, ModelRef(shape, gguf=kind, random_gguf=random_gguf),
        overlay="gguf", settings=dict(LLAMA_SLOTS),
        description=f"llama-server, {GGUF_TEXT[kind]}, {SEQS} slots",
    )


DEFAULTS = Candidate(
    "vllm-defaults", VLLM_DEFAULTS, BF16, args=("--max-model-len", "2048"),
    description="vLLM's own defaults (threads bind auto, max-num-seqs 256, torch.compile), "
    "1 GiB KV cache",
)
OPTIMIZED = Candidate(
    "vllm-optimized", VLLM, BF16, settings=SCALED,
    description="the optimized overlay via devloop entrypoint, scaled (threads auto, 1 GiB KV)",
)

PLANS = {
    plan.name: plan
    for plan in (
        Plan(
            "llamacpp",
            "vLLM (bf16, AWQ 4-bit) against llama.cpp's llama-server (GGUF bf16, Q8_0, Q4_0, "
            f"Q4_K_M; {SEQS} slots like vLLM's {SEQS} sequences) on the Qwen3-0.6B shape, with "
            "vLLM's defaults as the baseline",
            (  # llama.cpp first: it starts in seconds, so a run cut short has it
                *(llamacpp_candidate(kind) for kind in GGUF_KINDS),
                DEFAULTS,
                OPTIMIZED,
                Candidate("vllm-optimized-awq", VLLM, AWQ, settings=SCALED,
                          description="the same, AWQ 4-bit checkpoint"),
            ),
            baseline="vllm-defaults",
        ),
        Plan(
            "llamacpp-8b",
            "the optimized overlay's model shape (DeepSeek-R1-0528-Qwen3-8B) as AWQ 4-bit on vLLM "
            "against the gguf overlay's format, Q4_K_M, on llama-server, both with "
            f"{SEQS} sequences",
            (
                Candidate("vllm-8b-awq", VLLM, ModelRef("qwen3-8b", quant="awq"),
                          settings={"CPU_THREADS": "auto", **NO_PARSERS},
                          description="the optimized overlay via devloop entrypoint, threads "
                          "scaled to here"),
                llamacpp_candidate("q4_k_m", "qwen3-8b", random_gguf=True,
                                   name="llamacpp-8b-q4_k_m"),
            ),
            baseline="vllm-8b-awq",
            one_at_a_time=True,
        ),
        Plan(
            "tuning",
            "the optimized overlay's settings against vLLM's defaults and one change at a time",
            (
                DEFAULTS,
                OPTIMIZED,
                Candidate("optimized-eager", VLLM, BF16, settings={**SCALED, "ENFORCE_EAGER": "true"},
                          description="no torch.compile"),
                Candidate("optimized-seqs16", VLLM, BF16, settings={**SCALED, "MAX_NUM_SEQS": "16"},
                          description="max-num-seqs 16 instead of 8"),
                Candidate("optimized-kv-fp8", VLLM, BF16,
                          settings={**SCALED, "EXTRA_ARGS": "--kv-cache-dtype fp8"},
                          description="KV cache in fp8 (half the bytes per token)"),
            ),
            baseline="vllm-defaults",
        ),
        Plan(
            "dtype",
            "bf16 (vLLM's AMX kernels on an AMX CPU) against float32 with the optimized overlay's "
            "settings, and the dev overlay as it is (bf16, eager, 4 sequences)",
            (
                Candidate("optimized-float32", VLLM, BF16, settings={**SCALED, "DTYPE": "float32"},
                          description="the optimized overlay's settings in float32"),
                OPTIMIZED,
                Candidate("dev-overlay", VLLM, BF16, overlay="dev",
                          settings={"VLLM_CPU_KVCACHE_SPACE": "1"},
                          description="the dev overlay's own settings (eager, max-num-seqs 4)"),
            ),
            baseline="optimized-float32",
        ),
        Plan(
            "warm-start",
            "first start (empty model cache: AWQ conversion, torch.compile) against the next "
            "one (docs/warm-start.md) on the optimized overlay's 8B AWQ shape and the Qwen3-0.6B "
            "shape compiled; decode speed after each",
            tuple(
                Candidate(f"{name}-{state}", VLLM, model, settings=settings, cache=name,
                          cold=state == "cold", description=f"{state} start: {text}")
                for name, model, settings, text in (  # the short pair first
                    ("0.6b", BF16, {**SCALED, "ENFORCE_EAGER": "false"},
                     "the Qwen3-0.6B shape, bf16, torch.compile on"),
                    ("0.6b-awq", AWQ, SCALED, "the Qwen3-0.6B shape, AWQ 4-bit, torch.compile on"),
                    ("8b-awq", ModelRef("qwen3-8b", quant="awq"), {"CPU_THREADS": "auto"},
                     "the optimized overlay's settings, threads scaled to here"),
                )
                for state in ("cold", "warm")
            ),
            baseline="8b-awq-cold",
            memory_limit_gib=18.0,
            one_at_a_time=True,
        ),
        Plan(
            "awq-8b",
            "the optimized overlay's own model shape (DeepSeek-R1-0528-Qwen3-8B, AWQ 4-bit) with "
            "its settings (5 GiB KV cache, 4096 context, 8 sequences), threads scaled to here",
            (
                Candidate("optimized-8b-awq", VLLM, ModelRef("qwen3-8b", quant="awq"),
                          settings={"CPU_THREADS": "auto"},
                          description="the optimized overlay via devloop entrypoint"),
            ),
            baseline="optimized-8b-awq",
            memory_limit_gib=16.0,
            one_at_a_time=True,
        ),
    )
}


def plan_by_name(name: str, only: list[str] | None = None) -> Plan:
    try:
        plan = PLANS[name]
    except KeyError:
        raise UsageError(f"unknown plan {name!r}; the plans are: {', '.join(PLANS)}") from None
    if not only:
        return plan
    names = [c.name for c in plan.candidates]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise UsageError(f"plan {name} has no candidate {', '.join(unknown)}; it has: "
                         f"{', '.join(names)}")
    chosen = tuple(c for c in plan.candidates if c.name in only)
    baseline = plan.baseline if plan.baseline in only else chosen[0].name
    return Plan(plan.name, plan.description, chosen, baseline, plan.memory_limit_gib,
                plan.one_at_a_time)
