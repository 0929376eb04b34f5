"""What `devloop doctor` knows: the facts the checks look at, and the pure parsers that turn
what kubectl, docker/podman and the rendered overlay say into them.

`devloop.ops.doctor.command` runs the commands and hands their output here; `devloop.ops.doctor.checks` judges the
result. Nothing here runs a command or reads a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ARCH_ALIASES = {"x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
                "aarch64": "arm64", "arm64": "arm64", "armv8": "arm64", "arm64/v8": "arm64"}

GIB = 1024**3
# The repository name of the image the Tiltfile builds (its IMAGE). Tilt tags each build
# `<registry>/vllm-devloop:tilt-<hash>`, podman lists local builds as `localhost/vllm-devloop`.
IMAGE_REPOSITORY = "vllm-devloop"
# API groups Kubernetes serves itself (the Tiltfile's BUILTIN_GROUPS); other objects need a CRD.
BUILTIN_API_GROUPS = frozenset({
    "", "admission.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io",
    "apiregistration.k8s.io", "apps", "authentication.k8s.io", "authorization.k8s.io",
    "autoscaling", "batch", "certificates.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
    "events.k8s.io", "extensions", "flowcontrol.apiserver.k8s.io", "imagepolicy.k8s.io",
    "internal.apiserver.k8s.io", "networking.k8s.io", "node.k8s.io", "policy",
    "rbac.authorization.k8s.io", "resource.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
    "storagemigration.k8s.io",
})


@dataclass(frozen=True)
class Node:
    name: str
    architecture: str           # as the kubelet reports it: amd64, arm64
    cpu_millicores: int         # allocatable
    memory_bytes: int           # allocatable
    kubelet_version: str = ""   # k3s nodes say v1.x.y+k3s1


@dataclass(frozen=True)
class DaemonSet:
    namespace: str
    name: str
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume:
    """A PersistentVolume, as `kubectl get pv -o json` lists it."""

    name: str
    phase: str                  # Available, Bound, Released, Failed
    storage_class: str          # "" when it names none
    capacity_bytes: int
    claim: str = ""             # namespace/name of the claim it is (or was) bound to


@dataclass(frozen=True)
class Resources:
    """What an overlay asks for, summed over every pod its workloads start (replicas included)."""

    cpu_request_millicores: int = 0
    cpu_limit_millicores: int = 0
    memory_request_bytes: int = 0
    memory_limit_bytes: int = 0


@dataclass(frozen=True)
class GatewayClass:
    name: str
    controller: str             # spec.controllerName: which implementation serves it
    accepted: bool              # its Accepted condition is True: the controller took it
    message: str = ""           # that condition's message when it is not


@dataclass(frozen=True)
class LlamacppNeeds:
    """What a llama.cpp engine (components/llamacpp) fetches on its first start."""

    image: str                # pulled from its registry (ghcr.io), multi-arch
    model: str                # LLAMA_ARG_HF_REPO (downloaded into the model cache) or a path
    downloads: bool           # whether the first start downloads the model
    memory_limit_bytes: int   # the engine container's limit: the node must hold it
    cache_request_bytes: int  # the model-cache PVC's request
    # The other engines' memory limits (the multi overlay's vLLM engine): held beside it.
    beside_limit_bytes: int = 0
    beside: tuple[str, ...] = ()  # those engines' Deployments


@dataclass
class Facts:
    """Everything the checks look at. None means "could not be found out" (not "absent")."""

    overlay: str
    host_arch: str                           # normalised: amd64, arm64
    namespace: str | None = None             # the overlay's namespace
    resources: Resources | None = None       # None when the overlay did not render
    render_error: str = ""
    ingress_classes_needed: tuple[str, ...] = ()   # ingressClassName of the overlay's Ingresses
    has_network_policies: bool = False
    pvc_name: str = "llm-model-cache"
    pvc_storage_class: str | None = None     # the PVC's own storageClassName, if it names one
    pvc_request_bytes: int = 0               # the storage the PVC requests
    has_hpa: bool = False                    # the overlay scales on resource metrics (an HPA)
    kubectl: str | None = None               # path of the kubectl used
    kubectl_version: str | None = None
    kubectl_error: str = ""
    context: str | None = None               # None: no current context
    reachable: bool | None = None            # None: not tried (no context, or not a local one)
    cluster_error: str = ""
    nodes: tuple[Node, ...] = ()
    ingress_classes: tuple[str, ...] | None = None
    daemonsets: tuple[DaemonSet, ...] | None = None
    storage_classes: tuple[tuple[str, bool], ...] | None = None  # (name, is default)
    storage_provisioners: tuple[tuple[str, str], ...] = ()  # (class name, provisioner)
    volumes: tuple[Volume, ...] | None = None  # the cluster's PersistentVolumes; None: not listed
    pvc_phase: str | None = None             # Bound, Pending, Lost; "" when the PVC does not exist
    # The metrics API's APIService (metrics-server): (available, why). None: not asked; (False,
    # "not registered") when the cluster has none.
    metrics_api: tuple[bool, str] | None = None
    custom_objects: tuple[tuple[str, str], ...] = ()  # (group/Kind, Kind/name) needing a CRD
    crds: tuple[str, ...] | None = None      # group/Kind of the cluster's CRDs; None: not asked
    gateway_classes_needed: tuple[str, ...] = ()  # gatewayClassName of the overlay's Gateways
    http_routes: tuple[str, ...] = ()        # the overlay's HTTPRoutes, which need a Gateway
    gateway_classes: tuple[GatewayClass, ...] | None = None  # the cluster's; None: not asked
    smaller_overlays: tuple[str, ...] = ()   # overlays requesting less CPU and memory than this
    image_repository: str = IMAGE_REPOSITORY  # looked for under any registry, with any tag
    image: str | None = None                 # the newest image of it found (repository:tag)
    image_arch: str | None = None            # its architecture; None: none found or unreadable
    image_tools: tuple[str, ...] = ()        # the container CLIs that answered (docker, podman)
    docker_default_platform: str = ""        # $DOCKER_DEFAULT_PLATFORM
    tilt_version: str | None = None          # None: tilt not on PATH
    llamacpp: LlamacppNeeds | None = None    # the overlay's llama.cpp engine; None: it has none


# ---- parsers (pure: they take what kubectl, docker or the overlay said) ----------------------

_MEMORY_SUFFIXES = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5,
                    "Ei": 1024**6, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                    "P": 10**15, "E": 10**18, "m": 10**-3}


def parse_cpu_millicores(quantity: str | float) -> int:
    """Kubernetes CPU quantity ("2", "100m", "0.5") in millicores."""
    text = str(quantity).strip()
    if text.endswith("m"):
        return int(float(text[:-1]))
    return round(float(text) * 1000)


def parse_memory_bytes(quantity: str | float) -> int:
    """Kubernetes memory quantity ("3Gi", "128Mi", "200M", "1e9", "8040516Ki") in bytes."""
    text = str(quantity).strip()
    match = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", text)
    if not match or (match.group(2) and match.group(2) not in _MEMORY_SUFFIXES):
        raise ValueError(f"not a Kubernetes memory quantity: {quantity!r}")
    number, suffix = match.groups()
    return int(float(number) * _MEMORY_SUFFIXES.get(suffix, 1))


def normalise_arch(machine: str) -> str:
    """platform.machine() / docker / kubelet spellings to amd64 or arm64 (others unchanged)."""
    machine = machine.strip().lower()
    if machine.startswith("linux/"):
        machine = machine.split("/", 1)[1]
    return ARCH_ALIASES.get(machine, machine)


def parse_kubernetes_version(kubelet_version: str) -> tuple[int, int] | None:
    """(major, minor) of a kubelet version: v1.31.4, v1.30.6+k3s1, v1.32.0-gke.1."""
    match = re.match(r"v?(\d+)\.(\d+)", kubelet_version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_tilt_version(output: str) -> tuple[int, int, int] | None:
    """`tilt version` prints e.g. "v0.33.21, built 2024-11-05"."""
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


_WORKLOAD_REPLICAS_DEFAULT = {"Deployment": 1, "StatefulSet": 1, "ReplicaSet": 1}


def overlay_resources(objects: list[dict[str, Any]]) -> Resources:
    """Requests and limits of every pod the overlay's workloads start at their initial replica
    count (an HPA's minReplicas when it is higher). A pod counts max(sum of its containers, its
    largest init container), as the scheduler does."""
    min_replicas = {
        obj["spec"]["scaleTargetRef"]["name"]: int(obj["spec"].get("minReplicas", 1))
        for obj in objects if obj.get("kind") == "HorizontalPodAutoscaler"
    }
    totals = [0, 0, 0, 0]
    for obj in objects:
        kind = obj.get("kind")
        if kind not in _WORKLOAD_REPLICAS_DEFAULT:
            continue
        spec = obj.get("spec", {})
        replicas = int(spec.get("replicas", _WORKLOAD_REPLICAS_DEFAULT[kind]))
        replicas = max(replicas, min_replicas.get(obj["metadata"]["name"], 0))
        pod = spec.get("template", {}).get("spec", {})
        per_pod = _pod_resources(pod)
        for index, value in enumerate(per_pod):
            totals[index] += replicas * value
    return Resources(*totals)


def _pod_resources(pod: dict[str, Any]) -> tuple[int, int, int, int]:
    def of(container: dict[str, Any]) -> tuple[int, int, int, int]:
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        return (parse_cpu_millicores(requests.get("cpu", 0)),
                parse_cpu_millicores(limits.get("cpu", requests.get("cpu", 0))),
                parse_memory_bytes(requests.get("memory", 0)),
                parse_memory_bytes(limits.get("memory", requests.get("memory", 0))))

    main = [of(container) for container in pod.get("containers", [])]
    init = [of(container) for container in pod.get("initContainers", [])]
    summed = [sum(values) for values in zip(*main, strict=True)] if main else [0, 0, 0, 0]
    largest_init = [max(values) for values in zip(*init, strict=True)] if init else [0, 0, 0, 0]
    return tuple(max(a, b) for a, b in zip(summed, largest_init, strict=True))  # type: ignore[return-value]


def parse_nodes(nodes_json: dict[str, Any]) -> tuple[Node, ...]:
    """`kubectl get nodes -o json` to Nodes."""
    nodes = []
    for item in nodes_json.get("items", []):
        status = item.get("status", {})
        allocatable = status.get("allocatable", {})
        info = status.get("nodeInfo", {})
        nodes.append(Node(
            name=item["metadata"]["name"],
            architecture=normalise_arch(info.get("architecture", "")),
            cpu_millicores=parse_cpu_millicores(allocatable.get("cpu", 0)),
            memory_bytes=parse_memory_bytes(allocatable.get("memory", 0)),
            kubelet_version=info.get("kubeletVersion", ""),
        ))
    return tuple(nodes)


def parse_daemonsets(daemonsets_json: dict[str, Any]) -> tuple[DaemonSet, ...]:
    """`kubectl get daemonsets -A -o json` to DaemonSets with their container images."""
    found = []
    for item in daemonsets_json.get("items", []):
        containers = item.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        found.append(DaemonSet(
            namespace=item["metadata"].get("namespace", ""),
            name=item["metadata"]["name"],
            images=tuple(container.get("image", "") for container in containers),
        ))
    return tuple(found)


def parse_storage_classes(classes_json: dict[str, Any]) -> tuple[tuple[str, bool], ...]:
    default_keys = ("storageclass.kubernetes.io/is-default-class",
                    "storageclass.beta.kubernetes.io/is-default-class")
    classes = []
    for item in classes_json.get("items", []):
        annotations = item["metadata"].get("annotations", {}) or {}
        is_default = any(annotations.get(key) == "true" for key in default_keys)
        classes.append((item["metadata"]["name"], is_default))
    return tuple(classes)


def parse_storage_provisioners(classes_json: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(name, provisioner) of every StorageClass in `kubectl get storageclasses -o json`."""
    return tuple((item["metadata"]["name"], item.get("provisioner", ""))
                 for item in classes_json.get("items", []))


