"""Fuzzing the gateway in front of the real tiny engine: no input gets a 5xx the engine would not
have answered itself, every error is an OpenAI error body, and the gateway stays healthy.

Why hypothesis (not schemathesis or atheris): the property is relational: "the gateway answers
5xx only when the engine, sent the same request, does too", checked by replaying the request
straight to the engine, which a schema-conformance runner does not express. The gateway has no
OpenAPI schema of its own (it proxies whatever vLLM serves), so the paths come from vLLM's
/openapi.json at run time and the bodies from strategies written here, which also keep each
accepted request cheap for the engine the rest of the suite shares (max_tokens and n stay
small). atheris fuzzes Python code in its own process with coverage feedback; the gateway runs
as a separate server here, so its coverage guidance would not reach it. hypothesis is already a
test dependency, runs inside pytest (xdist, markers, fixtures), shrinks a failing request to a
minimal one and prints how to replay it.

Bounded for CI: DEVLOOP_FUZZ_EXAMPLES requests per test (default 150), each with a timeout.

Out of scope: bytes that are not HTTP (a method token no RFC defines, a broken request line).
aiohttp's HTTP parser answers those with a plain-text 400 before any route runs, as vLLM's own
server does; the methods generated here are the ones the parser knows.
"""

from __future__ import annotations

import json
import os
import re
import string

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.vllm]

EXAMPLES = int(os.environ.get("DEVLOOP_FUZZ_EXAMPLES", "150"))
TIMEOUT = 120  # seconds for one request (the engine may be busy with other tests)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # latency is the benchmarks' business; a slow answer is not a failure here
    database=None,  # nothing written into the checkout; a failure prints how to reproduce it
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Engine endpoints that change the engine's state (sleep, LoRA, caches, profiling, scaling):
# the engine is shared with the rest of the suite, and they are the engine's, not the gateway's.
STATEFUL_ENGINE_PATHS = re.compile(
    r"sleep|wake|reset|lora|collective|scale|pause|resume|profil|shutdown|update|load|rpc|abort"
)
HEADER_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,24}", fullmatch=True).filter(
    lambda name: name.lower() not in {"content-length", "transfer-encoding", "host"}
)
# What an HTTP client may put in a header value: visible ASCII, spaces, and Latin-1.
HEADER_VALUE = st.text(
    st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=60
).map(str.strip)
KNOWN_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded",
             "application/json; charset=latin-1", "multipart/form-data; boundary=x", ""]
        ),
        "Authorization": st.sampled_from(["Bearer x", "Bearer ", "Basic Zm9vOmJhcg==", "\xe9"]),
        "X-Request-ID": HEADER_VALUE,
        "Accept": st.sampled_from(["*/*", "text/html", "application/openmetrics-text", "x/y"]),
        "Content-Encoding": st.sampled_from(["gzip", "br", "identity", "nonsense"]),
        "Connection": st.sampled_from(["close", "keep-alive", "upgrade"]),
        "Expect": st.just("100-continue"),
    },
)
HEADERS = st.tuples(KNOWN_HEADERS, st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=4)).map(
    lambda pair: {**pair[1], **pair[0]}
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _sampling(model: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """The fields both endpoints share. Cost-bearing ones stay small when they are valid, so an
    accepted request costs the engine a few tokens; any of them may also be a wrong type."""
    small = st.integers(-2, 6)
    return st.fixed_dictionaries(
        {"model": model, "max_tokens": small | st.text(max_size=3) | st.floats() | JSON},
        optional={
            "temperature": st.sampled_from([0, 0.0, 1, 0.7]) | st.floats() | JSON,
            "top_p": st.floats(0, 1) | JSON,
            "top_k": st.integers(-2, 50) | JSON,
            "seed": st.integers() | JSON,
            "n": st.integers(-1, 2) | st.text(max_size=2),
            "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=3) | JSON,
            "stream": st.booleans() | JSON,
            "stream_options": JSON,
            "logprobs": st.booleans() | st.integers(-1, 3) | JSON,
            "echo": st.booleans() | JSON,
            "ignore_eos": st.booleans(),
            "response_format": JSON,
            "min_tokens": st.integers(-1, 3) | JSON,
        },
    ).flatmap(
        # Fields nobody knows, alongside (an OpenAI client may send newer ones).
        lambda body: st.dictionaries(st.text(max_size=10), JSON, max_size=2).map(
            lambda extra: {**extra, **body}
        )
    )


def _completion_body(model: str) -> st.SearchStrategy[dict]:
    prompt = (st.text(max_size=200) | st.lists(st.integers(-5, 200_000), max_size=8)
              | st.lists(st.text(max_size=20), max_size=3) | JSON)
    return st.tuples(_sampling(st.just(model) | st.text(max_size=10) | JSON), prompt).map(
        lambda pair: {**pair[0], "prompt": pair[1]}
    )


def _chat_body(model: str) -> st.SearchStrategy[dict]:
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "nobody"]) | JSON,
         "content": st.text(max_size=100) | JSON},
    )
    messages = st.lists(message | JSON, max_size=4) | JSON
    return st.tuples(_sampling(st.just(model) | st.text(max_size=10) | JSON), messages).map(
        lambda pair: {**pair[0], "messages": pair[1]}
    )


