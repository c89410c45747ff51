"""What the HTTP front reads from a request besides its fields: the JSON body (size-limited) and the deadline.

- Body: at most `http_max_body_bytes` (default 2,000,000, TEI's `--payload-limit`); a larger declared
  `Content-Length` is refused before reading, a longer stream as soon as it passes the limit (413,
  `TooLargeError`). It must be a JSON object (400, `InvalidInputError`, with json's own message).
- Deadline: the sidecar's default budget `rerank_budget_ms`, lowered (never raised) by the header
  `X-Request-Timeout-Ms` (a positive number of milliseconds; otherwise 400).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from fastapi import Request

from reranker.errors import InvalidInputError, TooLargeError

DEFAULT_MAX_BODY_BYTES = 2_000_000  # TEI's --payload-limit default
TIMEOUT_HEADER = "x-request-timeout-ms"


def max_body_bytes(settings: Any) -> int:
    """`settings.http_max_body_bytes`, or DEFAULT_MAX_BODY_BYTES when unset (or no settings)."""
    return int(getattr(settings, "http_max_body_bytes", None) or DEFAULT_MAX_BODY_BYTES)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body decoded as a JSON object.

    Raises:
        TooLargeError: the body is (or declares, by Content-Length) more than `max_bytes` bytes (413).
        InvalidInputError: the body is not valid JSON / UTF-8, is nested deeper than the interpreter's recursion
            limit (about 1,000 levels), or is not an object (400).
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise TooLargeError(f"request body is {length} bytes, more than the limit of {max_bytes}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise TooLargeError(f"request body is more than the limit of {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:  # json's C scanner recurses per nesting level: `[[[[...` 1,000 deep is this
        raise InvalidInputError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidInputError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def default_deadline_s(settings: Any) -> float | None:
    """Default per-request budget in seconds: `rerank_budget_ms` (the time a search gives the reranker);
    None when unset, not a positive number, or no settings."""
    value = getattr(settings, "rerank_budget_ms", None) if settings is not None else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) / 1000.0
    return None


def deadline_for(request: Request, default_s: float | None) -> float | None:
    """The request's deadline as a `time.monotonic()` value (None: no deadline).

    `default_s`, or the `X-Request-Timeout-Ms` header (milliseconds) when it is smaller or there is no default.

    Raises:
        InvalidInputError: the header is not a number, or not a positive finite one (400).
    """
    budget = default_s
    header = request.headers.get(TIMEOUT_HEADER)
    if header:
        try:
            asked = float(header) / 1000.0
        except ValueError:
            raise InvalidInputError(f"X-Request-Timeout-Ms: must be a number of milliseconds, got {header!r}") from None
        if not math.isfinite(asked) or asked <= 0:
            raise InvalidInputError(f"X-Request-Timeout-Ms: must be positive, got {header!r}")
        budget = min(budget, asked) if budget else asked
    return time.monotonic() + budget if budget else None
