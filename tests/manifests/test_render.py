"""Rendering with the real kustomize, and the errors a user sees for bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from devloop.manifests import kustomize

from .conftest import COMPONENTS, OVERLAYS, ROOT


def test_the_overlays_and_components_are_the_designed_ones():
    assert OVERLAYS == ["dev", "gguf", "multi", "optimized"]
    assert COMPONENTS == ["autoscaling", "cache", "gateway-api", "inference-pool", "ingress",
                          "llamacpp", "logging", "monitoring", "security"]


def test_optimized_carries_the_guides_tuned_settings(render_target):
    objects = render_target("overlay:optimized")
    config = kustomize.find_object(objects, "ConfigMap", "llm-engine-config")["data"]
    assert (config["CPU_THREADS"], config["MAX_MODEL_LEN"], config["MAX_NUM_SEQS"]) == ("6", "4096", "8")
    assert "DeepSeek-R1-0528-Qwen3-8B" in config["MODEL_NAME"] and "GGUF" not in config["MODEL_NAME"]
    engine = kustomize.find_object(objects, "Deployment", "llm-engine")
    resources = engine["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "3", "memory": "8Gi"}, "limits": {"cpu": "6", "memory": "18Gi"}}
    hpa = kustomize.find_object(objects, "HorizontalPodAutoscaler", "llm-engine")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)


def test_dev_runs_one_engine_without_autoscaling(render_target):
    objects = render_target("overlay:dev")
    assert kustomize.find_object(objects, "Deployment", "llm-engine")["spec"]["replicas"] == 1
    assert not [obj for obj in objects if obj["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")]


def test_a_config_change_rolls_the_engine_pods(tmp_path):
    """configMapGenerator's hash suffix changes with the content, and so does the pod template."""
    copy = tmp_path / "kustomize"
    shutil.copytree(ROOT / kustomize.KUSTOMIZE_DIR, copy)

    def engine_config_ref() -> str:
        objects = kustomize.load_objects(kustomize.render(copy / "overlays" / "dev"))
        engine = kustomize.find_object(objects, "Deployment", "llm-engine")
        return engine["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]

    before = engine_config_ref()
    env_file = copy / "base" / "engine.env"
    env_file.write_text(env_file.read_text().replace("MAX_NUM_SEQS=4", "MAX_NUM_SEQS=2"))
    after = engine_config_ref()
    assert before.startswith("llm-engine-config-") and after.startswith("llm-engine-config-")
    assert before != after


def test_a_component_missing_a_file_fails_naming_the_file(tmp_path):
    copy = tmp_path / "kustomize"
    shutil.copytree(ROOT / kustomize.KUSTOMIZE_DIR, copy)
    (copy / "components" / "cache" / "service-llm-redis.yaml").unlink()
    with pytest.raises(kustomize.RenderError, match="service-llm-redis.yaml"):
        kustomize.render(copy / "overlays" / "dev")


def test_unknown_overlay_names_the_available_ones():
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "render", "--overlay", "prod"],
        capture_output=True, text=True, cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown overlay 'prod'; the overlays are: dev, gguf, multi, optimized" in result.stderr


def test_render_prints_exactly_what_kubectl_kustomize_renders():
    cli = subprocess.run([sys.executable, "-m", "devloop", "render", "--overlay", "dev"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    direct = subprocess.run([kustomize.kubectl_path(), "kustomize", "kustomize/overlays/dev"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    assert cli.stdout == direct.stdout
    assert cli.stderr.startswith("overlay dev: ")


@pytest.mark.skipif(shutil.which("kustomize") is None,
                    reason="no standalone kustomize binary on PATH to compare with kubectl's")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_standalone_kustomize_renders_the_same(overlay):
    standalone = subprocess.run(["kustomize", "build", f"kustomize/overlays/{overlay}"],
                                capture_output=True, text=True, cwd=ROOT, check=True)
    assert kustomize.load_objects(standalone.stdout) == kustomize.load_objects(
        kustomize.render_overlay(overlay, ROOT))
