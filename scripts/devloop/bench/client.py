"""The HTTP side of `devloop bench`: the workload (BenchConfig, random-word prompts sized with the
server's tokenizer) and one streamed request timed chunk by chunk (Client.send).

Times follow vLLM's own `vllm bench serve` (devloop.bench.stats): TTFT is the first streamed
chunk carrying a choice, ITL the gaps between such chunks.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from devloop.bench.stats import RequestResult
from devloop.common.errors import DevloopError, UsageError
from devloop.common.words import COMMON_WORDS


@dataclass
class BenchConfig:
    """One benchmark run: every load level uses the same workload shape."""

    url: str
    model: str | None = None
    concurrency: list[int | None] = field(default_factory=lambda: [1])
    request_rates: list[float | None] = field(default_factory=lambda: [None])  # None: no pacing
    input_len: int = 128
    output_len: int = 128
    num_prompts: int = 32
    warmup: int = 1
    seed: int = 0
    api: str = "completions"  # or "chat"
    ignore_eos: bool = True  # vLLM's and llama-server's extension: exactly max_tokens
    min_tokens: bool = False  # also send min_tokens=output_len
    temperature: float = 0.0
    timeout_s: float = 600.0
    api_key: str | None = None
    calibrate: bool = True

    def levels(self) -> list[tuple[int | None, float | None]]:
        return [(c, r) for c in self.concurrency for r in self.request_rates]


def base_url(url: str) -> str:
    """The server root: users paste http://host:8000, .../v1 or .../v1/ alike."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must start with http:// or https://, got {url!r}")
    return url.removesuffix("/v1")


def random_words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(COMMON_WORDS) for _ in range(count)]


# /tokenize request bodies: vLLM's, and llama-server's (add_special: the BOS a completion adds).
TOKENIZE_STYLES = {
    "vllm": lambda model, text: {"model": model, "prompt": text},
    "llama-server": lambda model, text: {"content": text, "add_special": True},
}


def _token_count(style: str, body: Any) -> int | None:
    """The count in a /tokenize answer of `style`, None when it has none."""
    if not isinstance(body, dict):
        return None
    if style == "vllm":
        count = body.get("count")
        return count if isinstance(count, int) else None
    tokens = body.get("tokens")
    # llama-server answers a body without "content" (vLLM's shape) with no tokens.
    return len(tokens) if isinstance(tokens, list) and tokens else None


