"""The local run of a llama.cpp overlay (engine/llamacpp/local.py, amx.py, binary.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.common.errors import DevloopError
from devloop.engine.llamacpp import amx, binary, local, settings


def test_the_gguf_overlay_is_recognised_and_the_vllm_ones_are_not():
    gguf = local.overlay_settings("gguf")
    assert gguf["LLAMA_ARG_HF_REPO"].endswith(":Q4_K_M")
    assert local.overlay_settings("dev") is None


def test_pod_paths_move_under_the_cache_and_the_server_listens_locally(tmp_path):
    env = local.local_environment(local.overlay_settings("gguf"), tmp_path, port=8123)
    assert env["LLAMA_CACHE"] == str(tmp_path / "llama.cpp")
    assert (env["LLAMA_ARG_HOST"], env["LLAMA_ARG_PORT"]) == ("127.0.0.1", "8123")


def test_another_model_replaces_the_download_and_the_alias(tmp_path):
    env = local.local_environment(local.overlay_settings("gguf"), tmp_path, model="/m/x.gguf")
    assert "LLAMA_ARG_HF_REPO" not in env
    assert env["LLAMA_ARG_MODEL"] == env["LLAMA_ARG_ALIAS"] == "/m/x.gguf"


def test_a_bad_override_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(settings.ConfigError, match="did you mean LLAMA_ARG_N_PARALLEL"):
        local.local_environment(local.overlay_settings("gguf"), tmp_path,
                                overrides={"LLAMA_ARG_N_PARALEL": "2"})


def test_amx_tiles_turn_repacking_off_unless_it_is_set(tmp_path):
    amx_cpu = tmp_path / "cpuinfo"
    amx_cpu.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu avx2\n")
    assert "LLAMA_ARG_REPACK=false" in amx.repack_off_reason({}, amx_cpu)
    assert amx.repack_off_reason({"LLAMA_ARG_REPACK": "true"}, amx_cpu) is None
    assert amx.repack_off_reason({}, plain) is None


def test_the_server_is_found_in_the_documented_order(tmp_path, monkeypatch):
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(binary.SERVER_ENV, str(fake))
    assert binary.find_server() == fake
    monkeypatch.setenv(binary.SERVER_ENV, str(tmp_path / "missing"))
    with pytest.raises(DevloopError, match="is not an executable file"):
        binary.find_server()
    monkeypatch.delenv(binary.SERVER_ENV)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv(binary.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DevloopError, match="brew install llama.cpp"):
        binary.find_server()


def test_a_cached_build_for_another_cpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv(binary.SERVER_ENV, raising=False)
    monkeypatch.setenv(binary.CACHE_ENV, str(tmp_path))
    server = binary.build_dir() / "bin" / "llama-server"
    server.parent.mkdir(parents=True)
    server.write_text("")
    (binary.build_dir() / binary.CPU_STAMP).write_text("x86_64 some other cpu\n")
    with pytest.raises(DevloopError, match="built for another CPU"):
        binary.find_server()
    (binary.build_dir() / binary.CPU_STAMP).write_text(binary.cpu_identity() + "\n")
    assert binary.find_server() == server


def test_the_setup_script_stamps_the_same_cpu_identity_as_python(tmp_path):
    import subprocess

    script = Path(binary.__file__).parents[4] / binary.SETUP_SCRIPT
    function = script.read_text().split("cpu_identity() {", 1)[1].split("\n}\n", 1)[0]
    out = subprocess.run(["bash", "-c", "cpu_identity() {" + function + "\n}\nPYTHON=python3; cpu_identity"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == binary.cpu_identity()


@pytest.mark.parametrize(("overrides", "served"), [({}, "tiny"),
                                                   ({"LLAMA_ARG_ALIAS": "tiny-gguf"}, "tiny-gguf")])
def test_the_tiny_model_is_served_as_tiny_unless_another_name_is_asked(
    tmp_path, monkeypatch, overrides, served
):
    # The file itself is the generator's (tests/integration); here only where it is.
    monkeypatch.setattr(local.gguf, "tiny_gguf", lambda: tmp_path / "tiny.gguf")
    env = local.local_environment(local.overlay_settings("gguf"), tmp_path, model="tiny",
                                  overrides=overrides)
    assert env["LLAMA_ARG_MODEL"] == str(tmp_path / "tiny.gguf")
    assert env["LLAMA_ARG_ALIAS"] == served


def test_serve_picks_the_engine_of_an_overlay_with_both_only_when_told():
    from devloop.common.errors import UsageError
    from devloop.engine import serve

    with pytest.raises(UsageError, match="--engine vllm or --engine llamacpp"):
        serve._chosen_llamacpp_settings("multi", None)
    assert serve._chosen_llamacpp_settings("multi", "vllm") is None
    assert serve._chosen_llamacpp_settings("multi", "llamacpp")["LLAMA_ARG_ALIAS"]
    assert serve._chosen_llamacpp_settings("gguf", None) is not None
    assert serve._chosen_llamacpp_settings("dev", None) is None
