"""What Tilt does with one saved file, from a recording (tilt_api.py): for each docker_build, the
file is watched if it lies in the build's context, inside its `only` paths and outside its
`ignore` patterns; a watched file that matches a `fall_back_on` path, or no `sync` at all,
rebuilds the image and redeploys every workload running it; one that matches a sync is copied
into every container running the image (docs.tilt.dev/live_update_reference.html: "When a file
changes", and docs.tilt.dev/file_changes.html for only/ignore)."""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field

from .tilt_records import DockerBuild, Recording, image_name, pod_containers

REBUILD, SYNC = "rebuild", "sync"


@dataclass
class Effect:
    """What one image does about the edit: rebuild (redeploying `workloads`) or sync into
    `containers` (workload/container) at `remote`."""

    action: str
    workloads: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    remote: str = ""


def _under(path: str, prefix: str) -> bool:
    prefix = posixpath.normpath(prefix)
    return prefix == "." or path == prefix or path.startswith(prefix + "/")


def _watches(build: DockerBuild, path: str) -> bool:
    if build.only and not any(_under(path, only) for only in build.only):
        return False
    return not any(fnmatch.fnmatch(path, pattern) or _under(path, pattern) for pattern in build.ignore)


def _runners(rec: Recording, image: str) -> tuple[list[str], list[str]]:
    workloads, containers = [], []
    for obj in rec.objects:
        for container in pod_containers(obj):
            if image_name(container.get("image", "")) == image:
                workloads.append(obj["metadata"]["name"])
                containers.append(f"{obj['metadata']['name']}/{container['name']}")
    return sorted(set(workloads)), containers


def edit(rec: Recording, path: str) -> dict[str, Effect]:
    """Image ref -> what saving `path` (relative to the repository root) does to it; images the
    file does not concern are absent."""
    effects = {}
    for build in rec.docker_builds:
        if not _watches(build, path):
            continue
        workloads, containers = _runners(rec, build.ref)
        steps = build.live_update
        falls_back = any(_under(path, p) for s in steps if s.kind == "fall_back_on" for p in s.paths)
        syncs = [s.paths for s in steps if s.kind == "sync" and _under(path, s.paths[0])]
        if falls_back or not syncs:
            effects[build.ref] = Effect(REBUILD, workloads=workloads)
        else:
            local, remote = syncs[0]
            target = posixpath.join(remote, posixpath.relpath(path, posixpath.normpath(local)))
            effects[build.ref] = Effect(SYNC, containers=containers, remote=posixpath.normpath(target))
    return effects
