"""Where llama.cpp's programs and sources are on this machine: the one place that knows.

`llama-server` (and `llama-quantize`) come, in this order, from
1. $DEVLOOP_LLAMA_SERVER (a path to llama-server; llama-quantize is looked for beside it),
2. PATH (`brew install llama.cpp` on macOS installs both),
3. the build `scripts/setup-llamacpp.sh` makes, cached outside the checkout, keyed by version:

       ~/.cache/devloop/llamacpp-src/llama_cpp_python-VERSION/vendor/llama.cpp   the sources
       ~/.cache/devloop/llamacpp-build/VERSION/bin/llama-server                  the build
       ~/.cache/devloop/llamacpp-build/VERSION/devloop-cpu                       the CPU it is for

   ($DEVLOOP_LLAMACPP_CACHE replaces ~/.cache/devloop). The build is native (GGML_NATIVE: this
   CPU's instructions), so it is used only on the CPU its `devloop-cpu` stamp names; the script
   rebuilds it on another one.

The sources (the llama-cpp-python sdist's vendored llama.cpp, the same commit as the image tag)
carry convert_hf_to_gguf.py and gguf-py, with which devloop makes its GGUF files.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from devloop.common.cachedirs import user_cache_dir
from devloop.common.errors import DevloopError

SERVER_ENV = "DEVLOOP_LLAMA_SERVER"
CACHE_ENV = "DEVLOOP_LLAMACPP_CACHE"
SETUP_SCRIPT = "scripts/setup-llamacpp.sh"
# llama-cpp-python 0.3.36 vendors llama.cpp 0c1e570 = release b11312, the image's tag.
VERSION = "0.3.36"
LLAMACPP_BUILD = "b11312"
CPU_STAMP = "devloop-cpu"


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return user_cache_dir() / "devloop"


def build_dir() -> Path:
    return cache_root() / "llamacpp-build" / VERSION


def source_dir() -> Path:
    return cache_root() / "llamacpp-src" / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"


def cpu_identity() -> str:
    """What makes a native build non-portable: the architecture and the CPU's feature flags
    (the first `flags` line of /proc/cpuinfo; elsewhere the processor name). The setup script
    writes the same text into the build's stamp (scripts/setup-llamacpp.sh, cpu_identity)."""
    machine = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return f"{machine} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"{machine} {platform.processor()}"


def _cached_build(program: str) -> Path | None:
    candidate = build_dir() / "bin" / program
    if not candidate.is_file():
        return None
    stamp = build_dir() / CPU_STAMP
    if not stamp.is_file() or stamp.read_text().strip() != cpu_identity():
        raise DevloopError(
            f"{candidate} was built for another CPU (its {CPU_STAMP} stamp does not match this "
            f"one): run `bash {SETUP_SCRIPT}` to rebuild it here"
        )
    return candidate


def _how_to_get(program: str) -> str:
    return (f"{program} not found: set ${SERVER_ENV} to a llama-server, install llama.cpp "
            f"(macOS: `brew install llama.cpp`), or build it with `bash {SETUP_SCRIPT}` "
            "(CMake, about 4 minutes on 2 cores)")


def find_server() -> Path:
    """The llama-server to run; a DevloopError saying how to get one."""
    override = os.environ.get(SERVER_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DevloopError(f"${SERVER_ENV}={override} is not an executable file")
        return path
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    built = _cached_build("llama-server")
    if built is None:
        raise DevloopError(_how_to_get("llama-server"))
    return built


def find_quantize() -> Path:
    """llama-quantize from the same place as llama-server."""
    beside = find_server().parent / "llama-quantize"
    if beside.is_file():
        return beside
    on_path = shutil.which("llama-quantize")
    if on_path:
        return Path(on_path)
    raise DevloopError(_how_to_get("llama-quantize"))


def find_converter() -> Path:
    """The llama.cpp source tree with convert_hf_to_gguf.py and gguf-py (the setup script
    unpacks it even where llama-server comes from PATH: `--sources-only`)."""
    found = source_dir()
    if not (found / "convert_hf_to_gguf.py").is_file():
        raise DevloopError(
            f"no llama.cpp sources in {found} (convert_hf_to_gguf.py makes the GGUF files): run "
            f"`bash {SETUP_SCRIPT} --sources-only` (a 60 MB download from PyPI, no build)"
        )
    return found


def available() -> str | None:
    """None when llama-server can be found, else why not (for tests that skip)."""
    try:
        find_server()
    except DevloopError as error:
        return str(error)
    return None
