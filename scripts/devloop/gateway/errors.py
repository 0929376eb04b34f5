"""Every error the gateway sends is an OpenAI error body, whoever produced it.

OpenAI clients parse `{"error": {"message", "type", "param", "code"}}`; vLLM answers its own API
errors that way too, but FastAPI's built-in ones (`{"detail": ...}` for 404, 405, an unreadable
body) and proxies' HTML pages are not. The gateway rewrites those, keeping the status, and turns
its own failures (aiohttp's 405, an unexpected exception) into the same shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

log = logging.getLogger("devloop.gateway")
_ERROR_TEXT_LIMIT = 500  # characters of a foreign error page kept in the message


def openai_error(status: int, message: str, error_type: str) -> dict[str, Any]:
    """The error body OpenAI clients parse (`error.message`, `error.type`, `error.code`)."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": status}}


def error_body(status: int, message: str, error_type: str) -> bytes:
    return json.dumps(openai_error(status, message, error_type)).encode()


def error_response(
    status: int, message: str, error_type: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, error_type or type_for_status(status)),
        content_type="application/json",
        headers=headers,
    )


def type_for_status(status: int) -> str:
    """vLLM's naming for error types (`NotFoundError`, `BadRequestError`), from the status."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "Error"
    return "".join(word for word in phrase.title().split() if word.isalnum()) + "Error"


def is_openai_error(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("error"), dict)
        and isinstance(payload["error"].get("message"), str)
    )


def as_openai_error(status: int, payload: bytes, content_type: str) -> bytes:
    """An upstream error answer in the OpenAI shape: kept when it already is one; otherwise its
    text (FastAPI's `detail`, an HTML page) becomes the message, with the status unchanged."""
    parsed: Any = None
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(payload)
        except (ValueError, RecursionError):
            parsed = None
    if is_openai_error(parsed):
        return payload
    if isinstance(parsed, dict) and "detail" in parsed:
        detail = parsed["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)
    else:
        text = payload.decode("utf-8", "replace").strip()
    return error_body(
        status, f"engine answered {status}: {text[:_ERROR_TEXT_LIMIT]}", type_for_status(status)
    )


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (405 for a method a route does not take, 413) and any exception a
    handler lets escape become OpenAI error bodies; an exception is logged with its traceback
    (for the operator, never for the client) and answered 500."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_response(error.status, error.reason, headers=headers)
    except RequestPayloadError as error:
        # The body broke off or its chunked framing was wrong: the client's fault.
        return error_response(400, f"the request body could not be read: {error}")
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: there is nobody to answer
    except Exception:
        log.exception(
            "unexpected error answering %s %s", request.method, request.path,
            extra={"request_id": request.get("request_id")},
        )
        return error_response(
            500,
            f"the gateway failed to answer (request id {request.get('request_id')}); "
            "its log has the details",
            "internal_error",
        )
