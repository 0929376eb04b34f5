"""Every overlay applies to a bare local cluster: the Tiltfile leaves out the objects whose kind
the cluster has no CustomResourceDefinition for, with one warning that says how to get them.
The cluster is the stand-in of fake_kubectl.py, answering the Tiltfile's real kubectl command."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import starlark

from devloop.manifests import kustomize

from .conftest import CRD_FILES, OVERLAYS, ROOT, TILTFILE
from .fake_kubectl import FakeCluster
from .tilt_api import TiltEnvironment
from .tilt_records import Blob

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def _group(obj: dict) -> str:
    return obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""


@functools.cache
def builtin_groups() -> frozenset[str]:
    """The API groups of every built-in kind, from kubernetes-validate's Kubernetes schema."""
    import kubernetes_validate

    from devloop.manifests import validate

    schema_dir = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                  / f"v{validate.KUBERNETES_VERSION}-local-strict")
    definitions = json.loads((schema_dir / "_definitions.json").read_text())["$defs"]
    return frozenset(gvk["group"] for definition in definitions.values() if isinstance(definition, dict)
            for gvk in definition.get("x-kubernetes-group-version-kind", []))


def _crd_queries(cluster: FakeCluster) -> list[list[str]]:
    """The commands that asked for CRDs (the capacity check asks for nodes and pods too)."""
    return [argv for argv in cluster.commands if "customresourcedefinitions" in argv]


def _run(overlay: str, cluster: FakeCluster):
    env = TiltEnvironment(TILTFILE, args=[f"--overlay={overlay}"], cluster=cluster)
    return env, env.run()


def test_the_tiltfiles_builtin_groups_are_those_of_kubernetes_own_kinds():
    match = re.search(r"^BUILTIN_GROUPS = (\[.*?\])", TILTFILE.read_text(), re.MULTILINE | re.DOTALL)
    assert match, "the Tiltfile has no BUILTIN_GROUPS"
    assert set(eval(match.group(1))) == builtin_groups()  # a list literal of ours


@overlays
def test_a_bare_cluster_gets_every_object_but_those_whose_crd_it_lacks(overlay):
    rendered = kustomize.load_objects(kustomize.render_overlay(overlay, ROOT))
    cluster = FakeCluster()
    _, rec = _run(overlay, cluster)
    assert rec.failure is None
    needing_crds = [obj for obj in rendered if _group(obj) not in builtin_groups()]
    assert rec.objects == [obj for obj in rendered if obj not in needing_crds]
    if not needing_crds:
        assert _crd_queries(cluster) == [], "an overlay of built-in kinds needs no CRD query"
        assert rec.warnings == []
        assert rec.k8s_yaml[0].source == f"kustomize/overlays/{overlay}", "kustomize's own output"


def _crd_files(*groups: str) -> list[Path]:
    """The project's CRD files of these API groups: a cluster with only those operators."""
    return [path for path in CRD_FILES if path.name.split("_")[0] in groups]


def _warning_about(rec, group: str) -> str:
    [warning] = [w for w in rec.warnings if f"CustomResourceDefinition for {group}/" in w]
    return warning


def test_the_optimized_overlays_custom_objects_are_left_out_with_one_warning_per_api_group():
    _, rec = _run("optimized", FakeCluster())
    assert not [obj for obj in rec.objects if _group(obj) not in builtin_groups()]
    assert len(rec.warnings) == 2, rec.warnings
    monitoring = _warning_about(rec, "monitoring.coreos.com")
    assert monitoring.startswith("Left out ServiceMonitor/llm-engine, ServiceMonitor/llm-gateway:")
    assert "no CustomResourceDefinition for monitoring.coreos.com/ServiceMonitor," in monitoring
    assert "kubectl apply --server-side -f kustomize/crds/" in monitoring
    assert "kube-prometheus-stack" in monitoring
    assert "`devloop doctor --overlay optimized`" in monitoring
    gateway = _warning_about(rec, "gateway.networking.k8s.io")
    assert gateway.startswith("Left out Gateway/llm, HTTPRoute/llm:")
    assert ("no CustomResourceDefinition for gateway.networking.k8s.io/Gateway, "
            "gateway.networking.k8s.io/HTTPRoute,") in gateway
    assert "releases/download/v1.6.1/standard-install.yaml" in gateway
    assert "docs/gateway-api.md" in gateway and "ServiceMonitor" not in gateway
    # The dashboard is a ConfigMap: it stays, for a Grafana that may come later.
    assert [obj for obj in rec.objects if obj["metadata"]["name"] == "llm-grafana-dashboard"]
    assert isinstance(rec.k8s_yaml[0], Blob)


