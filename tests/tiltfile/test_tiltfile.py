"""The real Tiltfile, evaluated in Starlark with Tilt's API recorded, checked against what the
overlays render (kubectl kustomize) and what image/Dockerfile builds."""

from __future__ import annotations

import fnmatch
import posixpath
from pathlib import Path

import pytest
import starlark

from devloop.manifests import kustomize

from .conftest import CRD_FILES, OVERLAYS, ROOT, TILTFILE, evaluate
from .fake_kubectl import FakeCluster
from .tilt_api import TiltEnvironment
from .tilt_records import Blob, TiltfileError, TriggerMode, image_name, pod_containers

ENGINE_IMAGE, GATEWAY_IMAGE = "vllm-devloop", "vllm-devloop-gateway"
IMAGES = (ENGINE_IMAGE, GATEWAY_IMAGE)
ENGINE, GATEWAY, REDIS = "llm-engine", "llm-gateway", "llm-redis"
# The engine workload and its container per overlay: vLLM's, or llama.cpp's in the gguf overlay.
LLAMACPP_OVERLAYS = {"gguf"}


def engine_of(overlay: str) -> str:
    return "llm-llamacpp" if overlay in LLAMACPP_OVERLAYS else ENGINE


def engine_container_of(overlay: str) -> str:
    return "llama-server" if overlay in LLAMACPP_OVERLAYS else "vllm"


def images_of(overlay: str) -> tuple[str, ...]:
    """The images of ours an overlay runs: llama.cpp's engine is an upstream image, so the gguf
    overlay builds the gateway's alone."""
    return (GATEWAY_IMAGE,) if overlay in LLAMACPP_OVERLAYS else IMAGES


# Every (overlay, image) pair the overlay builds.
OVERLAY_IMAGES = [(overlay, image) for overlay in OVERLAYS for image in images_of(overlay)]
LOCAL_CONTEXTS = ["docker-desktop", "kind-kind", "kind-vllm", "k3d-dev", "minikube", "orbstack",
                  "rancher-desktop"]
REMOTE_CONTEXTS = ["gke_acme-prod_europe-west1_main", "arn:aws:eks:eu-west-1:1234:cluster/prod",
                   "prod", "kind", "my-kind-cluster", "minikube-remote", ""]

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def _workloads(resources):
    return {name: r for name, r in resources.items() if r.workload is not None}


def _build(rec, image=ENGINE_IMAGE):
    """The docker_build of `image`, which must be built exactly once."""
    builds = [b for b in rec.docker_builds if b.ref == image]
    assert len(builds) == 1, [b.ref for b in rec.docker_builds]
    return builds[0]


def _syncs(build):
    return [step.paths for step in build.live_update if step.kind == "sync"]


def _fall_back_paths(build):
    return [p for step in build.live_update if step.kind == "fall_back_on" for p in step.paths]


def _in_context(build, path: str) -> str:
    """`path` (relative to the Tiltfile) as a path relative to the build context."""
    absolute = (TILTFILE.parent / path).resolve()
    return absolute.relative_to(build.context).as_posix()


# -- what gets deployed ---------------------------------------------------------------------


@overlays
def test_deploys_exactly_what_kubectl_kustomize_renders_where_the_cluster_has_every_crd(overlay):
    env = TiltEnvironment(TILTFILE, args=[f"--overlay={overlay}"],
                          cluster=FakeCluster.with_crd_files(*CRD_FILES))
    rec = env.run()
    assert rec.failure is None and rec.warnings == []
    assert len(rec.k8s_yaml) == 1
    handed = rec.k8s_yaml[0]
    assert isinstance(handed, Blob), "k8s_yaml got a string, which Tilt reads as a file path"
    assert handed.source == f"kustomize/overlays/{overlay}"
    assert handed.text == kustomize.render_overlay(overlay, ROOT)


def test_overlay_defaults_to_dev():
    _, rec = evaluate()
    assert rec.failure is None
    assert rec.k8s_yaml[0].source == "kustomize/overlays/dev"


def test_tilt_config_json_remembers_the_overlay():
    _, rec = evaluate(tilt_config={"overlay": "optimized"})
    assert {obj["metadata"].get("namespace") for obj in rec.objects} == {"vllm-optimized", None}


