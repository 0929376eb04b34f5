"""Server-Sent Events as OpenAI streams use them: `data: <json>` events, a blank line after
each, and `data: [DONE]` last (the SSE spec, https://html.spec.whatwg.org/#event-stream-interpretation,
read as strictly as the OpenAI clients read it)."""

from __future__ import annotations

DONE = "[DONE]"


def event_data(raw: bytes) -> tuple[list[str], bool]:
    """The data of each complete event in `raw`, and whether the text ended on an event
    boundary. `data:` lines up to a blank line make one event; comments (`:`) and other fields
    are skipped; a last event without its blank line is incomplete and left out."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    events: list[str] = []
    data: list[str] = []
    lines = text.split("\n")
    complete = lines[-1] == ""  # the text ended with a line break
    for line in lines[:-1]:
        if line == "":
            if data:
                events.append("\n".join(data))
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    return events, complete and not data


def format_event(data: str) -> bytes:
    """One event as vLLM writes it: `data: ...` and a blank line."""
    return f"data: {data}\n\n".encode()
