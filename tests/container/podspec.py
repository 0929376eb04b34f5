"""`podman run` arguments for a container of a rendered Deployment: the pod as the kubelet runs it.

Each field of the pod spec the image depends on is carried over: the user, group and fsGroup,
the container's security context (read-only root, no privilege escalation, dropped
capabilities), the environment from its ConfigMaps and literal values, the CPU and memory
limits, its volumes (an emptyDir becomes a tmpfs of the same size, a PersistentVolumeClaim a
named volume owned by the pod's user, as fsGroup makes it), its command and arguments. A field
this reader does not know fails the test instead of being dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

# Pod fields with no effect on how a single container runs on one machine.
_IGNORED_POD_FIELDS = {
    "containers", "volumes", "securityContext", "serviceAccountName",
    "automountServiceAccountToken", "enableServiceLinks", "terminationGracePeriodSeconds",
}
_IGNORED_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "ports", "env", "envFrom", "resources",
    "securityContext", "volumeMounts", "command", "args",
    # Probes are the orchestrator's business; the tests wait with `devloop health` instead.
    "startupProbe", "readinessProbe", "livenessProbe", "lifecycle",
}


@dataclass
class RunSpec:
    """What `podman run` needs besides the image, the name and the network."""

    options: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # claim name -> mount path


def _configmap_data(objects: list[Obj], name: str) -> dict[str, str]:
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name:
            return {key: str(value) for key, value in (obj.get("data") or {}).items()}
    raise AssertionError(f"the pod reads ConfigMap {name}, which the overlay does not render")


def _environment(container: Obj, objects: list[Obj]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" not in source:
            raise AssertionError(f"unsupported envFrom source {source}")
        env.update(_configmap_data(objects, source["configMapRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("secretKeyRef", {}).get("optional"):
            continue  # an optional Secret nobody created: the kubelet leaves the variable unset
        else:
            raise AssertionError(f"unsupported env entry {item}")
    return env


def _memory(quantity: str) -> str:
    """Kubernetes binary suffixes (Mi, Gi) as podman's (m, g): both are powers of 1024."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + unit
    if quantity.isdigit():
        return quantity
    raise AssertionError(f"unsupported memory quantity {quantity}")


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def _security(pod: Obj, container: Obj, read_only_root: bool | None) -> list[str]:
    pod_ctx = pod.get("securityContext", {})
    ctx = container.get("securityContext", {})
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    options = []
    if user is not None:
        options.append(f"--user={user}:{group if group is not None else user}")
    if "fsGroup" in pod_ctx:
        options.append(f"--group-add={pod_ctx['fsGroup']}")
    if ctx.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    for capability in ctx.get("capabilities", {}).get("drop", []):
        options.append(f"--cap-drop={capability.lower()}")
    read_only = ctx.get("readOnlyRootFilesystem", False) if read_only_root is None else read_only_root
    if read_only:
        # Only the pod's own volumes may be writable: no tmpfs podman would add by itself.
        options += ["--read-only", "--read-only-tmpfs=false"]
    return options


def _volumes(pod: Obj, container: Obj, spec: RunSpec) -> list[str]:
    by_name = {volume["name"]: volume for volume in pod.get("volumes", [])}
    options = []
    for mount in container.get("volumeMounts", []):
        volume = by_name[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            if path == "/dev/shm":
                options.append(f"--shm-size={_memory(size)}" if size else "--shm-size=64m")
            else:
                size_option = f",size={_memory(size)}" if size else ""
                options.append(f"--tmpfs={path}:rw,mode=1777{size_option}")
        elif "persistentVolumeClaim" in volume:
            spec.volumes[volume["persistentVolumeClaim"]["claimName"]] = path
        else:
            raise AssertionError(f"unsupported volume {volume}")
    return options


def run_spec(deployment: Obj, container_name: str, objects: list[Obj],
             read_only_root: bool | None = None) -> RunSpec:
    """Translate one container of `deployment`; `read_only_root` overrides its setting."""
    pod = deployment["spec"]["template"]["spec"]
    unknown_pod = set(pod) - _IGNORED_POD_FIELDS
    assert not unknown_pod, f"pod fields this test cannot reproduce: {sorted(unknown_pod)}"
    container = next(c for c in pod["containers"] if c["name"] == container_name)
    unknown = set(container) - _IGNORED_CONTAINER_FIELDS
    assert not unknown, f"container fields this test cannot reproduce: {sorted(unknown)}"

    spec = RunSpec()
    spec.env = _environment(container, objects)
    spec.options += _security(pod, container, read_only_root)
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        spec.options.append(f"--memory={_memory(limits['memory'])}")
    if "cpu" in limits:
        spec.options.append(f"--cpus={_cpus(str(limits['cpu']))}")
    spec.options += _volumes(pod, container, spec)
    if "command" in container:
        spec.entrypoint = list(container["command"])
    spec.args = [str(arg) for arg in container.get("args", [])]
    spec.ports = [port["containerPort"] for port in container.get("ports", [])]
    return spec


def podman_run_args(spec: RunSpec, volume_names: dict[str, str]) -> list[str]:
    """The options part of `podman run`; `volume_names` maps each claim to a podman volume."""
    args = list(spec.options)
    for key, value in sorted(spec.env.items()):
        args.append(f"--env={key}={value}")
    for claim, path in spec.volumes.items():
        # U: owned by the container's user, as fsGroup makes a PVC writable in the pod.
        args.append(f"--volume={volume_names[claim]}:{path}:U")
    if spec.entrypoint is not None:
        args.append("--entrypoint=" + json.dumps(spec.entrypoint))
    return args
