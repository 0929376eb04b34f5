"""Live update: which image an edit reaches, and whether it is synced (and into which container)
or rebuilt; that each image's context runs its own command; where the synced files land; and
that overlays with a read-only root filesystem rebuild instead."""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import OVERLAYS, ROOT
from .test_tiltfile import (
    ENGINE,
    ENGINE_IMAGE,
    GATEWAY,
    GATEWAY_IMAGE,
    IMAGES,
    OVERLAY_IMAGES,
    _build,
    _in_context,
    _syncs,
)
from .tilt_edits import REBUILD, SYNC, edit
from .tilt_records import image_name, pod_containers

overlays = pytest.mark.parametrize("overlay", OVERLAYS)
GATEWAY_CONTAINER = f"{GATEWAY}/gateway"


@pytest.mark.parametrize(("overlay", "image"), OVERLAY_IMAGES)
def test_edits_outside_the_images_reach_neither(tilt_up, overlay, image):
    build = _build(tilt_up(overlay)[0], image)
    assert build.only, "without only=, every edit in the repository (tests, .venv) rebuilds"
    for path in ("tests", "kustomize", ".venv", "Tiltfile", "README.md", "docs"):
        assert not any(path == only or path.startswith(only + "/") for only in build.only)


# -- which container each edit reaches (dev: live update) ------------------------------------

def test_a_gateway_edit_is_synced_into_the_gateway_alone(tilt_up):
    effects = edit(tilt_up("dev")[0], "scripts/devloop/gateway/server.py")
    assert list(effects) == [GATEWAY_IMAGE], "the engine image must not even see the file"
    assert effects[GATEWAY_IMAGE].action == SYNC
    assert effects[GATEWAY_IMAGE].containers == [GATEWAY_CONTAINER]
    assert effects[GATEWAY_IMAGE].remote == "/app/scripts/devloop/gateway/server.py"


@pytest.mark.parametrize("path", ["scripts/devloop/engine/entrypoint.py",
                                  "scripts/devloop/engine/amx.py",
                                  "scripts/devloop/engine/tinymodel/generate.py",
                                  "scripts/devloop/manifests/kustomize.py"])
def test_an_engine_edit_rebuilds_the_engine_alone(tilt_up, path):
    effects = edit(tilt_up("dev")[0], path)
    assert list(effects) == [ENGINE_IMAGE], "the gateway must not roll for an engine edit"
    assert effects[ENGINE_IMAGE].action == REBUILD and effects[ENGINE_IMAGE].workloads == [ENGINE]


@pytest.mark.parametrize("path", ["scripts/devloop/common/errors.py", "scripts/devloop/cli.py"])
def test_shared_code_rebuilds_the_engine_and_is_synced_into_the_gateway(tilt_up, path):
    effects = edit(tilt_up("dev")[0], path)
    assert effects[ENGINE_IMAGE].action == REBUILD
    assert effects[GATEWAY_IMAGE].action == SYNC
    assert effects[GATEWAY_IMAGE].containers == [GATEWAY_CONTAINER]


@pytest.mark.parametrize("path", ["pyproject.toml", "image/Dockerfile"])
def test_dependency_and_image_changes_rebuild_both(tilt_up, path):
    effects = edit(tilt_up("dev")[0], path)
    assert {ref: e.action for ref, e in effects.items()} == {ENGINE_IMAGE: REBUILD,
                                                              GATEWAY_IMAGE: REBUILD}


@pytest.mark.parametrize("path", ["scripts/devloop/bench/command.py",
                                  "scripts/devloop/ops/doctor/checks.py", "README.md",
                                  "tests/unit/test_cli_errors.py", "scripts/devloop/README.md"])
def test_code_no_pod_runs_reaches_no_image(tilt_up, path):
    assert edit(tilt_up("dev")[0], path) == {}


