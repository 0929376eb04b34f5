"""The AWQ 4-bit checkpoint layout AutoAWQ exports (`version: gemm`), packed and unpacked here.

A linear layer's weight W (out_features x in_features) becomes three tensors, with one group of
GROUP_SIZE input rows sharing a scale and a zero point per output column:

- `qweight` int32 [in, out / 8]: eight 4-bit values per int32, in AutoAWQ's interleaved column
  order AWQ_ORDER (the value of column 8c + AWQ_ORDER[i] sits at bits 4i..4i+3 of word c);
- `qzeros`  int32 [in / GROUP_SIZE, out / 8]: the zero points, packed the same way;
- `scales`  float16 [in / GROUP_SIZE, out].

so that W[o, i] = (q[i, o] - z[i // GROUP_SIZE, o]) * s[i // GROUP_SIZE, o]. vLLM reads this
layout for `quant_method: awq` (AWQLinearMethod: qweight packed along the output dimension with a
pack factor of 8) and, on CPU, repacks it for its own kernel after loading. `unpack` is the
inverse of `pack`, written independently (vLLM's AWQ_REVERSE_ORDER), so a test can check that a
round trip gives back every value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BITS = 4
GROUP_SIZE = 128
PACK = 32 // BITS  # 4-bit values per int32
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # position of column j's nibble: AWQ_ORDER^-1

# What AutoAWQ writes into config.json; vLLM's AWQConfig.from_config reads bits, group_size and
# zero_point (and modules_to_not_convert).
QUANTIZATION_CONFIG = {
    "quant_method": "awq",
    "version": "gemm",
    "bits": BITS,
    "group_size": GROUP_SIZE,
    "zero_point": True,
    "modules_to_not_convert": None,
}


def pack_columns(values: Any) -> Any:
    """int tensor [rows, cols] of 0..15 -> int32 [rows, cols / 8] in AWQ's interleaved order."""
    import torch

    rows, cols = values.shape
    if cols % PACK:
        raise ValueError(f"{cols} columns cannot be packed 8 to an int32")
    grouped = values.to(torch.int32).reshape(rows, cols // PACK, PACK)
    packed = torch.zeros(rows, cols // PACK, dtype=torch.int32)
    for slot, column in enumerate(AWQ_ORDER):
        # Shifting into bit 28 may set the sign bit: int32 arithmetic wraps as the format wants.
        packed |= grouped[:, :, column] << (BITS * slot)
    return packed


def unpack_columns(packed: Any) -> Any:
    """The inverse of pack_columns: int32 [rows, cols / 8] -> int32 [rows, cols] of 0..15."""
    import torch

    shifts = torch.arange(0, 32, BITS, dtype=torch.int32)
    nibbles = (packed[:, :, None] >> shifts[None, None, :]) & 0xF  # [rows, words, slot]
    order = torch.tensor(AWQ_REVERSE_ORDER)
    return nibbles[:, :, order].reshape(packed.shape[0], -1)


def random_quantized_linear(
    out_features: int, in_features: int, generator: Any, weight_std: float = 0.02
) -> dict[str, Any]:
    """qweight, qzeros and scales of a random layer whose dequantized weights have about
    `weight_std` spread (what a trained model's initializer gives), so activations stay finite
    through many layers. Nothing is materialized at full precision: an 8B model is generated
    one layer at a time in a few hundred MB."""
    import torch

    if in_features % GROUP_SIZE:
        raise ValueError(
            f"in_features {in_features} is not a multiple of the AWQ group size {GROUP_SIZE}"
        )
    groups = in_features // GROUP_SIZE
    q = torch.randint(0, 16, (in_features, out_features), generator=generator, dtype=torch.int32)
    zeros = torch.randint(7, 10, (groups, out_features), generator=generator, dtype=torch.int32)
    # (q - z) spans about -9..8, standard deviation ~4.6: scale it down to weight_std.
    scales = torch.empty(groups, out_features).uniform_(0.8, 1.2, generator=generator)
    scales = (scales * weight_std / 4.6).to(torch.float16)
    return {"qweight": pack_columns(q), "qzeros": pack_columns(zeros), "scales": scales}


def dequantize(qweight: Any, qzeros: Any, scales: Any) -> Any:
    """W [out, in] in float32 from the three tensors (a reference for tests and checks)."""
    import torch

    q = unpack_columns(qweight).to(torch.float32)  # [in, out]
    zeros = unpack_columns(qzeros).to(torch.float32)  # [groups, out]
    group = q.shape[0] // zeros.shape[0]
    z = zeros.repeat_interleave(group, dim=0)
    s = scales.to(torch.float32).repeat_interleave(group, dim=0)
    return ((q - z) * s).t().contiguous()


# Linear layers AutoAWQ quantizes in a Llama/Qwen decoder layer; embeddings, norms and the LM
# head stay in float16, as in its exports (and vLLM finds them unquantized by their dtype).
QUANTIZED_SUFFIXES = (
    ".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight",
    ".self_attn.o_proj.weight", ".mlp.gate_proj.weight", ".mlp.up_proj.weight",
    ".mlp.down_proj.weight",
)
SHARD_BYTES = 2 << 30  # Hugging Face's shard size: bounds the memory a shard takes to write
EXPORT_DTYPE = "float16"  # what AutoAWQ exports hold outside the packed tensors


def _parameter_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Every saved parameter of the transformers model for `config`, without allocating it."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    config.architectures = [type(model).__name__]  # what save_pretrained would record
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        shapes.pop("lm_head.weight", None)  # saved once, as the embedding
    return shapes


def _random_tensors(name: str, shape: tuple[int, ...], generator: Any) -> dict[str, Any]:
    """The tensors that stand for parameter `name` in the checkpoint."""
    import torch

    if name.endswith(QUANTIZED_SUFFIXES):
        out_features, in_features = shape
        packed = random_quantized_linear(out_features, in_features, generator)
        stem = name.removesuffix(".weight")
        return {f"{stem}.{key}": value for key, value in packed.items()}
    if "norm" in name:
        return {name: torch.ones(shape, dtype=torch.float16)}
    tensor = torch.empty(shape, dtype=torch.float16)
    rows = 8192  # an embedding row block at a time: no float32 copy of a 1.2 GB table
    for start in range(0, shape[0], rows):
        block = torch.randn((min(rows, shape[0] - start), *shape[1:]), generator=generator)
        tensor[start : start + rows] = (block * 0.02).to(torch.float16)
    return {name: tensor}


def write_random_checkpoint(config: Any, seed: int, out: Path) -> None:
    """config.json (with quantization_config) and sharded safetensors of random AWQ weights,
    one parameter at a time, so memory stays near one shard whatever the model's size."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    shard: dict[str, Any] = {}
    shard_names: list[list[str]] = []
    shard_bytes = total = 0

    def flush() -> None:
        save_file(shard, out / f"part-{len(shard_names)}.safetensors", metadata={"format": "pt"})
        shard_names.append(list(shard))
        shard.clear()

    for name, shape in _parameter_shapes(config).items():
        tensors = _random_tensors(name, shape, generator)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if shard and shard_bytes + size > SHARD_BYTES:
            flush()
            shard_bytes = 0
        shard.update(tensors)
        shard_bytes += size
        total += size
    flush()
    count = len(shard_names)
    weight_map = {}
    for index, names in enumerate(shard_names):
        filename = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
        (out / f"part-{index}.safetensors").rename(out / filename)
        weight_map.update(dict.fromkeys(names, filename))
    index_file = out / "model.safetensors.index.json"
    index_file.write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )
    config.quantization_config = dict(QUANTIZATION_CONFIG)
    config.dtype = EXPORT_DTYPE
    config.save_pretrained(out)
