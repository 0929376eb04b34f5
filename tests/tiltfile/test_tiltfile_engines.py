"""Tilt port-forwards and health-checks every engine an overlay has, not only vLLM's: the real
Tiltfile evaluated on a copy of the project with an overlay that adds a second engine (as the
llama.cpp component does), so a new engine needs no Tiltfile change."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from .conftest import ROOT
from .tilt_api import TiltEnvironment

SECOND_ENGINE = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: llm-second
      labels:
        app.kubernetes.io/name: llm-second
        app.kubernetes.io/component: engine
    spec:
      selector:
        matchLabels:
          app.kubernetes.io/name: llm-second
      template:
        metadata:
          labels:
            app.kubernetes.io/name: llm-second
            app.kubernetes.io/component: engine
        spec:
          containers:
            - name: server
              image: second-engine:1
              ports:
                - name: http
                  containerPort: 8080
    """)


def _project_with_two_engines(tmp_path: Path) -> Path:
    for name in ("Tiltfile", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("kustomize", "image", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    overlay = tmp_path / "kustomize" / "overlays" / "twoengines"
    shutil.copytree(ROOT / "kustomize" / "overlays" / "dev", overlay)
    (overlay / "deployment-llm-second.yaml").write_text(SECOND_ENGINE)
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(
        "  - ../../base\n", "  - ../../base\n  - deployment-llm-second.yaml\n"))
    return tmp_path / "Tiltfile"


def test_a_second_engine_is_port_forwarded_beside_vllm_and_has_its_health_check(
    tmp_path: Path,
) -> None:
    env = TiltEnvironment(_project_with_two_engines(tmp_path), args=["--overlay=twoengines"])
    rec = env.run()
    assert rec.failure is None, rec.failure
    resources = env.assemble()
    second = resources["llm-second"]
    assert [(p.local_port, p.container_port) for p in second.port_forwards] == [(8001, 8080)]
    assert second.labels == ["engine"] and second.pod_readiness == "wait"
    assert [(p.local_port, p.container_port) for p in resources["llm-engine"].port_forwards] == [
        (8000, 8000)
    ]
    check = resources["health-llm-second"]
    assert "devloop health --url http://localhost:8001 --wait" in str(check.cmd)
    assert check.resource_deps == ["llm-second"] and not check.auto_init