def test_overlay_flag_overrides_tilt_config_json():
    _, rec = evaluate(args=["--overlay", "dev"], tilt_config={"overlay": "optimized"})
    assert rec.k8s_yaml[0].source == "kustomize/overlays/dev"


def test_unknown_overlay_names_the_available_ones():
    _, rec = evaluate(args=["--overlay=prod"])
    assert rec.failure is not None
    assert "unknown overlay 'prod'" in rec.failure
    assert f"the overlays are: {', '.join(OVERLAYS)}" in rec.failure
    assert not rec.k8s_yaml and not rec.docker_builds, "nothing may be deployed after fail()"


def test_overlay_list_comes_from_the_directories(tmp_path):
    """A new overlay directory is selectable without editing the Tiltfile; a directory without
    a kustomization.yaml is not an overlay."""
    (tmp_path / "Tiltfile").write_text(TILTFILE.read_text(encoding="utf-8"), encoding="utf-8")
    for name in ("alpha", "beta"):
        (tmp_path / "kustomize/overlays" / name).mkdir(parents=True)
        (tmp_path / "kustomize/overlays" / name / "kustomization.yaml").write_text("resources: []\n")
    (tmp_path / "kustomize/overlays/notes").mkdir()
    (tmp_path / "kustomize/overlays/notes/README.md").write_text("not an overlay\n")
    rec = TiltEnvironment(tmp_path / "Tiltfile", args=["--overlay=gamma"]).run()
    assert rec.failure is not None and "the overlays are: alpha, beta (" in rec.failure


# -- the image ------------------------------------------------------------------------------


@overlays
def test_each_built_image_is_used_by_the_manifests_and_vice_versa(tilt_up, overlay):
    rec, _ = tilt_up(overlay)
    built = {image_name(build.ref) for build in rec.docker_builds}
    used = {image_name(c["image"]) for obj in rec.objects for c in pod_containers(obj)}
    assert built <= used, f"built but never deployed: {built - used}"
    # Images from this repository have no registry host; everything else is pulled (redis:...).
    from_repo = {name for name in used if "/" not in name and name.startswith("vllm-devloop")}
    assert from_repo <= built, f"deployed but not built: {from_repo - built}"
    assert built == set(images_of(overlay)), "every overlay runs the gateway, and vLLM's engine if it has it"


@overlays
def test_the_images_build_from_the_repository_root_with_image_dockerfile(tilt_up, overlay):
    for build in tilt_up(overlay)[0].docker_builds:
        assert build.context == ROOT.resolve()
        assert build.dockerfile == (ROOT / "image/Dockerfile").resolve()


@overlays
def test_image_platform_is_the_hosts_unless_overridden(overlay):
    _, rec = evaluate(args=[f"--overlay={overlay}"])
    count = len(images_of(overlay))
    assert [b.platform for b in rec.docker_builds] == [""] * count, "empty: Docker builds for the host"
    _, rec = evaluate(args=[f"--overlay={overlay}", "--platform=linux/amd64"])
    assert [b.platform for b in rec.docker_builds] == ["linux/amd64"] * count


PODMAN_DOCKER_HOST = "unix:///run/podman/podman.sock"


def test_a_podman_docker_host_with_buildkit_on_stops_before_building_with_the_fix():
    """Tilt would try a BuildKit session podman does not have (tests/container pins that)."""
    _, rec = evaluate(environ={"DOCKER_HOST": PODMAN_DOCKER_HOST})
    assert rec.failure is not None
    assert "DOCKER_BUILDKIT=0 tilt up" in rec.failure and PODMAN_DOCKER_HOST in rec.failure
    assert not rec.k8s_yaml and not rec.docker_builds, "nothing may be deployed after fail()"
    _, rec = evaluate(environ={"DOCKER_HOST": PODMAN_DOCKER_HOST, "DOCKER_BUILDKIT": "1"})
    assert rec.failure is not None


@pytest.mark.parametrize("value", ["0", "false", "F"])
def test_a_podman_docker_host_with_the_legacy_builder_builds(value):
    _, rec = evaluate(environ={"DOCKER_HOST": PODMAN_DOCKER_HOST, "DOCKER_BUILDKIT": value})
    assert rec.failure is None and len(rec.docker_builds) == len(IMAGES)