def test_a_cluster_with_the_crds_gets_the_service_monitors_and_the_route():
    _, rec = _run("optimized", FakeCluster.with_crd_files(*CRD_FILES))
    assert rec.warnings == []
    assert len([obj for obj in rec.objects if obj["kind"] == "ServiceMonitor"]) == 2
    assert [obj["kind"] for obj in rec.objects if obj["kind"] in ("Gateway", "HTTPRoute")] == [
        "Gateway", "HTTPRoute"]


def test_a_cluster_with_the_gateway_api_only_gets_the_route_and_one_warning():
    _, rec = _run("optimized", FakeCluster.with_crd_files(*_crd_files("gateway.networking.k8s.io")))
    assert len(rec.warnings) == 1 and "ServiceMonitor/llm-engine" in rec.warnings[0]
    assert {"Gateway", "HTTPRoute"} <= {obj["kind"] for obj in rec.objects}


def test_a_crd_of_another_kind_in_the_same_group_is_not_enough():
    podmonitor = {"kind": "CustomResourceDefinition",
                  "spec": {"group": "monitoring.coreos.com", "names": {"kind": "PodMonitor"}}}
    _, rec = _run("optimized", FakeCluster(crds=[podmonitor]))
    assert "ServiceMonitor/llm-engine" in _warning_about(rec, "monitoring.coreos.com")
    assert not [obj for obj in rec.objects if obj["kind"] == "ServiceMonitor"]


def test_the_crd_query_goes_read_only_to_the_context_tilt_deploys_to():
    cluster = FakeCluster(context="k3d-dev")
    env = TiltEnvironment(TILTFILE, context="k3d-dev", args=["--overlay=optimized"],
                          cluster=cluster)
    env.run()
    assert len(_crd_queries(cluster)) == 1
    argv = _crd_queries(cluster)[0]
    assert argv[:3] == ["kubectl", "--context", "k3d-dev"]
    assert argv[3:5] == ["get", "customresourcedefinitions"]


def test_an_unreachable_cluster_loads_anyway_with_one_warning_and_kubectls_own_error():
    cluster = FakeCluster(reachable=False)
    env, rec = _run("optimized", cluster)
    assert rec.failure is None
    [warning] = rec.warnings
    assert warning.startswith("Could not ask the cluster (context kind-kind) which "
                              "CustomResourceDefinitions it has: The connection to the server "
                              "127.0.0.1:6443 was refused - did you specify the right host or port?.")
    assert ("Left out until it answers: Gateway/llm, HTTPRoute/llm, ServiceMonitor/llm-engine, "
            "ServiceMonitor/llm-gateway (kinds outside Kubernetes' own API groups)") in warning
    assert "`devloop doctor --overlay optimized`" in warning
    # Everything of Kubernetes' own groups deploys, as on a bare cluster.
    rendered = kustomize.load_objects(kustomize.render_overlay("optimized", ROOT))
    assert rec.objects == [obj for obj in rendered if _group(obj) in builtin_groups()]
    assert env.assemble()  # Tilt would accept the resources


