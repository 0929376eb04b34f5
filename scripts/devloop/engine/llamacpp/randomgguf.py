"""A random-weight GGUF of any generator shape, written directly: for shapes too large to make
as a Hugging Face checkpoint first (the qwen3-8b shape in bf16 is 16 GB) just to convert it.

The metadata and tokenizer are copied from the tiny model's converted GGUF (the generator's
byte-level BPE, its chat template), with the architecture keys of the shape and the token list
padded to the shape's vocabulary. Weight matrices are random blocks of Q8_0, or of the tensor
type mix llama-quantize gives a Q4_K_M export (quant_type), written as such: quantizing the 8B
shape with llama-quantize would take about 25 minutes of 2 cores (the 0.6B shape took 114 s),
for weights that are random either way. Loading the file measures what the real file needs in
memory and time, since both are bound by the bytes of each tensor type.
It is streamed one tensor at a time: writing the 8B shape needs a few hundred MB of memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devloop.engine.tinymodel.shapes import ModelShape, shape_by_name

# Block layouts (ggml-common.h): values per block, bytes per block, offsets of its f16 scales.
# Random bytes are valid blocks for every other field (packed 4/6-bit values and sub-scales);
# only the f16 scales are set, to a small finite number, so the model computes finite values.
BLOCKS = {
    "Q8_0": (32, 34, (0,)),  # d, then 32 int8
    "Q4_K": (256, 144, (0, 2)),  # d, dmin, 12 bytes of 6-bit scales, 128 bytes of nibbles
    "Q6_K": (256, 210, (208,)),  # 128 + 64 bytes of 6-bit values, 16 int8 scales, then d
}


def _gguf(source_dir: Path):
    sys.path.insert(0, str(source_dir / "gguf-py"))
    import gguf

    return gguf


def tensor_shapes(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    """GGUF tensor names of a llama/qwen3 model and their (rows, columns) in PyTorch order."""
    hidden, inter, heads, kv, head_dim = (shape.hidden_size, shape.intermediate_size,
                                          shape.num_attention_heads, shape.num_key_value_heads,
                                          shape.head_dim)
    tensors: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (shape.vocab_size, hidden),
        "output_norm.weight": (hidden,),
    }
    if not shape.tie_word_embeddings:
        tensors["output.weight"] = (shape.vocab_size, hidden)
    for layer in range(shape.num_hidden_layers):
        block = f"blk.{layer}."
        tensors |= {
            block + "attn_norm.weight": (hidden,),
            block + "attn_q.weight": (heads * head_dim, hidden),
            block + "attn_k.weight": (kv * head_dim, hidden),
            block + "attn_v.weight": (kv * head_dim, hidden),
            block + "attn_output.weight": (hidden, heads * head_dim),
            block + "ffn_norm.weight": (hidden,),
            block + "ffn_gate.weight": (inter, hidden),
            block + "ffn_up.weight": (inter, hidden),
            block + "ffn_down.weight": (hidden, inter),
        }
        if shape.architecture == "qwen3":
            tensors |= {block + "attn_q_norm.weight": (head_dim,),
                        block + "attn_k_norm.weight": (head_dim,)}
    return tensors


def _more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's use_more_bits (llama-quant.cpp): the layers Q4_K_M gives Q6_K in attn_v and
    ffn_down: the first and last eighth, and every third one between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def quant_type(name: str, quant: str, layers: int, tied: bool = False) -> str:
    """The block type of a weight matrix: all Q8_0, or Q4_K_M's mix (Q6_K for the output
    matrix, which is the embedding when they are tied, and for attn_v / ffn_down in the
    _more_bits layers; Q4_K elsewhere). Checked against llama-quantize's output for the
    qwen3-0.6b shape: every tensor the same type."""
    if quant == "q8_0":
        return "Q8_0"
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "Q6_K"
    if name.endswith(("attn_v.weight", "ffn_down.weight")):
        return "Q6_K" if _more_bits(int(name.split(".")[1]), layers) else "Q4_K"
    return "Q4_K"


def _random_blocks(kind: str, values: int, rng) -> bytes:
    import numpy as np

    per_block, size, scales = BLOCKS[kind]
    data = rng.integers(0, 256, size=(values // per_block, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
    for offset in scales:
        data[:, offset:offset + 2] = scale
    return data.tobytes()


def write(shape_name: str, tiny_gguf: Path, out: Path, source_dir: Path, quant: str = "q8_0",
          seed: int = 0) -> Path:
    """Write `out` (the shape's matrices as `quant` blocks, f32 norms) with the tokenizer of
    `tiny_gguf`."""
    import numpy as np

    gguf = _gguf(source_dir)
    shape = shape_by_name(shape_name)
    reader = gguf.GGUFReader(str(tiny_gguf))
    arch = shape.architecture
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(f"random {shape.name}")
    writer.add_context_length(shape.max_position_embeddings)
    writer.add_embedding_length(shape.hidden_size)
    writer.add_block_count(shape.num_hidden_layers)
    writer.add_feed_forward_length(shape.intermediate_size)
    writer.add_head_count(shape.num_attention_heads)
    writer.add_head_count_kv(shape.num_key_value_heads)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(float(shape.extra.get("rms_norm_eps", 1e-6)))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0"
                         else gguf.LlamaFileType.MOSTLY_Q4_K_M)
    fields = reader.fields
    tokens = list(fields["tokenizer.ggml.tokens"].contents())
    types = list(fields["tokenizer.ggml.token_type"].contents())
    # Rows past the tokenizer's ids exist in the real model too (151936 > its 151669 tokens).
    padding = shape.vocab_size - len(tokens)
    tokens += [f"<|unused_{index}|>" for index in range(padding)]
    types += [int(gguf.TokenType.UNUSED)] * padding
    writer.add_tokenizer_model(fields["tokenizer.ggml.model"].contents())
    writer.add_tokenizer_pre(fields["tokenizer.ggml.pre"].contents())
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(fields["tokenizer.ggml.merges"].contents()))
    writer.add_bos_token_id(fields["tokenizer.ggml.bos_token_id"].contents())
    writer.add_eos_token_id(fields["tokenizer.ggml.eos_token_id"].contents())
    writer.add_pad_token_id(fields["tokenizer.ggml.padding_token_id"].contents())
    writer.add_chat_template(fields["tokenizer.chat_template"].contents())

    rng = np.random.default_rng(seed)
    shapes = tensor_shapes(shape)
    for name, dims in shapes.items():
        if len(dims) == 1:
            writer.add_tensor_info(name, (dims[0],), np.dtype(np.float32), dims[0] * 4,
                                   raw_dtype=gguf.GGMLQuantizationType.F32)
        else:
            rows, columns = dims
            kind = quant_type(name, quant, shape.num_hidden_layers, shape.tie_word_embeddings)
            per_block, size, _ = BLOCKS[kind]
            # GGUF takes byte shapes for quantized data: a row is columns / per_block blocks.
            writer.add_tensor_info(name, (rows, columns // per_block * size), np.dtype(np.uint8),
                                   rows * columns // per_block * size,
                                   raw_dtype=getattr(gguf.GGMLQuantizationType, kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, dims in shapes.items():
        if len(dims) == 1:
            data = np.ones(dims, dtype=np.float32)
        else:
            kind = quant_type(name, quant, shape.num_hidden_layers, shape.tie_word_embeddings)
            data = np.frombuffer(_random_blocks(kind, dims[0] * dims[1], rng), dtype=np.uint8)
        writer.write_tensor_data(data)
    writer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape")
    parser.add_argument("--tiny-gguf", type=Path, required=True)
    parser.add_argument("--source-dir", type=Path, required=True, help="llama.cpp source tree")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quant", choices=("q8_0", "q4_k_m"), default="q8_0")
    args = parser.parse_args(argv)
    write(args.shape, args.tiny_gguf, args.out, args.source_dir, args.quant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
