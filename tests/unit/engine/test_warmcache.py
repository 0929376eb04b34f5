"""The warm-start cache's key and store: a changed model, vLLM version or CPU is another key; a
half-written, damaged or foreign entry is never used; concurrent writers leave one whole entry."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from devloop.engine import warmcache

FIELDS = {
    "model": "/models/m", "revision": None, "model_files": "ab" * 32, "vllm": "0.32.0",
    "torch": "2.9.0+cpu", "dtype": "torch.bfloat16", "quantization": "awq",
    "tensor_parallel": [1, 0], "pipeline_parallel": [1, 0],
    "cpu": {"arch": "x86_64", "flags": ["amx_bf16", "amx_tile", "avx512f"]},
    "amx_tiles_usable": True, "kernel_env": {}, "quant_methods": ["AutoAWQMarlinLinearMethod"],
}


def _model(directory: Path, weights: bytes, config: str = '{"hidden_size": 64}') -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(config)
    header = json.dumps({"w": {"dtype": "I32", "shape": [len(weights) // 4],
                               "data_offsets": [0, len(weights)]}}).encode()
    (directory / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header
                                                  + weights)
    return directory


def _write(root: Path, key: str, files: dict[str, bytes], label: str = "m") -> Path:
    def fill(directory: Path) -> list[str]:
        for name, data in files.items():
            (directory / name).write_bytes(data)
        return list(files)

    return warmcache.write_entry(root, label, key, FIELDS, fill)


def test_the_same_fields_give_the_same_key_in_any_order():
    assert warmcache.cache_key(FIELDS) == warmcache.cache_key(dict(reversed(FIELDS.items())))


@pytest.mark.parametrize("field, value", [
    ("model_files", "cd" * 32),  # the model's files changed
    ("revision", "0123abc"),
    ("vllm", "0.33.0"),
    ("torch", "2.10.0+cpu"),
    ("dtype", "torch.float32"),
    ("quantization", None),
    ("tensor_parallel", [2, 0]),
    ("cpu", {"arch": "x86_64", "flags": ["avx512f"]}),  # a CPU without AMX
    ("amx_tiles_usable", False),
    ("kernel_env", {"VLLM_CPU_INT4_W4A8": "0"}),
])
def test_every_field_that_makes_an_entry_valid_changes_the_key(field, value):
    assert warmcache.cache_key({**FIELDS, field: value}) != warmcache.cache_key(FIELDS)


def test_the_fingerprint_tells_apart_two_checkpoints_of_one_shape(tmp_path):
    first = warmcache.model_fingerprint(_model(tmp_path / "a", bytes(range(256)) * 1024))
    again = warmcache.model_fingerprint(_model(tmp_path / "b", bytes(range(256)) * 1024))
    other_seed = warmcache.model_fingerprint(_model(tmp_path / "c", bytes(reversed(range(256)))
                                                    * 1024))
    other_config = warmcache.model_fingerprint(
        _model(tmp_path / "d", bytes(range(256)) * 1024, config='{"hidden_size": 128}'))
    assert first == again
    assert len({first, other_seed, other_config}) == 3


def test_the_cpu_kind_keeps_only_the_flags_that_pick_kernels():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_tile amx_bf16 ht\n"
    kind = warmcache.cpu_kind(cpuinfo)
    assert kind["flags"] == ["amx_bf16", "amx_tile", "avx2", "avx512f"]


def test_a_written_entry_is_found_with_its_marker_written_last(tmp_path):
    entry = _write(tmp_path, "k" * 64, {"a.safetensors": b"x" * 100})
    assert warmcache.find_entry(tmp_path, "m", "k" * 64) == entry
    marker = json.loads((entry / warmcache.MARKER).read_text())
    assert marker["key"] == "k" * 64 and marker["files"] == {"a.safetensors": 100}
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # no temporary left


def test_an_entry_is_not_found_under_another_key(tmp_path):
    _write(tmp_path, "k" * 64, {"a": b"x"})
    assert warmcache.find_entry(tmp_path, "m", "j" * 64) is None


def test_a_writer_that_fails_half_way_leaves_nothing_a_reader_uses(tmp_path):
    def fill(directory: Path) -> list[str]:
        (directory / "a").write_bytes(b"half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        warmcache.write_entry(tmp_path, "m", "k" * 64, FIELDS, fill)
    assert warmcache.find_entry(tmp_path, "m", "k" * 64) is None
    assert list(tmp_path.iterdir()) == []


def test_a_directory_without_its_marker_is_not_an_entry(tmp_path):
    directory = warmcache.entry_dir(tmp_path, "m", "k" * 64)
    directory.mkdir(parents=True)
    (directory / "a").write_bytes(b"x" * 100)  # the files, as a copy without the marker has
    assert warmcache.find_entry(tmp_path, "m", "k" * 64) is None


@pytest.mark.parametrize("damage", ["truncate", "delete", "foreign key"])
def test_a_damaged_entry_is_not_used_and_the_next_writer_replaces_it(tmp_path, damage):
    entry = _write(tmp_path, "k" * 64, {"a": b"x" * 100})
    if damage == "truncate":
        (entry / "a").write_bytes(b"x" * 50)
    elif damage == "delete":
        (entry / "a").unlink()
    else:
        marker = json.loads((entry / warmcache.MARKER).read_text())
        (entry / warmcache.MARKER).write_text(json.dumps({**marker, "key": "j" * 64}))
    assert warmcache.find_entry(tmp_path, "m", "k" * 64) is None
    again = _write(tmp_path, "k" * 64, {"a": b"y" * 100})
    assert warmcache.find_entry(tmp_path, "m", "k" * 64) == again
    assert (again / "a").read_bytes() == b"y" * 100
    assert [p.name for p in tmp_path.iterdir()] == [again.name]


def _racing_writer(root: str, tag: bytes, barrier) -> None:
    barrier.wait()
    _write(Path(root), "k" * 64, {f"part-{i}": tag * 200_000 for i in range(4)})


def test_concurrent_writers_leave_one_whole_entry_from_one_of_them(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    writers = [context.Process(target=_racing_writer, args=(str(tmp_path), bytes([65 + i]),
                                                            barrier)) for i in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    entry = warmcache.find_entry(tmp_path, "m", "k" * 64)
    assert entry is not None
    contents = {(entry / f"part-{i}").read_bytes() for i in range(4)}
    assert len(contents) == 1  # every file from the same writer, never a mix
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]


def test_only_old_temporary_directories_are_removed(tmp_path):
    old = tmp_path / f"{warmcache.TEMP_PREFIX}dead-writer"
    live = tmp_path / f"{warmcache.TEMP_PREFIX}live-writer"
    old.mkdir()
    live.mkdir()
    past = time.time() - warmcache.STALE_TEMP_SECONDS - 60
    os.utime(old, (past, past))
    warmcache.remove_stale_temps(tmp_path)
    assert not old.exists() and live.exists()


def test_a_load_format_in_extra_args_turns_warm_starts_off(monkeypatch):
    monkeypatch.setattr(warmcache, "plugin_installed", lambda: True)
    assert warmcache.server_args([]) == ["--load-format", warmcache.LOAD_FORMAT]
    assert warmcache.server_args(["--load-format", "safetensors"]) == []
    assert warmcache.server_args(["--load-format=auto"]) == []


def test_without_the_plugin_installed_the_server_starts_as_before(monkeypatch, caplog):
    monkeypatch.setattr(warmcache, "plugin_installed", lambda: False)
    assert warmcache.server_args([]) == []
    assert "pip install -e ." in caplog.text


def test_the_loader_plugin_is_registered_in_vllms_general_plugins_group():
    import tomllib

    from devloop.manifests.kustomize import project_root

    project = tomllib.loads((project_root(Path(__file__).parent) / "pyproject.toml").read_text())
    group = project["project"]["entry-points"][warmcache.PLUGIN_GROUP]
    assert group[warmcache.PLUGIN_NAME] == "devloop.engine.warmloader:vllm_plugin"
