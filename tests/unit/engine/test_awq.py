"""The AWQ checkpoint writer: AutoAWQ's packing, read back the way vLLM reads it.

That vLLM serves such a checkpoint through the entrypoint is tests/integration/engine/test_awq_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devloop.common.errors import UsageError
from devloop.engine import tinymodel
from devloop.engine.tinymodel import awq

torch = pytest.importorskip("torch", reason="installed with vLLM by scripts/bootstrap.sh")


def test_eight_values_pack_into_one_word_in_awqs_interleaved_order():
    # Column j's nibble sits at slot AWQ_ORDER.index(j): columns 0, 2, 4, 6 first, then 1, 3, 5, 7.
    packed = awq.pack_columns(torch.arange(8, dtype=torch.int32).reshape(1, 8))
    assert packed.tolist() == [[0x75316420]]


def test_a_nibble_in_the_top_slot_wraps_into_the_sign_bit_as_int32_does():
    values = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 15]], dtype=torch.int32)
    assert awq.pack_columns(values).tolist() == [[-(1 << 28)]]  # 0xF0000000 as a signed int32


def test_unpack_gives_back_every_packed_value():
    generator = torch.Generator().manual_seed(3)
    values = torch.randint(0, 16, (64, 96), generator=generator, dtype=torch.int32)
    assert torch.equal(awq.unpack_columns(awq.pack_columns(values)), values)


def test_vllm_reads_the_packed_weights_back_as_the_values_written(monkeypatch):
    """vLLM's own AWQ loader step (AutoAWQ layout -> its standard layout) and its own unpacking
    must give the integer matrix this writer packed: the layout is the one vLLM expects."""
    pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")
    from vllm.model_executor import parameter

    # vLLM's parameters ask for their tensor-parallel rank; outside a server there is one rank.
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_world_size", lambda: 1)
    from vllm.model_executor.layers.quantization.auto_awq import _convert_awq_to_standard_format
    from vllm.model_executor.layers.quantization.utils.quant_utils import (
        unpack_quantized_values_into_int32,
    )
    from vllm.scalar_type import scalar_types

    generator = torch.Generator().manual_seed(5)
    q = torch.randint(0, 16, (256, 64), generator=generator, dtype=torch.int32)  # [in, out]
    zeros = torch.randint(0, 16, (2, 64), generator=generator, dtype=torch.int32)
    layer = torch.nn.Module()
    layer.register_parameter("qweight", torch.nn.Parameter(awq.pack_columns(q), False))
    layer.register_parameter("qzeros", torch.nn.Parameter(awq.pack_columns(zeros), False))

    _convert_awq_to_standard_format(layer, "qweight", "qzeros", 4)

    weights = unpack_quantized_values_into_int32(layer.qweight.data, scalar_types.uint4, 0)
    zero_points = unpack_quantized_values_into_int32(layer.qzeros.data, scalar_types.uint4, 0)
    assert torch.equal(weights, q)
    assert torch.equal(zero_points, zeros.t())


def test_random_layers_dequantize_to_a_trained_models_weight_spread():
    generator = torch.Generator().manual_seed(0)
    packed = awq.random_quantized_linear(256, 512, generator)
    assert packed["qweight"].shape == (512, 32) and packed["qweight"].dtype == torch.int32
    assert packed["qzeros"].shape == (4, 32)
    assert packed["scales"].shape == (4, 256) and packed["scales"].dtype == torch.float16
    weight = awq.dequantize(**packed)
    assert weight.shape == (256, 512)
    assert 0.01 < weight.std().item() < 0.04
    assert abs(weight.mean().item()) < 0.005


def test_a_layer_whose_inputs_do_not_fill_whole_groups_is_refused():
    with pytest.raises(ValueError, match="group size 128"):
        awq.random_quantized_linear(128, 200, torch.Generator())


@pytest.fixture(scope="module")
def tiny_awq(tmp_path_factory) -> Path:
    return tinymodel.ensure_model("tiny", quant="awq", cache_dir=tmp_path_factory.mktemp("c"))


def test_the_checkpoint_says_awq_the_way_autoawq_writes_it(tiny_awq):
    config = json.loads((tiny_awq / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "version": "gemm", "bits": 4, "group_size": 128,
        "zero_point": True, "modules_to_not_convert": None,
    }
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float16"


def test_every_linear_layer_is_packed_and_the_rest_stays_float16(tiny_awq):
    from safetensors import safe_open

    index = json.loads((tiny_awq / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    for layer in range(2):
        for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            stem = f"model.layers.{layer}.{proj}"
            assert {f"{stem}.qweight", f"{stem}.qzeros", f"{stem}.scales"} <= names
            assert f"{stem}.weight" not in names
    (shard,) = set(index["weight_map"].values())
    with safe_open(tiny_awq / shard, "pt") as tensors:
        assert tensors.get_slice("model.layers.0.mlp.down_proj.qweight").get_shape() == [256, 16]
        assert tensors.get_slice("lm_head.weight").get_dtype() == "F16"
        assert tensors.get_slice("model.norm.weight").get_dtype() == "F16"


def test_the_awq_model_is_cached_apart_from_the_unquantized_one(tiny_awq):
    key = tinymodel.cache_key(tinymodel.SHAPES["tiny"], 0, "awq")
    assert tiny_awq.name == f"tiny-awq-{key}"
    assert key != tinymodel.cache_key(tinymodel.SHAPES["tiny"], 0)


def test_the_8b_shape_is_refused_unquantized_with_the_flag_to_add(tmp_path):
    with pytest.raises(UsageError, match="--quant awq"):
        tinymodel.ensure_model("qwen3-8b", out=tmp_path / "m")


def test_the_8b_shape_is_the_published_deepseek_r1_0528_qwen3_8b_architecture():
    shape = tinymodel.SHAPES["qwen3-8b"]
    assert (shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size) == (36, 4096, 12288)
    assert (shape.num_attention_heads, shape.num_key_value_heads, shape.head_dim) == (32, 8, 128)
    assert (shape.vocab_size, shape.tie_word_embeddings) == (151936, False)
