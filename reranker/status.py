"""The one status table: each error of `reranker.errors` and the status every front answers with.

| error                      | gRPC status          | HTTP status | TEI `error_type` |
|----------------------------|----------------------|-------------|------------------|
| InvalidInputError          | INVALID_ARGUMENT     | 400         | validation       |
| TooLargeError              | INVALID_ARGUMENT     | 413         | validation       |
| QueueFullError             | RESOURCE_EXHAUSTED   | 429         | overloaded       |
| NoModelError               | FAILED_PRECONDITION  | 503         | unhealthy        |
| DeadlineExceededError      | DEADLINE_EXCEEDED    | 504         | timeout          |
| OpenSearchUnavailableError | UNAVAILABLE          | 503         | unhealthy        |
| IndexNotFoundError         | NOT_FOUND            | 404         | validation       |
| PermissionDeniedError      | PERMISSION_DENIED    | 403         | validation       |
| BackendError               | INTERNAL             | 500         | backend          |
| UnauthenticatedError       | UNAUTHENTICATED      | 401         | unauthorized     |
| anything else              | INTERNAL             | 500         | backend          |

gRPC itself answers RESOURCE_EXHAUSTED for a message above `max_message_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    IndexNotFoundError,
    InvalidInputError,
    NoModelError,
    OpenSearchUnavailableError,
    PermissionDeniedError,
    QueueFullError,
    TooLargeError,
    UnauthenticatedError,
)


@dataclass(frozen=True)
class Status:
    """How one error is answered: gRPC `grpc.StatusCode` name, HTTP status code, TEI `error_type`."""

    grpc: str
    http: int
    tei: str


#: error class -> Status, most specific first (the first isinstance match wins).
TABLE: tuple[tuple[type[BaseException], Status], ...] = (
    (InvalidInputError, Status("INVALID_ARGUMENT", 400, "validation")),
    (TooLargeError, Status("INVALID_ARGUMENT", 413, "validation")),
    (QueueFullError, Status("RESOURCE_EXHAUSTED", 429, "overloaded")),
    (NoModelError, Status("FAILED_PRECONDITION", 503, "unhealthy")),
    (DeadlineExceededError, Status("DEADLINE_EXCEEDED", 504, "timeout")),
    (OpenSearchUnavailableError, Status("UNAVAILABLE", 503, "unhealthy")),
    (IndexNotFoundError, Status("NOT_FOUND", 404, "validation")),
    (PermissionDeniedError, Status("PERMISSION_DENIED", 403, "validation")),
    (BackendError, Status("INTERNAL", 500, "backend")),
    (UnauthenticatedError, Status("UNAUTHENTICATED", 401, "unauthorized")),
)
#: The answer to anything not in TABLE.
UNEXPECTED = Status("INTERNAL", 500, "backend")


def status_of(exc: BaseException) -> Status:
    """The Status of `exc` (UNEXPECTED for an error not in TABLE)."""
    for cls, status in TABLE:
        if isinstance(exc, cls):
            return status
    return UNEXPECTED
