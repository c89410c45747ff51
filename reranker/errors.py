"""Errors raised by the scoring core and Search; `reranker.status` maps each to its gRPC and HTTP status."""


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


class OpenSearchUnavailableError(RerankError):
    """OpenSearch refused the connection, timed out or answered 5xx (Search)."""


class IndexNotFoundError(RerankError):
    """The index or alias to search does not exist (Search)."""


class UnauthenticatedError(RerankError):
    """The caller gave no valid credentials (bearer token) for a front that requires them."""


class PermissionDeniedError(RerankError):
    """The caller may not read this index or alias (Search's allow-list); says nothing about whether it exists."""
