"""`devloop model generate`: random-weight models that vLLM serves with no download.

Shapes from one generator:
- `tiny`: a 2-layer Llama, hidden size 128, a ~1k-token byte-level BPE; a few MB, made in
  seconds. The dev overlay's offline model and the test suite's model: it exercises the whole
  serving path (tokenizer, chat template, sampling, streaming) but says nothing meaningful.
- `qwen3-0.6b`: the Qwen3-0.6B architecture at full size in bf16 (about 1.2 GB of weights), for
  benchmarks whose speed should match the real model's (decode on CPU is bound by weight bytes).
- `qwen3-8b`: the architecture of the optimized overlay's DeepSeek-R1-0528-Qwen3-8B, for
  measuring that overlay offline; only with `--quant awq` (in bf16 it would be 16 GB).

`--quant awq` writes any shape as the AWQ 4-bit checkpoint AutoAWQ exports (awq.py), the format
of the optimized overlay's model, streamed one layer at a time. The shapes are in shapes.py.

The tokenizer is trained here with `tokenizers` on a fixed built-in text, so the result depends
only on the code and the seed. Models are cached by a hash of everything that goes into them:
asking again for the same shape and seed returns the existing directory at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from devloop.common.cachedirs import user_cache_dir
from devloop.common.errors import UsageError
from devloop.common.words import COMMON_WORDS_TEXT
from devloop.engine.tinymodel.shapes import QUANTIZED_ONLY, SHAPES, ModelShape, shape_by_name

# Bump when the output changes for the same inputs, so caches made by older code are not reused.
GENERATOR_VERSION = 1
QUANTS = ("awq",)
COMPLETE_MARKER = ".devloop-model.json"
CACHE_SUBDIR = "devloop-models"

# Special tokens of the chat format below (ChatML, as Qwen uses).
BOS = "<|begin_of_text|>"
EOS = "<|im_end|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IM_START]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Training text for the BPE: English, Korean (the guide's example prompt) and code-ish text, so
# common words become single tokens and prompts in tests tokenize to sensible lengths.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello, world! How are you today?",
    "Explain Kubernetes in one sentence. A pod is the smallest deployable unit.",
    "vLLM serves large language models with paged attention and continuous batching.",
    "The cache returns the stored answer when the same request comes again.",
    "Count from one to ten: one two three four five six seven eight nine ten.",
    "def main():\n    print('hello')\n    return 0\n",
    '{"model": "tiny", "prompt": "Hello", "max_tokens": 16, "temperature": 0}',
    "안녕하세요. 쿠버네티스에 대해 설명해 주세요. 한국어로 대답해 주세요.",
    "오늘 날씨가 좋습니다. 인공지능 모델이 질문에 답합니다.",
    "user assistant system: You are a helpful assistant.",
    "A Deployment manages ReplicaSets; a Service gives pods a stable address and load balancing.",
    "ConfigMaps hold settings, Secrets hold credentials, and volumes keep data across restarts.",
    "The scheduler places each pod on a node with enough memory and processor capacity.",
    "Readiness probes decide when traffic arrives; liveness probes restart a stuck container.",
    "An Ingress routes external requests by host name and path to services inside the cluster.",
    "Horizontal autoscaling adds replicas when the average utilization exceeds its target.",
    "Tokens are generated one at a time; throughput grows with batching until memory runs out.",
    "Latency includes the time to first token and the time per output token after it.",
    "Prometheus scrapes metrics, Grafana draws dashboards, and alerts notify the operators.",
    "Python, Go, Rust, Java and JavaScript are popular programming languages for services.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday; January February March April.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 4096 8192 65536.",
    "import os, sys, json; from pathlib import Path; class Server: pass; if __name__:",
    "Redis stores keys with expiry; the least recently used entries are evicted first.",
    "The weather is nice today, so we walk in the park, read a book, and drink coffee.",
    "Science, history, music, mathematics, geography and literature are school subjects.",
    "서버가 요청을 처리하고 응답을 반환합니다. 캐시는 같은 질문에 빠르게 답합니다.",
    "모델을 불러오는 데 시간이 걸립니다. 준비가 끝나면 상태 확인이 성공합니다.",
    # The most frequent English words, so that (as with real tokenizers) a prompt of common
    # words costs about one token per word: benchmarks size prompts by that.
    COMMON_WORDS_TEXT,
]


def cache_key(shape: ModelShape, seed: int, quant: str | None = None) -> str:
    """A short hash of every input to the generator: same key, same files."""
    inputs: dict[str, Any] = {"version": GENERATOR_VERSION, "shape": asdict(shape), "seed": seed}
    if quant is not None:  # absent for unquantized models, so their existing keys stay valid
        from devloop.engine.tinymodel import awq

        inputs["quant"] = {"method": quant, "config": awq.QUANTIZATION_CONFIG}
    material = json.dumps(
        {
            **inputs,
            "corpus": _CORPUS,
            "special": SPECIAL_TOKENS,
            "template": CHAT_TEMPLATE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """$HF_HOME/devloop-models (the model-cache volume in a pod), else ~/.cache/huggingface/..."""
    hf_home = os.environ.get("HF_HOME") or user_cache_dir() / "huggingface"
    return Path(hf_home) / CACHE_SUBDIR


def is_complete(directory: Path, key: str) -> bool:
    marker = directory / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text())["key"] == key
    except (FileNotFoundError, ValueError, KeyError):
        return False


def ensure_model(
    shape_name: str = "tiny",
    seed: int = 0,
    out: Path | None = None,
    cache_dir: Path | None = None,
    quant: str | None = None,
) -> Path:
    """The directory of the model for (shape, seed, quant), generating it only if it is not there.

    Without `out`, the model goes to CACHE/<shape>[-<quant>]-<key>. Generation writes into a
    temporary sibling and renames it into place, so concurrent callers (test workers, two pods
    on one volume) never see a half-written model: the loser of the race discards its copy.
    """
    shape = shape_by_name(shape_name)
    if quant is not None and quant not in QUANTS:
        raise UsageError(f"unknown quantization {quant!r}; the choices are: {', '.join(QUANTS)}")
    if quant is None and shape.name in QUANTIZED_ONLY:
        raise UsageError(
            f"shape {shape.name} is generated quantized only (in {shape.dtype} it would not fit "
            "a laptop's memory): add --quant awq"
        )
    key = cache_key(shape, seed, quant)
    label = shape.name if quant is None else f"{shape.name}-{quant}"
    target = out if out is not None else (cache_dir or default_cache_dir()) / f"{label}-{key}"
    if is_complete(target, key):
        return target
    if target.exists() and any(target.iterdir()):
        raise UsageError(
            f"{target} exists and is not a model this generator made for shape {shape.name} "
            f"seed {seed}: choose an empty or new directory"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if quant is None:
            _write_model(shape, seed, staging)
        else:
            _write_quantized_model(shape, seed, staging)
        (staging / COMPLETE_MARKER).write_text(
            json.dumps({"key": key, "shape": shape.name, "seed": seed}
                       | ({"quant": quant} if quant else {})) + "\n"
        )
        # mkdtemp and safetensors create owner-only files; a shared cache must be readable.
        staging.chmod(0o755)
        for item in staging.iterdir():
            item.chmod(0o644)
        if target.exists():
            target.rmdir()  # empty, checked above
        try:
            staging.rename(target)
        except OSError:
            if not is_complete(target, key):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def train_tokenizer(shape: ModelShape) -> Any:
    """The byte-level BPE for `shape`, trained on the built-in text (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Byte-level: every string (Korean, emoji, binary garbage) tokenizes with no unknown token.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.tokenizer_vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeating the corpus gives its words enough counts to be merged into whole tokens.
    tokenizer.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=shape.max_position_embeddings,
    )


