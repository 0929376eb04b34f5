"""Every overlay applies to a bare local cluster: the Tiltfile leaves out the objects whose kind
the cluster has no CustomResourceDefinition for, with one warning that says how to get them.
The cluster is the stand-in of fake_kubectl.py, answering the Tiltfile's real kubectl command."""

from __future__ import annotations

import functools
import json
import re
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


def test_the_optimized_overlays_service_monitors_are_left_out_with_one_warning():
    _, rec = _run("optimized", FakeCluster())
    assert not [obj for obj in rec.objects if obj["kind"] == "ServiceMonitor"]
    assert len(rec.warnings) == 1, rec.warnings
    warning = rec.warnings[0]
    assert "ServiceMonitor/llm-engine, ServiceMonitor/llm-gateway" in warning
    assert "no CustomResourceDefinition for monitoring.coreos.com/ServiceMonitor" in warning
    assert "kubectl apply --server-side -f kustomize/crds/" in warning
    assert "kube-prometheus-stack" in warning
    assert "`devloop doctor --overlay optimized`" in warning
    # The dashboard is a ConfigMap: it stays, for a Grafana that may come later.
    assert [obj for obj in rec.objects if obj["metadata"]["name"] == "llm-grafana-dashboard"]
    assert isinstance(rec.k8s_yaml[0], Blob)


def test_a_cluster_with_the_crds_gets_the_service_monitors():
    _, rec = _run("optimized", FakeCluster.with_crd_files(*CRD_FILES))
    assert rec.warnings == []
    assert len([obj for obj in rec.objects if obj["kind"] == "ServiceMonitor"]) == 2


def test_a_crd_of_another_kind_in_the_same_group_is_not_enough():
    podmonitor = {"kind": "CustomResourceDefinition",
                  "spec": {"group": "monitoring.coreos.com", "names": {"kind": "PodMonitor"}}}
    _, rec = _run("optimized", FakeCluster(crds=[podmonitor]))
    assert len(rec.warnings) == 1
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


def test_an_unreachable_cluster_stops_the_load_with_kubectls_own_error():
    with pytest.raises(starlark.StarlarkError, match="connection to the server .* was refused"):
        _run("optimized", FakeCluster(reachable=False))


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


def test_the_warning_gives_devloop_doctors_advice_word_for_word():
    from devloop.ops.doctor.checks import CRD_INSTALL_HINTS

    _, rec = _run("optimized", FakeCluster())
    assert CRD_INSTALL_HINTS["monitoring.coreos.com"] in rec.warnings[0]
