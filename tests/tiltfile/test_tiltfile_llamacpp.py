"""`tilt up -- --overlay=gguf`: the llama.cpp engine in the same loop (port-forward, buttons,
gateway live update), and `--model=tiny`: the pinned image plus the offline tiny GGUF."""

from __future__ import annotations

import copy

from devloop.manifests import kustomize

from .conftest import CRD_FILES, ROOT, TILTFILE
from .fake_kubectl import FakeCluster
from .tilt_api import TiltEnvironment

LLAMACPP, CONTAINER = "llm-llamacpp", "llama-server"


def _up(*args: str):
    env = TiltEnvironment(TILTFILE, args=["--overlay=gguf", *args],
                          cluster=FakeCluster.with_crd_files(*CRD_FILES))
    return env.run()


def _engine(objects: list[dict]) -> dict:
    return next(obj for obj in objects
                if obj["kind"] == "Deployment" and obj["metadata"]["name"] == LLAMACPP)


def _server(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == CONTAINER)


def _resources(rec) -> dict:
    return {call["workload"]: call for call in rec.k8s_resource_calls if call["workload"]}


def test_gguf_overlay_deploys_as_rendered_with_the_engine_on_port_8000():
    rec = _up()
    assert rec.failure is None, rec.failure
    assert rec.objects == kustomize.load_objects(kustomize.render_overlay("gguf", ROOT))
    engine = _resources(rec)[LLAMACPP]
    assert [pf.local_port for pf in engine["port_forwards"]] == [8000]
    assert engine["pod_readiness"] == "wait"
    # Only the gateway's image is built (live update in place); llama.cpp's is upstream.
    assert [build.ref for build in rec.docker_builds] == ["vllm-devloop-gateway"]
    assert rec.docker_builds[0].live_update, "the gateway keeps its live update"


def test_the_buttons_check_the_llamacpp_engine():
    locals_ = {call["name"]: call for call in _up().local_resources}
    for button in ("health", "e2e", "bench"):
        assert locals_[button]["resource_deps"] == [LLAMACPP], button
    assert "localhost:8000" in locals_["health"]["cmd"] and "localhost:8000" in locals_["bench"]["cmd"]
    # The e2e suite's llama.cpp copy, against the port-forward.
    assert "pytest tests/e2e/llamacpp/test_direct.py" in locals_["e2e"]["cmd"]
    assert locals_["e2e"]["env"] == {"DEVLOOP_LLAMACPP_URL": "http://localhost:8000"}


def test_model_tiny_runs_the_pinned_image_with_the_tiny_gguf_and_downloads_nothing():
    rendered = kustomize.load_objects(kustomize.render_overlay("gguf", ROOT))
    rec = _up("--model=tiny")
    assert rec.failure is None, rec.failure
    server = _server(_engine(rec.objects))
    env = {item["name"]: item["value"] for item in server["env"] if "value" in item}
    assert env["LLAMA_ARG_MODEL"] == "/app/models/tiny.gguf"
    assert env["LLAMA_ARG_HF_REPO"] == "" and env["LLAMA_ARG_OFFLINE"] == "true"
    assert server["image"] == "llamacpp-devloop-tiny:dev"
    (tiny,) = [b for b in rec.docker_builds if b.ref == "llamacpp-devloop-tiny"]
    assert tiny.context == ROOT / "build/llamacpp-tiny"
    # The file is made first, by the project's own command, and the engine waits for it.
    maker = next(call for call in rec.local_resources if call["name"] == "llamacpp-tiny-gguf")
    assert "devloop llamacpp tiny-gguf --out build/llamacpp-tiny/tiny.gguf" in maker["cmd"]
    assert "llamacpp-tiny-gguf" in _resources(rec)[LLAMACPP]["resource_deps"]
    # Everything else is the overlay as rendered.
    expected = copy.deepcopy(rendered)
    _server(_engine(expected)).update(env=server["env"], image=server["image"])
    assert rec.objects == expected


def test_the_tiny_image_is_the_components_pinned_image_plus_the_file():
    rec = _up("--model=tiny")
    (tiny,) = [b for b in rec.docker_builds if b.ref == "llamacpp-devloop-tiny"]
    component = (ROOT / "kustomize/components/llamacpp/deployment-llm-llamacpp.yaml").read_text()
    tiltfile = TILTFILE.read_text()
    assert "image: ghcr.io/ggml-org/llama.cpp:server-b11312" in component
    assert '"FROM ghcr.io/ggml-org/llama.cpp:server-b11312"' in tiltfile
    assert tiny.only == ["tiny.gguf"]
