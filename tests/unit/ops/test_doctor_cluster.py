"""`devloop doctor` on the clusters the issue met: a default class with no provisioner and one
volume (Available, or Released by a deleted claim), a node short of CPU only, limits above the
node, an Ingress class that is missing, an HPA without metrics-server. The kubectl answers are
recorded in the shape the real kubectl prints them (`-o json`)."""

from __future__ import annotations

import pytest

from devloop.ops.doctor import facts as doctor_facts

from .test_doctor import healthy, kind_node, result

GIB = 1024**3

# `kubectl get storageclasses -o json` on a cluster whose only class is static local storage.
STATIC_CLASSES = {"items": [{
    "metadata": {"name": "local-storage",
                 "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/no-provisioner", "reclaimPolicy": "Delete",
    "volumeBindingMode": "WaitForFirstConsumer"}]}


def volume(phase: str, claim: dict | None = None, capacity: str = "20Gi") -> dict:
    """One item of `kubectl get persistentvolumes -o json`."""
    spec = {"capacity": {"storage": capacity}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local-storage",
            "local": {"path": "/mnt/disks/vol1"}}
    if claim:
        spec["claimRef"] = {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                            "uid": "5e0b5e5c-0000-4000-8000-000000000001", **claim}
    return {"metadata": {"name": "local-pv-1"}, "spec": spec, "status": {"phase": phase}}


def static_cluster(rendered, *volumes: dict, pvc_phase: str = "Pending"):
    return healthy(rendered, pvc_phase=pvc_phase,
                   storage_classes=doctor_facts.parse_storage_classes(STATIC_CLASSES),
                   storage_provisioners=doctor_facts.parse_storage_provisioners(STATIC_CLASSES),
                   volumes=doctor_facts.parse_volumes({"items": list(volumes)}))


# ---- model cache -----------------------------------------------------------------------------

def test_recorded_volumes_and_provisioners_are_read():
    released = volume("Released", {"namespace": "vllm-dev", "name": "llm-model-cache"})
    assert doctor_facts.parse_volumes({"items": [released]}) == (doctor_facts.Volume(
        "local-pv-1", "Released", "local-storage", 20 * GIB, "vllm-dev/llm-model-cache"),)
    assert doctor_facts.parse_storage_provisioners(STATIC_CLASSES) == (
        ("local-storage", "kubernetes.io/no-provisioner"),)


def test_the_overlays_claim_size_is_read(rendered):
    assert healthy(rendered, "dev").pvc_request_bytes == 10 * GIB
    assert healthy(rendered, "optimized").pvc_request_bytes == 30 * GIB


def test_a_released_volume_of_a_class_without_provisioner_fails_with_the_claimref_fix(rendered):
    released = volume("Released", {"namespace": "vllm-dev", "name": "llm-model-cache"})
    res = result(static_cluster(rendered, released), "model-cache")
    assert res.status == "fail"
    assert "no provisioner" in res.summary and "local-pv-1 is Released" in res.summary
    assert "binds when the engine starts" not in res.summary + res.fix
    assert "kubectl patch pv local-pv-1" in res.fix and "/spec/claimRef" in res.fix


@pytest.mark.parametrize("pvc_phase", ["", "Pending"])
def test_a_class_without_provisioner_and_no_volume_fails(rendered, pvc_phase):
    res = result(static_cluster(rendered, pvc_phase=pvc_phase), "model-cache")
    assert res.status == "fail" and "kubernetes.io/no-provisioner" in res.summary
    assert "create a PersistentVolume of class local-storage" in res.fix


def test_an_available_volume_big_enough_lets_a_static_class_bind(rendered):
    assert result(static_cluster(rendered, volume("Available")), "model-cache").status == "pass"
    small = volume("Available", capacity="5Gi")  # the dev claim asks for 10Gi
    assert result(static_cluster(rendered, small), "model-cache").status == "fail"


def test_a_volume_claimed_by_another_claim_does_not_count(rendered):
    bound = volume("Bound", {"namespace": "other", "name": "data"})
    res = result(static_cluster(rendered, bound), "model-cache")
    assert res.status == "fail" and "no Available volume" in res.summary


def test_a_provisioning_class_says_it_provisions_when_the_engine_starts(rendered):
    res = result(healthy(rendered, pvc_phase=""), "model-cache")
    assert res.status == "warn" and "rancher.io/local-path" in res.summary
    assert "provisions a volume when the engine starts" in res.fix


def test_a_provisioning_class_with_the_old_cache_released_says_how_to_reuse_it(rendered):
    released = volume("Released", {"namespace": "vllm-dev", "name": "llm-model-cache"})
    released["spec"]["storageClassName"] = "standard"
    facts = healthy(rendered, pvc_phase="", volumes=doctor_facts.parse_volumes({"items": [released]}))
    res = result(facts, "model-cache")
    assert res.status == "warn" and "local-pv-1, Released" in res.summary
    assert "kubectl patch pv local-pv-1" in res.fix
    other = volume("Released", {"namespace": "elsewhere", "name": "data"})
    other["spec"]["storageClassName"] = "standard"
    facts = healthy(rendered, pvc_phase="", volumes=doctor_facts.parse_volumes({"items": [other]}))
    assert "Released" not in result(facts, "model-cache").summary


def test_a_bound_claim_passes_whatever_the_class(rendered):
    assert result(static_cluster(rendered, pvc_phase="Bound"), "model-cache").status == "pass"


# ---- resources: CPU and memory apart, fixes that match the finding -------------------------

def test_a_node_short_of_cpu_only_names_cpu_only(rendered):
    res = result(healthy(rendered, nodes=(kind_node(cpu="300m", memory="64Gi"),)), "resources")
    assert res.status == "fail" and res.summary.endswith("(Insufficient cpu)")
    assert "memory" not in res.fix.split("(")[0] and "more CPUs" in res.fix
    assert "lower the CPU requests" in res.fix


def test_a_node_short_of_memory_only_names_memory_only(rendered):
    res = result(healthy(rendered, nodes=(kind_node(cpu="16", memory="2Gi"),)), "resources")
    assert res.status == "fail" and res.summary.endswith("(Insufficient memory)")
    assert "more memory" in res.fix and "CPUs" not in res.fix
    assert "lower the memory requests" in res.fix


def test_a_node_short_of_both_names_both(rendered):
    res = result(healthy(rendered, nodes=(kind_node(cpu="300m", memory="2Gi"),)), "resources")
    assert "(Insufficient cpu, Insufficient memory)" in res.summary


@pytest.mark.parametrize("cpu, memory, limit", [("4", "4Gi", "memory"), ("2", "64Gi", "CPU")])
def test_a_limits_warning_never_says_to_lower_the_requests(rendered, cpu, memory, limit):
    # dev requests 0.4 CPU / 3.2 GiB and limits 3.5 CPU / 5.8 GiB
    res = result(healthy(rendered, nodes=(kind_node(cpu=cpu, memory=memory),)), "resources")
    assert res.status == "warn" and "the requests fit" in res.summary
    assert "requests" not in res.fix and f"lower the {limit} limits" in res.fix


# ---- metrics-server --------------------------------------------------------------------------

# `kubectl get apiservices v1beta1.metrics.k8s.io -o json` with metrics-server running, and
# with its pod unable to scrape the kubelets (kind without --kubelet-insecure-tls).
AVAILABLE = {"status": {"conditions": [
    {"type": "Available", "status": "True", "reason": "Passed", "message": "all checks passed"}]}}
UNREACHABLE = {"status": {"conditions": [
    {"type": "Available", "status": "False", "reason": "MissingEndpoints",
     "message": "endpoints for service/metrics-server in \"kube-system\" have no addresses with port name \"https\""}]}}


def test_recorded_api_services_are_read():
    assert doctor_facts.parse_api_service(AVAILABLE) == (True, "all checks passed")
    assert doctor_facts.parse_api_service(UNREACHABLE)[0] is False
    assert doctor_facts.parse_api_service({}) == (False, "not registered")  # --ignore-not-found


def test_only_an_overlay_with_an_hpa_needs_metrics_server(rendered):
    assert not healthy(rendered, "dev").has_hpa and healthy(rendered, "optimized").has_hpa
    res = result(healthy(rendered, "dev", metrics_api=None), "metrics-server")
    assert res.status == "pass" and "no HorizontalPodAutoscaler" in res.summary


@pytest.mark.parametrize("answer", [UNREACHABLE, {}])
def test_an_hpa_without_an_available_metrics_api_warns_with_the_install(rendered, answer):
    facts = healthy(rendered, "optimized", metrics_api=doctor_facts.parse_api_service(answer))
    res = result(facts, "metrics-server")
    assert res.status == "warn" and "v1beta1.metrics.k8s.io" in res.summary
    assert "metrics-server" in res.fix and "--kubelet-insecure-tls" in res.fix


def test_metrics_server_is_skipped_without_a_cluster(rendered):
    assert result(healthy(rendered, "optimized", metrics_api=None), "metrics-server").status == "skip"