def _nested(depth: int, opener: str) -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = '{"a":' if opener == "{" else "["
    return (inner * depth + "1" + closer * depth).encode()


def _bodies(model: str, chat: bool) -> st.SearchStrategy[bytes]:
    structured = (_chat_body(model) if chat else _completion_body(model)).map(
        lambda body: json.dumps(body).encode()
    )
    return st.one_of(
        structured,
        structured,  # twice the weight: these reach the cache and the engine
        JSON.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=300),
        st.builds(_nested, st.integers(1, 3000), st.sampled_from(["[", "{"])),
    )


class Checker:
    """Sends one request through the gateway and checks the answer against the property."""

    def __init__(self, gateway_url: str, engine_url: str) -> None:
        self.gateway_url = gateway_url
        self.engine_url = engine_url
        self.session = requests.Session()

    def check(self, method: str, path: str, headers: dict, body: bytes | None) -> None:
        answer = self._send(self.gateway_url, method, path, headers, body)
        if answer.status_code >= 500:
            direct = self._send(self.engine_url, method, path, headers, body)
            assert direct.status_code >= 500, (
                f"gateway answered {answer.status_code} ({answer.text[:300]!r}) where the engine "
                f"answers {direct.status_code}"
            )
        if answer.status_code >= 400 and method != "HEAD":
            assert answer.headers.get("Content-Type", "").startswith("application/json"), (
                answer.status_code, answer.headers.get("Content-Type"), answer.text[:300])
            error = json.loads(answer.content)["error"]
            assert isinstance(error["message"], str) and error["message"], error
            assert isinstance(error["type"], str), error
            assert error["code"] in (answer.status_code, str(answer.status_code), None), error

    def _send(self, base: str, method: str, path: str, headers: dict,
              body: bytes | None) -> requests.Response:
        # A fresh connection per request: a garbled request must not poison the next one's.
        return requests.request(method, base + path, headers=headers, data=body,
                                timeout=TIMEOUT, allow_redirects=False)


@pytest.fixture
def checker(start_gateway, vllm_base_url: str):
    gateway = start_gateway(vllm_base_url)
    yield Checker(gateway.url, vllm_base_url)
    # The gateway survived: alive, healthy, and it never hit an unexpected error.
    assert gateway.process.poll() is None, gateway.log()
    assert requests.get(gateway.url + "/health", timeout=30).status_code == 200
    log = gateway.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


@pytest.fixture(scope="module")
def engine_paths(vllm_base_url: str) -> list[str]:
    """Every path vLLM serves, from its own OpenAPI document, minus the state-changing ones."""
    schema = requests.get(vllm_base_url + "/openapi.json", timeout=30).json()
    paths = [path for path in schema["paths"] if not STATEFUL_ENGINE_PATHS.search(path)]
    assert "/v1/models" in paths and "/v1/completions" in paths
    return [re.sub(r"\{[^}]*\}", "x", path) for path in paths]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_cached_endpoints_answer_every_body_and_header_without_a_5xx_of_their_own(
    checker: Checker, vllm_served_model: str, path: str
) -> None:
    @FUZZ_SETTINGS
    @given(body=_bodies(vllm_served_model, chat=path.endswith("chat/completions")),
           headers=HEADERS)
    def run(body: bytes, headers: dict) -> None:
        checker.check("POST", path, headers, body)

    run()


def test_every_engine_route_and_the_gateways_own_answer_any_request(
    checker: Checker, engine_paths: list[str], vllm_served_model: str
) -> None:
    own = ["/health", "/ready", "/metrics", "/cache/stats", "/cache/flush"]
    method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    query = st.just("") | st.text(string.ascii_letters + "=&%+", max_size=20).map("?".__add__)

    @FUZZ_SETTINGS
    @given(method=method, path=st.sampled_from(engine_paths + own), query=query,
           headers=HEADERS, body=st.none() | _bodies(vllm_served_model, chat=False))
    def run(method: str, path: str, query: str, headers: dict, body: bytes | None) -> None:
        checker.check(method, path + query, headers, body)

    run()


def test_unknown_paths_and_methods_get_openai_errors(checker: Checker) -> None:
    segment = st.text(string.ascii_letters + string.digits + "-._~%:@!$&'()*+,;=", max_size=12)
    unicode_segment = st.text(max_size=6).map(lambda text: requests.utils.quote(text, safe=""))
    path = st.lists(segment | unicode_segment | st.just(".."), min_size=0, max_size=5).map(
        lambda parts: "/" + "/".join(parts)
    )
    method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                              "PROPFIND", "PURGE"])

    @FUZZ_SETTINGS
    @given(method=method, path=path, headers=HEADERS, body=st.none() | st.binary(max_size=100))
    def run(method: str, path: str, headers: dict, body: bytes | None) -> None:
        checker.check(method, path, headers, body)

    run()
