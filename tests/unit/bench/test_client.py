"""`devloop bench` against a streaming server whose timing is known exactly.

vLLM cannot say when it sent each token, so this server does: it waits FIRST_TOKEN_S before
the first chunk and TOKEN_GAP_S between the others, and the benchmark must measure those.
tests/integration/bench/test_bench_vllm.py runs the same client against the real vLLM server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from devloop import cli
from devloop.bench.client import BenchConfig, SSEParser, base_url
from devloop.bench.command import parse_int_list, parse_rate_list
from devloop.bench.driver import run_benchmark
from devloop.common.errors import UsageError

SEEN = web.AppKey("seen", list)
DROPPED = web.AppKey("dropped", list)
FIRST_TOKEN_S = 0.30
TOKEN_GAP_S = 0.05


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _app() -> web.Application:
    seen: list[dict] = []

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "timed"}]})

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        if "content" in body:  # llama-server's shape: {"content", "add_special"} -> {"tokens"}
            assert body["add_special"] is True
            return web.json_response({"tokens": list(range(len(body["content"].replace(" ", ""))))})
        if body.get("model") == "llama":  # llama-server answers vLLM's shape with no tokens
            return web.json_response({"tokens": []})
        if body["model"] == "flaky" and not app[DROPPED]:
            # A keep-alive connection the server closed: the client sees ServerDisconnectedError.
            app[DROPPED].append(True)
            request.transport.close()
            return web.Response()
        if body["model"] == "letters":
            # A byte-level-like vocabulary: every letter is a token, a word is several.
            return web.json_response({"count": len(body["prompt"].replace(" ", ""))})
        return web.json_response({"count": len(body["prompt"].split())})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        if body["model"] == "busy":
            return web.json_response({"error": "overloaded"}, status=503)
        if body["model"] == "flaky" and len(app[DROPPED]) == 1:
            # Closed without an answer, as llama-server now and then does on a reused connection.
            app[DROPPED].append(True)
            request.transport.close()
            return web.Response()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(FIRST_TOKEN_S)
        for index in range(body["max_tokens"]):
            if index:
                await asyncio.sleep(TOKEN_GAP_S)
            chunk = {"choices": [{"index": 0, "text": f" t{index}"}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {
            "prompt_tokens": len(body["prompt"].split()),
            "completion_tokens": body["max_tokens"],
        }
        # llama-server closes with the finish reason and the usage; vLLM with the usage alone.
        choices = [{"index": 0, "text": "", "finish_reason": "length"}] \
            if body["model"] == "llama" else []
        await asyncio.sleep(TOKEN_GAP_S if body["model"] == "llama" else 0)
        closing = {"choices": choices, "usage": usage}
        await response.write(f"data: {json.dumps(closing)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app[SEEN] = seen
    app[DROPPED] = []
    app.router.add_get("/v1/models", models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/completions", completions)
    return app


@pytest.fixture
def timed_server() -> Iterator[tuple[str, web.Application]]:
    """A real HTTP server on a loopback port, in its own thread and event loop."""
    port = _free_port()
    app = _app()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", app
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_bench_measures_first_token_and_token_gaps_the_server_produced(timed_server):
    url, _app = timed_server
    config = BenchConfig(
        url=url, concurrency=[2], input_len=12, output_len=6, num_prompts=4, warmup=0
    )
    report = asyncio.run(run_benchmark(config))
    level = report["levels"][0]
    assert report["model"] == "timed"  # discovered from /v1/models
    assert (level["completed"], level["failed"]) == (4, 0)
    assert level["mean_output_tokens"] == 6
    assert level["mean_input_tokens"] == 12
    # Upper bounds leave room for a loaded machine; a lower bound catches a clock started late.
    assert FIRST_TOKEN_S <= level["ttft_ms"]["p50"] / 1000 < FIRST_TOKEN_S + 0.15
    assert TOKEN_GAP_S * 0.8 <= level["itl_ms"]["p50"] / 1000 < TOKEN_GAP_S + 0.04
    assert TOKEN_GAP_S * 0.8 <= level["tpot_ms"]["p50"] / 1000 < TOKEN_GAP_S + 0.04
    # Two at a time: 4 requests of ~0.55 s finish in ~1.1 s of wall time.
    assert 1.5 < level["request_throughput"] < 4.0


def test_bench_sends_exact_length_controls_and_distinct_prompts(timed_server):
    url, app = timed_server
    config = BenchConfig(
        url=url, concurrency=[1, 2], input_len=8, output_len=2, num_prompts=3, warmup=1
    )
    asyncio.run(run_benchmark(config))
    seen = app[SEEN]
    assert len(seen) == 2 * (1 + 3)
    assert all(body["ignore_eos"] is True and body["stream"] is True for body in seen)
    assert all(body["max_tokens"] == 2 for body in seen)
    assert all(len(body["prompt"].split()) == 8 for body in seen)
    # No prompt repeats, so a prefix cache cannot answer a later level from an earlier one.
    assert len({body["prompt"] for body in seen}) == len(seen)


def test_same_seed_gives_the_same_prompts(timed_server):
    url, app = timed_server
    config = BenchConfig(
        url=url, concurrency=[1], input_len=5, output_len=1, num_prompts=3, warmup=0, seed=7
    )
    asyncio.run(run_benchmark(config))
    first = [body["prompt"] for body in app[SEEN]]
    app[SEEN].clear()
    asyncio.run(run_benchmark(config))
    assert [body["prompt"] for body in app[SEEN]] == first


def test_cli_reports_http_errors_by_kind_and_exits_1(timed_server, tmp_path, capsys):
    url, _ = timed_server
    report_path = tmp_path / "report.json"
    code = cli.main(
        [
            "bench",
            "--url",
            url,
            "--model",
            "timed",
            "--input-len",
            "3",
            "--output-len",
            "1",
            "--num-prompts",
            "2",
            "--warmup",
            "0",
            "--json",
            str(report_path),
        ]
    )
    assert code == 0
    assert json.loads(report_path.read_text())["levels"][0]["completed"] == 2

    # A server that refuses: the table still prints, the errors are named, the exit code says so.
    code = cli.main(
        ["bench", "--url", url, "--model", "busy", "--num-prompts", "2", "--warmup", "0"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "errors at concurrency 1: 2 x http_503:" in out


def test_cli_says_when_the_server_cannot_be_reached(capsys):
    unreachable = f"http://127.0.0.1:{_free_port()}"
    code = cli.main(["bench", "--url", unreachable, "--model", "x", "--num-prompts", "1"])
    assert code == 1
    assert f"cannot reach {unreachable}" in capsys.readouterr().err


def test_cli_rejects_a_bad_concurrency_list_with_exit_2(capsys):
    assert cli.main(["bench", "--url", "http://localhost:1", "--concurrency", "1,0"]) == 2
    assert "--concurrency" in capsys.readouterr().err


def test_int_and_rate_lists_parse_or_say_what_is_wrong():
    assert parse_int_list("1, 4,8", "--concurrency") == [1, 4, 8]
    assert parse_rate_list("0.5,inf") == [0.5, None]
    for bad in ("a", "0", ""):
        with pytest.raises(UsageError):
            parse_int_list(bad, "--concurrency")
    for bad in ("-1", "fast", "0"):
        with pytest.raises(UsageError):
            parse_rate_list(bad)


def test_base_url_accepts_the_root_or_the_v1_path():
    assert base_url("http://localhost:8000/v1/") == "http://localhost:8000"
    assert base_url("http://localhost:8000") == "http://localhost:8000"
    with pytest.raises(UsageError):
        base_url("localhost:8000")


def test_sse_parser_joins_events_split_across_reads_and_splits_batched_ones():
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b': 1}\n\ndata: {"b": 2}\r\n\r\ndata: [DO') == ['{"a": 1}', '{"b": 2}']
    assert parser.feed(b"NE]\n\n") == ["[DONE]"]


def test_calibration_hits_the_length_when_words_are_several_tokens(timed_server):
    url, app = timed_server
    config = BenchConfig(
        url=url,
        model="letters",
        concurrency=[1],
        input_len=50,
        output_len=1,
        num_prompts=3,
        warmup=0,
    )
    report = asyncio.run(run_benchmark(config))
    assert report["prompt_lengths"] == "exact (calibrated with /tokenize)"
    assert [len(body["prompt"].replace(" ", "")) for body in app[SEEN]] == [50, 50, 50]


def test_a_llama_server_is_calibrated_with_its_tokenize_and_its_closing_chunk_is_no_token(
    timed_server,
):
    url, app = timed_server
    config = BenchConfig(url=url, model="llama", concurrency=[1], input_len=30, output_len=3,
                         num_prompts=2, warmup=0)
    report = asyncio.run(run_benchmark(config))
    assert report["prompt_lengths"] == "exact (calibrated with /tokenize)"
    completions = [body for body in app[SEEN] if "max_tokens" in body]
    assert [len(body["prompt"].replace(" ", "")) for body in completions] == [30, 30]
    assert all(body["ignore_eos"] is True for body in completions)
    level = report["levels"][0]
    assert level["mean_output_tokens"] == 3  # the usage's count
    # 3 tokens, 2 gaps between them: the closing chunk's extra gap is not an inter-token gap
    assert level["itl_ms"]["p50"] / 1000 >= TOKEN_GAP_S * 0.8
    assert level["tpot_ms"]["p50"] / 1000 < TOKEN_GAP_S * 2


def test_a_call_on_a_connection_the_server_closed_unanswered_is_sent_again(timed_server):
    url, app = timed_server
    config = BenchConfig(url=url, model="flaky", concurrency=[1], input_len=10, output_len=1,
                         num_prompts=1, warmup=0)
    report = asyncio.run(run_benchmark(config))
    assert app[DROPPED] == [True, True]  # a /tokenize call and then a completion
    assert report["prompt_lengths"] == "exact (calibrated with /tokenize)"
    assert (report["levels"][0]["completed"], report["levels"][0]["failed"]) == (1, 0)
    assert len([body for body in app[SEEN] if "max_tokens" in body]) == 2  # sent once more


def test_a_completion_the_server_answered_is_never_sent_again(timed_server):
    url, app = timed_server
    config = BenchConfig(url=url, model="busy", concurrency=[1], input_len=10, output_len=1,
                         num_prompts=1, warmup=0)
    report = asyncio.run(run_benchmark(config))
    assert report["levels"][0]["failed"] == 1
    assert len([body for body in app[SEEN] if "max_tokens" in body]) == 1