def parse_volumes(volumes_json: dict[str, Any]) -> tuple[Volume, ...]:
    """`kubectl get persistentvolumes -o json` to Volumes."""
    volumes = []
    for item in volumes_json.get("items", []):
        spec = item.get("spec", {})
        claim = spec.get("claimRef") or {}
        volumes.append(Volume(
            name=item["metadata"]["name"],
            phase=item.get("status", {}).get("phase", ""),
            storage_class=spec.get("storageClassName", ""),
            capacity_bytes=parse_memory_bytes(spec.get("capacity", {}).get("storage", 0)),
            claim=f"{claim['namespace']}/{claim['name']}" if claim.get("name") else "",
        ))
    return tuple(volumes)


# The APIService metrics-server registers; the HPA's resource metrics come through it.
METRICS_API_SERVICE = "v1beta1.metrics.k8s.io"


def parse_api_service(api_service_json: dict[str, Any]) -> tuple[bool, str]:
    """(available, why) from `kubectl get apiservice NAME -o json --ignore-not-found`, whose
    output is empty ({} here) when the APIService does not exist."""
    if not api_service_json:
        return False, "not registered"
    for condition in api_service_json.get("status", {}).get("conditions", []):
        if condition.get("type") == "Available":
            why = condition.get("message") or condition.get("reason") or ""
            return condition.get("status") == "True", why
    return False, "no Available condition yet"


