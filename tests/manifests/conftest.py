"""Rendering fixtures: every overlay, and the base with every valid set of components, rendered
once per session by the real `kubectl kustomize`."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from devloop.manifests import kustomize

ROOT = kustomize.project_root(Path(__file__).parent)
OVERLAYS = kustomize.overlay_names(ROOT)
COMPONENTS = sorted(
    entry.name
    for entry in (ROOT / kustomize.COMPONENTS_DIR).iterdir()
    if (entry / "kustomization.yaml").is_file()
)
# What a component needs beside it, as alternatives (any one set will do): the ingress and the
# gateway-api route go to the gateway that the cache component adds, unless the inference-pool
# component sends the route to its pool instead; the pool patches the gateway-api route. Every
# other component stands alone.
COMPONENT_REQUIRES = {
    "ingress": [{"cache"}],
    "gateway-api": [{"cache"}, {"inference-pool"}],
    "inference-pool": [{"gateway-api"}],
}
# Components nested in another's directory, rendered with the sets named here: the local Gateway
# the gateway-api route attaches to by default.
NESTED_TARGETS = [
    "base+cache+gateway-api+gateway-api/gateway",
    "base+gateway-api+gateway-api/gateway+inference-pool",
]


def _satisfied(chosen: tuple[str, ...]) -> bool:
    return all(any(needs <= set(chosen) for needs in COMPONENT_REQUIRES[name])
               for name in chosen if name in COMPONENT_REQUIRES)


def component_sets() -> list[tuple[str, ...]]:
    """Every set of components whose needs are met, in COMPONENTS' (alphabetical) order, which is
    also the order they apply in: gateway-api before the inference-pool patch of its route."""
    sets = []
    for size in range(len(COMPONENTS) + 1):
        for chosen in itertools.combinations(COMPONENTS, size):
            if _satisfied(chosen):
                sets.append(chosen)
    return sets


def write_kustomization(workdir: Path, components: tuple[str, ...]) -> Path:
    """A kustomization of the base plus `components`. kustomize refuses absolute paths, so the
    entries are relative to workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    relative = lambda path: os.path.relpath(path, workdir)
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:",
             f"  - {relative(ROOT / kustomize.KUSTOMIZE_DIR / 'base')}"]
    if components:
        lines.append("components:")
        lines += [f"  - {relative(ROOT / kustomize.COMPONENTS_DIR / name)}" for name in components]
    (workdir / "kustomization.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return workdir


TARGETS = [f"overlay:{name}" for name in OVERLAYS] + [
    "base+" + "+".join(chosen) if chosen else "base" for chosen in component_sets()
] + NESTED_TARGETS


@pytest.fixture(scope="session")
def render_target(tmp_path_factory):
    """Render a target name from TARGETS to its list of objects."""
    cache: dict[str, list[dict]] = {}

    def render(target: str) -> list[dict]:
        if target not in cache:
            if target.startswith("overlay:"):
                text = kustomize.render_overlay(target.removeprefix("overlay:"), ROOT)
            else:
                chosen = tuple(target.split("+")[1:])
                text = kustomize.render(
                    write_kustomization(tmp_path_factory.mktemp("kustomization"), chosen)
                )
            cache[target] = kustomize.load_objects(text)
        return cache[target]

    return render


@pytest.fixture(params=TARGETS)
def rendered(request, render_target) -> list[dict]:
    return render_target(request.param)


@pytest.fixture(params=OVERLAYS)
def overlay_objects(request, render_target) -> list[dict]:
    return render_target(f"overlay:{request.param}")
