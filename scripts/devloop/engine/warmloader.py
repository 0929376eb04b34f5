"""A vLLM model loader that keeps what the CPU backend computes at load, for the next start.

On vLLM 0.32's CPU backend an AWQ checkpoint is loaded as it is written, then
`process_weights_after_loading` converts every linear layer: AWQ's interleaved packing to
GPTQ's order, then into CPUWNA16LinearKernel's blocked layout (AutoAWQMarlinLinearMethod,
vllm/model_executor/kernels/linear/mixed_precision/cpu.py) - in Python tensor code, 16 minutes
for the 8B shape on 2 cores. vLLM's own fast paths do not cover it: the `sharded_state` loader
reads a saved state into the model as created (the checkpoint's shapes) and then runs
process_weights_after_loading again, and the weight-cache IPC loader is CUDA-only.

So this loader (`--load-format devloop_warm`, registered by `vllm_plugin`, a
`vllm.general_plugins` entry point vLLM loads in every process) does the load itself:

- cold (no entry for the key, devloop.engine.warmcache): vLLM's default loader reads the
  checkpoint; the layers whose conversion is kept (REPLAYED_METHODS) are saved after it, every
  other tensor (embeddings, norms, unquantized layers, whose CPU processing builds oneDNN handles
  that cannot be saved and takes seconds) is saved before it, as loaded. The entry is written
  atomically; a state this format cannot keep (a non-plain attribute changed) writes none.
- warm: the model is created, the kept tensors and the plain attributes the conversion set
  (`isa_hint`, `use_w4a8`) are put into the kept layers, the rest is copied in as loaded, and
  vLLM's own process_weights_after_loading runs with the kept layers' conversion skipped.

Anything unexpected in an entry (a tensor missing, a shape that differs) falls back to a cold
load: a warm start is an optimisation, never a reason not to start.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from devloop.engine import warmcache

# Under vLLM's logger, so these lines carry its format and process prefix in the server log.
log = logging.getLogger("vllm.devloop.warmloader")

# The quant methods whose conversion is kept, by class name: the state after it is tensors and
# plain attributes only (checked on every cold save).
REPLAYED_METHODS = frozenset({"AutoAWQMarlinLinearMethod"})
STATE_FILE = "state.json"
_SHARD_BYTES = 512 << 20  # safetensors serialises a file in memory: bound the extra RSS
_PLAIN = (bool, int, float, str, type(None))


def vllm_plugin() -> None:
    """vLLM's general-plugin hook: register the load format (every process, before loading)."""
    from vllm.model_executor.model_loader import register_model_loader

    register_model_loader(warmcache.LOAD_FORMAT)(_loader_class())


def _loader_class() -> type:
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    class WarmStartLoader(BaseModelLoader):
        """vLLM's default loader, with the processed state kept on the model-cache volume."""

        def __init__(self, load_config: Any) -> None:
            super().__init__(load_config)
            self.inner = _default_loader(load_config)

        def download_model(self, model_config: Any) -> None:
            self.inner.download_model(model_config)

        def load_weights(self, model: Any, model_config: Any) -> None:
            self.inner.load_weights(model, model_config)

        def load_model(self, vllm_config: Any, model_config: Any, prefix: str = "") -> Any:
            return load_model(self.inner, vllm_config, model_config, prefix)

    return WarmStartLoader


def _default_loader(load_config: Any) -> Any:
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

    inner_config = copy.copy(load_config)
    inner_config.load_format = "auto"  # what the checkpoint's files are, as without this loader
    return DefaultModelLoader(inner_config)


def _model_dir(inner: Any, model_config: Any) -> Path:
    if os.path.isdir(model_config.model):
        return Path(model_config.model)
    folder, *_ = inner._prepare_weights(model_config.model, None, model_config.revision,
                                        model_config.fall_back_to_pt, None)
    return Path(folder)