def test_nothing_is_ever_synced_into_the_engine(tilt_up):
    for overlay, image in OVERLAY_IMAGES:
        if image == ENGINE_IMAGE:
            assert _build(tilt_up(overlay)[0], ENGINE_IMAGE).live_update == [], overlay


def test_optimized_rebuilds_the_gateway_instead_of_syncing(tilt_up):
    effects = edit(tilt_up("optimized")[0], "scripts/devloop/gateway/server.py")
    assert effects[GATEWAY_IMAGE].action == REBUILD


def test_the_engine_image_is_built_for_any_workload_that_runs_it(tilt_up):
    """Another engine (llama.cpp's own image) runs no vllm-devloop container and gets no
    build of ours; every container of the engine image, whatever its workload, gets it."""
    rec, _ = tilt_up("dev")
    for image in IMAGES:
        runners = {obj["metadata"]["name"] for obj in rec.objects for c in pod_containers(obj)
                   if image_name(c.get("image", "")) == image}
        assert runners == ({ENGINE} if image == ENGINE_IMAGE else {GATEWAY})


# -- each image's context is self-sufficient ---------------------------------------------------

def _context_copy(build, workdir: Path) -> Path:
    """The files docker_build(only=...) sends, copied as the Dockerfile lays them out."""
    for only in build.only:
        source = build.context / only
        if source.is_dir():
            shutil.copytree(source, workdir / only,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (workdir / only).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workdir / only)
    return workdir / "scripts"


def _python(scripts: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(scripts), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=scripts)


