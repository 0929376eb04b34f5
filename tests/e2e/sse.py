"""A strict Server-Sent Events reader for the streaming tests (the OpenAI stream format)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import requests

DONE = "[DONE]"


def events(lines: Iterable[str]) -> Iterator[str]:
    """The data of each event: `data:` lines up to a blank line make one event (SSE spec)."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):  # a comment / keep-alive
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def stream_json(response: requests.Response) -> list[dict]:
    """Every chunk of an OpenAI stream, checked: JSON events, then exactly one final [DONE]."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = list(events(response.iter_lines(decode_unicode=True)))
    assert raw, "the stream carried no events"
    assert raw[-1] == DONE, f"the stream must end with data: [DONE], got {raw[-1]!r}"
    assert DONE not in raw[:-1], "[DONE] came before the end of the stream"
    return [json.loads(item) for item in raw[:-1]]
