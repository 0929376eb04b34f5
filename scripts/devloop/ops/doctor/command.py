"""`devloop doctor`: is this machine ready for the dev loop? One line per check, with the fix.

Gathering runs the real tools (kubectl, docker or podman, tilt) and reads the rendered overlay into a
`facts.Facts`; the checks themselves are pure functions in `devloop.ops.doctor.checks`.
Cluster queries go only to a local context (the Tiltfile's list), read-only, with a short
timeout, so doctor never waits on or touches a remote cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from devloop.common.errors import DevloopError
from devloop.manifests import kustomize
from devloop.ops.doctor import checks
from devloop.ops.doctor import facts as doctor_facts

# Where the image Tilt builds may be: Tilt builds with Docker; podman holds podman builds.
IMAGE_TOOLS = ("docker", "podman")
REQUEST_TIMEOUT = "5s"  # kubectl --request-timeout: a stopped cluster must not hang the doctor
COMMAND_TIMEOUT = 20.0


def _run(argv: Sequence[str], env: Mapping[str, str], timeout: float = COMMAND_TIMEOUT
         ) -> tuple[int, str, str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, env=dict(env),
                                timeout=timeout, check=False)
    except FileNotFoundError as missing:
        return 127, "", str(missing)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer within {timeout:.0f} s"
    return result.returncode, result.stdout, result.stderr.strip()


def host_architecture(env: Mapping[str, str] | None = None) -> str:
    """The machine's own architecture, amd64 or arm64. A Python running under Rosetta on Apple
    Silicon reports x86_64; the kernel's sysctl.proc_translated tells the truth."""
    machine = doctor_facts.normalise_arch(platform.machine())
    if platform.system() == "Darwin" and machine == "amd64":
        code, out, _ = _run(["sysctl", "-n", "sysctl.proc_translated"], env or os.environ, 5)
        if code == 0 and out.strip() == "1":
            return "arm64"
    return machine


def overlay_facts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What the checks need from a rendered overlay."""
    namespaces = [obj["metadata"]["name"] for obj in objects if obj.get("kind") == "Namespace"]
    namespaces += [obj["metadata"]["namespace"] for obj in objects
                   if obj.get("metadata", {}).get("namespace")]
    pvcs = [obj for obj in objects if obj.get("kind") == "PersistentVolumeClaim"]
    return {
        "namespace": namespaces[0] if namespaces else "default",
        "resources": doctor_facts.overlay_resources(objects),
        "custom_objects": doctor_facts.custom_objects(objects),
        "ingress_classes_needed": tuple(sorted({
            obj["spec"].get("ingressClassName", "nginx") for obj in objects
            if obj.get("kind") == "Ingress"})),
        "has_network_policies": any(obj.get("kind") == "NetworkPolicy" for obj in objects),
        "pvc_name": pvcs[0]["metadata"]["name"] if pvcs else "llm-model-cache",
        "pvc_storage_class": pvcs[0]["spec"].get("storageClassName") if pvcs else None,
        "pvc_request_bytes": doctor_facts.parse_memory_bytes(
            pvcs[0]["spec"].get("resources", {}).get("requests", {}).get("storage", 0)) if pvcs else 0,
        "has_hpa": any(obj.get("kind") == "HorizontalPodAutoscaler" for obj in objects),
        **doctor_facts.gateway_api_needs(objects),
        "llamacpp": doctor_facts.llamacpp_needs(objects),
    }


def _kubectl_json(kubectl: str, args: Sequence[str], env: Mapping[str, str]) -> Any | None:
    code, out, _ = _run([kubectl, *args, "-o", "json", f"--request-timeout={REQUEST_TIMEOUT}"], env)
    if code != 0:
        return None
    return json.loads(out) if out.strip() else {}


def gather(overlay: str, root: Path | None = None, env: Mapping[str, str] | None = None
           ) -> doctor_facts.Facts:
    """Run the real commands and collect what the checks look at. `env` is the environment the
    tools run with (KUBECONFIG, PATH for tilt, docker and podman); default: this process's."""
    env = dict(os.environ if env is None else env)
    root = root or kustomize.project_root()
    kustomize.overlay_dir(overlay, root)  # an unknown overlay is a usage error, before any work
    facts = doctor_facts.Facts(overlay=overlay, host_arch=host_architecture(env),
                               docker_default_platform=env.get("DOCKER_DEFAULT_PLATFORM", ""))
    try:
        facts = replace(facts, **overlay_facts(
            kustomize.load_objects(kustomize.render_overlay(overlay, root))))
    except DevloopError as error:
        facts = replace(facts, render_error=str(error))
    facts = replace(facts, smaller_overlays=_smaller_overlays(facts, root),
                    tilt_version=_tilt_version(env), **_newest_image(env))
    try:
        kubectl = kustomize.kubectl_path()
    except DevloopError as error:
        return replace(facts, kubectl_error=str(error))
    return _gather_cluster(replace(facts, kubectl=kubectl), kubectl, env)