@pytest.mark.parametrize("image, command, imports", [
    (ENGINE_IMAGE, "entrypoint", "devloop.engine.entrypoint, devloop.engine.amx, devloop.engine.tinymodel"),
    (GATEWAY_IMAGE, "gateway", "devloop.gateway.server, devloop.gateway.supervisor, devloop.gateway.admin"),
])
def test_each_images_code_runs_its_command_with_nothing_else(tilt_up, tmp_path, image, command, imports):
    """The engine runs `devloop entrypoint` (then vLLM loads the AMX plugin in each process); the
    gateway runs `devloop gateway` and forks workers that import its modules afresh. With only
    the image's context on the path, both work: nothing they run is missing from the image."""
    scripts = _context_copy(_build(tilt_up("dev")[0], image), tmp_path)
    done = _python(scripts, "-m", "devloop", command, "--help")
    assert done.returncode == 0, done.stderr
    done = _python(scripts, "-c", f"import {imports}; import devloop; print(devloop.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(tmp_path), "imported the checkout instead"


def test_a_subcommand_whose_sub_package_is_absent_is_left_out(tilt_up, tmp_path):
    scripts = _context_copy(_build(tilt_up("dev")[0], ENGINE_IMAGE), tmp_path)
    done = _python(scripts, "-m", "devloop", "--help")
    assert done.returncode == 0 and "entrypoint" in done.stdout and "gateway" not in done.stdout


# -- where syncs land, and who may write there ----------------------------------------------

@overlays
def test_live_update_only_where_the_container_filesystem_is_writable(tilt_up, overlay):
    rec, _ = tilt_up(overlay)
    containers = [c for obj in rec.objects for c in pod_containers(obj)
                  if image_name(c.get("image", "")) == GATEWAY_IMAGE]
    writable = all(not c.get("securityContext", {}).get("readOnlyRootFilesystem") for c in containers)
    assert bool(_build(rec, GATEWAY_IMAGE).live_update) == writable


def test_dev_overlay_has_live_update(tilt_up):
    assert _syncs(_build(tilt_up("dev")[0], GATEWAY_IMAGE)), "the dev gateway must live-update code"


@overlays
def test_sync_sources_exist_inside_the_build_context(tilt_up, overlay):
    for build in tilt_up(overlay)[0].docker_builds:
        for local, _remote in _syncs(build):
            path = _in_context(build, local)
            assert (build.context / path).exists(), f"sync source {local} does not exist"
            assert any(path == only or path.startswith(only + "/") for only in build.only)


@overlays
def test_sync_targets_are_where_the_dockerfile_puts_the_sources(tilt_up, overlay, dockerfile):
    for build in tilt_up(overlay)[0].docker_builds:
        for local, remote in _syncs(build):
            path = _in_context(build, local)
            found = dockerfile.destination(path, is_dir=(build.context / path).is_dir())
            assert found is not None, f"image/Dockerfile never copies {path}, which Tilt syncs"
            assert found[0] == posixpath.normpath(remote), (
                f"sync {local} -> {remote}, but the Dockerfile puts it at {found[0]}")


@overlays
def test_synced_paths_are_writable_by_the_container_user(tilt_up, overlay, dockerfile):
    """Tilt's sync runs as the container's user (10001, non-root): the copied files must be
    its own, or the sync fails with permission denied."""
    rec, _resources = tilt_up(overlay)
    for build in rec.docker_builds:
        users = {str(obj["spec"]["template"]["spec"].get("securityContext", {}).get("runAsUser"))
                 for obj in rec.objects if obj["kind"] == "Deployment"
                 and any(image_name(c["image"]) == build.ref for c in pod_containers(obj))}
        users.add(dockerfile.final.user.split(":")[0])
        for local, _remote in _syncs(build):
            path = _in_context(build, local)
            target, copy = dockerfile.destination(path, is_dir=(build.context / path).is_dir())
            owner = copy.chown.split(":")[0]
            chowned_later = any("chown" in run and ("/app" in run or target in run)
                                for run in dockerfile.final.runs)
            assert owner in users or chowned_later, (
                f"{target} is copied with --chown={copy.chown or '(root)'}; the pod runs as {users}")


@overlays
def test_live_update_steps_are_in_tilts_order(tilt_up, overlay):
    for build in tilt_up(overlay)[0].docker_builds:
        kinds = [step.kind for step in build.live_update]
        order = ["fall_back_on", "sync", "run"]
        assert [order.index(k) for k in kinds] == sorted(order.index(k) for k in kinds)
        assert "restart_container" not in kinds, "restart_container() is for Docker Compose only"


# -- the engine's processes -------------------------------------------------------------------

def _modules_the_engine_imports() -> set[str]:
    """Repository paths of every devloop module the engine container runs: its PID 1
    (`devloop entrypoint`: the command, with the tiny model's generator) and the vLLM general
    plugin that vLLM imports in each of its processes. Asked of a fresh interpreter."""
    code = ("import sys, devloop.cli, devloop.engine.entrypoint, devloop.engine.amx, devloop.engine.tinymodel\n"
            "devloop.cli.build_parser([m for m in devloop.cli.SUBCOMMAND_MODULES if m.startswith('devloop.engine')])\n"
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items()"
            " if n.split('.')[0] == 'devloop' and getattr(m, '__file__', None)))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout
    return {Path(line).resolve().relative_to(ROOT).as_posix() for line in output.split()}


def test_every_module_the_engine_imports_rebuilds_it(tilt_up):
    """A synced file the engine's processes already imported never runs again until the pod
    restarts, and a restart starts from the image without the synced copy: every one of them
    must rebuild the engine."""
    rec = tilt_up("dev")[0]
    imported = _modules_the_engine_imports()
    assert "scripts/devloop/engine/amx.py" in imported
    wrong = {path: effects.get(ENGINE_IMAGE) for path in imported
             if (effects := edit(rec, path)).get(ENGINE_IMAGE) is None
             or effects[ENGINE_IMAGE].action != REBUILD}
    assert not wrong, f"add their sub-package to the engine's IMAGE_PACKAGES: {sorted(wrong)}"


def test_dev_gateway_reloads_itself_on_synced_code(tilt_up):
    rec, _ = tilt_up("dev")
    gateway = next(o for o in rec.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == GATEWAY)
    container = next(c for c in pod_containers(gateway) if c["name"] == "gateway")
    assert container["command"][-1] == "--reload" and "gateway" in container["command"]
