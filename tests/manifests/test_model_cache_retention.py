"""The model cache outlives `tilt down` and the documented `kubectl delete` (docs/cluster.md):
the PVC carries Tilt's keep annotation, and it and its Namespace carry the label the delete
command's selector leaves out. Everything else stays deletable, so nothing lingers by accident."""

from __future__ import annotations

import pytest

from .conftest import OVERLAYS

# tilt-dev/tilt: `tilt down` skips objects annotated so (internal/cli/down.go, since v0.17.7).
TILT_DOWN_POLICY = ("tilt.dev/down-policy", "keep")
KEEP_LABEL = ("vllm-devloop/keep", "true")
# docs/cluster.md: `kubectl delete -k kustomize/overlays/NAME -l 'vllm-devloop/keep!=true'`.
DELETE_SELECTOR = "vllm-devloop/keep!=true"


def _selected(obj: dict, selector: str) -> bool:
    """A `key!=value` label selector as the API server and kubectl read it: objects without the
    key match too."""
    key, value = selector.split("!=")
    return obj["metadata"].get("labels", {}).get(key) != value


def _names(objects: list[dict]) -> list[str]:
    return sorted(f"{obj['kind']}/{obj['metadata']['name']}" for obj in objects)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tilt_down_keeps_every_model_cache_claim(overlay, render_target):
    claims = [obj for obj in render_target(f"overlay:{overlay}")
              if obj["kind"] == "PersistentVolumeClaim"]
    assert claims, f"overlay {overlay} has no PersistentVolumeClaim: the model cache is gone"
    for claim in claims:
        key, value = TILT_DOWN_POLICY
        assert claim["metadata"].get("annotations", {}).get(key) == value, claim["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_documented_delete_leaves_exactly_the_cache_and_its_namespace(overlay, render_target):
    objects = render_target(f"overlay:{overlay}")
    kept = [obj for obj in objects if not _selected(obj, DELETE_SELECTOR)]
    assert _names(kept) == _names([obj for obj in objects
                                   if obj["kind"] in ("PersistentVolumeClaim", "Namespace")])
    assert all(obj["metadata"]["labels"][KEEP_LABEL[0]] == KEEP_LABEL[1] for obj in kept)


def test_a_not_equal_selector_matches_objects_without_the_label():
    assert _selected({"metadata": {}}, DELETE_SELECTOR)
    assert _selected({"metadata": {"labels": {"vllm-devloop/keep": "false"}}}, DELETE_SELECTOR)
    assert not _selected({"metadata": {"labels": {"vllm-devloop/keep": "true"}}}, DELETE_SELECTOR)