def test_docker_hosts_other_than_podman_build_with_the_engines_default():
    for environ in ({}, {"DOCKER_HOST": "unix:///var/run/docker.sock"}):
        _, rec = evaluate(environ=environ)
        assert rec.failure is None and len(rec.docker_builds) == len(IMAGES)


@pytest.mark.parametrize(("overlay", "image"), OVERLAY_IMAGES)
def test_build_context_holds_every_file_the_dockerfile_copies(tilt_up, overlay, dockerfile, image):
    """Each COPY source is in the context: whole, or (a directory) through the parts of it that
    docker_build(only=...) names."""
    build = _build(tilt_up(overlay)[0], image)
    for source in dockerfile.context_sources():
        path = posixpath.normpath(source)
        assert (build.context / path).exists(), f"Dockerfile copies {source}, which does not exist"
        assert any(path == only or path.startswith(only.rstrip("/") + "/")
                   or only.startswith(path + "/") for only in build.only), (
            f"Dockerfile copies {source}, which docker_build(only=...) leaves out of the context")
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in build.ignore)




# -- resources ------------------------------------------------------------------------------


@overlays
def test_port_forwards_reach_ports_the_containers_declare(tilt_up, overlay):
    _, resources = tilt_up(overlay)
    forwards = {name: r.port_forwards for name, r in resources.items() if r.port_forwards}
    assert {pf.local_port for pf in forwards[engine_of(overlay)]} == {8000}
    assert {pf.local_port for pf in forwards[GATEWAY]} == {8080}
    local_ports = [pf.local_port for pfs in forwards.values() for pf in pfs]
    assert len(local_ports) == len(set(local_ports)), "two forwards on one local port"
    for name, pfs in forwards.items():
        workload = resources[name].workload
        assert workload is not None, f"port forward on {name}, which has no pods"
        declared = {p["containerPort"] for c in pod_containers(workload) for p in c.get("ports", [])}
        for pf in pfs:
            assert (pf.container_port or pf.local_port) in declared, (name, pf, declared)


@overlays
def test_configured_resources_are_workloads_that_exist(tilt_up, overlay):
    rec, resources = tilt_up(overlay)
    workloads = _workloads(resources)
    assert {engine_of(overlay), GATEWAY, REDIS} <= set(workloads)
    for call in rec.k8s_resource_calls:
        if call["workload"]:
            assert call["workload"] in workloads


@overlays
def test_every_object_belongs_to_a_named_resource(tilt_up, overlay):
    _, resources = tilt_up(overlay)
    assert "uncategorized" not in resources, [
        f"{o['kind']}/{o['metadata']['name']}" for o in resources["uncategorized"].objects]


@overlays
def test_workloads_wait_for_what_their_pods_need(tilt_up, overlay):
    _, resources = tilt_up(overlay)
    setup = next(r for r in resources.values() if any(o["kind"] == "Namespace" for o in r.objects))
    for name, resource in _workloads(resources).items():
        assert setup.name in resource.resource_deps, f"{name} may start before its namespace exists"


@overlays
def test_gateway_waits_for_redis_and_not_for_the_engine(tilt_up, overlay):
    _, resources = tilt_up(overlay)
    assert REDIS in resources[GATEWAY].resource_deps
    assert engine_of(overlay) not in resources[GATEWAY].resource_deps, "the model load would hold the gateway"


@overlays
def test_engine_readiness_waits_for_the_pod_whose_startup_probe_allows_a_slow_load(tilt_up, overlay):
    _rec, resources = tilt_up(overlay)
    assert resources[engine_of(overlay)].pod_readiness in ("", "wait")
    engine = resources[engine_of(overlay)].workload
    container = next(c for c in pod_containers(engine) if c["name"] == engine_container_of(overlay))
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600, "under 10 minutes to load"


@overlays
def test_resources_are_grouped_by_label(tilt_up, overlay):
    _, resources = tilt_up(overlay)
    assert resources[engine_of(overlay)].labels == ["engine"]
    assert resources[GATEWAY].labels == resources[REDIS].labels == ["cache"]
    assert all(r.labels for r in resources.values()), [n for n, r in resources.items() if not r.labels]


