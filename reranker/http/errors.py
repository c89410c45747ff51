"""How the HTTP front answers an error: status from `reranker.status` (the project's one table), body
in the shape of the endpoint, and the headers that go with the status.

| status | headers                                   |
|--------|-------------------------------------------|
| 401    | `WWW-Authenticate: Bearer`                |
| 429    | `Retry-After: 1` (queue full)             |
| 503    | `Retry-After: 1` (no model loaded)        |

Bodies: Cohere endpoints and `/v1/models` answer `{"message": ...}`, the TEI endpoint
`{"error": ..., "error_type": ...}`. An exception outside `reranker.errors` answers 500
`internal error: <ExceptionType>` and is logged with its traceback; the caller never sees a traceback.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi.responses import JSONResponse

from reranker.errors import RerankError
from reranker.http.models import CohereErrorBody, TeiErrorBody
from reranker.status import UNEXPECTED, status_of

log = logging.getLogger(__name__)

#: `(message, error_type) -> JSON body` of one endpoint's errors.
ErrorBody = Callable[[str, str], Any]


class HttpError(Exception):
    """An error of the HTTP layer that `reranker.errors` has no class for (a missing or wrong bearer token).

    Args:
        status: HTTP status code to answer.
        message: shown to the caller.
        error_type: the TEI `error_type` (e.g. "unauthorized").
    """

    def __init__(self, status: int, message: str, error_type: str = "validation"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def status_and_type(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, TEI error_type) of `exc`: an HttpError's own, else `reranker.status.status_of`."""
    if isinstance(exc, HttpError):
        return exc.status, exc.error_type
    st = status_of(exc)
    return st.http, st.tei


def cohere_error(message: str, _error_type: str) -> dict[str, Any]:
    """`{"message": ...}` (Cohere's error body)."""
    return CohereErrorBody(message=message).model_dump()


def tei_error(message: str, error_type: str) -> dict[str, Any]:
    """`{"error": ..., "error_type": ...}` (text-embeddings-inference's error body)."""
    return TeiErrorBody(error=message, error_type=error_type).model_dump()


def error_headers(status: int) -> dict[str, str]:
    """Headers of an error answer with `status` (see the module docstring)."""
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def error_response(exc: Exception, body: ErrorBody, what: str = "") -> JSONResponse:
    """The answer to `exc` raised while handling `what` ("POST /v1/rerank", for the log).

    HttpError and `reranker.errors` answer their status with `str(exc)` as the message (5xx other than
    503 are logged as warnings); anything else answers 500 "internal error: <type>" and is logged with
    its traceback.
    """
    if isinstance(exc, (HttpError, RerankError)):
        status, error_type = status_and_type(exc)
        if status >= 500 and status != 503:
            log.warning("%s -> %d: %s", what, status, exc)
        return JSONResponse(body(str(exc), error_type), status_code=status, headers=error_headers(status))
    log.error("%s failed", what, exc_info=exc)
    return JSONResponse(body(f"internal error: {type(exc).__name__}", UNEXPECTED.tei), status_code=UNEXPECTED.http)