def custom_objects(objects: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(group/Kind, Kind/name) of the objects outside Kubernetes' own API groups."""
    found = []
    for obj in objects:
        api_version = obj.get("apiVersion", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        if group not in BUILTIN_API_GROUPS:
            found.append((f"{group}/{obj['kind']}", f"{obj['kind']}/{obj['metadata']['name']}"))
    return tuple(found)


def gateway_api_needs(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What the overlay asks of a Gateway API implementation (Facts fields): the GatewayClasses
    its own Gateways name, and its HTTPRoutes (which need some accepted class to be served)."""
    return {
        "gateway_classes_needed": tuple(sorted({
            obj["spec"]["gatewayClassName"] for obj in objects
            if obj.get("kind") == "Gateway" and _group(obj) == "gateway.networking.k8s.io"})),
        "http_routes": tuple(obj["metadata"]["name"] for obj in objects
                             if obj.get("kind") == "HTTPRoute"),
    }


def _group(obj: dict[str, Any]) -> str:
    api_version = obj.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


def parse_gateway_classes(classes_json: dict[str, Any]) -> tuple[GatewayClass, ...]:
    """`kubectl get gatewayclasses -o json`: each class with its Accepted condition."""
    found = []
    for item in classes_json.get("items", []):
        accepted = next((c for c in item.get("status", {}).get("conditions", [])
                         if c.get("type") == "Accepted"), {})
        found.append(GatewayClass(item["metadata"]["name"], item["spec"].get("controllerName", ""),
                                  accepted.get("status") == "True", accepted.get("message", "")))
    return tuple(found)


# `kubectl get customresourcedefinitions --no-headers -o` this: the Tiltfile's own query.
CRD_COLUMNS = "custom-columns=GROUP:.spec.group,KIND:.spec.names.kind"


def parse_crd_columns(text: str) -> tuple[str, ...]:
    """group/Kind of every CRD from kubectl's CRD_COLUMNS output."""
    rows = (line.split() for line in text.splitlines())
    return tuple(f"{row[0]}/{row[1]}" for row in rows if len(row) == 2)


# `docker image ls --format` (podman takes the same): one line per image.
IMAGE_LIST_FORMAT = "{{.Repository}}\t{{.Tag}}\t{{.CreatedAt}}"


@dataclass(frozen=True)
class LocalImage:
    reference: str       # repository:tag
    created: datetime
    tool: str            # the CLI that listed it: docker or podman


def _created_at(text: str) -> datetime:
    """docker's "2024-05-01 12:34:56 +0200 CEST", podman's "2024-05-01 12:34:56.123 +0000 UTC"."""
    day, clock, offset = text.split()[:3]
    return datetime.strptime(f"{day} {clock.split('.')[0]} {offset}", "%Y-%m-%d %H:%M:%S %z")


def parse_image_list(text: str, tool: str, repository: str = IMAGE_REPOSITORY) -> list[LocalImage]:
    """The tagged images of `repository` under any registry prefix (vllm-devloop,
    localhost:5001/vllm-devloop, localhost/vllm-devloop, ghcr.io/o/vllm-devloop) from
    IMAGE_LIST_FORMAT lines."""
    found = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        name, tag, created = fields
        if tag == "<none>" or not (name == repository or name.endswith("/" + repository)):
            continue
        try:
            found.append(LocalImage(f"{name}:{tag}", _created_at(created), tool))
        except ValueError:
            continue  # a date this parser does not know: not worth failing the doctor over
    return found


def newest_image(images: list[LocalImage]) -> LocalImage | None:
    return max(images, key=lambda image: image.created, default=None)


def llamacpp_needs(objects: list[dict[str, Any]]) -> LlamacppNeeds | None:
    """The llama.cpp engine's image, model and memory limit from a rendered overlay."""
    engine = next((obj for obj in objects if obj.get("kind") == "Deployment"
                   and obj["metadata"]["name"] == "llm-llamacpp"), None)
    if engine is None:
        return None
    container = next(c for c in engine["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "llama-server")
    env: dict[str, str] = {}
    configmaps = {obj["metadata"]["name"]: obj.get("data") or {} for obj in objects
                  if obj.get("kind") == "ConfigMap"}
    for source in container.get("envFrom", []):
        env.update(configmaps.get(source.get("configMapRef", {}).get("name", ""), {}))
    repo = env.get("LLAMA_ARG_HF_REPO", "")
    pvcs = [obj for obj in objects if obj.get("kind") == "PersistentVolumeClaim"]
    request = pvcs[0]["spec"]["resources"]["requests"]["storage"] if pvcs else "0"
    others = [obj for obj in objects if obj.get("kind") == "Deployment" and obj is not engine
              and obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "engine"]
    return LlamacppNeeds(
        image=container["image"],
        model=repo or env.get("LLAMA_ARG_MODEL", ""),
        downloads=bool(repo),
        memory_limit_bytes=parse_memory_bytes(container["resources"]["limits"]["memory"]),
        cache_request_bytes=parse_memory_bytes(request),
        beside_limit_bytes=sum(int(obj["spec"].get("replicas", 1))
                               * _pod_resources(obj["spec"]["template"]["spec"])[3] for obj in others),
        beside=tuple(obj["metadata"]["name"] for obj in others),
    )
