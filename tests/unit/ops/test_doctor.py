"""`devloop doctor`: the checks over hand-built facts (every machine and cluster this one is not),
and the real gathering on this machine (kubectl present, no cluster, no Tilt)."""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from devloop.ops.doctor import checks
from devloop.ops.doctor import command as doctor
from devloop.ops.doctor import facts as doctor_facts

ROOT = Path(__file__).resolve().parents[3]
GIB = 1024**3
EG = doctor_facts.GatewayClass("eg", "gateway.envoyproxy.io/gatewayclass-controller", True)
NGINX_INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                 "metadata": {"name": "llm"}, "spec": {"ingressClassName": "nginx"}}


def kind_node(cpu: str = "4", memory: str = "16Gi", arch: str = "amd64", kubelet: str = "v1.32.2"):
    return doctor_facts.Node("kind-control-plane", arch, doctor_facts.parse_cpu_millicores(cpu),
                       doctor_facts.parse_memory_bytes(memory), kubelet)


def healthy(rendered, overlay: str = "dev", **changes) -> doctor_facts.Facts:
    """A kind cluster with room for the overlay, Calico, ingress-nginx, Envoy Gateway, the PVC
    bound, Tilt."""
    facts = doctor_facts.Facts(
        overlay=overlay, host_arch="amd64", kubectl="/usr/local/bin/kubectl",
        kubectl_version="v1.32.2", context="kind-dev", reachable=True,
        nodes=(kind_node(cpu="16", memory="64Gi"),), ingress_classes=("nginx",),
        daemonsets=(doctor_facts.DaemonSet("kube-system", "calico-node", ("calico/node:v3.29.1",)),),
        storage_classes=(("standard", True),), pvc_phase="Bound",
        crds=("monitoring.coreos.com/ServiceMonitor", "monitoring.coreos.com/PodMonitor",
              *checks.GATEWAY_API_KINDS),
        gateway_classes=(EG,),
        image="localhost:5001/vllm-devloop:tilt-5c3b1f2d9a0e", image_arch="amd64",
        image_tools=("docker",), tilt_version="v0.33.21, built 2024-11-05",
        storage_provisioners=(("standard", "rancher.io/local-path"),), volumes=(),
        metrics_api=(True, "all checks passed"),
    )
    facts = replace(facts, **doctor.overlay_facts(rendered[overlay]))
    return replace(facts, **changes)


def result(facts: doctor_facts.Facts, name: str) -> checks.CheckResult:
    return next(r for r in checks.run_checks(facts).results if r.name == name)


# ---- whole reports ---------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", ["dev", "optimized"])
def test_a_ready_machine_passes_every_check(rendered, overlay):
    report = checks.run_checks(healthy(rendered, overlay))
    assert [r.status for r in report.results] == ["pass"] * len(checks.CHECKS), report.results
    assert report.exit_code == 0


def test_warnings_alone_exit_zero_and_any_failure_exits_one(rendered):
    warned = checks.run_checks(healthy(rendered, tilt_version=None))
    assert {r.status for r in warned.results} == {"pass", "warn"} and warned.exit_code == 0
    failed = checks.run_checks(healthy(rendered, tilt_version=None, context="gke_prod"))
    assert failed.exit_code == 1


def test_every_warning_and_failure_says_how_to_fix_it(rendered):
    broken = healthy(rendered, "optimized", context=None, reachable=False, tilt_version="v0.20.0",
                     ingress_classes=(), daemonsets=(), pvc_phase="Lost", image_arch="arm64",
                     nodes=(kind_node(memory="7Gi"),))
    for facts in (broken, replace(broken, context="kind-x")):
        for res in checks.run_checks(facts).results:
            if res.status in ("warn", "fail"):
                assert res.fix, res


# ---- kubectl and context -------------------------------------------------------------------

