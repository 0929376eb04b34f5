"""docs/gateway-api.md stays true: every overlay it shows renders with the real kustomize,
validates strictly against the CRDs and passes the route policy, and every `devloop` command in
it parses with the real CLI."""

from __future__ import annotations

import copy
import re
import shlex

import pytest

from devloop.cli import build_parser
from devloop.manifests import kustomize, validate

from . import policy, policy_routes
from .conftest import ROOT

DOC = (ROOT / "docs" / "gateway-api.md").read_text(encoding="utf-8")
OVERLAYS = re.findall(r"```yaml\n(# kustomization\.yaml: (.*?)\n.*?)```", DOC, re.DOTALL)


@pytest.fixture(scope="module")
def crd_schemas():
    return validate.load_crd_schemas(ROOT / validate.CRD_DIR)


def _render(tmp_path, text: str) -> list[dict]:
    """The overlay in a directory two levels below a stand-in of the repository root (the
    kustomize tree linked in, so the checkout is never written)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "kustomize").symlink_to(ROOT / kustomize.KUSTOMIZE_DIR)
    overlay = tmp_path / "deploy" / "my-cluster"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(text, encoding="utf-8")
    return kustomize.load_objects(kustomize.render(overlay))


def test_the_page_shows_the_four_overlays():
    assert [title for _, title in OVERLAYS] == [
        "the optimized overlay on NGINX Gateway Fabric (its class is `nginx`)",
        "your overlay, attached to the Gateway `shared` in `gateway-infra`",
        "the engine behind an InferencePool, on a cluster with the extension",
        "the Ingress on a cluster still running ingress-nginx",
    ]


@pytest.mark.parametrize("text", [text for text, _ in OVERLAYS], ids=[t for _, t in OVERLAYS])
def test_each_overlay_on_the_page_renders_validates_and_passes_the_policy(tmp_path, crd_schemas, text):
    objects = _render(tmp_path, text)
    assert validate.validate_objects(objects, crd_schemas) == []
    checks = policy.ALL_CHECKS + policy_routes.ROUTE_CHECKS
    if "ingress-nginx" in text:  # the one that adds a controller's annotations, on purpose
        checks = tuple(check for check in checks if check is not policy_routes.ingress_neutrality_violations)
    assert {check.__name__: check(objects) for check in checks if check(objects)} == {}


def test_the_overlays_change_what_the_page_says(tmp_path):
    (class_change, shared, pool, ingress) = [text for text, _ in OVERLAYS]
    found = {}
    for name, text in (("class", class_change), ("shared", shared), ("pool", pool), ("ingress", ingress)):
        found[name] = _render(tmp_path / name, text)
    assert kustomize.find_object(found["class"], "Gateway", "llm")["spec"]["gatewayClassName"] == "nginx"
    route = kustomize.find_object(found["shared"], "HTTPRoute", "llm")
    assert route["spec"]["parentRefs"][0]["name"] == "shared"
    assert not policy.of_kind(found["shared"], "Gateway")
    pool_route = kustomize.find_object(found["pool"], "HTTPRoute", "llm")
    assert pool_route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"
    picker = kustomize.find_object(found["pool"], "InferencePool", "llm-engine")["spec"]["endpointPickerRef"]
    assert picker["name"] == "vllm-epp"
    assert [policy.name(w) for w in policy.workloads(found["pool"])] == ["llm-engine"]  # no cache
    assert kustomize.find_object(found["ingress"], "Ingress", "llm")["spec"]["ingressClassName"] == "nginx"


def test_the_route_check_would_catch_a_merge_patch_of_the_rules(tmp_path):
    """Why the page uses JSON patches: a merge patch of `rules` drops the timeouts."""
    objects = copy.deepcopy(_render(tmp_path, OVERLAYS[1][0]))
    del kustomize.find_object(objects, "HTTPRoute", "llm")["spec"]["rules"][0]["timeouts"]
    assert len(policy_routes.route_violations(objects)) == 2


@pytest.mark.parametrize("line", [line for line in re.findall(r"^\s*(?:\.venv/bin/)?(devloop .*?)(?:\s+#.*)?$",
                                                              DOC, re.MULTILINE)])
def test_every_devloop_command_on_the_page_parses(line):
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert args.handler
