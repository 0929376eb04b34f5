"""`devloop doctor` on what Tilt builds and deploys: the newest image of the repository the
Tiltfile builds (any tag, any registry), the CRDs of the overlay's custom kinds, and fixes that
never send the user to the overlay already in use."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devloop.ops.doctor import command as doctor
from devloop.ops.doctor import facts as doctor_facts

from .test_doctor import ROOT, healthy, kind_node, result, tiltfile_list

DOCKER_LINES = "\n".join([  # noqa: FLY002 - one image per line, each with its comment
    "localhost:5001/vllm-devloop\ttilt-5c3b1f2d9a0e\t2026-11-20 09:00:00 +0100 CET",
    "vllm-devloop\ttilt-77aa00bb11cc\t2026-11-21 10:30:00 +0100 CET",   # the newest
    "vllm-devloop\t<none>\t2026-11-22 08:00:00 +0100 CET",              # dangling: no tag to use
    "ghcr.io/acme/vllm-devloop-old\tv1\t2026-11-23 08:00:00 +0000 UTC",  # another repository
    "myvllm-devloop\tdev\t2026-11-23 08:00:00 +0000 UTC",                # another repository
    "redis\t7.4.2\t2026-11-24 08:00:00 +0000 UTC",
])


def test_the_repository_looked_for_is_the_one_the_tiltfile_builds():
    import re

    # The engine's image: its architecture is the one that matters (vLLM's kernels).
    match = re.search(r'^ENGINE_IMAGE = "([^"]+)"', (ROOT / "Tiltfile").read_text(), re.MULTILINE)
    assert match and doctor_facts.IMAGE_REPOSITORY == match.group(1)


def test_builtin_api_groups_are_the_tiltfiles():
    assert doctor_facts.BUILTIN_API_GROUPS == frozenset(tiltfile_list("BUILTIN_GROUPS"))


def test_images_of_the_repository_under_any_registry_and_tag_are_found():
    images = doctor_facts.parse_image_list(DOCKER_LINES, "docker")
    assert [image.reference for image in images] == [
        "localhost:5001/vllm-devloop:tilt-5c3b1f2d9a0e", "vllm-devloop:tilt-77aa00bb11cc"]
    assert doctor_facts.newest_image(images).reference == "vllm-devloop:tilt-77aa00bb11cc"


def test_podmans_date_format_and_local_prefix_are_read():
    line = "localhost/vllm-devloop\ttilt-1\t2026-11-26 14:22:50.123456789 +0000 UTC"
    [image] = doctor_facts.parse_image_list(line, "podman")
    assert image.reference == "localhost/vllm-devloop:tilt-1" and image.created.hour == 14


def test_no_image_yet_says_which_repository_and_tools_were_searched(rendered):
    facts = healthy(rendered, image=None, image_arch=None, image_tools=("docker", "podman"))
    res = result(facts, "architecture")
    assert res.status == "pass"
    assert "no vllm-devloop image (any registry, any tag) in docker or podman yet" in res.summary
    nothing = result(replace(facts, nodes=(), image_tools=()), "architecture")
    assert nothing.status == "warn" and "neither answered" in nothing.summary


def test_the_newest_image_is_the_one_inspected(rendered):
    res = result(healthy(rendered, image="vllm-devloop:tilt-77aa00bb11cc"), "architecture")
    assert res.summary == "image vllm-devloop:tilt-77aa00bb11cc (the newest built) is amd64, like this host"


@pytest.fixture
def podman_with_images(tmp_path: Path):
    """podman on a storage of this test's own, holding two builds of the repository under
    different registries, the second one newer: what `tilt up` leaves behind."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("no podman on PATH")
    (tmp_path / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{tmp_path}/run"\ngraphroot = "{tmp_path}/graph"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").symlink_to(podman)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"),
           "CONTAINERS_STORAGE_CONF": str(tmp_path / "storage.conf")}
    for name, content in (("localhost:5001/vllm-devloop:tilt-older", b"1"),
                          ("localhost/vllm-devloop:tilt-newer", b"2")):
        layer = tmp_path / f"{content.decode()}.tar"
        with tarfile.open(layer, "w") as tar:
            (tmp_path / "marker").write_bytes(content)
            tar.add(tmp_path / "marker", arcname="marker")
        done = subprocess.run([podman, "import", str(layer), name], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            pytest.skip(f"podman cannot import an image here: {done.stderr.strip()[-300:]}")
        time.sleep(1.1)  # image ls shows creation times to the second
    return env


@pytest.mark.container
def test_gathering_finds_the_newest_tilt_build_in_podman(podman_with_images):
    facts = doctor.gather("dev", ROOT, env=podman_with_images)
    assert facts.image_tools == ("podman",)
    assert facts.image == "localhost/vllm-devloop:tilt-newer"
    assert facts.image_arch == doctor_facts.normalise_arch(platform.machine())


# ---- CRDs ----------------------------------------------------------------------------------

def test_an_overlay_of_builtin_kinds_needs_no_crd(rendered):
    assert result(healthy(rendered, "dev", crds=None), "crds").status == "pass"


def test_a_cluster_without_the_prometheus_operator_crds_warns_with_the_install_commands(rendered):
    res = result(healthy(rendered, "optimized", crds=()), "crds")
    assert res.status == "warn"
    assert res.summary == (
        "the cluster has no CRD for gateway.networking.k8s.io/Gateway, "
        "gateway.networking.k8s.io/HTTPRoute, monitoring.coreos.com/ServiceMonitor: `kubectl "
        "apply` rejects Gateway/llm, HTTPRoute/llm, ServiceMonitor/llm-engine, "
        "ServiceMonitor/llm-gateway (the rest applies) and `tilt up` leaves them out")
    assert "releases/download/v1.6.1/standard-install.yaml" in res.fix
    assert "kube-prometheus-stack" in res.fix
    assert "`kubectl apply --server-side -f kustomize/crds/`" in res.fix
    assert (ROOT / "kustomize/crds").is_dir()


def test_crds_are_skipped_without_a_cluster_and_pass_when_present(rendered):
    assert result(healthy(rendered, "optimized", crds=None), "crds").status == "skip"
    present = result(healthy(rendered, "optimized"), "crds")
    assert present.status == "pass" and "monitoring.coreos.com/ServiceMonitor" in present.summary


def test_kubectls_crd_columns_are_read():
    text = ("monitoring.coreos.com   ServiceMonitor\n"
            "monitoring.coreos.com   PodMonitor\n"
            "cert-manager.io         Certificate\n")
    assert doctor_facts.parse_crd_columns(text) == (
        "monitoring.coreos.com/ServiceMonitor", "monitoring.coreos.com/PodMonitor",
        "cert-manager.io/Certificate")
    assert doctor_facts.parse_crd_columns("") == ()


# ---- fixes that never point at the overlay in use --------------------------------------------

@pytest.mark.parametrize("overlay", ["dev", "optimized"])
def test_a_short_node_is_never_told_to_use_the_overlay_it_runs(rendered, overlay):
    smaller = doctor._smaller_overlays(healthy(rendered, overlay), ROOT)
    facts = healthy(rendered, overlay, smaller_overlays=smaller,
                    nodes=(kind_node(cpu="1", memory="2Gi"),))
    res = result(facts, "resources")
    assert res.status == "fail"
    assert f"--overlay {overlay}`" not in res.fix
    if overlay == "optimized":
        assert smaller == ("dev", "gguf", "multi") and "`--overlay dev`" in res.fix
    else:
        assert smaller == () and "requests in kustomize/overlays/dev/ (no overlay asks for less)" in res.fix
