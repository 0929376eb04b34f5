"""The model shapes `devloop model generate` builds: each field decides the generated model's
content and is hashed into its cache key (generate.cache_key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devloop.common.errors import UsageError


@dataclass(frozen=True)
class ModelShape:
    """Everything that decides a generated model's content (hashed into its cache key)."""

    name: str
    architecture: str  # the transformers config class's model_type
    vocab_size: int  # embedding rows; may exceed the tokenizer's size (only its ids are used)
    tokenizer_vocab: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float
    tie_word_embeddings: bool
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict)


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(
        name="tiny",
        architecture="llama",
        vocab_size=1024,
        tokenizer_vocab=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # the smallest head size vLLM's CPU attention supports
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        dtype="bfloat16",
    ),
    # Qwen/Qwen3-0.6B's config.json, with its real vocabulary size so the embedding and LM head
    # weigh what they weigh in the real model (they are a quarter of its 0.6B parameters).
    "qwen3-0.6b": ModelShape(
        name="qwen3-0.6b",
        architecture="qwen3",
        vocab_size=151936,
        tokenizer_vocab=1024,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        dtype="bfloat16",
        extra={"rms_norm_eps": 1e-6},
    ),
    # deepseek-ai/DeepSeek-R1-0528-Qwen3-8B's config.json (Qwen3-8B's architecture, with YaRN
    # scaling to a 128k context), as published copies of it give it: 36 layers, hidden 4096,
    # intermediate 12288, 32 heads of 128, 8 KV heads, vocabulary 151936, untied embeddings.
    "qwen3-8b": ModelShape(
        name="qwen3-8b",
        architecture="qwen3",
        vocab_size=151936,
        tokenizer_vocab=1024,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=131072,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
        dtype="bfloat16",
        extra={
            "rms_norm_eps": 1e-6,
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32768,
                "attn_factor": 0.8782488562869419,
            },
        },
    ),
}
# Shapes too big to build at full precision on a laptop: generated quantized only.
QUANTIZED_ONLY = {"qwen3-8b"}


def shape_by_name(name: str) -> ModelShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise UsageError(
            f"unknown model shape {name!r}; the shapes are: {', '.join(SHAPES)}"
        ) from None
