"""The checks of `devloop doctor`, as pure functions over facts gathered beforehand.

Nothing here runs a command or reads a file: `devloop.ops.doctor.command` gathers the facts (kubectl, docker,
tilt, the rendered overlay) into a `Facts`, and every check turns facts into one `CheckResult`
with the fix to apply. That split lets the tests build any machine or cluster by hand, including
the ones this machine is not (Apple Silicon, Docker Desktop, a kind cluster without an ingress).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from devloop.ops.doctor.facts import (
    GIB,
    METRICS_API_SERVICE,
    Facts,
    normalise_arch,
    parse_kubernetes_version,
    parse_tilt_version,
)
from devloop.ops.doctor.result import FAIL, PASS, SKIP, WARN, CheckResult
from devloop.ops.doctor.storage import check_model_cache

# The same list as the Tiltfile's allow_k8s_contexts guard: clusters that run on this machine.
LOCAL_CONTEXTS = ("docker-desktop", "docker-for-desktop", "minikube", "orbstack", "rancher-desktop")
LOCAL_CONTEXT_PREFIXES = ("kind-", "k3d-")

# The Tiltfile's version_settings(constraint = ">=0.30.0"); older Tilt refuses to load it.
TILT_MIN_VERSION = (0, 30, 0)
TILT_INSTALL_HINT = (
    "install Tilt: `brew install tilt` (macOS/Linux with Homebrew) or "
    "`curl -fsSL https://raw.githubusercontent.com/tilt-dev/tilt/master/scripts/install.sh | bash`"
)

# DaemonSet name fragments of network plugins that enforce NetworkPolicy.
ENFORCING_CNIS = ("calico-node", "cilium", "weave-net", "antrea-agent", "kube-router", "canal",
                  "kube-network-policies")
# kindnetd enforces NetworkPolicy from kind v0.24 on (kindnetd images tagged v20240813 and later).
KINDNET_POLICY_SINCE = 20240813

# The preStop `sleep` action of the engine and gateway: beta and on by default from 1.30 (alpha,
# off by default, in 1.29).
KUBERNETES_MIN = (1, 30)

# How to get the CRDs of the API groups the components use; the Tiltfile's warning says the same.
CRD_INSTALL_HINTS = {
    "monitoring.coreos.com": "install the prometheus-operator (kube-prometheus-stack) for "
    "metrics, or only its CRD so the objects apply: "
    "`kubectl apply --server-side -f kustomize/crds/`",
    "gateway.networking.k8s.io": "install a Gateway API implementation, which brings these "
    "CRDs (docs/gateway-api.md sets up Envoy Gateway on kind), or only the standard-channel CRDs: "
    "`kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/"
    "download/v1.6.1/standard-install.yaml`",
    "inference.networking.k8s.io": "install the Gateway API Inference Extension's CRDs "
    "(`kubectl apply -f https://github.com/kubernetes-sigs/gateway-api-inference-extension/"
    "releases/download/v1.6.0/v1-manifests.yaml`) and a Gateway that implements it "
    "(docs/gateway-api.md)",
}
GATEWAY_API_KINDS = ("gateway.networking.k8s.io/GatewayClass", "gateway.networking.k8s.io/Gateway",
                     "gateway.networking.k8s.io/HTTPRoute")
# Envoy Gateway on kind, as docs/gateway-api.md walks through it (the version its install page
# gave when this was written), with the GatewayClass the gateway-api/gateway component names.
GATEWAY_CLASS_FIX = (
    "install a Gateway API implementation and its GatewayClass, e.g. Envoy Gateway: `helm install "
    "eg oci://docker.io/envoyproxy/gateway-helm --version v1.8.2 -n envoy-gateway-system "
    "--create-namespace`, then the GatewayClass `eg` (docs/gateway-api.md, step 2); another "
    "implementation: patch the Gateway's gatewayClassName to its class (`kubectl get gatewayclasses`)")


def is_local_context(context: str) -> bool:
    return context in LOCAL_CONTEXTS or context.startswith(LOCAL_CONTEXT_PREFIXES)


# ---- the checks ------------------------------------------------------------------------------

def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _cpus(millicores: int) -> str:
    return f"{millicores / 1000:g} CPU"


def check_kubectl(facts: Facts) -> CheckResult:
    if not facts.kubectl:
        detail = f": {facts.kubectl_error}" if facts.kubectl_error else ""
        return CheckResult("kubectl", FAIL, f"kubectl not found{detail}",
                           "run `bash scripts/bootstrap.sh` (installs kubectl into .venv) or install "
                           "kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/)")
    version = f" ({facts.kubectl_version})" if facts.kubectl_version else ""
    return CheckResult("kubectl", PASS, f"{facts.kubectl}{version}")


def check_context(facts: Facts) -> CheckResult:
    if not facts.kubectl:
        return CheckResult("context", SKIP, "needs kubectl")
    if facts.context is None:
        return CheckResult(
            "context", FAIL, "kubectl has no current context (no local cluster configured)",
            "start a local cluster and select it: Docker Desktop (Settings > Kubernetes > Enable), "
            "`kind create cluster`, `k3d cluster create`, `minikube start` or OrbStack; then "
            "`kubectl config use-context NAME` (list them: `kubectl config get-contexts`)")
    if not is_local_context(facts.context):
        return CheckResult(
            "context", FAIL, f"current context {facts.context!r} is not a local cluster; Tilt refuses it",
            f"`kubectl config use-context NAME` with a local one: {', '.join(LOCAL_CONTEXTS)}, "
            f"{'*, '.join(LOCAL_CONTEXT_PREFIXES)}*")
    return CheckResult("context", PASS, f"{facts.context} (a local cluster)")


def check_reachable(facts: Facts) -> CheckResult:
    if facts.reachable is None:
        return CheckResult("cluster", SKIP, "needs a local kubectl context")
    if not facts.reachable:
        return CheckResult(
            "cluster", FAIL, f"{facts.context} does not answer: {facts.cluster_error or 'no response'}",
            "start the cluster (Docker Desktop: enable Kubernetes and wait for the green light; "
            "kind/k3d: `docker start` its node containers or recreate it; minikube: `minikube start`), "
            "then `kubectl get nodes`")
    names = ", ".join(f"{node.name} ({node.architecture})" for node in facts.nodes) or "no nodes"
    old = [node for node in facts.nodes
           if (version := parse_kubernetes_version(node.kubelet_version)) and version < KUBERNETES_MIN]
    if old:
        return CheckResult(
            "cluster", FAIL, f"node {old[0].name} runs Kubernetes {old[0].kubelet_version}; the "
            f"manifests' preStop `sleep` action needs {'.'.join(map(str, KUBERNETES_MIN))} or newer "
            "(older API servers refuse the Deployments)",
            "upgrade the local cluster (Docker Desktop: update it; kind: recreate it with kind "
            "v0.23 or newer; minikube: `minikube start --kubernetes-version=stable`)")
    return CheckResult("cluster", PASS, f"reachable; nodes: {names}")


ENGINE_RESOURCE_HINTS = {
    "memory": "Docker Desktop: Settings > Resources > Memory; minikube: `minikube start --memory "
              "12g`; OrbStack/Rancher Desktop: their resource settings",
    "CPUs": "Docker Desktop: Settings > Resources > CPUs; minikube: `minikube start --cpus 4`; "
            "OrbStack/Rancher Desktop: their resource settings",
}


def _give_more(short: list[str]) -> str:
    """The fix for a node short of `short` (memory, CPUs): give the container engine more of
    each, with where each is set."""
    return (f"give the container engine more {' and '.join(short)} ("
            + "; ".join(f"{what}: {ENGINE_RESOURCE_HINTS[what]}" for what in short) + ")")


def check_resources(facts: Facts) -> CheckResult:
    name = "resources"
    if facts.resources is None:
        return CheckResult(name, FAIL, f"overlay {facts.overlay} did not render: {facts.render_error}",
                           "fix the overlay: `devloop validate` names the broken object")
    if not facts.reachable or not facts.nodes:
        return CheckResult(name, SKIP, "needs a reachable cluster")
    wants = facts.resources
    cpu = sum(node.cpu_millicores for node in facts.nodes)
    memory = sum(node.memory_bytes for node in facts.nodes)
    asks = (f"overlay {facts.overlay} requests {_cpus(wants.cpu_request_millicores)} / "
            f"{_gib(wants.memory_request_bytes)} (limits {_cpus(wants.cpu_limit_millicores)} / "
            f"{_gib(wants.memory_limit_bytes)}); nodes allocate {_cpus(cpu)} / {_gib(memory)}")
    where = f"kustomize/overlays/{facts.overlay}/"
    # What the scheduler says of a pod that does not fit: "Insufficient cpu", "Insufficient memory".
    short = [what for what, asked, has in (("cpu", wants.cpu_request_millicores, cpu),
                                           ("memory", wants.memory_request_bytes, memory))
             if asked > has]
    if short:
        more = _give_more(["CPUs" if what == "cpu" else what for what in short])
        if facts.smaller_overlays:
            instead = ", or use an overlay that asks for less: " + ", ".join(
                f"`--overlay {other}`" for other in facts.smaller_overlays)
        else:
            named = " and ".join("CPU" if what == "cpu" else what for what in short)
            instead = f", or lower the {named} requests in {where} (no overlay asks for less)"
        return CheckResult(name, FAIL, asks + ": pods will stay Pending ("
                           + ", ".join(f"Insufficient {what}" for what in short) + ")",
                           more + instead)
    if wants.memory_limit_bytes > memory:
        return CheckResult(name, WARN, asks + ": the requests fit, but under load the pods can "
                           "use more memory than the nodes have, and the kernel OOM-kills them",
                           _give_more(["memory"]) + f", or lower the memory limits in {where} "
                           "to what the model measured needs (README Performance)")
    if wants.cpu_limit_millicores > cpu:
        return CheckResult(name, WARN, asks + ": the requests fit, but the CPU limits exceed the "
                           "nodes, so the engine's threads (CPU_THREADS=auto follows the limit) "
                           "share fewer cores than they expect",
                           _give_more(["CPUs"]) + f", or lower the CPU limits in {where} to the "
                           "nodes' CPUs")
    return CheckResult(name, PASS, asks)


def check_architecture(facts: Facts) -> CheckResult:
    name = "architecture"
    host = facts.host_arch
    platform = facts.docker_default_platform
    image = facts.image or facts.image_repository
    fix = (f"build for this machine: remove the image (`docker rmi {image}`, or `podman rmi`), "
           "unset DOCKER_DEFAULT_PLATFORM and run `tilt up` without --platform (the Tiltfile "
           "builds for the host's architecture); on Apple Silicon turn off amd64 emulation for "
           "the cluster (Docker Desktop: Settings > General, 'Use Rosetta' only affects amd64 images)")
    if platform and normalise_arch(platform) != host:
        return CheckResult(name, FAIL, f"DOCKER_DEFAULT_PLATFORM={platform} builds {normalise_arch(platform)} "
                           f"images on this {host} host: they run emulated, several times slower", fix)
    if facts.image_arch and facts.image_arch != host:
        return CheckResult(name, FAIL, f"image {facts.image} is {facts.image_arch}, this host is "
                           f"{host}: vLLM runs emulated, several times slower", fix)
    foreign = [node for node in facts.nodes if node.architecture and node.architecture != host]
    if foreign:
        return CheckResult(name, FAIL, f"node {foreign[0].name} is {foreign[0].architecture}, this host "
                           f"is {host}: every pod runs emulated", fix)
    if facts.image_arch:
        return CheckResult(name, PASS, f"image {facts.image} (the newest built) is "
                           f"{facts.image_arch}, like this host")
    looked = (f"no {facts.image_repository} image (any registry, any tag) in "
              f"{' or '.join(facts.image_tools) or 'docker or podman (neither answered)'}")
    if facts.nodes:
        return CheckResult(name, PASS, f"nodes are {host} like this host; {looked} yet "
                           "(`tilt up` builds it for the host)")
    return CheckResult(name, WARN, f"host is {host}; {looked}, and no node could be inspected",
                       "after `tilt up`, run `devloop doctor` again: it inspects the newest "
                       f"{facts.image_repository} image Tilt built")


def check_tilt(facts: Facts) -> CheckResult:
    if facts.tilt_version is None:
        return CheckResult("tilt", WARN, "tilt not found on PATH (needed for `tilt up`; "
                           "`kubectl apply` works without it)", TILT_INSTALL_HINT)
    version = parse_tilt_version(facts.tilt_version)
    minimum = ".".join(map(str, TILT_MIN_VERSION))
    if version is None:
        return CheckResult("tilt", WARN, f"could not read the version from {facts.tilt_version!r}",
                           TILT_INSTALL_HINT)
    if version < TILT_MIN_VERSION:
        return CheckResult("tilt", FAIL, f"tilt {'.'.join(map(str, version))} is older than "
                           f"{minimum}, which the Tiltfile requires", "upgrade Tilt: " + TILT_INSTALL_HINT)
    return CheckResult("tilt", PASS, f"tilt {'.'.join(map(str, version))}")


def check_ingress(facts: Facts) -> CheckResult:
    if not facts.ingress_classes_needed:
        return CheckResult("ingress", PASS, f"overlay {facts.overlay} has no Ingress: none needed")
    if facts.ingress_classes is None:
        return CheckResult("ingress", SKIP, "needs a reachable cluster")
    missing = [name for name in facts.ingress_classes_needed if name not in facts.ingress_classes]
    if missing:
        # The Ingress applies either way (ingressClassName is only a name); no controller of the
        # class means it routes nothing, while the Services and port-forwards still work.
        return CheckResult(
            "ingress", WARN, f"overlay {facts.overlay} routes through IngressClass "
            f"{', '.join(missing)}, which the cluster does not have "
            f"(it has: {', '.join(facts.ingress_classes) or 'none'}): the Ingress applies but "
            "routes nothing until a controller of that class runs",
            "install ingress-nginx: `helm upgrade --install ingress-nginx ingress-nginx "
            "--repo https://kubernetes.github.io/ingress-nginx -n ingress-nginx --create-namespace` "
            "(kind: `kubectl apply -f https://kind.sigs.k8s.io/examples/ingress/deploy-ingress-nginx.yaml`; "
            "minikube: `minikube addons enable ingress`); meanwhile use the port-forwards")
    return CheckResult("ingress", PASS, f"IngressClass {', '.join(facts.ingress_classes_needed)} exists")


def check_crds(facts: Facts) -> CheckResult:
    name = "crds"
    if not facts.custom_objects:
        return CheckResult(name, PASS, f"overlay {facts.overlay} uses only Kubernetes' own kinds")
    if facts.crds is None:
        return CheckResult(name, SKIP, "needs a reachable cluster")
    missing = [(kind, obj) for kind, obj in facts.custom_objects if kind not in facts.crds]
    if not missing:
        kinds = sorted({kind for kind, _ in facts.custom_objects})
        return CheckResult(name, PASS, f"the cluster has the CRDs of {', '.join(kinds)}")
    kinds = sorted({kind for kind, _ in missing})
    hints = [CRD_INSTALL_HINTS.get(kind.split("/")[0], f"install the operator that defines {kind}")
             for kind in kinds]
    return CheckResult(
        name, WARN, f"the cluster has no CRD for {', '.join(kinds)}: `kubectl apply` rejects "
        f"{', '.join(obj for _, obj in missing)} (the rest applies) and `tilt up` leaves them out",
        "; or ".join(dict.fromkeys(hints)))


def check_metrics_server(facts: Facts) -> CheckResult:
    """An HPA on CPU utilisation reads pod metrics through the metrics API (metrics-server);
    without it the HPA logs `failed to get cpu utilization` and never scales."""
    name = "metrics-server"
    if not facts.has_hpa:
        return CheckResult(name, PASS, f"overlay {facts.overlay} has no HorizontalPodAutoscaler: "
                           "none needed")
    if facts.metrics_api is None:
        return CheckResult(name, SKIP, "needs a reachable cluster")
    available, why = facts.metrics_api
    if available:
        return CheckResult(name, PASS, f"APIService {METRICS_API_SERVICE} is Available")
    return CheckResult(
        name, WARN, f"overlay {facts.overlay} has a HorizontalPodAutoscaler, but APIService "
        f"{METRICS_API_SERVICE} is not Available ({why}): the HPA cannot read CPU use and never scales",
        "install metrics-server: `kubectl apply -f https://github.com/kubernetes-sigs/metrics-server/"
        "releases/latest/download/components.yaml` (kind and other self-signed kubelets: add "
        "`--kubelet-insecure-tls` to its args; minikube: `minikube addons enable metrics-server`; "
        "k3s/k3d ship it)")


def check_gateway_api(facts: Facts) -> CheckResult:
    """The overlay's HTTPRoute is served only when a controller has accepted the GatewayClass its
    Gateway names (or, with a shared Gateway, some class): the CRDs alone route nothing."""
    name = "gateway-api"
    if not (facts.http_routes or facts.gateway_classes_needed):
        return CheckResult(name, PASS, f"overlay {facts.overlay} has no HTTPRoute or Gateway")
    if facts.crds is None:
        return CheckResult(name, SKIP, "needs a reachable cluster")
    if not all(kind in facts.crds for kind in GATEWAY_API_KINDS) or facts.gateway_classes is None:
        return CheckResult(name, SKIP, "needs the Gateway API CRDs (see the crds check)")
    known = {c.name: c for c in facts.gateway_classes}
    if not facts.gateway_classes_needed:  # the route attaches to a shared Gateway
        accepted = [c.name for c in facts.gateway_classes if c.accepted]
        if not accepted:
            return CheckResult(name, WARN, "no GatewayClass is Accepted (the cluster has: "
                               f"{', '.join(known) or 'none'}): no Gateway serves the HTTPRoute",
                               GATEWAY_CLASS_FIX)
        return CheckResult(name, PASS, f"GatewayClass {', '.join(accepted)} accepted; the "
                           "HTTPRoute attaches to a Gateway outside the overlay")
    for wanted in facts.gateway_classes_needed:
        if wanted not in known:
            return CheckResult(
                name, WARN, f"no GatewayClass {wanted} in the cluster (it has: "
                f"{', '.join(known) or 'none'}): the Gateway is never programmed and the "
                "HTTPRoute serves nothing (port-forwards still work)", GATEWAY_CLASS_FIX)
        if not known[wanted].accepted:
            why = f": {known[wanted].message}" if known[wanted].message else ""
            return CheckResult(
                name, WARN, f"GatewayClass {wanted} ({known[wanted].controller}) is not "
                f"Accepted{why}: no controller serves it",
                f"`kubectl describe gatewayclass {wanted}`; is its controller running? "
                + GATEWAY_CLASS_FIX)
    return CheckResult(name, PASS, f"GatewayClass {', '.join(facts.gateway_classes_needed)} "
                       "accepted by its controller")


def network_policy_enforcer(facts: Facts) -> tuple[bool | None, str]:
    """(enforces?, what was found). None: cannot tell."""
    for daemonset in facts.daemonsets or ():
        if any(fragment in daemonset.name for fragment in ENFORCING_CNIS):
            return True, f"{daemonset.namespace}/{daemonset.name}"
    if any("+k3s" in node.kubelet_version for node in facts.nodes):
        return True, "k3s's built-in network policy controller"
    for daemonset in facts.daemonsets or ():
        if "kindnet" in daemonset.name:
            dates = [int(match) for image in daemonset.images
                     for match in re.findall(r":v(\d{8})", image)]
            if dates and max(dates) >= KINDNET_POLICY_SINCE:
                return True, f"kindnetd {max(dates)} (kind >= v0.24)"
            return False, "kindnetd older than kind v0.24"
        if "flannel" in daemonset.name:
            return False, f"flannel ({daemonset.namespace}/{daemonset.name}) without a policy controller"
    if facts.context in ("docker-desktop", "docker-for-desktop"):
        return False, "Docker Desktop's built-in network"
    return None, "no known network plugin found"


def check_network_policy(facts: Facts) -> CheckResult:
    name = "networkpolicy"
    if not facts.has_network_policies:
        return CheckResult(name, PASS, f"overlay {facts.overlay} has no NetworkPolicy: nothing to enforce")
    if facts.daemonsets is None:
        return CheckResult(name, SKIP, "needs a reachable cluster")
    enforces, found = network_policy_enforcer(facts)
    fix = ("the policies are accepted but not enforced, so the security component's isolation is not "
           "tested here: use a CNI that enforces them (kind >= v0.24, k3d, "
           "`minikube start --cni=calico`, or install Calico/Cilium)")
    if enforces:
        return CheckResult(name, PASS, f"enforced by {found}")
    if enforces is False:
        return CheckResult(name, WARN, f"{found} does not enforce NetworkPolicy", fix)
    return CheckResult(name, WARN, f"cannot tell whether NetworkPolicy is enforced ({found})", fix)


# The guide's Q4_K_M file (bartowski's export of DeepSeek-R1-0528-Qwen3-8B): 5.03 GB. A cache
# smaller than the file cannot hold it; the download fails at the end, after minutes.
GGUF_MODEL_BYTES = 5_027_783_488
# The Docker Desktop VM each llama.cpp overlay is sized for (docs/llamacpp.md, docs/routing.md).
DOCKER_DESKTOP_MEMORY = {"gguf": "8 GB", "multi": "10 GB"}


def check_llamacpp(facts: Facts) -> CheckResult:
    """An overlay with a llama.cpp engine (gguf alone, multi beside vLLM): its image comes from
    ghcr.io (multi-arch: no emulation on Apple Silicon), its first start downloads the model into
    the model cache, and the nodes hold its memory limit and those of the engines beside it."""
    name = "llamacpp"
    needs = facts.llamacpp
    if needs is None:
        return CheckResult(name, PASS, f"overlay {facts.overlay} runs no llama.cpp engine")
    fetches = (f"pulls {needs.image} (amd64 and arm64 builds: native on Apple Silicon)"
               + (f", and its first start downloads {needs.model} from huggingface.co into the "
                  "model-cache volume (once; the pod needs egress to huggingface.co)"
                  if needs.downloads else f", serving {needs.model}"))
    if needs.downloads and needs.cache_request_bytes < GGUF_MODEL_BYTES * 1.2:
        return CheckResult(name, FAIL, fetches + f"; the model cache asks for only "
                           f"{_gib(needs.cache_request_bytes)}, less than the file and headroom",
                           "raise the PersistentVolumeClaim's storage request in the overlay")
    if needs.beside:
        fetches += (f"; beside {', '.join(needs.beside)} (memory limits "
                    f"{_gib(needs.memory_limit_bytes)} + {_gib(needs.beside_limit_bytes)})")
    memory = sum(node.memory_bytes for node in facts.nodes)
    engines = needs.memory_limit_bytes + needs.beside_limit_bytes
    if facts.nodes and engines > memory:
        what = ("the engines' memory limits (" + _gib(engines) + ") exceed" if needs.beside
                else "its memory limit " + _gib(engines) + " exceeds")
        size = DOCKER_DESKTOP_MEMORY.get(facts.overlay)
        return CheckResult(name, FAIL, fetches + f"; {what} the nodes' {_gib(memory)}",
                           "give the VM more memory (Docker Desktop: Settings > Resources > Memory"
                           + (f": {size} for the {facts.overlay} overlay" if size else "")
                           + "), or serve the GGUF model without a cluster: "
                           "`devloop serve --overlay gguf` (docs/llamacpp.md)")
    return CheckResult(name, PASS, fetches)


CHECKS: tuple[Callable[[Facts], CheckResult], ...] = (
    check_kubectl, check_context, check_reachable, check_resources, check_architecture,
    check_tilt, check_ingress, check_crds, check_gateway_api, check_network_policy,
    check_model_cache, check_metrics_server, check_llamacpp,
)


@dataclass
class Report:
    overlay: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(result.status == FAIL for result in self.results) else 0


def run_checks(facts: Facts) -> Report:
    return Report(facts.overlay, [check(facts) for check in CHECKS])
