"""Errors raised by the scoring core; each front maps them to its protocol's status.

| error                 | gRPC status          | HTTP status |
|-----------------------|----------------------|-------------|
| InvalidInputError     | INVALID_ARGUMENT     | 400         |
| TooLargeError         | INVALID_ARGUMENT / RESOURCE_EXHAUSTED (message size) | 413 |
| QueueFullError        | RESOURCE_EXHAUSTED   | 429         |
| NoModelError          | UNAVAILABLE / FAILED_PRECONDITION | 503 |
| DeadlineExceededError | DEADLINE_EXCEEDED    | 504         |
| BackendError          | INTERNAL             | 500         |
"""


class RerankError(Exception):
    """Base class of scoring errors; `str(err)` is a message fit to show the caller."""


class InvalidInputError(RerankError, ValueError):
    """The request is malformed (empty query, bad field, bad document index...)."""


class TooLargeError(RerankError):
    """Too many documents or too long a text for the configured limits."""


class QueueFullError(RerankError):
    """The bounded scoring queue is full; the request was refused at once (back-pressure)."""


class NoModelError(RerankError):
    """No cross-encoder is loaded (nothing promoted in the registry yet)."""


class DeadlineExceededError(RerankError):
    """The request's deadline passed (or its client went away) before scoring finished."""


class BackendError(RerankError):
    """The model backend failed (e.g. non-finite scores)."""
