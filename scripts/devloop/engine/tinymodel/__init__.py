"""Random-weight models that vLLM serves with no download (`devloop model generate`).

The package's public face, what the entrypoint, the benchmarks and the tests use; `shapes.py`
holds the model shapes, `generate.py` the generator and `awq.py` the AWQ 4-bit checkpoint layout.
"""

from devloop.engine.tinymodel.generate import (
    CACHE_SUBDIR,
    COMPLETE_MARKER,
    add_subcommand,
    cache_key,
    default_cache_dir,
    ensure_model,
    model_config,
    train_tokenizer,
)
from devloop.engine.tinymodel.shapes import SHAPES

__all__ = [
    "CACHE_SUBDIR",
    "COMPLETE_MARKER",
    "SHAPES",
    "add_subcommand",
    "cache_key",
    "default_cache_dir",
    "ensure_model",
    "model_config",
    "train_tokenizer",
]
