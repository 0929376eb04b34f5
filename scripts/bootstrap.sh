#!/usr/bin/env bash
# Set up this checkout from nothing: system packages (Debian/Ubuntu, as root), the project's
# virtual environment in .venv, and the isolated policy-scanner environment in .tools/.
# Safe to re-run: each step checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
TOOLS=.tools
APT_PACKAGES=(redis-server)

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

# checkov pins many libraries of its own; a separate environment keeps them out of the project's.
install_policy_scanner() {
  [ -x "$TOOLS/checkov/bin/checkov" ] && return 0
  step "installing checkov into $TOOLS/checkov"
  "$PYTHON" -m venv "$TOOLS/checkov"
  "$TOOLS/checkov/bin/pip" install --quiet --disable-pip-version-check 'checkov==3.3.30'
}

install_system_packages
install_project
install_policy_scanner
step "ready: $VENV/bin/devloop --help"
