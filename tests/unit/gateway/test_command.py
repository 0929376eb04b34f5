"""`devloop gateway`'s start: every flag and setting is checked before a socket is bound, so a
busy port never hides the real mistake, and every mistake is one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("UPSTREAM_URL", "REDIS_URL", "GATEWAY_PORT")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "devloop", "gateway", "--host", "127.0.0.1",
                           "--admin-port", "0", "--redis-url", "", *args],
                          capture_output=True, text=True, timeout=60, check=False, env=environment)


@pytest.mark.parametrize("reload", [[], ["--reload"]])
@pytest.mark.parametrize("args, env, message", [
    (["--cache-ttl-seconds", "-1"], {}, "--cache-ttl-seconds (CACHE_TTL_SECONDS) is -1"),
    (["--upstream-url", "localhost"], {}, "upstream URL 'localhost' is not an http://"),
    ([], {"GATEWAY_DRAIN_SECONDS": "soon"}, "GATEWAY_DRAIN_SECONDS='soon' is not a valid"),
    ([], {"CACHE_POLICY": "sometimes"}, "CACHE_POLICY='sometimes' is not a valid"),
    (["--cache-policy", "sometimes"], {}, "invalid choice: 'sometimes'"),
])
def test_the_real_mistake_is_named_while_the_port_is_busy(busy_port, reload, args, env, message):
    result = _gateway("--port", str(busy_port), *reload, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "in use" not in result.stderr


@pytest.mark.parametrize("reload", [[], ["--reload"]])
def test_a_busy_port_with_valid_settings_is_exit_2_in_one_line(busy_port, reload):
    result = _gateway("--port", str(busy_port), "--upstream-url", "http://127.0.0.1:9", *reload)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{busy_port}" in lines[0] and "Address already in use" in lines[0]
