#!/usr/bin/env bash
# llama.cpp for `devloop bench-compare --plan llamacpp`: PyPI's llama-cpp-python[server], compiled
# from source on this machine (pip runs its CMake build: 15-40 minutes on 2 cores), in its own
# environment under .tools/llamacpp (or $DEVLOOP_LLAMACPP_DIR), away from the project's .venv.
# The sdist is kept unpacked beside it: its vendor/llama.cpp holds convert_hf_to_gguf.py and
# gguf-py, the converter devloop uses to make GGUF files. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${DEVLOOP_LLAMACPP_DIR:-.tools/llamacpp}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PYTHON=${PYTHON:-python3}
pip=(--quiet --disable-pip-version-check)

mkdir -p "$DIR/src"
[ -x "$DIR/venv/bin/python" ] || "$PYTHON" -m venv "$DIR/venv"
if ! "$DIR/venv/bin/python" -c "import llama_cpp, llama_cpp.server" 2>/dev/null; then
  "$DIR/venv/bin/pip" download "${pip[@]}" --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$DIR/src"
  tar -xzf "$DIR/src/llama_cpp_python-$VERSION.tar.gz" -C "$DIR/src"
  echo "building llama-cpp-python $VERSION from source (CMake, all cores)..." >&2
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$DIR/venv/bin/pip" install "${pip[@]}" \
    "$DIR/src/llama_cpp_python-$VERSION[server]"
fi
"$DIR/venv/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