def _smaller_overlays(facts: doctor_facts.Facts, root: Path) -> tuple[str, ...]:
    """The other overlays that request less memory and no more CPU: what a short node can try."""
    if facts.resources is None:
        return ()
    smaller = []
    for name in kustomize.overlay_names(root):
        if name == facts.overlay:
            continue
        try:
            other = doctor_facts.overlay_resources(
                kustomize.load_objects(kustomize.render_overlay(name, root)))
        except DevloopError:
            continue
        if (other.memory_request_bytes < facts.resources.memory_request_bytes
                and other.cpu_request_millicores <= facts.resources.cpu_request_millicores):
            smaller.append(name)
    return tuple(smaller)


def _gather_cluster(facts: doctor_facts.Facts, kubectl: str, env: Mapping[str, str]
                    ) -> doctor_facts.Facts:
    code, out, _ = _run([kubectl, "version", "--client", "-o", "json"], env)
    if code == 0:
        facts = replace(facts, kubectl_version=json.loads(out)["clientVersion"]["gitVersion"])
    code, out, _ = _run([kubectl, "config", "current-context"], env)
    if code != 0 or not out.strip():
        return facts
    facts = replace(facts, context=out.strip())
    if not checks.is_local_context(facts.context):
        return facts  # never query a cluster that is not on this machine
    code, out, err = _run([kubectl, "get", "nodes", "-o", "json",
                           f"--request-timeout={REQUEST_TIMEOUT}"], env)
    if code != 0:
        return replace(facts, reachable=False, cluster_error=err.splitlines()[-1] if err else "")
    facts = replace(facts, reachable=True, nodes=doctor_facts.parse_nodes(json.loads(out)))
    classes = _kubectl_json(kubectl, ["get", "ingressclasses"], env)
    daemonsets = _kubectl_json(kubectl, ["get", "daemonsets", "--all-namespaces"], env)
    storage = _kubectl_json(kubectl, ["get", "storageclasses"], env)
    pvc = _kubectl_json(kubectl, ["-n", facts.namespace or "default", "get", "pvc",
                                  facts.pvc_name, "--ignore-not-found"], env)
    facts = replace(facts, **_gather_storage(kubectl, env, storage),
                    **_gather_metrics_api(facts, kubectl, env))
    return replace(
        facts,
        crds=_cluster_crds(kubectl, env) if facts.custom_objects else None,
        ingress_classes=None if classes is None else tuple(
            item["metadata"]["name"] for item in classes.get("items", [])),
        daemonsets=None if daemonsets is None else doctor_facts.parse_daemonsets(daemonsets),
        storage_classes=None if storage is None else doctor_facts.parse_storage_classes(storage),
        pvc_phase=None if pvc is None else pvc.get("status", {}).get("phase", ""),
        gateway_classes=_gateway_classes(kubectl, facts, env),
    )


def _gather_storage(kubectl: str, env: Mapping[str, str], storage: Any | None) -> dict[str, Any]:
    """What the model-cache check needs beyond the claim: the provisioners of the classes
    (`storage`, already listed) and the volumes."""
    volumes = _kubectl_json(kubectl, ["get", "persistentvolumes"], env)
    return {
        "storage_provisioners": () if storage is None else doctor_facts.parse_storage_provisioners(storage),
        "volumes": None if volumes is None else doctor_facts.parse_volumes(volumes),
    }


def _gather_metrics_api(facts: doctor_facts.Facts, kubectl: str, env: Mapping[str, str]
                        ) -> dict[str, Any]:
    """The metrics API's availability, asked only for an overlay with an HPA."""
    if not facts.has_hpa:
        return {}
    service = _kubectl_json(kubectl, ["get", "apiservices", doctor_facts.METRICS_API_SERVICE,
                                      "--ignore-not-found"], env)
    return {"metrics_api": None if service is None else doctor_facts.parse_api_service(service)}


