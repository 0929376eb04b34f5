"""The entrypoint against the installed vLLM: every flag and variable it uses is one vLLM knows.

Checked with vLLM's own argument parser and environment table, so an upgrade that renames a flag
or a variable fails here instead of in a pod that crash-loops.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from devloop.engine import serve
from devloop.engine.amx import cpu_flags
from devloop.engine.cpus import format_cpu_list
from devloop.engine.entrypoint import VLLM_SERVER_MODULE, vllm_args, vllm_env
from devloop.engine.settings import DTYPES, Limits, load_config
from devloop.manifests import kustomize

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")

GIB = 1 << 30
# Room for every overlay's settings (the optimized one asks for 6 threads and a 5 GiB KV cache).
BIG_NODE = Limits(cpus=list(range(8)), cpu_limit=6.0, memory_limit=16 * GIB,
                  physical_memory=64 * GIB)
FORBIDDEN = ("--cpu-only", "VLLM_CPU_ONLY", "--disable-log-requests")
ROOT = kustomize.project_root(Path(__file__).parent)


@pytest.fixture(scope="module")
def vllm_parser():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vllm-server"))


def overlay_env(overlay: str, tmp_path: Path) -> dict[str, str]:
    settings = serve.overlay_engine_settings(overlay)
    # The pod's volume paths, made writable here.
    settings["HF_HOME"] = str(tmp_path / "hf")
    settings["VLLM_CACHE_ROOT"] = str(tmp_path / "vllm")
    return settings


def parse(parser, args: list[str]):
    try:
        return parser.parse_args(args)
    except SystemExit as exited:  # argparse's way of saying "unknown or invalid argument"
        raise AssertionError(f"vLLM's parser rejected {args}") from exited


# The overlays whose engine is vLLM (the gguf overlay runs llama.cpp: tests/e2e/llamacpp).
VLLM_OVERLAYS = [name for name in kustomize.overlay_names(ROOT) if name != "gguf"]


@pytest.mark.parametrize("overlay", VLLM_OVERLAYS)
def test_every_overlays_arguments_are_accepted_by_vllms_parser(overlay, tmp_path, vllm_parser):
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    env = overlay_env(overlay, tmp_path)
    env["EXTRA_ARGS"] = "--seed 7 --block-size 32"  # the route EXTRA_ARGS takes, too
    config = load_config(env, BIG_NODE)
    parsed = parse(vllm_parser, vllm_args(config))
    validate_parsed_serve_args(parsed)
    assert parsed.model == config.model
    assert parsed.served_model_name == [config.served_model_name]
    assert parsed.max_model_len == config.max_model_len
    assert parsed.max_num_seqs == config.max_num_seqs
    assert parsed.dtype == config.dtype
    assert parsed.port == config.port
    assert parsed.enforce_eager is config.enforce_eager
    assert parsed.shutdown_timeout == config.shutdown_timeout > 0, "the engine must drain"
    assert parsed.seed == 7


def test_the_server_module_is_the_one_vllm_ships():
    import importlib.util

    assert importlib.util.find_spec(VLLM_SERVER_MODULE) is not None


def test_dtype_choices_match_vllms():
    from vllm.config.model import ModelDType

    assert set(DTYPES) == set(typing.get_args(ModelDType))


def _vllm_keys_in(overlay: str, tmp_path: Path) -> set[str]:
    config = load_config(overlay_env(overlay, tmp_path), BIG_NODE)
    env = vllm_env(config, {**overlay_env(overlay, tmp_path), "VLLM_API_KEY": "k"})
    return {key for key in env if key.startswith("VLLM_")}


@pytest.mark.parametrize("overlay", VLLM_OVERLAYS)
def test_every_vllm_variable_in_the_manifests_and_the_entrypoint_is_one_vllm_reads(
    overlay, tmp_path
):
    import vllm.envs

    keys = _vllm_keys_in(overlay, tmp_path)
    engine_env = (ROOT / "kustomize/base/engine.env").read_text()
    keys |= {line.split("=", 1)[0] for line in engine_env.splitlines() if line.startswith("VLLM_")}
    assert {"VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND"} <= keys
    unknown = sorted(keys - set(vllm.envs.environment_variables))
    assert not unknown, f"vLLM {vllm.__version__} does not read {unknown}"


def test_vllm_reads_the_api_key_from_its_environment_itself():
    import vllm.envs

    # So the entrypoint passes no --api-key (which would show the key in the process list).
    assert "VLLM_API_KEY" in vllm.envs.environment_variables


@pytest.mark.parametrize("flag", ["--cpu-only", "--disable-log-requests"])
def test_flags_from_old_guides_do_not_exist_in_this_vllm(flag, vllm_parser):
    with pytest.raises(SystemExit):
        vllm_parser.parse_args(["--model", "x", flag])


def test_no_nonexistent_flag_or_variable_appears_in_kustomize_or_the_image():
    files = [*sorted((ROOT / "kustomize").rglob("*")), ROOT / "image" / "Dockerfile"]
    for path in files:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for word in FORBIDDEN:
                assert word not in text, f"{path.relative_to(ROOT)} mentions {word}"


def test_rendered_overlays_carry_no_nonexistent_flag_or_variable():
    for overlay in kustomize.overlay_names(ROOT):
        rendered = kustomize.render_overlay(overlay, ROOT)
        for word in FORBIDDEN:
            assert word not in rendered, f"overlay {overlay} renders {word}"


def test_the_entrypoint_execs_so_the_server_process_is_vllm_itself(vllm_server):
    """exec, not a child: the pid `devloop entrypoint` started with is now the vLLM server, so
    the kubelet's SIGTERM goes straight to vLLM."""
    cmdline = Path(f"/proc/{vllm_server.pid}/cmdline").read_bytes().split(b"\0")
    assert VLLM_SERVER_MODULE.encode() in cmdline
    environ = dict(
        item.split(b"=", 1) for item in
        Path(f"/proc/{vllm_server.pid}/environ").read_bytes().split(b"\0") if b"=" in item
    )
    here = Limits.of_this_process()
    assert environ[b"VLLM_CPU_NUM_OF_RESERVED_CPU"] == b"0"
    assert environ[b"VLLM_CPU_OMP_THREADS_BIND"].decode() == format_cpu_list(
        here.cpus[: here.usable_cpus]
    )


def test_vllms_own_plugin_loader_finds_the_amx_plugin():
    from vllm.plugins import DEFAULT_PLUGINS_GROUP, load_plugins_by_group

    from devloop.engine import amx

    plugins = load_plugins_by_group(DEFAULT_PLUGINS_GROUP)
    assert plugins[amx.PLUGIN_NAME] is amx.vllm_plugin


@pytest.mark.skipif("amx_tile" not in cpu_flags(),
                    reason="this CPU has no AMX tiles (grep amx_tile /proc/cpuinfo)")
def test_a_process_that_loads_vllms_general_plugins_holds_the_amx_permission():
    """What every vLLM process (API server, engine core, workers) does before its kernels run."""
    import subprocess
    import sys

    script = (
        "from devloop.engine import amx\n"
        "before = amx.permission_held()\n"
        "from vllm.plugins import load_general_plugins\n"
        "load_general_plugins()\n"
        "print(before, amx.permission_held())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.split()[-2:] == ["False", "True"]
