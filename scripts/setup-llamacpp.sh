#!/usr/bin/env bash
# llama.cpp's own `llama-server` and `llama-quantize`, built from source with CMake, for
# `devloop serve --overlay gguf`, the tests and the benchmarks. Cached outside the checkout, so a
# second run (any clone, any worktree) takes seconds:
#
#   ~/.cache/devloop/llamacpp-src/llama_cpp_python-VERSION/vendor/llama.cpp  sources (+ converter)
#   ~/.cache/devloop/llamacpp-build/VERSION/bin/llama-server                 the build
#   ~/.cache/devloop/llamacpp-build/VERSION/devloop-cpu                      the CPU it was built for
#
# ($DEVLOOP_LLAMACPP_CACHE replaces ~/.cache/devloop.) The sources are the llama-cpp-python sdist
# from PyPI: its vendor/llama.cpp is llama.cpp 0c1e570 = release b11312, the tag the Kubernetes
# image is pinned to, and carries convert_hf_to_gguf.py and gguf-py, with which devloop makes GGUF
# files. The build is native (GGML_NATIVE: this CPU's instructions, the fastest code), so it is
# keyed by the CPU as well: the stamp holds the architecture and CPU flags, and a build made on
# another CPU (a cache restored on a different runner) is rebuilt rather than run into SIGILL.
# Only the two programs are built, without curl or OpenSSL (devloop never lets llama-server
# download: it serves files devloop made or the pod's image fetched).
#
#   bash scripts/setup-llamacpp.sh                 # sources + build (cold: about 4 minutes on 2 cores)
#   bash scripts/setup-llamacpp.sh --sources-only  # only the converter (llama-server from brew/PATH)
#
# On macOS `brew install llama.cpp` gives llama-server without a build; devloop finds it on PATH
# (engine/llamacpp/binary.py: $DEVLOOP_LLAMA_SERVER, then PATH, then this cache).
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${DEVLOOP_LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/devloop}
SRC_ROOT=$CACHE/llamacpp-src
SRC=$SRC_ROOT/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$CACHE/llamacpp-build/$VERSION
STAMP=$BUILD/devloop-cpu
PYTHON=${PYTHON:-python3}
sources_only=false
case "${1:-}" in
  --sources-only) sources_only=true ;;
  "") ;;
  *) echo "usage: $0 [--sources-only]" >&2; exit 2 ;;
esac

# The same text as devloop.engine.llamacpp.binary.cpu_identity(): architecture + CPU flags.
cpu_identity() {
  local flags
  flags=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- \
          | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//') || true
  [ -n "$flags" ] || flags=$("$PYTHON" -c 'import platform; print(platform.processor())')
  echo "$(uname -m) $flags"
}

if [ ! -f "$SRC/convert_hf_to_gguf.py" ]; then
  mkdir -p "$SRC_ROOT"
  echo "downloading the llama-cpp-python $VERSION sdist (llama.cpp sources) from PyPI..." >&2
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$SRC_ROOT"
  tar -xzf "$SRC_ROOT/llama_cpp_python-$VERSION.tar.gz" -C "$SRC_ROOT"
fi
echo "llama.cpp sources: $SRC"
$sources_only && exit 0

if [ -x "$BUILD/bin/llama-server" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(cpu_identity)" ]; then
  echo "llama-server (cached): $BUILD/bin/llama-server"
  exit 0
fi
for tool in cmake c++; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: install CMake and a C++ compiler (Debian/Ubuntu: apt-get install" \
         "cmake g++; macOS: xcode-select --install && brew install cmake, or simply" \
         "brew install llama.cpp)" >&2
    exit 1
  }
done
if [ -d "$BUILD" ]; then
  echo "the cached build is for another CPU (or incomplete): rebuilding" >&2
  rm -rf "$BUILD"
fi
mkdir -p "$(dirname "$BUILD")"  # the log sits beside the build: a fresh machine has neither
echo "building llama-server and llama-quantize (CMake, Release, native, all cores)..." >&2
start=$(date +%s)
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$BUILD.cmake.log" 2>&1 \
  || { tail -20 "$BUILD.cmake.log" >&2; exit 1; }
cmake --build "$BUILD" --config Release -j "$(getconf _NPROCESSORS_ONLN)" \
  --target llama-server llama-quantize >>"$BUILD.cmake.log" 2>&1 \
  || { tail -20 "$BUILD.cmake.log" >&2; exit 1; }
cpu_identity >"$STAMP"
echo "built in $(( $(date +%s) - start )) s: $BUILD/bin/llama-server"
"$BUILD/bin/llama-server" --version 2>&1 | head -1
