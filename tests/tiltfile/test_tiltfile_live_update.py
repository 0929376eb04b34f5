"""Live update: what a change under scripts/ does in the dev overlay (synced or rebuilt), where
the synced files land, and that overlays with a read-only root filesystem rebuild instead."""

from __future__ import annotations

import posixpath
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import OVERLAYS, ROOT
from .test_tiltfile import GATEWAY, IMAGE, _build, _fall_back_paths, _in_context, _syncs
from .tilt_records import image_name, pod_containers

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


@overlays
def test_edits_outside_the_image_do_not_rebuild_it(tilt_up, overlay):
    build = _build(tilt_up(overlay)[0])
    assert build.only, "without only=, every edit in the repository (tests, .venv) rebuilds"
    for path in ("tests", "kustomize", ".venv", "Tiltfile"):
        assert not any(path == only or path.startswith(only + "/") for only in build.only)


# -- live update ----------------------------------------------------------------------------


@overlays
def test_live_update_only_where_the_container_filesystem_is_writable(tilt_up, overlay):
    rec, _ = tilt_up(overlay)
    containers = [c for obj in rec.objects for c in pod_containers(obj)
                  if image_name(c.get("image", "")) == IMAGE]
    writable = all(not c.get("securityContext", {}).get("readOnlyRootFilesystem") for c in containers)
    assert bool(_build(rec).live_update) == writable


def test_dev_overlay_has_live_update(tilt_up):
    assert _syncs(_build(tilt_up("dev")[0])), "the dev overlay must live-update code"


@overlays
def test_sync_sources_exist_inside_the_build_context(tilt_up, overlay):
    build = _build(tilt_up(overlay)[0])
    for local, _remote in _syncs(build):
        path = _in_context(build, local)
        assert (build.context / path).exists(), f"sync source {local} does not exist"
        assert any(path == only or path.startswith(only + "/") for only in build.only)


@overlays
def test_sync_targets_are_where_the_dockerfile_puts_the_sources(tilt_up, overlay, dockerfile):
    build = _build(tilt_up(overlay)[0])
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
    build = _build(rec)
    users = {str(obj["spec"]["template"]["spec"].get("securityContext", {}).get("runAsUser"))
             for obj in rec.objects if obj["kind"] == "Deployment"
             and any(image_name(c["image"]) == IMAGE for c in pod_containers(obj))}
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
    kinds = [step.kind for step in _build(tilt_up(overlay)[0]).live_update]
    order = ["fall_back_on", "sync", "run"]
    assert [order.index(k) for k in kinds] == sorted(order.index(k) for k in kinds)
    assert "restart_container" not in kinds, "restart_container() is for Docker Compose only"


def test_dependency_image_and_entrypoint_changes_rebuild(tilt_up):
    """pyproject.toml and image/ change what the image installs; the entrypoint runs once as
    the engine's PID 1 and execs vLLM, so a synced copy would never run: all three rebuild."""
    build = _build(tilt_up("dev")[0])
    fall_back = {_in_context(build, p) for p in _fall_back_paths(build)}
    assert {"pyproject.toml", "image", "scripts/devloop/engine/entrypoint.py"} <= fall_back
    for path in fall_back:
        assert (build.context / path).exists(), f"fall_back_on names a missing path {path}"



def _modules_the_engine_imports() -> set[str]:
    """Repository paths of every devloop module the engine container runs: its PID 1
    (`devloop entrypoint`, with the tiny model's generator) and the vLLM general plugin that
    vLLM imports in each of its processes. Asked of a fresh interpreter, so nothing else counts."""
    code = ("import sys, devloop.engine.entrypoint, devloop.engine.amx, devloop.engine.tinymodel\n"
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items()"
            " if n.split('.')[0] == 'devloop' and getattr(m, '__file__', None)))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout
    return {Path(line).resolve().relative_to(ROOT).as_posix() for line in output.split()}


def test_every_module_the_engine_imports_rebuilds_instead_of_syncing(tilt_up):
    """A synced file the engine's processes already imported never runs again until the pod
    restarts, and a restart starts from the image without the synced copy: such an edit would be
    silently lost. Each one must fall back to a rebuild."""
    build = _build(tilt_up("dev")[0])
    fall_back = [_in_context(build, p) for p in _fall_back_paths(build)]
    imported = _modules_the_engine_imports()
    assert "scripts/devloop/engine/amx.py" in imported
    missing = sorted(path for path in imported
                     if not any(path == f or path.startswith(f + "/") for f in fall_back))
    assert not missing, f"add to the Tiltfile's fall_back_on list: {missing}"

def test_code_the_gateway_runs_is_synced_not_rebuilt(tilt_up):
    build = _build(tilt_up("dev")[0])
    synced = [_in_context(build, local) for local, _ in _syncs(build)]
    assert "scripts" in synced
    assert (ROOT / "scripts/devloop/gateway/server.py").is_file()


def test_dev_gateway_reloads_itself_on_synced_code(tilt_up):
    rec, _ = tilt_up("dev")
    gateway = next(o for o in rec.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == GATEWAY)
    container = next(c for c in pod_containers(gateway) if c["name"] == "gateway")
    assert container["command"][-1] == "--reload" and "gateway" in container["command"]
