"""GGUF files of the generator's random-weight models, for llama-server with no download.

`tiny_gguf()` is the tiny model (engine/tinymodel) converted by llama.cpp's own
convert_hf_to_gguf.py from the sources binary.find_converter() names, run with this Python
(the converter needs torch and transformers, which the project's environment has). One change
to it: it identifies a tokenizer's pre-tokenizer by hashing how it splits a test string and
knows only published models' hashes; the generator's byte-level BPE splits like GPT-2's, so an
unknown hash is taken as `gpt-2`. Q4_0 and Q4_K_M are made from the f16 file by llama-quantize
(randomgguf writes shapes too big to convert directly). Files are
kept beside the model directory (named by its content hash), made once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devloop.common.errors import DevloopError
from devloop.engine.llamacpp import binary

CONVERTED = ("f16", "bf16", "q8_0")  # what the converter writes itself
QUANTIZED = {"q4_0": "Q4_0", "q4_k_m": "Q4_K_M"}  # what llama-quantize makes from f16

_CONVERT = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
import conversion.base as base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:  # a tokenizer no published model has: ours, GPT-2's splitting
        return "gpt-2"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
converter = sys.argv[1] + "/convert_hf_to_gguf.py"
sys.argv = [converter, *sys.argv[2:]]
runpy.run_path(converter, run_name="__main__")
"""


def _run(argv: list[str], what: str, log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise DevloopError(f"{what} failed (exit {result.returncode}); end of {log}:\n{tail}")


def model_gguf(model_dir: Path, kind: str = "q8_0") -> Path:
    """`model_dir` (a Hugging Face directory) as a GGUF file of `kind`, made once."""
    if kind not in CONVERTED and kind not in QUANTIZED:
        raise DevloopError(f"unknown GGUF kind {kind!r}: {', '.join((*CONVERTED, *QUANTIZED))}")
    target = model_dir.parent / f"{model_dir.name}.{kind}.gguf"
    if target.is_file():
        return target
    log = model_dir.parent / f"{model_dir.name}.gguf.log"
    # A unique staging name: two test workers may make the same file at once.
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    if kind in QUANTIZED:
        source = model_gguf(model_dir, "f16")
        _run([str(binary.find_quantize()), str(source), str(staging), QUANTIZED[kind]],
             f"llama-quantize ({kind})", log)
    else:
        _run([sys.executable, "-c", _CONVERT, str(binary.find_converter()), str(model_dir),
              "--outfile", str(staging), "--outtype", kind],
             f"convert_hf_to_gguf.py ({kind})", log)
    staging.rename(target)
    return target


def tiny_gguf(kind: str = "q8_0", cache_dir: Path | None = None) -> Path:
    """The offline tiny model as GGUF (generated, then converted, each once)."""
    from devloop.engine.tinymodel import generate

    return model_gguf(generate.ensure_model("tiny", cache_dir=cache_dir), kind)