def model_config(shape: ModelShape, tokenizer: Any) -> Any:
    """The transformers config of `shape`, with the special token ids of `tokenizer`."""
    from transformers import AutoConfig

    common = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=shape.dtype,
        **shape.extra,
    )
    return AutoConfig.for_model(shape.architecture, **common)


def _write_model(shape: ModelShape, seed: int, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = train_tokenizer(shape)
    if len(tokenizer) > shape.vocab_size:
        raise AssertionError(f"tokenizer has {len(tokenizer)} tokens > vocab {shape.vocab_size}")
    config = model_config(shape, tokenizer)
    dtype = getattr(torch, shape.dtype)
    torch.manual_seed(seed)
    # Built directly in the target dtype: a float32 Qwen3-0.6B would need 2.4 GB of RAM first.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _write_quantized_model(shape: ModelShape, seed: int, out: Path) -> None:
    """The AWQ checkpoint of `shape`: config with its quantization_config, tokenizer, weights."""
    from transformers import GenerationConfig

    from devloop.engine.tinymodel import awq

    tokenizer = train_tokenizer(shape)
    config = model_config(shape, tokenizer)
    awq.write_random_checkpoint(config, seed, out)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model",
        help="generate random-weight models that vLLM serves offline",
        description="Random-weight models for offline serving and benchmarks. `tiny` is the "
        "dev overlay's and the tests' model; `qwen3-0.6b` has the real model's size for speed "
        "measurements; `qwen3-8b` is the optimized overlay's model (with --quant awq). Output "
        "is cached by content: the same shape, seed and quantization reuse the existing "
        "directory.",
    )
    actions = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="make (or find in the cache) a model")
    generate.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help="default: tiny")
    generate.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    generate.add_argument(
        "--quant",
        choices=QUANTS,
        help="write a quantized checkpoint: awq = AutoAWQ's 4-bit GEMM layout, group size 128 "
        "(default: the shape's own dtype, unquantized)",
    )
    generate.add_argument(
        "--out",
        type=Path,
        help="write here instead of the cache ($HF_HOME/devloop-models/<shape>-<hash>)",
    )
    generate.add_argument(
        "--cache-dir", type=Path, help="cache directory (default: $HF_HOME/devloop-models)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    path = ensure_model(
        args.shape, seed=args.seed, out=args.out, cache_dir=args.cache_dir, quant=args.quant
    )
    kind = f"{args.shape} {args.quant}" if args.quant else args.shape
    print(
        f"model {kind} (seed {args.seed}) ready in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    print(path)
    return 0
