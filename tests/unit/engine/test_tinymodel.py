"""The offline model generator: deterministic, cached by content, and loadable as vLLM loads it.

That vLLM serves the tiny model is shown by every test that uses the vLLM server fixture.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="installed with vLLM by scripts/bootstrap.sh")

from devloop.common.errors import UsageError
from devloop.engine import tinymodel


def digest(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tinymodel.ensure_model("tiny", cache_dir=tmp_path_factory.mktemp("cache"))


def test_same_seed_gives_byte_identical_files(tiny, tmp_path):
    again = tinymodel.ensure_model("tiny", out=tmp_path / "again")
    assert digest(again) == digest(tiny)


def test_another_seed_gives_other_weights_and_another_cache_entry(tiny, tmp_path):
    other = tinymodel.ensure_model("tiny", seed=1, cache_dir=tiny.parent)
    assert other != tiny
    assert digest(other)["model.safetensors"] != digest(tiny)["model.safetensors"]
    assert digest(other)["tokenizer.json"] == digest(tiny)["tokenizer.json"]


def test_a_cached_model_is_returned_without_writing_again(tiny):
    before = (tiny / "model.safetensors").stat().st_mtime_ns
    assert tinymodel.ensure_model("tiny", cache_dir=tiny.parent) == tiny
    assert (tiny / "model.safetensors").stat().st_mtime_ns == before


def test_the_cache_entry_is_named_by_shape_and_content_hash(tiny):
    key = tinymodel.cache_key(tinymodel.SHAPES["tiny"], 0)
    assert tiny.name == f"tiny-{key}"
    assert json.loads((tiny / tinymodel.COMPLETE_MARKER).read_text())["key"] == key


def test_the_model_is_the_promised_small_llama(tiny):
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 128)
    assert (tiny / "model.safetensors").stat().st_size < 5_000_000


def test_the_chat_template_is_where_transformers_reads_it(tiny):
    from transformers import AutoTokenizer

    assert (tiny / "chat_template.jinja").is_file()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "안녕하세요"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n안녕하세요<|im_end|>\n<|im_start|>assistant\n"


def test_the_byte_level_tokenizer_round_trips_any_text_with_about_1k_tokens(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert 900 <= len(tokenizer) <= 1024
    for text in ("Explain Kubernetes in one sentence.", "쿠버네티스를 설명해 주세요 🚀", "\x00\ttabs"):
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # Trained merges make prompts realistic lengths, not one token per byte.
    sentence = "Explain Kubernetes in one sentence."
    assert len(tokenizer.encode(sentence, add_special_tokens=False)) <= len(sentence) // 2


def test_a_foreign_non_empty_output_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a model this generator made"):
        tinymodel.ensure_model("tiny", out=tmp_path)


def test_an_unknown_shape_lists_the_shapes():
    with pytest.raises(UsageError, match="tiny, qwen3-0.6b"):
        tinymodel.ensure_model("llama-70b")


def test_the_qwen3_shape_has_the_real_models_parameter_count():
    import torch
    from transformers import AutoModelForCausalLM

    shape = tinymodel.SHAPES["qwen3-0.6b"]
    config = tinymodel.model_config(shape, tinymodel.train_tokenizer(shape))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    # Qwen/Qwen3-0.6B: 596,049,920 parameters (tied embeddings counted once).
    assert sum(p.numel() for p in model.parameters()) == 596_049_920
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_the_cli_prints_the_model_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "model", "generate", "--shape", "tiny",
         "--cache-dir", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path and (path / "config.json").is_file()
