"""Inputs that once got a 500 or reached the wrong place, against the real engine:
a deeply nested JSON body, an API client calling the cache's admin endpoints, and the engine's
FastAPI-style errors (404, 405, a body that is not UTF-8) that must reach clients OpenAI-shaped."""

from __future__ import annotations

import pytest
import requests

pytestmark = [pytest.mark.vllm, pytest.mark.redis]


@pytest.fixture
def gateway(start_gateway, vllm_base_url: str, redis_url: str):
    return start_gateway(vllm_base_url, redis_url)


def _assert_openai_error(response: requests.Response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["code"] == response.status_code
    return error


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("depth", [400, 900, 1000, 20000])
def test_a_deeply_nested_body_gets_the_engines_answer_not_a_500(
    gateway, vllm_base_url: str, vllm_served_model: str, path: str, depth: int
) -> None:
    # Cacheable (temperature 0), so the gateway would key it too: parsing and keying both recurse.
    field = "prompt" if path == "/v1/completions" else "messages"
    body = (f'{{"model": "{vllm_served_model}", "temperature": 0, "{field}": '
            + "[" * depth + "]" * depth + "}")
    headers = {"Content-Type": "application/json"}
    through = requests.post(gateway.url + path, data=body, headers=headers, timeout=120)
    direct = requests.post(vllm_base_url + path, data=body, headers=headers, timeout=120)
    assert through.status_code == direct.status_code
    assert 400 <= through.status_code < 500
    _assert_openai_error(through)
    assert requests.get(gateway.url + "/health", timeout=10).status_code == 200


def test_an_api_client_can_neither_flush_nor_read_the_cache(gateway, vllm_served_model) -> None:
    body = {"model": vllm_served_model, "prompt": "keep me", "temperature": 0, "max_tokens": 2}
    assert requests.post(gateway.url + "/v1/completions", json=body, timeout=120).ok
    for method, path in (("POST", "/cache/flush"), ("GET", "/cache/stats"),
                         ("GET", "/cache/flush"), ("DELETE", "/cache/")):
        answer = requests.request(method, gateway.url + path, timeout=30)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "admin port" in _assert_openai_error(answer)["message"]
    again = requests.post(gateway.url + "/v1/completions", json=body, timeout=120)
    assert again.headers["X-Cache"] == "HIT"  # nothing was flushed
    # The operator's way in: the admin port (loopback in the pod, `kubectl port-forward`).
    flushed = requests.post(gateway.admin_url + "/cache/flush", timeout=30)
    assert flushed.json()["flushed"] is True
    after = requests.post(gateway.url + "/v1/completions", json=body, timeout=120)
    assert after.headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("GET", "/v1/no-such-route", None, 404),
        ("DELETE", "/v1/models", None, 405),
        ("POST", "/v1/completions", b'{"prompt": "\xff\xfe"}', 400),
        ("POST", "/tokenize", b"\xff not json", 400),
    ],
)
def test_the_engines_framework_errors_reach_clients_openai_shaped(
    gateway, vllm_base_url: str, method: str, path: str, data: bytes | None, status: int
) -> None:
    headers = {"Content-Type": "application/json"}
    direct = requests.request(method, vllm_base_url + path, data=data, headers=headers, timeout=60)
    through = requests.request(method, gateway.url + path, data=data, headers=headers, timeout=60)
    assert direct.status_code == through.status_code == status
    _assert_openai_error(through)