def test_no_kubectl_fails_with_the_bootstrap_fix_and_skips_the_context(rendered):
    facts = healthy(rendered, kubectl=None, kubectl_error="not on PATH")
    assert result(facts, "kubectl").status == "fail"
    assert "bootstrap.sh" in result(facts, "kubectl").fix
    assert result(facts, "context").status == "skip"


def test_no_current_context_fails_and_names_the_command_that_sets_one(rendered):
    facts = healthy(rendered, context=None, reachable=None)
    res = result(facts, "context")
    assert res.status == "fail" and "kubectl config use-context" in res.fix
    assert result(facts, "cluster").status == "skip"
    assert result(facts, "resources").status == "skip"


def tiltfile_list(name: str) -> list[str]:
    match = re.search(rf"^{name} = (\[.*?\])", (ROOT / "Tiltfile").read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"Tiltfile has no {name}"
    return ast.literal_eval(match.group(1))


def test_local_contexts_are_the_tiltfiles():
    assert list(checks.LOCAL_CONTEXTS) == tiltfile_list("LOCAL_CONTEXTS")
    assert list(checks.LOCAL_CONTEXT_PREFIXES) == tiltfile_list("LOCAL_CONTEXT_PREFIXES")


@pytest.mark.parametrize("context, local", [
    ("docker-desktop", True), ("kind-dev", True), ("k3d-llm", True), ("orbstack", True),
    ("minikube", True), ("gke_project_zone_prod", False), ("kind", False),
    ("arn:aws:eks:eu-west-1:1:cluster/prod", False), ("minikube-remote", False),
])
def test_only_local_contexts_pass(rendered, context, local):
    assert result(healthy(rendered, context=context), "context").status == ("pass" if local else "fail")


def test_an_unreachable_cluster_fails(rendered):
    res = result(healthy(rendered, reachable=False, cluster_error="connection refused"), "cluster")
    assert res.status == "fail" and "connection refused" in res.summary


@pytest.mark.parametrize("kubelet, status", [("v1.29.8", "fail"), ("v1.30.0", "pass"),
                                             ("v1.31.4+k3s1", "pass"), ("", "pass")])
def test_a_cluster_older_than_the_prestop_sleep_action_fails(rendered, kubelet, status):
    res = result(healthy(rendered, nodes=(kind_node(cpu="16", memory="64Gi", kubelet=kubelet),)),
                 "cluster")
    assert res.status == status
    if status == "fail":
        assert "preStop `sleep` action needs 1.30" in res.summary and "kind" in res.fix


# ---- resources -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, millicores", [("2", 2000), ("100m", 100), ("0.5", 500), (3, 3000)])
def test_cpu_quantities(text, millicores):
    assert doctor_facts.parse_cpu_millicores(text) == millicores


@pytest.mark.parametrize("text, value", [("3Gi", 3 * GIB), ("128Mi", 128 * 1024**2), ("200M", 200 * 10**6),
                                         ("8040516Ki", 8040516 * 1024), ("1e9", 10**9), ("42", 42)])
def test_memory_quantities(text, value):
    assert doctor_facts.parse_memory_bytes(text) == value


def test_a_malformed_memory_quantity_is_refused():
    with pytest.raises(ValueError, match="3GB"):
        doctor_facts.parse_memory_bytes("3GB")


def test_dev_overlay_totals_are_its_three_containers(rendered):
    # engine 250m/3Gi (limit 2/5Gi) + gateway 100m/128Mi (1/512Mi) + Redis 50m/64Mi (500m/256Mi)
    assert doctor_facts.overlay_resources(rendered["dev"]) == doctor_facts.Resources(
        cpu_request_millicores=400, cpu_limit_millicores=3500,
        memory_request_bytes=3 * GIB + 192 * 1024**2, memory_limit_bytes=5 * GIB + 768 * 1024**2)


def test_optimized_overlay_counts_both_engine_replicas(rendered):
    totals = doctor_facts.overlay_resources(rendered["optimized"])
    assert totals.cpu_request_millicores == 2 * 3000 + 150
    assert totals.memory_request_bytes == 2 * 8 * GIB + 192 * 1024**2
    assert totals.memory_limit_bytes == 2 * 18 * GIB + 768 * 1024**2


def test_hpa_minimum_and_init_containers_count_like_the_scheduler_counts_them():
    objects = [
        {"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 1, "template": {"spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "4", "memory": "1Gi"}}}],
            "containers": [{"resources": {"requests": {"cpu": "1", "memory": "2Gi"}}},
                           {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}}},
        {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
         "spec": {"scaleTargetRef": {"name": "a"}, "minReplicas": 3}},
        {"kind": "Service", "metadata": {"name": "a"}, "spec": {}},
    ]
    totals = doctor_facts.overlay_resources(objects)
    # per pod: max(1+1, 4) CPU and max(2+1, 1) GiB; 3 pods from the HPA's minimum
    assert totals.cpu_request_millicores == 3 * 4000
    assert totals.memory_request_bytes == 3 * 3 * GIB
    assert totals.memory_limit_bytes == 3 * 3 * GIB  # no limit: the request stands in