def _gateway_classes(kubectl: str, facts: doctor_facts.Facts, env: Mapping[str, str]
                     ) -> tuple[doctor_facts.GatewayClass, ...] | None:
    """The cluster's GatewayClasses, asked only when the overlay routes through the Gateway API
    (None: not asked, or no answer, as on a cluster without the Gateway API's CRDs)."""
    if not (facts.http_routes or facts.gateway_classes_needed):
        return None
    classes = _kubectl_json(kubectl, ["get", "gatewayclasses.gateway.networking.k8s.io"], env)
    return None if classes is None else doctor_facts.parse_gateway_classes(classes)


def _tilt_version(env: Mapping[str, str]) -> str | None:
    tilt = shutil.which("tilt", path=env.get("PATH", ""))
    if not tilt:
        return None
    code, out, err = _run([tilt, "version"], env)
    return (out or err).strip() if code == 0 else f"unreadable: {err}"


def _cluster_crds(kubectl: str, env: Mapping[str, str]) -> tuple[str, ...] | None:
    """group/Kind of the cluster's CRDs, with the Tiltfile's own query (None: no answer)."""
    code, out, _ = _run([kubectl, "get", "customresourcedefinitions", "--no-headers",
                         f"--request-timeout={REQUEST_TIMEOUT}", "-o", doctor_facts.CRD_COLUMNS],
                        env)
    return doctor_facts.parse_crd_columns(out) if code == 0 else None


def _newest_image(env: Mapping[str, str]) -> dict[str, Any]:
    """The newest image of the repository Tilt builds, under any registry prefix and tag, in
    every container CLI that answers, with its architecture (Facts fields)."""
    found: list[doctor_facts.LocalImage] = []
    tools: dict[str, str] = {}
    for tool in IMAGE_TOOLS:
        path = shutil.which(tool, path=env.get("PATH", ""))
        if not path:
            continue
        code, out, _ = _run([path, "image", "ls", "--format", doctor_facts.IMAGE_LIST_FORMAT], env)
        if code == 0:  # docker without a daemon, for one, does not answer
            tools[tool] = path
            found += doctor_facts.parse_image_list(out, tool)
    newest = doctor_facts.newest_image(found)
    if newest is None:
        return {"image": None, "image_arch": None, "image_tools": tuple(tools)}
    code, out, _ = _run([tools[newest.tool], "image", "inspect", newest.reference, "--format",
                         "{{.Architecture}}"], env)
    arch = doctor_facts.normalise_arch(out) if code == 0 and out.strip() else None
    return {"image": newest.reference, "image_arch": arch, "image_tools": tuple(tools)}


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check that kubectl, the cluster, Docker and Tilt are ready for an overlay",
        description="Check this machine and its local cluster for the dev loop: kubectl and a "
        "local context, cluster reachable, enough memory and CPUs for the overlay, the "
        "architecture of the newest image Tilt built, Tilt, ingress controller, the Gateway API "
        "(an accepted GatewayClass), the CRDs of the "
        "overlay's custom kinds, NetworkPolicy enforcement, model-cache PVC. "
        "Exit 0 when nothing failed (warnings allowed), 1 when a check failed.",
    )
    parser.add_argument("--overlay", default="dev", help="overlay to check against (default: dev)")
    parser.add_argument("--json", action="store_true", help="print a JSON report for CI")
    parser.set_defaults(handler=run)


def format_report(report: checks.Report, facts: doctor_facts.Facts) -> str:
    lines = [(f"devloop doctor: overlay {facts.overlay} (namespace {facts.namespace or '?'}), "
             f"host {facts.host_arch}")]
    width = max(len(result.name) for result in report.results)
    for result in report.results:
        label = result.status.upper() if result.status == checks.FAIL else result.status
        lines.append(f"{label:<5} {result.name:<{width}}  {result.summary}")
        if result.fix and result.status in (checks.WARN, checks.FAIL):
            lines.append(f"{'':<5} {'':<{width}}  fix: {result.fix}")
    counts = {status: sum(r.status == status for r in report.results)
              for status in (checks.FAIL, checks.WARN, checks.PASS, checks.SKIP)}
    lines.append(f"{counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed, "
                 f"{counts['skip']} skipped")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    facts = gather(args.overlay)
    report = checks.run_checks(facts)
    if args.json:
        print(json.dumps({"overlay": facts.overlay, "namespace": facts.namespace,
                          "host_arch": facts.host_arch, "ok": report.exit_code == 0,
                          "checks": [asdict(result) for result in report.results]}, indent=2))
    else:
        print(format_report(report, facts))
    return report.exit_code