class SSEParser:
    """Splits a text/event-stream into the payloads of its `data:` lines, whatever the network
    chunking: an event may arrive in pieces, or several in one read."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        payloads = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                payloads.append(line[5:].strip().decode("utf-8"))
        return payloads


class Client:
    """The HTTP side: one aiohttp session, the request bodies, and the timing of each stream."""

    def __init__(self, config: BenchConfig, session: Any) -> None:
        self.config = config
        self.session = session
        self.root = base_url(config.url)
        self.headers = {"Content-Type": "application/json"}
        self._tokenize_style: str | None = None
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"

    async def discover_model(self) -> str:
        async with self.session.get(f"{self.root}/v1/models", headers=self.headers) as resp:
            if resp.status != 200:
                raise DevloopError(
                    f"GET {self.root}/v1/models answered {resp.status}: pass --model NAME "
                    "or check --url and --api-key"
                )
            body = await resp.json()
        models = [m["id"] for m in body.get("data", [])]
        if not models:
            raise DevloopError(f"{self.root}/v1/models lists no model: pass --model NAME")
        return models[0]

    async def count_tokens(self, model: str, text: str) -> int | None:
        """The server's token count for a completions prompt (special tokens included, as the
        server counts them): vLLM's /tokenize ({"model", "prompt"} -> {"count"}), else
        llama-server's ({"content", "add_special"} -> {"tokens": [ids]}; it answers vLLM's
        shape with 200 and no tokens); None when the server has neither. The first that works
        is kept for the next calls."""
        styles = [self._tokenize_style] if self._tokenize_style else list(TOKENIZE_STYLES)
        for style in styles:
            body = await self._post_idempotent("/tokenize", TOKENIZE_STYLES[style](model, text))
            count = _token_count(style, body)
            if count is not None:
                self._tokenize_style = style
                return count
        return None

    async def _post_idempotent(self, path: str, payload: dict[str, Any]) -> Any:
        """POST a call without side effects and return its JSON body (None unless 200). A
        keep-alive connection the server closed while it sat idle fails at once with
        ServerDisconnectedError (llama-server and uvicorn close idle ones after seconds):
        such a call is sent once more, on a new connection."""
        import aiohttp

        for attempt in (1, 2):
            try:
                async with self.session.post(
                    f"{self.root}{path}", json=payload, headers=self.headers
                ) as resp:
                    if resp.status != 200:
                        return None
                    return await resp.json(content_type=None)
            except aiohttp.ServerDisconnectedError:
                if attempt == 2:
                    raise
        return None

    async def make_prompt(
        self, model: str, rng: random.Random, calibrated: bool
    ) -> tuple[str, int | None]:
        """A random prompt and its token count by the server's tokenizer (None uncalibrated).

        Calibrated, it is the longest prefix of a random word sequence that has at most
        --input-len tokens, found by bisection over its characters: a tokenizer may split a
        word into several tokens (small or byte-level vocabularies do), so word counts cannot
        be steered reliably, while a character prefix can stop inside a word."""
        target = self.config.input_len
        words = random_words(rng, target)
        if not calibrated:
            return " ".join(words), None
        text = " ".join(words)
        count = await self.count_tokens(model, text)
        # Grow until the text is long enough; a tokenizer gives at least one token per word
        # only roughly, so double rather than add.
        while count is not None and count < target:
            words += random_words(rng, len(words))
            text = " ".join(words)
            count = await self.count_tokens(model, text)
        if count is None:
            return text, None
        if count == target:
            return text, count
        low, high = 1, len(text)  # count(text[:low]) <= target < count(text[:high])
        low_count = await self.count_tokens(model, text[:1]) or 0
        while high - low > 1:
            middle = (low + high) // 2
            middle_count = await self.count_tokens(model, text[:middle])
            if middle_count is None:
                return text[:low], low_count
            if middle_count <= target:
                low, low_count = middle, middle_count
            else:
                high = middle
        return text[:low], low_count

    def payload(self, model: str, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": self.config.output_len,
            "temperature": self.config.temperature,
            "stream": True,
            # The last chunk then carries the server's own token counts.
            "stream_options": {"include_usage": True},
        }
        if self.config.ignore_eos:
            # vLLM's extension, which llama-server has too: generate exactly max_tokens, so every
            # request does the same work.
            body["ignore_eos"] = True
        if self.config.min_tokens:
            # The same for servers without ignore_eos that honour min_tokens.
            body["min_tokens"] = self.config.output_len
        if self.config.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    async def send(self, model: str, prompt: str) -> RequestResult:
        """One streamed request, timed. A request the server closed the connection on before
        answering at all (a reused keep-alive connection it had just closed: llama-server does
        so now and then between requests) never reached it, so it is sent once more, timed from
        the new start."""
        result, answered = await self._send_once(model, prompt)
        if result.ok or answered or result.error_kind != "connection":
            return result
        result, _ = await self._send_once(model, prompt)
        return result

    async def _send_once(self, model: str, prompt: str) -> tuple[RequestResult, bool]:
        """The result, and whether the server answered (sent a status line) at all."""
        import aiohttp

        path = "/v1/chat/completions" if self.config.api == "chat" else "/v1/completions"
        result = RequestResult(ok=False, prompt_tokens=self.config.input_len)
        chunks = 0
        answered = False
        start = time.perf_counter()
        last = start
        try:
            async with self.session.post(
                f"{self.root}{path}", json=self.payload(model, prompt), headers=self.headers
            ) as resp:
                answered = True
                if resp.status != 200:
                    body = (await resp.text())[:300]
                    return _failed(result, f"http_{resp.status}", body), answered
                parser = SSEParser()
                async for raw in resp.content.iter_any():
                    now = time.perf_counter()
                    for data in parser.feed(raw):
                        if data == "[DONE]":
                            continue
                        event = json.loads(data)
                        if "error" in event:
                            return _failed(result, "server_error", json.dumps(event["error"])[:300]), answered
                        if event.get("choices") and not _closing_chunk(event):
                            if chunks == 0:
                                result.ttft = now - start
                            else:
                                result.itl.append(now - last)
                            last = now
                            chunks += 1
                        usage = event.get("usage")
                        if usage:
                            result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
                            result.output_tokens = usage.get("completion_tokens", 0)
                result.e2e = time.perf_counter() - start
        except TimeoutError:  # asyncio.TimeoutError is this builtin since 3.11
            return _failed(
                result, "timeout", f"no complete answer within {self.config.timeout_s:g} s"
            ), answered
        except aiohttp.ClientPayloadError as error:
            return _failed(result, "stream_broken", str(error)), answered
        except aiohttp.ClientError as error:
            return _failed(result, "connection", f"{type(error).__name__}: {error}"), answered
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _failed(result, "invalid_response", str(error)), answered
        if chunks == 0:
            return _failed(result, "empty_response", "the stream ended before any token"), answered
        if result.output_tokens == 0:
            # No usage from this server: one streamed chunk per token is the best estimate.
            result.output_tokens = chunks
        result.ok = True
        return result, answered


def _closing_chunk(event: dict[str, Any]) -> bool:
    """llama-server's last chunk of a completions stream: the finish reason and the usage, no
    text (the last token came in the chunk before). vLLM sends the usage with no choices."""
    return bool(event.get("usage")) and all(
        choice.get("finish_reason") and not choice.get("text") and not choice.get("delta")
        for choice in event["choices"]
    )


def _failed(result: RequestResult, kind: str, message: str) -> RequestResult:
    result.ok = False
    result.error_kind = kind
    result.error = message.strip().splitlines()[0] if message.strip() else kind
    return result
