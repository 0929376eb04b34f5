"""`tilt up -- --overlay=multi`: vLLM and llama.cpp side by side behind one gateway. vLLM keeps
localhost:8000 (the buttons and the e2e suite), llama.cpp is an extra engine on 8001 with its own
health check, and `--model=tiny` gives each engine its tiny model under its own name, so the
gateway still routes by `model`. The gguf overlay's lone llama.cpp engine stays on 8000."""

from __future__ import annotations

import copy

from devloop.manifests import kustomize

from .conftest import CRD_FILES, ROOT, TILTFILE
from .fake_kubectl import FakeCluster
from .tilt_api import TiltEnvironment

VLLM, LLAMACPP = "llm-engine", "llm-llamacpp"


def _up(overlay: str, *args: str, subcommand: str = "up"):
    env = TiltEnvironment(TILTFILE, args=[f"--overlay={overlay}", *args], subcommand=subcommand,
                          cluster=FakeCluster.with_crd_files(*CRD_FILES))
    rec = env.run()
    assert rec.failure is None, rec.failure
    return rec, env.assemble()


def _forwards(resource) -> list[tuple[int, int]]:
    return [(pf.local_port, pf.container_port or pf.local_port) for pf in resource.port_forwards]


def _container(objects: list[dict], workload: str) -> dict:
    deployment = next(obj for obj in objects
                      if obj["kind"] == "Deployment" and obj["metadata"]["name"] == workload)
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _env(objects: list[dict], workload: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then `env`."""
    configmaps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in objects
                  if obj["kind"] == "ConfigMap"}
    container = _container(objects, workload)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


def test_multi_forwards_vllm_on_8000_and_llamacpp_on_8001():
    rec, resources = _up("multi")
    assert rec.objects == kustomize.load_objects(kustomize.render_overlay("multi", ROOT))
    assert _forwards(resources[VLLM]) == [(8000, 8000)]
    assert _forwards(resources[LLAMACPP]) == [(8001, 8000)]
    assert [pf.name for pf in resources[LLAMACPP].port_forwards] == ["llama.cpp API"]
    assert [link.url for link in resources[LLAMACPP].links] == ["http://localhost:8001/metrics"]
    for engine in (VLLM, LLAMACPP):
        assert resources[engine].labels == ["engine"] and resources[engine].pod_readiness == "wait"


def test_multi_health_checks_both_engines():
    rec, resources = _up("multi")
    assert "devloop health --url http://localhost:8000 --wait" in str(resources["health"].cmd)
    assert resources["health"].resource_deps == [VLLM]
    check = resources["health-" + LLAMACPP]
    assert "devloop health --url http://localhost:8001 --wait" in str(check.cmd)
    assert check.resource_deps == [LLAMACPP] and not check.auto_init
    # The vLLM suite on vLLM's port; llama.cpp's copy on llama.cpp's.
    assert "pytest tests/e2e --base-url http://localhost:8000" in str(resources["e2e"].cmd)
    e2e = resources["e2e-" + LLAMACPP]
    assert "pytest tests/e2e/llamacpp/test_direct.py" in str(e2e.cmd)
    (call,) = [call for call in rec.local_resources if call["name"] == "e2e-" + LLAMACPP]
    assert call["env"] == {"DEVLOOP_LLAMACPP_URL": "http://localhost:8001"}
    assert e2e.resource_deps == [LLAMACPP] and not e2e.auto_init


def test_tilt_ci_runs_both_health_checks_by_itself():
    _, resources = _up("multi", subcommand="ci")
    assert resources["health"].auto_init and resources["health-" + LLAMACPP].auto_init


def test_model_tiny_gives_both_engines_their_tiny_model_under_two_names():
    rendered = kustomize.load_objects(kustomize.render_overlay("multi", ROOT))
    rec, resources = _up("multi", "--model=tiny")
    vllm, llama = _env(rec.objects, VLLM), _env(rec.objects, LLAMACPP)
    assert (vllm["MODEL_NAME"], vllm["SERVED_MODEL_NAME"]) == ("tiny", "")
    assert llama["LLAMA_ARG_MODEL"] == "/app/models/tiny.gguf"
    assert (llama["LLAMA_ARG_HF_REPO"], llama["LLAMA_ARG_OFFLINE"]) == ("", "true")
    # Two model names, or the gateway would take the engines for replicas of one model.
    assert llama["LLAMA_ARG_ALIAS"] == "tiny-gguf"
    assert _container(rec.objects, LLAMACPP)["image"] == "llamacpp-devloop-tiny:dev"
    # The tiny GGUF is made first and llama.cpp waits for it; vLLM does not.
    assert "llamacpp-tiny-gguf" in resources[LLAMACPP].resource_deps
    assert "llamacpp-tiny-gguf" not in resources[VLLM].resource_deps
    assert sorted(b.ref for b in rec.docker_builds) == [
        "llamacpp-devloop-tiny", "vllm-devloop", "vllm-devloop-gateway"]
    # Everything else is the overlay as rendered.
    expected = copy.deepcopy(rendered)
    for workload in (VLLM, LLAMACPP):
        changed = _container(rec.objects, workload)
        _container(expected, workload).update(env=changed["env"], image=changed["image"])
    assert rec.objects == expected


def test_gguf_keeps_its_lone_llamacpp_engine_on_8000_checked_by_the_buttons():
    rec, resources = _up("gguf", "--model=tiny")
    assert _forwards(resources[LLAMACPP]) == [(8000, 8000)]
    assert "health-" + LLAMACPP not in resources, "the health button already checks it"
    assert "e2e-" + LLAMACPP not in resources, "the e2e button already runs llama.cpp's suite"
    assert resources["health"].resource_deps == [LLAMACPP]
    assert _env(rec.objects, LLAMACPP)["LLAMA_ARG_ALIAS"] == "tiny", "alone, it is `tiny`"
