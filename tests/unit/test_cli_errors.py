"""No `devloop` command shows a user a raw traceback: each subcommand run with broken input
answers with a line that says what is wrong, and an exit code that means something (2 for bad
usage, 1 for a failure, 3 for an unreachable server); an unexpected exception is one line too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devloop import cli
from devloop.common.errors import DEBUG_ENV

# (argv, environment additions, expected exit code). Each input is broken in one way, and none
# reaches a server, a cluster or vLLM: all of them fail before doing any real work.
BROKEN = [
    (["render", "--overlay", "nosuch"], {}, 2),
    (["entrypoint"], {"MAX_MODEL_LEN": "lots"}, 2),
    (["health", "--url", "http://127.0.0.1:1"], {}, 3),
    (["serve", "--overlay", "nosuch"], {}, 2),
    (["serve", "--overlay", "multi", "--model", "tiny"], {}, 2),  # two engines: --engine says which
    (["serve", "--overlay", "dev", "--engine", "llamacpp"], {}, 2),
    (["model", "generate", "--shape", "nosuch"], {}, 2),
    (["llamacpp", "which"], {"DEVLOOP_LLAMA_SERVER": "/nonexistent/llama-server"}, 1),
    (["llamacpp", "tiny-gguf", "--out", "/"], {}, 2),
    (["validate", "--overlay", "nosuch"], {}, 2),
    (["bench", "--url", "http://127.0.0.1:1", "--concurrency", "x"], {}, 2),
    (["bench", "--url", "http://127.0.0.1:1"], {}, 1),
    (["membw", "--size-mib", "-5"], {}, 2),
    (["dashboard-check", "--metrics-url", "http://127.0.0.1:1/metrics"], {}, 1),
    (["gateway", "--redis-url", "foo://bar"], {}, 2),
    (["gateway", "--upstream-url", "localhost:8000"], {}, 2),
    (["gateway"], {"CACHE_MAX_BYTES": "64MiB"}, 2),
    (["gateway", "--port", "70000"], {}, 2),
    (["cache", "stats", "--redis-url", "foo://bar"], {}, 2),
    (["cache", "stats", "--redis-url", "", "--admin-url", "http://127.0.0.1:1"], {}, 1),
    (["cache", "get", "--request", "/nonexistent.json"], {}, 2),
    (["cache", "bench", "--upstream-url", "http://127.0.0.1:1"], {}, 1),
    (["routing-bench", "--upstream", "http://127.0.0.1:1"], {}, 2),
    (["routing-bench", "--upstream", "http://127.0.0.1:1", "--upstream", "http://127.0.0.1:2"],
     {}, 1),
    (["gateway", "--upstream", "http://a:1", "--routing-policy", "random"], {}, 2),
    (["model-cache", "verify", "/nonexistent"], {}, 1),
    (["bench-reload", "--runs", "0"], {}, 2),
    (["bench-compare", "--plan", "dtype", "--rounds", "0"], {}, 2),
    (["doctor", "--overlay", "nosuch"], {}, 2),
]


def test_every_subcommand_is_covered() -> None:
    covered = {argv[0] for argv, _, _ in BROKEN}
    subcommands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert subcommands <= covered, f"add broken input for {sorted(subcommands - covered)}"


@pytest.mark.parametrize(("argv", "env", "code"), BROKEN, ids=[" ".join(b[0]) for b in BROKEN])
def test_broken_input_is_one_clear_error_without_a_traceback(
    argv: list[str], env: dict[str, str], code: int
) -> None:
    environment = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "devloop", *argv],
        capture_output=True, text=True, timeout=120, env={**environment, **env},
        check=False,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    assert output.strip(), "a failure must say why"


def test_an_unexpected_exception_is_one_line_naming_the_debug_switch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("boom")

    real_build = cli.build_parser

    def build(*args: object):
        parser = real_build(*args)
        parser.set_defaults(handler=broken)
        parser._subparsers._group_actions[0].choices["render"].set_defaults(
            handler=broken
        )
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert cli.main(["render"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "devloop render: unexpected error: RuntimeError: boom"
    assert DEBUG_ENV in err and "Traceback" not in err
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(RuntimeError):
        cli.main(["render"])