def test_docker_desktop_default_memory_fails_the_optimized_overlay(rendered):
    facts = healthy(rendered, "optimized", context="docker-desktop",
                    nodes=(kind_node(cpu="8", memory="7948Mi"),))
    res = result(facts, "resources")
    assert res.status == "fail" and "Pending" in res.summary and "Settings > Resources" in res.fix


def test_requests_that_fit_with_limits_that_do_not_warn(rendered):
    # dev requests 3.2 GiB and limits 5.8 GiB: a 4 GiB node schedules it but cannot back the limits
    res = result(healthy(rendered, nodes=(kind_node(cpu="4", memory="4Gi"),)), "resources")
    assert res.status == "warn" and "OOM" in res.summary


def test_cpu_requests_over_the_node_fail(rendered):
    assert result(healthy(rendered, nodes=(kind_node(cpu="300m"),)), "resources").status == "fail"


def test_an_overlay_that_did_not_render_fails_the_resource_check(rendered):
    res = result(healthy(rendered, resources=None, render_error="kustomize: boom"), "resources")
    assert res.status == "fail" and "boom" in res.summary


def test_kubectl_nodes_json_is_read():
    nodes = doctor_facts.parse_nodes({"items": [{
        "metadata": {"name": "docker-desktop"},
        "status": {"allocatable": {"cpu": "8", "memory": "8039480Ki", "pods": "110"},
                   "nodeInfo": {"architecture": "arm64", "kubeletVersion": "v1.31.4"}}}]})
    assert nodes == (doctor_facts.Node("docker-desktop", "arm64", 8000, 8039480 * 1024, "v1.31.4"),)


# ---- architecture ----------------------------------------------------------------------------

@pytest.mark.parametrize("machine, arch", [("x86_64", "amd64"), ("AMD64", "amd64"), ("aarch64", "arm64"),
                                           ("arm64", "arm64"), ("linux/amd64", "amd64")])
def test_architecture_spellings_normalise(machine, arch):
    assert doctor_facts.normalise_arch(machine) == arch


def test_an_amd64_image_on_apple_silicon_fails(rendered):
    facts = healthy(rendered, host_arch="arm64", nodes=(kind_node(arch="arm64", cpu="16", memory="64Gi"),),
                    image_arch="amd64")
    res = result(facts, "architecture")
    assert res.status == "fail" and "emulated" in res.summary
    assert "docker rmi localhost:5001/vllm-devloop:tilt-5c3b1f2d9a0e" in res.fix


def test_docker_default_platform_forcing_amd64_on_arm64_fails(rendered):
    facts = healthy(rendered, host_arch="arm64", image_arch=None, docker_default_platform="linux/amd64",
                    nodes=(kind_node(arch="arm64", cpu="16", memory="64Gi"),))
    assert result(facts, "architecture").status == "fail"


