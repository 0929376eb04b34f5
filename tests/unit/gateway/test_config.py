"""The gateway's settings: the environment (the gateway.env ConfigMap), with flags on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.cli import build_parser
from devloop.common.errors import UsageError
from devloop.gateway import config_from_args, config_from_env
from devloop.gateway.cache.key import CachePolicy
from devloop.gateway.config import ENV_FIELDS
from devloop.manifests.kustomize import project_root

GATEWAY_ENV = project_root(Path(__file__).parent) / "kustomize" / "components" / "cache" / "gateway.env"


def _env_file() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in GATEWAY_ENV.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def test_every_setting_in_the_cache_components_configmap_is_understood() -> None:
    env = _env_file()
    config = config_from_env(env)
    assert config.upstream_urls == tuple(env["UPSTREAM_URLS"].split())
    assert config.routing_policy == env["ROUTING_POLICY"]
    assert config.upstream_ready_wait_seconds == float(env["UPSTREAM_READY_WAIT_SECONDS"])
    assert config.redis_url == env["REDIS_URL"]
    assert config.port == int(env["GATEWAY_PORT"])
    assert config.cache_ttl_seconds == int(env["CACHE_TTL_SECONDS"])
    assert config.cache_max_entries == int(env["CACHE_MAX_ENTRIES"])
    assert config.cache_max_bytes == int(env["CACHE_MAX_BYTES"])
    assert config.admin_host == env["GATEWAY_ADMIN_HOST"]
    assert config.admin_port == int(env["GATEWAY_ADMIN_PORT"])
    assert config.drain_seconds == float(env["GATEWAY_DRAIN_SECONDS"])
    assert config.shutdown_timeout_seconds == float(env["GATEWAY_SHUTDOWN_TIMEOUT"])
    assert set(env) <= set(ENV_FIELDS), f"settings the gateway ignores: {set(env) - set(ENV_FIELDS)}"


def test_flags_override_the_environment() -> None:
    args = build_parser().parse_args(
        ["gateway", "--port", "9999", "--cache-policy", "all", "--redis-url", ""]
    )
    config = config_from_args(
        args, {"GATEWAY_PORT": "8080", "REDIS_URL": "redis://x:6379/0", "CACHE_MAX_ENTRIES": "7"}
    )
    assert (config.port, config.cache_policy, config.redis_url, config.cache_max_entries) == (
        9999,
        CachePolicy.ALL,
        "",
        7,
    )


def test_a_malformed_setting_is_named_in_the_error() -> None:
    with pytest.raises(UsageError, match="CACHE_MAX_BYTES"):
        config_from_env({"CACHE_MAX_BYTES": "64MiB"})
    with pytest.raises(UsageError, match="CACHE_POLICY"):
        config_from_env({"CACHE_POLICY": "sometimes"})


def test_upstreams_come_from_repeated_flags_old_and_new_names_alike() -> None:
    args = build_parser().parse_args(
        ["gateway", "--upstream", "http://a:8000", "--upstream-url", "http://b:8080/",
         "--upstream", "http://a:8000"]
    )
    assert config_from_args(args, {"UPSTREAM_URLS": "http://ignored:1"}).upstream_urls == (
        "http://a:8000", "http://b:8080"
    )


def test_the_upstream_list_of_the_environment_wins_over_the_single_url() -> None:
    args = build_parser().parse_args(["gateway"])
    assert config_from_args(args, {"UPSTREAM_URL": "http://one:8000"}).upstream_urls == (
        "http://one:8000",
    )
    both = {"UPSTREAM_URL": "http://one:8000", "UPSTREAM_URLS": "http://a:1, http://b:2 http://c:3"}
    assert config_from_args(args, both).upstream_urls == ("http://a:1", "http://b:2", "http://c:3")


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"UPSTREAM_URLS": "http://a:1, localhost:8000"}, "localhost:8000"),
        ({"UPSTREAM_URLS": " , "}, "no engine given"),
        ({"ROUTING_POLICY": "random"}, "ROUTING_POLICY"),
        ({"UPSTREAM_READY_WAIT_SECONDS": "-1"}, "UPSTREAM_READY_WAIT_SECONDS"),
        ({"UPSTREAM_HEALTH_INTERVAL_SECONDS": "0"}, "UPSTREAM_HEALTH_INTERVAL_SECONDS"),
    ],
)
def test_a_bad_routing_setting_is_named_in_the_error(environ: dict[str, str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        config_from_args(build_parser().parse_args(["gateway"]), environ)
