"""End-to-end suite: the OpenAI-compatible API as a client sees it, against any base URL.

`pytest tests/e2e --base-url http://localhost:8000` (or DEVLOOP_BASE_URL) runs it against a
port-forwarded cluster, `devloop serve`, or the caching gateway; with neither, it runs against
the real vLLM server that tests/conftest.py starts for the run. The tiny model has random
weights, so the tests assert structure, token counts and determinism, never meaning.
"""

from __future__ import annotations

import os

import pytest
import requests

BASE_URL_ENV = "DEVLOOP_BASE_URL"
API_KEY_ENV = "DEVLOOP_API_KEY"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--base-url",
        default=None,
        help=f"run tests/e2e against this server (default: ${BASE_URL_ENV}, else a local vLLM "
        "started for the run)",
    )


def _external_url(config: pytest.Config) -> str | None:
    # getoption with a default: this conftest's option exists only when pytest loaded it early
    # (a run naming tests/e2e); a plain `pytest` from the root still reads the variable.
    url = config.getoption("--base-url", default=None) or os.environ.get(BASE_URL_ENV)
    return url.rstrip("/") if url else None


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest) -> str:
    return _external_url(request.config) or request.getfixturevalue("vllm_base_url")


@pytest.fixture(scope="session")
def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or os.environ.get("VLLM_API_KEY") or None


@pytest.fixture(scope="session")
def http(api_key: str | None) -> requests.Session:
    session = requests.Session()
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    return session


@pytest.fixture(scope="session")
def model_card(request: pytest.FixtureRequest, base_url: str, http: requests.Session) -> dict:
    """The served model's /v1/models entry (the first one, or $DEVLOOP_MODEL)."""
    response = http.get(f"{base_url}/v1/models", timeout=30)
    response.raise_for_status()
    cards = response.json()["data"]
    wanted = os.environ.get("DEVLOOP_MODEL")
    if not _external_url(request.config) and not wanted:
        wanted = request.getfixturevalue("vllm_served_model")
    for card in cards:
        if wanted is None or card["id"] == wanted:
            return card
    raise AssertionError(f"model {wanted!r} not in /v1/models: {[c['id'] for c in cards]}")


@pytest.fixture(scope="session")
def model(model_card: dict) -> str:
    return model_card["id"]