def test_an_emulated_node_fails(rendered):
    facts = healthy(rendered, host_arch="arm64", image_arch=None,
                    nodes=(kind_node(arch="amd64", cpu="16", memory="64Gi"),))
    assert "node kind-control-plane is amd64" in result(facts, "architecture").summary


def test_a_native_node_with_no_image_yet_passes_and_nothing_known_warns(rendered):
    assert result(healthy(rendered, image_arch=None), "architecture").status == "pass"
    assert result(healthy(rendered, image_arch=None, nodes=()), "architecture").status == "warn"


# ---- tilt ----------------------------------------------------------------------------------

def test_tilt_missing_warns_with_the_install_command(rendered):
    res = result(healthy(rendered, tilt_version=None), "tilt")
    assert res.status == "warn" and "install.sh" in res.fix


def test_tilt_older_than_the_tiltfile_requires_fails(rendered):
    assert result(healthy(rendered, tilt_version="v0.29.9, built 2022-01-01"), "tilt").status == "fail"
    assert result(healthy(rendered, tilt_version="v0.30.0, built 2022-06-01"), "tilt").status == "pass"


def test_minimum_tilt_version_is_the_tiltfiles():
    match = re.search(r'version_settings\(constraint = ">=([\d.]+)"\)', (ROOT / "Tiltfile").read_text())
    assert match and tuple(int(p) for p in match.group(1).split(".")) == checks.TILT_MIN_VERSION


# ---- ingress, network policy, model cache ----------------------------------------------------

def test_ingress_is_needed_only_by_overlays_with_an_ingress(rendered):
    assert healthy(rendered, "dev").ingress_classes_needed == ()
    assert healthy(rendered, "optimized").ingress_classes_needed == ()  # it has an HTTPRoute
    with_ingress = doctor.overlay_facts(rendered["optimized"] + [NGINX_INGRESS])
    assert with_ingress["ingress_classes_needed"] == ("nginx",)
    assert result(healthy(rendered, "dev", ingress_classes=()), "ingress").status == "pass"


def test_an_ingress_whose_class_is_missing_warns_that_it_routes_nothing(rendered):
    facts = healthy(rendered, "optimized", ingress_classes=("traefik",))
    facts = replace(facts, **doctor.overlay_facts(rendered["optimized"] + [NGINX_INGRESS]))
    res = result(facts, "ingress")
    assert res.status == "warn" and "traefik" in res.summary and res.fix
    assert "applies but routes nothing" in res.summary


@pytest.mark.parametrize("daemonsets, nodes_kubelet, context, status", [
    ((doctor_facts.DaemonSet("kube-system", "cilium", ()),), "v1.32.0", "kind-x", "pass"),
    ((doctor_facts.DaemonSet("kube-system", "kindnet", ("docker.io/kindest/kindnetd:v20241108-5c6d2daf",)),),
     "v1.32.0", "kind-x", "pass"),
    ((doctor_facts.DaemonSet("kube-system", "kindnet", ("docker.io/kindest/kindnetd:v20230511-dc714da8",)),),
     "v1.27.3", "kind-x", "warn"),
    ((), "v1.31.5+k3s1", "k3d-x", "pass"),
    ((doctor_facts.DaemonSet("kube-flannel", "kube-flannel-ds", ()),), "v1.31.0", "minikube", "warn"),
    ((doctor_facts.DaemonSet("kube-system", "vpnkit-controller", ()),), "v1.31.4", "docker-desktop", "warn"),
    ((), "v1.31.4", "orbstack", "warn"),
])
def test_network_policy_enforcement_is_read_off_the_cni(rendered, daemonsets, nodes_kubelet, context, status):
    facts = healthy(rendered, "optimized", daemonsets=daemonsets, context=context,
                    nodes=(kind_node(cpu="32", memory="128Gi", kubelet=nodes_kubelet),))
    assert result(facts, "networkpolicy").status == status


def test_an_overlay_without_network_policies_needs_no_enforcement(rendered):
    assert result(healthy(rendered, "dev", daemonsets=()), "networkpolicy").status == "pass"