def test_overlays_without_live_update_update_on_the_button(tilt_up):
    """Without live update an edit rebuilds the image and restarts the engine (a model load):
    such overlays update image-using workloads on demand, dev on save."""
    for overlay in OVERLAYS:
        rec, resources = tilt_up(overlay)
        live = any(build.live_update for build in rec.docker_builds)
        expected = TriggerMode.AUTO if live else TriggerMode.MANUAL
        # The llama.cpp engine runs an upstream image Tilt does not build: only the gateway.
        names = (GATEWAY,) if overlay in LLAMACPP_OVERLAYS else (ENGINE, GATEWAY)
        for name in names:
            assert resources[name].trigger_mode == expected, (overlay, name)


# -- buttons --------------------------------------------------------------------------------


@overlays
def test_buttons_are_manual_and_never_run_at_tilt_up(tilt_up, overlay):
    _, resources = tilt_up(overlay)
    e2e = ("pytest tests/e2e/llamacpp/" if overlay in LLAMACPP_OVERLAYS
           else "pytest tests/e2e --base-url http://localhost:8000")
    for name, command in (("health", "devloop health --url http://localhost:8000 --wait"),
                          ("e2e", e2e)):
        button = resources[name]
        assert button.kind == "local"
        assert command in button.cmd
        assert button.trigger_mode == TriggerMode.MANUAL and button.auto_init is False
        program = button.cmd.split()[0]
        assert program.startswith(".venv/bin/"), "buttons use the project's environment"


def test_manifest_tests_rerun_when_kustomize_changes(tilt_up):
    _, resources = tilt_up("dev")
    button = resources["manifest-tests"]
    assert "kustomize" in button.deps
    assert "tests/manifests" in button.cmd
    assert button.trigger_mode == TriggerMode.AUTO and button.auto_init is False
    assert (ROOT / "tests/manifests").is_dir()


def test_benchmark_button_runs_devloop_bench_when_it_exists(tilt_up):
    _, resources = tilt_up("dev")
    bench = [r for r in resources.values() if r.kind == "local" and "devloop bench " in f"{r.cmd} "]
    has_bench = (ROOT / "scripts/devloop/bench/command.py").is_file()
    assert bool(bench) == has_bench
    for button in bench:
        assert button.trigger_mode == TriggerMode.MANUAL and button.auto_init is False


def test_tilt_ci_runs_the_health_check_by_itself():
    env, _rec = evaluate(subcommand="ci")
    resources = env.assemble()
    assert resources["health"].auto_init is True
    assert ENGINE in resources["health"].resource_deps


# -- safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize("context", LOCAL_CONTEXTS)
def test_local_contexts_are_allowed(context):
    _, rec = evaluate(context=context)
    assert rec.failure is None
    assert rec.allowed_contexts == [context]


@pytest.mark.parametrize("context", REMOTE_CONTEXTS)
def test_non_local_context_is_refused(context):
    _, rec = evaluate(context=context)
    assert rec.failure is not None
    assert f"kubectl context '{context}' is not a local cluster" in rec.failure
    assert "kind-*" in rec.failure and "docker-desktop" in rec.failure
    assert not rec.allowed_contexts and not rec.k8s_yaml and not rec.docker_builds


# -- the harness itself ---------------------------------------------------------------------


def test_harness_rejects_a_parameter_tilt_does_not_have(tmp_path):
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text('docker_build("x", ".", platfrom = "linux/amd64")\n')
    with pytest.raises(starlark.StarlarkError, match="platfrom"):
        TiltEnvironment(tiltfile).run()


def test_harness_rejects_a_sync_outside_the_build_context(tmp_path):
    (tmp_path / "app").mkdir()
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text('docker_build("x", "app", live_update = [sync("./scripts", "/app")])\n')
    with pytest.raises(starlark.StarlarkError, match="not inside the docker_build context"):
        TiltEnvironment(tiltfile).run()


def test_harness_refuses_starlark_tilt_does_not_run(tmp_path):
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text('x = "a"\ny = f"{x}"\n')
    with pytest.raises(starlark.StarlarkError):
        TiltEnvironment(tiltfile).run()


def test_harness_rejects_a_port_forward_on_an_unknown_resource(tmp_path):
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text('k8s_resource("nope", port_forwards = 8000)\n')
    env = TiltEnvironment(tiltfile)
    env.run()
    with pytest.raises(TiltfileError, match="no resource named 'nope'"):
        env.assemble()


def test_tiltfile_lives_at_the_repository_root():
    assert TILTFILE == ROOT / "Tiltfile" and Path(TILTFILE).is_file()