def key_fields(inner: Any, vllm_config: Any, model_config: Any, model: Any) -> dict[str, Any]:
    """Everything that makes a kept state valid, as the key's fields."""
    import torch
    import vllm
    from vllm.distributed import get_pipeline_model_parallel_rank, get_tensor_model_parallel_rank

    parallel = vllm_config.parallel_config
    methods = sorted({
        f"{type(qm).__name__}/{type(getattr(qm, 'kernel', None)).__name__}"
        for qm in (getattr(m, "quant_method", None) for m in model.modules()) if qm is not None
    })
    return {
        "model": str(model_config.model),
        "revision": model_config.revision,
        "model_files": warmcache.model_fingerprint(_model_dir(inner, model_config)),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "dtype": str(model_config.dtype),
        "quantization": model_config.quantization,
        "tensor_parallel": [parallel.tensor_parallel_size, get_tensor_model_parallel_rank()],
        "pipeline_parallel": [parallel.pipeline_parallel_size, get_pipeline_model_parallel_rank()],
        "cpu": warmcache.cpu_kind(),
        "amx_tiles_usable": bool(torch.cpu._is_amx_tile_supported()),
        "kernel_env": warmcache.kernel_environment(),
        "quant_methods": methods,
    }


def _cache_root() -> Path | None:
    value = os.environ.get(warmcache.DIR_ENV)
    return Path(value) if value else None


def load_model(inner: Any, vllm_config: Any, model_config: Any, prefix: str) -> Any:
    import torch
    from vllm.model_executor.model_loader.base_loader import _has_online_quant
    from vllm.utils.torch_utils import set_default_torch_dtype

    load_config = vllm_config.load_config
    device = torch.device(load_config.device or vllm_config.device_config.device)
    root = _cache_root()
    with set_default_torch_dtype(model_config.dtype):
        with device:
            model = inner.create_model(vllm_config=vllm_config, model_config=model_config,
                                       prefix=prefix)
        if root is None or device.type != "cpu" or _has_online_quant(model):
            log.warning("warm start not used (%s): loading as vLLM does",
                        "no cache directory" if root is None else "not a CPU offline load")
            return _finish_cold(inner, model, model_config, device)
        started = time.perf_counter()
        fields = key_fields(inner, vllm_config, model_config, model)
        key = warmcache.cache_key(fields)
        label = Path(str(model_config.model)).name
        replayed = _replayed_modules(model)
        entry = warmcache.find_entry(root, label, key)
        if not replayed:
            return _passthrough(inner, model, model_config, device, root, label, key, fields,
                                entry)
        if entry is not None:
            try:
                _restore(model, entry, replayed)
                _process_skipping(model, model_config, device, replayed)
                warmcache.add_launch(entry, os.environ.get(warmcache.LAUNCH_ENV))
                log.warning("warm start: %s loaded from %s in %.1f s (checkpoint read and "
                            "%d layers' conversion skipped)", label, entry,
                            time.perf_counter() - started, len(replayed))
                return model.eval()
            except (KeyError, ValueError, RuntimeError, OSError) as error:
                log.warning("warm start: entry %s unusable (%s): loading cold", entry, error)
                with device:
                    model = inner.create_model(vllm_config=vllm_config,
                                               model_config=model_config, prefix=prefix)
                replayed = _replayed_modules(model)
        return _cold_and_save(inner, model, model_config, device, root, label, key, fields,
                              replayed)


def _passthrough(inner: Any, model: Any, model_config: Any, device: Any, root: Path, label: str,
                 key: str, fields: dict[str, Any], entry: Path | None) -> Any:
    """A model with no layer whose conversion is kept (bf16, say): loaded as vLLM does, with an
    empty entry recording that, so `--prepare` knows this launch needs nothing more. What such a
    model gains on the next start is vLLM's own torch.compile cache, also under VLLM_CACHE_ROOT."""
    model = _finish_cold(inner, model, model_config, device)
    if entry is None:
        def fill(directory: Path) -> list[str]:
            (directory / STATE_FILE).write_text(json.dumps({"aliases": {}, "layers": {}}),
                                                encoding="utf-8")
            return [STATE_FILE]

        try:
            warmcache.write_entry(root, label, key, fields, fill,
                                  launch=os.environ.get(warmcache.LAUNCH_ENV))
        except OSError as error:
            log.warning("warm-start entry not written (%s)", error)
    else:
        warmcache.add_launch(entry, os.environ.get(warmcache.LAUNCH_ENV))
    log.warning("%s: no converted layers to keep; loaded from its checkpoint as vLLM does",
                label)
    return model


