"""The server is up, lists its model, and `devloop health` says so (with exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm


def test_health_endpoint_answers_200(base_url, http):
    assert http.get(f"{base_url}/health", timeout=10).status_code == 200


def test_models_lists_the_served_model_with_its_context_length(base_url, http, model):
    body = http.get(f"{base_url}/v1/models", timeout=10).json()
    assert body["object"] == "list"
    card = next(card for card in body["data"] if card["id"] == model)
    assert card["object"] == "model"
    assert card["max_model_len"] >= 16


def _devloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devloop", *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_health_command_reports_ready_as_json_and_exits_0(base_url, api_key, model):
    args = ["health", "--url", base_url, "--json"] + (["--api-key", api_key] if api_key else [])
    result = _devloop(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ready"] is True and report["status"] == "ready"
    assert report["model"] == model
    assert [check["name"] for check in report["checks"]] == [
        "/health", "/v1/models", "one-token completion"
    ]


def test_health_wait_shows_progress_and_returns_once_ready(base_url, api_key):
    args = ["health", "--url", base_url, "--wait", "--timeout", "60"]
    result = _devloop(*args + (["--api-key", api_key] if api_key else []))
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stderr
