"""Whether llama.cpp may use its AMX kernels here: the same rule as the pod's start shell
(components/llamacpp/deployment-llm-llamacpp.yaml), for `devloop serve` and the tests.

On the project's AMX machine (a Xeon in a Firecracker KVM guest, Linux 6.18) llama-server
b11312 built natively dies on its first AMX matrix product, SIGSEGV or SIGILL on `ldtilecfg` in
ggml_backend_amx_mul_mat, although ggml_amx_init got the tile permission (arch_prctl
ARCH_REQ_XCOMP_PERM returns 0, and a standalone program using the tiles in four threads runs
fine). The AMX weight layout is one of llama.cpp's "extra buffer types", which
LLAMA_ARG_REPACK=false turns off: the AVX-512/VNNI kernels then run it, without weight
repacking. So on a CPU with AMX tiles, unless LLAMA_ARG_REPACK is set, it is turned off, with
one log line. tests/integration/engine/test_llamacpp_amx.py pins both halves on an AMX machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def has_amx_tiles(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        return "amx_tile" in cpuinfo.read_text().split()
    except OSError:
        return False


def repack_off_reason(env: Mapping[str, str], cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The log line saying why repacking goes off, or None when it stays as `env` says."""
    if env.get("LLAMA_ARG_REPACK", "").strip() or not has_amx_tiles(cpuinfo):
        return None
    return ("CPU with AMX tiles: llama.cpp's AMX kernels crash here, so weight repacking is off "
            "(LLAMA_ARG_REPACK=false; set LLAMA_ARG_REPACK=true to use them)")
