"""The AMX tile permission logic, on every machine.

The kernel's answers this machine's kernel never gives (refusals) are replayed through a recorded
syscall; the real syscall runs where the CPU has AMX tiles. The end-to-end proof, a bf16
completion from the real server on an AMX CPU, is in tests/integration/engine/test_serve_cli.py.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devloop.engine import amx
from devloop.engine.entrypoint import fall_back_from_amx
from devloop.engine.settings import EngineConfig
from devloop.manifests.kustomize import project_root

ROOT = project_root(Path(__file__).parent)
AMX_FLAGS = {"avx512f", "amx_tile", "amx_bf16", "amx_int8"}
HAS_AMX = "amx_tile" in amx.cpu_flags() and sys.platform.startswith("linux")


class RecordedKernel:
    """arch_prctl as a kernel with the given behaviour answers it, recording each call."""

    def __init__(self, supports_tiles: bool = True, request_errno: int = 0,
                 grants: bool = True) -> None:
        self.supports_tiles = supports_tiles
        self.request_errno = request_errno
        self.grants = grants
        self.calls: list[int] = []

    def __call__(self, number: int, code: int, arg: int) -> tuple[int, int]:
        assert number == amx.SYS_ARCH_PRCTL
        self.calls.append(code)
        tile_bit = 1 << amx.XFEATURE_XTILEDATA
        if code == amx.ARCH_GET_XCOMP_SUPP:
            ctypes.c_ulong.from_address(arg).value = 0b11 | (tile_bit | tile_bit >> 1
                                                            if self.supports_tiles else 0)
            return 0, 0
        if code == amx.ARCH_REQ_XCOMP_PERM:
            assert arg == amx.XFEATURE_XTILEDATA
            return (-1, self.request_errno) if self.request_errno else (0, 0)
        if code == amx.ARCH_GET_XCOMP_PERM:
            ctypes.c_ulong.from_address(arg).value = 0b11 | (tile_bit if self.grants else 0)
            return 0, 0
        raise AssertionError(f"unexpected arch_prctl code {code:#x}")


def test_a_cpu_without_amx_tiles_needs_no_permission_and_makes_no_syscall():
    kernel = RecordedKernel()
    status = amx.request_permission(flags={"avx2", "avx512f"}, syscall=kernel, applicable=True)
    assert status.permission is amx.Permission.NOT_APPLICABLE
    assert kernel.calls == []


def test_other_architectures_are_not_applicable():
    status = amx.request_permission(flags=AMX_FLAGS, syscall=RecordedKernel(), applicable=False)
    assert status.permission is amx.Permission.NOT_APPLICABLE


def test_a_granting_kernel_is_asked_then_checked():
    kernel = RecordedKernel()
    status = amx.request_permission(flags=AMX_FLAGS, syscall=kernel, applicable=True)
    assert status.permission is amx.Permission.GRANTED
    assert kernel.calls == [amx.ARCH_GET_XCOMP_SUPP, amx.ARCH_REQ_XCOMP_PERM,
                            amx.ARCH_GET_XCOMP_PERM]


@pytest.mark.parametrize("error, words", [
    (errno.ENOSPC, "sigaltstack is too small"),
    (errno.EINVAL, "predates AMX support"),
    (errno.EPERM, "seccomp"),
])
def test_a_refusal_is_reported_with_its_reason(error, words):
    kernel = RecordedKernel(request_errno=error)
    status = amx.request_permission(flags=AMX_FLAGS, syscall=kernel, applicable=True)
    assert status.refused
    assert errno.errorcode[error] in status.detail and words in status.detail


def test_a_kernel_without_tile_state_support_is_a_refusal_without_asking():
    kernel = RecordedKernel(supports_tiles=False)
    status = amx.request_permission(flags=AMX_FLAGS, syscall=kernel, applicable=True)
    assert status.refused and "Linux 5.16" in status.detail
    assert amx.ARCH_REQ_XCOMP_PERM not in kernel.calls


def test_a_success_that_grants_nothing_is_a_refusal():
    kernel = RecordedKernel(grants=False)
    status = amx.request_permission(flags=AMX_FLAGS, syscall=kernel, applicable=True)
    assert status.refused and "ARCH_GET_XCOMP_PERM" in status.detail


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX tiles (grep amx_tile /proc/cpuinfo)")
def test_the_real_kernel_grants_the_permission_and_a_second_request_is_harmless():
    """In a fresh process: the permission is absent before the request and present after."""
    script = (
        "from devloop.engine import amx\n"
        "before = amx.permission_held()\n"
        "first, second = amx.request_permission(), amx.request_permission()\n"
        "print(before, first.permission.name, second.permission.name, amx.permission_held())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.split() == ["False", "GRANTED", "GRANTED", "True"]


@pytest.mark.parametrize("dtype, refused, expected", [
    ("bfloat16", True, "float32"),
    ("auto", True, "float32"),
    ("float16", True, "float32"),
    ("float32", True, "float32"),
    ("float", True, "float"),
    ("bfloat16", False, "bfloat16"),
])
def test_only_a_refusal_moves_an_amx_capable_dtype_to_float32(dtype, refused, expected):
    status = amx.AmxStatus(amx.Permission.REFUSED if refused else amx.Permission.GRANTED, "x")
    assert amx.safe_dtype(dtype, status) == expected


def _config(dtype: str) -> EngineConfig:
    return EngineConfig(
        model_source="tiny", model="/m", served_model_name="tiny", max_model_len=256,
        max_num_seqs=1, dtype=dtype, kvcache_space_gib=1, cpu_threads=1, threads_bind="0",
        enforce_eager=True, host="127.0.0.1", port=8000, shutdown_timeout=0, hf_home="/h",
        vllm_cache_root="/c", api_key_set=False,
    )


def test_the_entrypoint_serves_float32_with_one_line_saying_why(caplog):
    refused = amx.AmxStatus(amx.Permission.REFUSED, "arch_prctl(ARCH_REQ_XCOMP_PERM) failed: EPERM")
    with caplog.at_level(logging.INFO, logger="devloop.entrypoint"):
        config = fall_back_from_amx(_config("bfloat16"), refused)
    assert config.dtype == "float32"
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "AMX refused" in record.message and "EPERM" in record.message
    assert "float32 instead of DTYPE=bfloat16" in record.message


def test_the_entrypoint_keeps_bf16_when_the_kernel_grants_amx(caplog):
    granted = amx.AmxStatus(amx.Permission.GRANTED, "granted")
    with caplog.at_level(logging.INFO, logger="devloop.entrypoint"):
        assert fall_back_from_amx(_config("bfloat16"), granted).dtype == "bfloat16"
    assert caplog.records == []


def test_the_plugin_is_registered_in_vllms_general_plugins_group():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    group = project["project"]["entry-points"]["vllm.general_plugins"]
    assert group[amx.PLUGIN_NAME] == "devloop.engine.amx:vllm_plugin"


def test_the_installed_metadata_carries_the_plugin():
    """What vLLM reads: the entry points of the installed distribution (bootstrap's pip -e)."""
    from importlib.metadata import entry_points

    found = {point.name: point.value for point in entry_points(group="vllm.general_plugins")}
    assert found.get(amx.PLUGIN_NAME) == "devloop.engine.amx:vllm_plugin"


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX tiles (grep amx_tile /proc/cpuinfo)")
def test_a_real_refusal_makes_the_entrypoint_serve_float32():
    """The kernel refuses AMX (ENOSPC) to a process whose signal stack cannot hold the AMX
    signal frame: a real refusal, in a fresh process, then the entrypoint's choice."""
    script = (
        "import ctypes, logging\n"
        "class StackT(ctypes.Structure):\n"
        "    _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int),\n"
        "                ('ss_size', ctypes.c_size_t)]\n"
        "buffer = ctypes.create_string_buffer(4096)\n"
        "stack = StackT(ctypes.cast(buffer, ctypes.c_void_p), 0, 4096)\n"
        "assert ctypes.CDLL(None).sigaltstack(ctypes.byref(stack), None) == 0\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from devloop.engine import amx, entrypoint\n"
        "from tests.unit.engine.test_amx import _config\n"
        "status = amx.request_permission()\n"
        "print(status.permission.name, status.detail)\n"
        "print(entrypoint.fall_back_from_amx(_config('bfloat16'), status).dtype)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True, cwd=ROOT)
    first, dtype = result.stdout.splitlines()
    assert first.startswith("REFUSED") and "ENOSPC" in first
    assert dtype == "float32"
    assert "serving in float32 instead of DTYPE=bfloat16" in result.stderr