def _finish_cold(inner: Any, model: Any, model_config: Any, device: Any) -> Any:
    from vllm.model_executor.model_loader.utils import process_weights_after_loading

    inner.load_weights(model, model_config)
    gc.collect()
    process_weights_after_loading(model, model_config, device)
    gc.collect()
    return model.eval()


def _replayed_modules(model: Any) -> dict[str, Any]:
    return {name: module for name, module in model.named_modules()
            if type(getattr(module, "quant_method", None)).__name__ in REPLAYED_METHODS}


def _owner(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _cold_and_save(inner: Any, model: Any, model_config: Any, device: Any, root: Path,
                   label: str, key: str, fields: dict[str, Any], replayed: dict[str, Any]) -> Any:
    from vllm.model_executor.model_loader.utils import process_weights_after_loading

    started = time.perf_counter()
    before = {name: _attrs(module) for name, module in replayed.items()}
    methods_before = {name: _attrs(module.quant_method) for name, module in replayed.items()}
    inner.load_weights(model, model_config)
    gc.collect()
    loaded = time.perf_counter()
    state = {"processed": False}

    def fill(directory: Path) -> list[str]:
        raw = {k: t for k, t in model.state_dict().items() if _owner(k) not in replayed}
        raw, aliases = _unique_storage(raw)
        names = _save_shards(raw, directory, "raw")
        process_weights_after_loading(model, model_config, device)
        state["processed"] = True
        processed = time.perf_counter()
        kept: dict[str, Any] = {}
        layers: dict[str, Any] = {}
        for name, module in replayed.items():
            layers[name] = _layer_state(name, module, before[name], methods_before[name], kept)
        names += _save_shards(kept, directory, "replayed")
        (directory / STATE_FILE).write_text(json.dumps({"aliases": aliases, "layers": layers}),
                                            encoding="utf-8")
        log.warning("cold start: checkpoint read in %.1f s, converted in %.1f s; keeping the "
                    "result for the next start", loaded - started, processed - loaded)
        return [*names, STATE_FILE]

    try:
        entry = warmcache.write_entry(root, label, key, fields, fill,
                                      launch=os.environ.get(warmcache.LAUNCH_ENV))
        log.warning("warm-start entry %s written in %.1f s", entry,
                    time.perf_counter() - started)
    except (warmcache.EntryError, OSError, ValueError) as error:
        log.warning("warm-start entry not written (%s): the next start is cold too", error)
        if not state["processed"]:
            process_weights_after_loading(model, model_config, device)
    gc.collect()
    return model.eval()


def _layer_state(name: str, module: Any, before: dict[str, Any], method_before: dict[str, Any],
                 kept: dict[str, Any]) -> dict[str, Any]:
    """What the conversion left in one layer: tensors into `kept`, the rest as JSON. Raises
    EntryError when it left something a later start could not rebuild from that."""
    if _attrs(module.quant_method) != method_before:
        raise warmcache.EntryError(f"{name}: the conversion changed its quant method's state")
    params = {}
    for pname, param in module._parameters.items():
        params[pname] = param is not None
        if param is not None:
            kept[f"{name}.{pname}"] = param.data
    buffers = {}
    for bname, buffer in module._buffers.items():
        buffers[bname] = buffer is not None
        if buffer is not None:
            kept[f"{name}.{bname}"] = buffer
    after = _attrs(module)
    attrs = {}
    for attr, value in after.items():
        if before.get(attr) == value:
            continue
        encoded = _encode(value)
        if encoded is None:
            raise warmcache.EntryError(f"{name}.{attr}: the conversion set a {type(value)}, "
                                       "which this format does not keep")
        attrs[attr] = encoded
    return {"params": params, "buffers": buffers, "attrs": attrs,
            "deleted_attrs": sorted(set(before) - set(after))}


_MODULE_INTERNALS: frozenset[str] | None = None


def _attrs(obj: Any) -> dict[str, Any]:
    """An object's own attributes, plain values as they are, others by identity."""
    global _MODULE_INTERNALS
    if _MODULE_INTERNALS is None:
        import torch

        _MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
    out = {}
    for name, value in vars(obj).items():
        if name in _MODULE_INTERNALS:
            continue
        out[name] = value if isinstance(value, _PLAIN) else ("<object>", id(value))
    return out


def _encode(value: Any) -> dict[str, Any] | None:
    import torch

    if isinstance(value, _PLAIN):
        return {"value": value}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    return None


def _decode(encoded: dict[str, Any]) -> Any:
    import torch

    return getattr(torch, encoded["dtype"]) if "dtype" in encoded else encoded["value"]


def _unique_storage(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Tied weights (one tensor under two names) saved once: the kept names and the aliases."""
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    unique, aliases = {}, {}
    for name in sorted(tensors):
        tensor = tensors[name]
        ident = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() and ident in seen:
            aliases[name] = seen[ident]
            continue
        seen[ident] = name
        unique[name] = tensor
    return unique, aliases


def _save_shards(tensors: dict[str, Any], directory: Path, stem: str) -> list[str]:
    from safetensors.torch import save_file

    names: list[str] = []
    shard: dict[str, Any] = {}
    size = 0

    def flush() -> None:
        nonlocal shard, size
        name = f"{stem}-{len(names):05d}.safetensors"
        save_file(shard, str(directory / name))
        names.append(name)
        shard, size = {}, 0

    for key in sorted(tensors):
        tensor = tensors[key].detach().contiguous()
        if shard and size + tensor.nbytes > _SHARD_BYTES:
            flush()
        shard[key] = tensor
        size += tensor.nbytes
    if shard or not names:
        flush()
    return names


def _read_shards(entry: Path, stem: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for path in sorted(entry.glob(f"{stem}-*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _restore(model: Any, entry: Path, replayed: dict[str, Any]) -> None:
    """Put an entry's tensors into a freshly created model. Raises KeyError/ValueError when the
    entry does not fit it (then the caller loads cold)."""
    import torch

    state = json.loads((entry / STATE_FILE).read_text(encoding="utf-8"))
    if set(state["layers"]) != set(replayed):
        raise ValueError("the entry's converted layers are not this model's")
    fresh = {k: t for k, t in model.state_dict().items() if _owner(k) not in replayed}
    raw = _read_shards(entry, "raw")
    for name, target in fresh.items():
        if name in state["aliases"]:
            if target.data_ptr() != fresh[state["aliases"][name]].data_ptr():
                raise ValueError(f"{name} is tied in the entry but not in this model")
            continue
        tensor = raw.pop(name)
        if tensor.shape != target.shape or tensor.dtype != target.dtype:
            raise ValueError(f"{name}: {tuple(tensor.shape)} {tensor.dtype} in the entry, "
                             f"{tuple(target.shape)} {target.dtype} in the model")
        target.copy_(tensor)
    if raw:
        raise ValueError(f"the entry has tensors this model lacks: {sorted(raw)[:3]}")
    del raw
    kept = _read_shards(entry, "replayed")
    for name, module in replayed.items():
        layer = state["layers"][name]
        for pname, present in layer["params"].items():
            module._parameters[pname] = (torch.nn.Parameter(kept.pop(f"{name}.{pname}"),
                                                            requires_grad=False)
                                         if present else None)
        for pname in set(module._parameters) - set(layer["params"]):
            del module._parameters[pname]
        for bname, present in layer["buffers"].items():
            module._buffers[bname] = kept.pop(f"{name}.{bname}") if present else None
        for attr, encoded in layer["attrs"].items():
            setattr(module, attr, _decode(encoded))
        for attr in layer["deleted_attrs"]:
            if hasattr(module, attr):
                delattr(module, attr)
    if kept:
        raise ValueError(f"the entry has converted tensors this model lacks: {sorted(kept)[:3]}")


def _process_skipping(model: Any, model_config: Any, device: Any,
                      replayed: dict[str, Any]) -> None:
    """vLLM's own process_weights_after_loading (attention, tied embeddings, oneDNN handles of
    the unquantized layers), with the kept layers' conversion, already done, skipped."""
    from vllm.model_executor.model_loader.utils import process_weights_after_loading

    methods = [module.quant_method for module in replayed.values()]
    for method in methods:
        method.process_weights_after_loading = _already_converted
    try:
        process_weights_after_loading(model, model_config, device)
    finally:
        for method in methods:
            del method.process_weights_after_loading


def _already_converted(layer: Any) -> None:
    """Stands in for a kept layer's conversion on a warm start: its result is already loaded."""
