"""`tilt up` checks the overlay's CPU and memory requests against the cluster before anything is
built: it stops when they can never fit the nodes, warns when other pods leave too little, or no
room for a rebuilt engine beside the old one; an unreachable cluster costs one warning. The
clusters are recorded in the shape `kubectl get nodes/pods -o json` prints (fake_kubectl.py)."""

from __future__ import annotations

import pytest

from .conftest import CRD_FILES, TILTFILE
from .fake_kubectl import FakeCluster, kind_node, placed_pod
from .tilt_api import TiltEnvironment

# What a kind (kubeadm) control plane's own pods request: etcd, the API server, the controller
# manager, the scheduler, two CoreDNS, kindnet (their manifests' requests; kube-proxy and the
# local-path provisioner request nothing).
CONTROL_PLANE = [
    placed_pod("kube-system", "etcd", "100m", "100Mi"),
    placed_pod("kube-system", "kube-apiserver", "250m", "0"),
    placed_pod("kube-system", "kube-controller-manager", "200m", "0"),
    placed_pod("kube-system", "kube-scheduler", "100m", "0"),
    placed_pod("kube-system", "coredns-1", "100m", "70Mi"),
    placed_pod("kube-system", "coredns-2", "100m", "70Mi"),
    placed_pod("kube-system", "kindnet", "100m", "50Mi"),
]
# The dev overlay's smallest supported node (docs/cluster.md): 2 CPUs, 8 GiB (Docker Desktop's
# VM with 8 GiB reports about this much allocatable).
SMALLEST_NODE = kind_node(cpu="2", memory="7948Mi")


def up(overlay: str, cluster: FakeCluster):
    rec = TiltEnvironment(TILTFILE, args=[f"--overlay={overlay}"], cluster=cluster).run()
    return rec, cluster


def _capacity_warnings(rec) -> list[str]:
    return [w for w in rec.warnings if "CustomResourceDefinition" not in w]


def test_a_rebuilt_dev_engine_fits_beside_the_old_one_on_the_smallest_supported_node():
    rec, _ = up("dev", FakeCluster(nodes=[SMALLEST_NODE], pods=CONTROL_PLANE))
    assert rec.failure is None and rec.warnings == []


def test_the_optimized_overlay_on_a_two_cpu_node_stops_at_once_naming_cpu_only():
    cluster = FakeCluster.with_crd_files(*CRD_FILES, nodes=[kind_node(cpu="2", memory="64Gi")],
                                         pods=CONTROL_PLANE)
    rec, _ = up("optimized", cluster)
    assert rec.failure is not None
    assert "(Insufficient cpu)" in rec.failure and "Insufficient memory" not in rec.failure
    assert "requests 6.15 CPU" in rec.failure and "allocate 2.0 CPU" in rec.failure
    assert "--overlay=dev" in rec.failure and "devloop doctor --overlay optimized" in rec.failure
    assert not rec.docker_builds and not rec.k8s_yaml, "nothing may be built or deployed"


def test_the_dev_overlay_too_big_for_its_node_is_not_told_to_use_itself():
    rec, _ = up("dev", FakeCluster(nodes=[kind_node(cpu="300m", memory="64Gi")]))
    assert rec.failure is not None and "(Insufficient cpu)" in rec.failure
    assert "--overlay=" not in rec.failure and "lower the requests in kustomize/overlays/dev/" in rec.failure


def test_tilt_down_is_never_stopped_by_the_capacity_check():
    cluster = FakeCluster(nodes=[kind_node(cpu="300m", memory="1Gi")])
    rec = TiltEnvironment(TILTFILE, args=["--overlay=dev"], subcommand="down", cluster=cluster).run()
    assert rec.failure is None and rec.warnings == [] and cluster.commands == []


def test_a_node_short_of_both_names_both():
    cluster = FakeCluster.with_crd_files(*CRD_FILES, nodes=[SMALLEST_NODE])
    rec, _ = up("optimized", cluster)
    assert "(Insufficient cpu, Insufficient memory)" in rec.failure


def test_nodes_add_up():
    nodes = [kind_node(cpu="4", memory="12Gi", name=f"kind-worker{i}") for i in range(2)]
    rec, _ = up("optimized", FakeCluster.with_crd_files(*CRD_FILES, nodes=nodes))
    assert rec.failure is None  # 8 CPU / 24 GiB for 6.15 CPU / 16.2 GiB


def test_other_pods_holding_the_room_warn_without_stopping():
    busy = CONTROL_PLANE + [placed_pod("other", "db", "1", "1Gi")]
    rec, _ = up("dev", FakeCluster(nodes=[kind_node(cpu="2", memory="7948Mi")], pods=busy))
    assert rec.failure is None and rec.k8s_yaml
    [warning] = _capacity_warnings(rec)
    assert "other pods already hold 1.95 CPU" in warning and "(Insufficient cpu)" in warning


def test_no_room_for_a_second_engine_warns_that_a_rebuild_waits_pending():
    # 1.5 CPUs: 0.55 left by the control plane; dev asks 0.4, a rebuild 0.4 + 0.25
    rec, _ = up("dev", FakeCluster(nodes=[kind_node(cpu="1500m", memory="7948Mi")],
                                   pods=CONTROL_PLANE))
    assert rec.failure is None
    [warning] = _capacity_warnings(rec)
    assert "new engine waits Pending (Insufficient cpu)" in warning


def test_the_overlays_own_pods_and_finished_or_unplaced_pods_do_not_count():
    """A reload of the Tiltfile while the overlay runs sees its own pods, which this deploy
    replaces; a Succeeded pod or a Pending one with no node holds nothing."""
    ours = [placed_pod("vllm-dev", "llm-engine-1", "250m", "3Gi")]
    finished = [placed_pod("other", "job", "4", "4Gi", phase="Succeeded")]
    unplaced = [placed_pod("other", "pending", "4", "4Gi", node="")]
    rec, _ = up("dev", FakeCluster(nodes=[SMALLEST_NODE],
                                   pods=CONTROL_PLANE + ours + finished + unplaced))
    assert rec.failure is None and rec.warnings == []


def test_an_unreachable_cluster_costs_one_warning_and_no_failure():
    rec, cluster = up("dev", FakeCluster(reachable=False))
    assert rec.failure is None and rec.k8s_yaml and rec.docker_builds
    [warning] = rec.warnings
    assert "Could not read the nodes of kind-kind" in warning
    assert "devloop doctor --overlay dev" in warning
    assert len(cluster.commands) == 1, "after no answer to the nodes, no pod query"


def test_the_capacity_queries_are_read_only_gets_of_tilts_context():
    cluster = FakeCluster(context="k3d-dev")
    TiltEnvironment(TILTFILE, context="k3d-dev", args=["--overlay=dev"], cluster=cluster).run()
    for argv in cluster.commands:
        kubectl = argv  # the shell ran this kubectl (fake_kubectl records the inner command)
        assert kubectl[:4] == ["kubectl", "--context", "k3d-dev", "get"], argv
        assert kubectl[4] in ("nodes", "pods") and kubectl[-3:-1] == ["-o", "json"]


@pytest.mark.parametrize("memory, fits", [("3300Mi", True), ("3200Mi", False), ("3565158Ki", True), ("3.5Gi", True), ("3e9", False)])
def test_memory_quantities_are_read_as_kubernetes_writes_them(memory, fits):
    # dev requests 3 GiB + 128 MiB + 64 MiB = 3264 MiB; every suffix kubelets report
    rec, _ = up("dev", FakeCluster(nodes=[kind_node(cpu="16", memory=memory)]))
    assert (rec.failure is None) == fits, rec.failure
