"""`tilt up -- --model=tiny`: any overlay, served by the entrypoint's offline random-weight model."""

from __future__ import annotations

import copy

import pytest

from devloop.manifests import kustomize

from .conftest import CRD_FILES, OVERLAYS, ROOT, TILTFILE, evaluate
from .fake_kubectl import FakeCluster
from .tilt_api import TiltEnvironment

# The overlays whose only engine is vLLM's; the gguf overlay's llama.cpp engine and the multi
# overlay's two have their own tests (test_tiltfile_llamacpp.py, test_tiltfile_multi.py).
overlays = pytest.mark.parametrize("overlay", [name for name in OVERLAYS
                                               if name not in ("gguf", "multi")])


def _engine(objects: list[dict]) -> dict:
    return next(obj for obj in objects
                if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "llm-engine")


def _vllm(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")


def effective_env(objects: list[dict], deployment: dict) -> dict[str, str]:
    """The engine container's environment as the kubelet builds it: envFrom ConfigMaps first,
    then `env` entries, which win over a key of the same name."""
    configmaps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in objects
                  if obj["kind"] == "ConfigMap"}
    container = _vllm(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def _up(*args: str, **kwargs):
    """On a cluster with every CRD, so the model is the only thing that changes the render."""
    env = TiltEnvironment(TILTFILE, args=list(args), cluster=FakeCluster.with_crd_files(*CRD_FILES),
                          **kwargs)
    return env.run()


@overlays
def test_model_tiny_serves_the_overlay_with_the_offline_model(overlay):
    rendered = kustomize.load_objects(kustomize.render_overlay(overlay, ROOT))
    rec = _up(f"--overlay={overlay}", "--model=tiny")
    assert rec.failure is None, rec.failure
    env = effective_env(rec.objects, _engine(rec.objects))
    assert env["MODEL_NAME"] == "tiny"
    assert env["SERVED_MODEL_NAME"] == "", "the overlay's served name belongs to its own model"
    # Everything else is the overlay as rendered: same objects, same settings, same ConfigMap.
    expected = copy.deepcopy(rendered)
    _vllm(_engine(expected))["env"] = _vllm(_engine(rec.objects))["env"]
    assert rec.objects == expected
    # The pod template changed, so switching models rolls the engine pods.
    assert _engine(rec.objects)["spec"]["template"] != _engine(rendered)["spec"]["template"]


@overlays
def test_without_model_the_engine_serves_the_overlays_own(overlay):
    rendered = kustomize.load_objects(kustomize.render_overlay(overlay, ROOT))
    rec = _up(f"--overlay={overlay}")
    assert effective_env(rec.objects, _engine(rec.objects))["MODEL_NAME"] != "tiny"
    assert rec.objects == rendered
    assert rec.k8s_yaml[0].text == kustomize.render_overlay(overlay, ROOT)


def test_model_overlay_names_the_default_explicitly():
    assert _up("--model=overlay").objects == _up().objects


def test_tilt_config_json_remembers_the_model_and_the_flag_overrides_it():
    remembered = _up(tilt_config={"model": "tiny"})
    assert effective_env(remembered.objects, _engine(remembered.objects))["MODEL_NAME"] == "tiny"
    overridden = _up("--model=overlay", tilt_config={"model": "tiny"})
    assert effective_env(overridden.objects, _engine(overridden.objects))["MODEL_NAME"] != "tiny"


@pytest.mark.parametrize("value", ["Qwen/Qwen3-0.6B", "TINY", "", "tiny "])
def test_an_unknown_model_is_refused_with_the_choices_before_anything_deploys(value):
    _, rec = evaluate(args=[f"--model={value}"])
    assert rec.failure == (
        f"unknown model '{value}'; --model takes overlay (the default: the overlay's own "
        "MODEL_NAME); tiny (an offline random-weight model generated in the pod: no download)")
    assert not rec.k8s_yaml and not rec.docker_builds


def test_model_option_is_documented_in_tilts_usage():
    _, rec = evaluate()
    assert "tiny" in rec.config_usage["model"] and "overlay" in rec.config_usage["model"]


def test_model_tiny_needs_the_engine_it_replaces_the_model_of(tmp_path):
    """An overlay without the engine container cannot take --model: say so instead of
    deploying a model nobody serves."""
    (tmp_path / "Tiltfile").write_text(TILTFILE.read_text(encoding="utf-8"), encoding="utf-8")
    overlay = tmp_path / "kustomize/overlays/bare"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("resources: [configmap.yaml]\n")
    (overlay / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {}\n")
    rec = TiltEnvironment(tmp_path / "Tiltfile", args=["--overlay=bare", "--model=tiny"]).run()
    assert rec.failure == ("--model=tiny: the overlay has no Deployment llm-engine with a "
                           "container vllm to run it")


def test_the_workflows_tilt_ci_job_passes_arguments_the_tiltfile_takes():
    import shlex

    import yaml

    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    run = next(step["run"] for step in workflow["jobs"]["tilt-ci"]["steps"]
               if step.get("run", "").startswith("tilt ci"))
    argv = shlex.split(run)
    rec = _up(*argv[argv.index("--") + 1:])
    assert rec.failure is None, rec.failure
    assert effective_env(rec.objects, _engine(rec.objects))["MODEL_NAME"] == "tiny"
