#!/usr/bin/env bash
# CI only: podman and what the container tests (tests/container) need, on Debian 12 as root.
# `.ci/run` calls this before the tests; a developer may run it on a throwaway Debian machine.
# It changes the machine's podman configuration, so scripts/bootstrap.sh (which users run on
# their own machines) never calls it.
#
# What it sets, and why:
# - runtime = "runc": Debian's default crun fails in CI's sandbox ("cgroups in hybrid mode not
#   supported", setrlimit "Operation not permitted");
# - default_ulimits: podman raises nofile/nproc for root containers above what this sandbox
#   allows (runc then fails with "error setting rlimits ... operation not permitted"), so they
#   are capped at the limits this process actually has.
set -euo pipefail

# iptables: netavark sets up the bridge network of build steps and containers with it, and fails
# with "netavark: No such file or directory" on a machine that lacks it.
PACKAGES=(podman buildah debootstrap runc uidmap fuse-overlayfs slirp4netns netavark aardvark-dns iptables)
CONF=/etc/containers/containers.conf.d/50-devloop-ci.conf

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The hard limits this process may raise to; RLIMIT_NPROC is also bounded by pid_max.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; } && nproc=$pid_max

mkdir -p "$(dirname "$CONF")"
cat > "$CONF" <<EOF
# Written by .ci/container-engine.sh for the container tests in CI.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
EOF
echo "==> podman $(podman version --format '{{.Client.Version}}'): runtime runc, nofile ${nofile}, nproc ${nproc} ($CONF)" >&2