@pytest.mark.parametrize("phase, classes, status", [
    ("Bound", (("standard", True),), "pass"),
    ("Pending", (("standard", True),), "warn"),
    ("Pending", (("standard", False),), "fail"),
    ("", (("local-path", True),), "warn"),
    ("", (), "fail"),
    ("Lost", (("standard", True),), "fail"),
])
def test_model_cache_pvc_phase(rendered, phase, classes, status):
    res = result(healthy(rendered, pvc_phase=phase, storage_classes=classes), "model-cache")
    assert res.status == status
    assert "vllm-dev/llm-model-cache" in res.summary


# ---- the real gathering on this machine ------------------------------------------------------

def run_doctor(tmp_path: Path, kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
    """devloop doctor with its own kubeconfig and a PATH with neither tilt nor docker on it."""
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir(exist_ok=True)
    env = {"KUBECONFIG": str(config), "PATH": str(empty_bin), "HOME": str(tmp_path),
           # the checkout under test, where it is not the one the environment installed
           **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})}
    return subprocess.run([sys.executable, "-m", "devloop.cli", "doctor", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def kubeconfig_for(context: str, server: str = "https://127.0.0.1:1") -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
    })


def test_without_a_context_doctor_fails_with_the_fix_and_warns_about_tilt(tmp_path):
    done = run_doctor(tmp_path, "")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("pass  kubectl") for line in lines), done.stdout
    assert any(line.startswith("FAIL  context") for line in lines), done.stdout
    assert "kubectl config use-context" in done.stdout
    assert any(line.startswith("warn  tilt") for line in lines) and "install.sh" in done.stdout


def test_json_report_carries_every_check(tmp_path):
    done = run_doctor(tmp_path, "", "--json", "--overlay", "optimized")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["ok"] is False
    assert report["namespace"] == "vllm-optimized"
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert list(statuses) == ["kubectl", "context", "cluster", "resources", "architecture", "tilt",
                              "ingress", "crds", "gateway-api", "networkpolicy", "model-cache",
                              "metrics-server", "llamacpp"]
    assert statuses["kubectl"] == "pass" and statuses["context"] == "fail"
    assert statuses["tilt"] == "warn"


def test_a_local_context_whose_cluster_is_down_fails_the_cluster_check(tmp_path):
    (tmp_path / "k").write_text(kubeconfig_for("kind-doctor"))  # nothing listens on port 1
    facts = doctor.gather("dev", ROOT, env={"KUBECONFIG": str(tmp_path / "k"), "PATH": ""})
    assert facts.context == "kind-doctor" and facts.reachable is False
    assert facts.cluster_error  # kubectl's own words: connection refused
    assert result(facts, "cluster").status == "fail"


def test_a_remote_context_is_refused_and_never_queried(tmp_path):
    (tmp_path / "k").write_text(kubeconfig_for("gke_prod", server="https://127.0.0.1:1"))
    facts = doctor.gather("dev", ROOT, env={"KUBECONFIG": str(tmp_path / "k"), "PATH": ""})
    assert facts.context == "gke_prod" and facts.reachable is None
    assert result(facts, "context").status == "fail"


def test_gathering_reads_the_overlay_and_this_host(tmp_path):
    facts = doctor.gather("optimized", ROOT, env={"KUBECONFIG": str(tmp_path / "none"), "PATH": ""})
    assert facts.namespace == "vllm-optimized" and facts.has_network_policies
    assert facts.kubectl and facts.kubectl_version.startswith("v1.")
    assert facts.host_arch == doctor_facts.normalise_arch(platform.machine())
    assert facts.tilt_version is None and facts.image_arch is None


def test_an_unknown_overlay_is_a_usage_error(tmp_path):
    done = run_doctor(tmp_path, "", "--overlay", "nope")
    assert done.returncode == 2 and "dev, gguf, multi, optimized" in done.stderr