def test_the_real_kubectl_against_a_stopped_cluster_is_one_warning_with_its_own_words(tmp_path):
    """No stand-in: kubectl itself, its kubeconfig naming a server nothing listens on."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "kind-kind",
        "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "kind", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "kind-kind", "context": {"cluster": "kind", "user": "kind"}}]}))
    _, rec = _run("optimized", FakeCluster(real_kubeconfig=str(kubeconfig)))
    assert rec.failure is None
    [warning] = rec.warnings
    assert re.search(r"which CustomResourceDefinitions it has: .*127\.0\.0\.1:1.*refused", warning), warning
    assert [r["name"] for r in rec.local_resources if r["name"] == "cluster-wait"] == ["cluster-wait"]


def test_an_unreachable_cluster_gets_a_resource_that_reloads_the_tiltfile_when_it_answers():
    _, rec = _run("optimized", FakeCluster(reachable=False))
    [wait] = [r for r in rec.local_resources if r["name"] == "cluster-wait"]
    assert wait["cmd"][:2] == ["sh", "-c"] and wait["cmd"][-2:] == ["kind-kind", str(TILTFILE)]
    assert wait["auto_init"] and wait["labels"] == ["infra"]
    assert "cluster-wait" in rec.warnings[0]


def test_a_reachable_cluster_gets_no_wait_resource():
    for cluster in (FakeCluster(), FakeCluster.with_crd_files(*CRD_FILES)):
        _, rec = _run("optimized", cluster)
        assert not [r for r in rec.local_resources if r["name"] == "cluster-wait"]


def test_the_wait_resource_touches_the_tiltfile_once_kubectl_answers(tmp_path):
    """Its command run for real in sh, against a kubectl that refuses twice, then answers."""
    _, rec = _run("optimized", FakeCluster(reachable=False))
    [wait] = [r for r in rec.local_resources if r["name"] == "cluster-wait"]
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text("")
    os.utime(tiltfile, (1_000_000, 1_000_000))
    calls = tmp_path / "calls"
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir()
    kubectl.write_text(f'''#!/bin/sh
echo "$*" >> {calls}
[ "$(wc -l < {calls})" -ge 3 ] || {{ echo "connection refused" >&2; exit 1; }}
''')
    kubectl.chmod(0o755)
    script = wait["cmd"][2].replace("sleep 5", "sleep 0.1")  # the same loop, faster
    subprocess.run(["sh", "-c", script, "cluster-wait", "kind-kind", str(tiltfile)], check=True,
                   timeout=30, env={**os.environ, "PATH": f"{kubectl.parent}:{os.environ['PATH']}"})
    assert calls.read_text().splitlines() == [
        "--context kind-kind get customresourcedefinitions -o name --request-timeout=5s"] * 3
    assert tiltfile.stat().st_mtime > 1_000_000


def test_a_kubectl_that_is_not_installed_is_one_warning_too():
    """sh's own message when kubectl is not on PATH reaches the user instead of a failed load."""
    _, rec = _run("optimized", FakeCluster(kubectl_installed=False))
    [warning] = rec.warnings
    assert "which CustomResourceDefinitions it has: " in warning
    assert "kubectl" in warning.split("it has: ")[1] and "not found" in warning


def test_the_stand_in_refuses_commands_it_does_not_emulate(tmp_path):
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text('local(["kubectl", "get", "pods"])\n')
    with pytest.raises(starlark.StarlarkError, match="not emulated"):
        TiltEnvironment(tiltfile).run()


def test_str_of_a_local_blob_is_its_text_as_in_tilt(tmp_path):
    crd = {"kind": "CustomResourceDefinition",
           "spec": {"group": "example.com", "names": {"kind": "Widget"}}}
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text(
        'out = local(["kubectl", "get", "crd", "--no-headers", '
        '"-o", "custom-columns=G:.spec.group,K:.spec.names.kind"])\n'
        'print("|".join(str(out).split()))\n')
    rec = TiltEnvironment(tiltfile, cluster=FakeCluster(crds=[crd])).run()
    assert rec.prints == ["example.com|Widget"]


def test_the_warnings_give_devloop_doctors_advice_word_for_word():
    from devloop.ops.doctor.checks import CRD_INSTALL_HINTS

    _, rec = _run("optimized", FakeCluster())
    for group in ("monitoring.coreos.com", "gateway.networking.k8s.io"):
        assert CRD_INSTALL_HINTS[group] in _warning_about(rec, group)


def test_the_tiltfile_and_devloop_doctor_know_the_same_install_hints():
    from devloop.ops.doctor.checks import CRD_INSTALL_HINTS

    match = re.search(r"^CRD_INSTALL_HINTS = (\{.*?^\})", TILTFILE.read_text(), re.MULTILINE | re.DOTALL)
    assert match, "the Tiltfile has no CRD_INSTALL_HINTS"
    assert eval(match.group(1)) == CRD_INSTALL_HINTS  # a dict literal of ours
