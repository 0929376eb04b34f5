"""`tilt ci` on a real local cluster: build, deploy the dev overlay with the offline tiny model, wait
for every resource to be ready (the engine's start included), run the health check. Skips with the reason when this
machine has no tilt binary, no container engine or no reachable local cluster."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from devloop.manifests import kustomize
from devloop.ops.doctor.checks import is_local_context

from .conftest import ROOT

pytestmark = pytest.mark.cluster

CI_TIMEOUT = "30m"  # the image build, then the engine's start (the startup probe allows 15 minutes)
TILT_ARGS = ["--", "--overlay=dev", "--model=tiny"]  # what the workflow's tilt-ci job runs


@pytest.fixture(scope="module")
def local_cluster() -> str:
    if shutil.which("tilt") is None:
        pytest.skip("no `tilt` binary on PATH (https://docs.tilt.dev/install.html)")
    if shutil.which("docker") is None:
        pytest.skip("no `docker` CLI on PATH: tilt ci builds the image with it")
    kubectl = kustomize.kubectl_path()
    context = subprocess.run([kubectl, "config", "current-context"], capture_output=True,
                             text=True, check=False).stdout.strip()
    if not context:
        pytest.skip("no current kubectl context: start a local cluster (kind, k3d, minikube...)")
    if not is_local_context(context):
        pytest.skip(f"kubectl context {context!r} is not a local cluster; the Tiltfile refuses it")
    reachable = subprocess.run([kubectl, "version", "--request-timeout=5s"],
                               capture_output=True, text=True, check=False)
    if reachable.returncode != 0:
        pytest.skip(f"cluster of context {context!r} is not reachable: {reachable.stderr.strip()}")
    return context


def test_tilt_ci_brings_the_dev_overlay_up_and_healthy_and_tilt_down_keeps_the_model_cache(
        local_cluster):
    try:
        result = subprocess.run(
            ["tilt", "ci", "--timeout", CI_TIMEOUT, *TILT_ARGS],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    finally:
        down = subprocess.run(["tilt", "down", *TILT_ARGS], cwd=ROOT,
                              capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stderr[-4000:]
    # The claim carries tilt.dev/down-policy: keep (docs/cluster.md): the model is not lost.
    kept = subprocess.run([kustomize.kubectl_path(), "--context", local_cluster, "-n", "vllm-dev",
                           "get", "pvc", "llm-model-cache", "-o", "name"],
                          capture_output=True, text=True, check=False)
    assert kept.stdout.strip() == "persistentvolumeclaim/llm-model-cache", kept.stderr
