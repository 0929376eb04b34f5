"""The optimized overlay computes the warm-start state in an init container (docs/warm-start.md):
the same settings, volumes and memory as the serving container, so that what it keeps is what
the serving container's loader looks for, and a startup probe sized for a warm start."""

from __future__ import annotations

from devloop.manifests import kustomize


def _engine_pod(render_target) -> dict:
    objects = render_target("overlay:optimized")
    return kustomize.find_object(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"]


def test_the_init_container_prepares_with_the_serving_containers_settings(render_target):
    pod = _engine_pod(render_target)
    (init,) = pod["initContainers"]
    (vllm,) = [c for c in pod["containers"] if c["name"] == "vllm"]
    assert init["args"] == ["--prepare"]
    assert init["image"] == vllm["image"]
    assert init["envFrom"] == vllm["envFrom"]
    assert init["env"] == vllm["env"]
    assert init["volumeMounts"] == vllm["volumeMounts"]
    assert init["resources"]["limits"] == vllm["resources"]["limits"]
    assert "restartPolicy" not in init  # runs to completion before vllm starts


def test_the_serving_container_waits_minutes_not_the_cold_starts_40(render_target):
    (vllm,) = [c for c in _engine_pod(render_target)["containers"] if c["name"] == "vllm"]
    probe = vllm["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == 600
