"""One scoring request: its validation, its in-queue state, and its result."""

from __future__ import annotations

import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fashion_rerank.settings import ServeSettings
from reranker.errors import InvalidInputError, TooLargeError


@dataclass
class ScoreResult:
    """Scores of one request, in input order.

    Attributes:
        logits: (n,) float32 raw cross-encoder logits.
        scores: (n,) float32 served scores, `fashion_rerank.scores.sigmoid(logits)`, in [0, 1].
        model_version: registry version that scored the request ("" for an empty request with no model).
        timings: seconds spent in "queue", "tokenize", "inference" and "total" (submit to result).
        tokens: tokens the model read for this request (after truncation, special tokens included).
    """

    logits: np.ndarray
    scores: np.ndarray
    model_version: str
    timings: dict[str, float]
    tokens: int


def validate_request(query: object, documents: object, settings: ServeSettings) -> list[str]:
    """Check one request against the limits in `settings`; returns the documents as a list.

    Raises:
        InvalidInputError: the query is not a non-empty string, or `documents` is not a list of strings.
        TooLargeError: more than `max_documents` documents, or a text over `max_text_chars` characters.
    """
    s = settings
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("query is empty")
    if len(query) > s.max_text_chars:
        raise TooLargeError(f"query has {len(query)} characters; the limit is {s.max_text_chars}")
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidInputError("documents must be a list of strings")
    docs = list(documents)
    if len(docs) > s.max_documents:
        raise TooLargeError(f"{len(docs)} documents in one request; the limit is {s.max_documents}")
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise InvalidInputError(f"document {i} must be a string, got {type(d).__name__}")
        if len(d) > s.max_text_chars:
            raise TooLargeError(f"document {i} has {len(d)} characters; the limit is {s.max_text_chars}")
    return docs


@dataclass(eq=False)
class Work:
    """A queued request and what the worker has done with it so far (the worker's bookkeeping)."""

    query: str
    documents: list[str]
    deadline: float | None
    front: str
    future: Future
    enqueued: float
    truncate_left: bool = False
    # filled by the worker
    logits: np.ndarray | None = None
    remaining: int = 0
    tokens: int = 0
    started: float = 0.0
    tokenize_s: float = 0.0
    inference_started: float = 0.0
    alive: bool = True

    @property
    def n(self) -> int:
        """Documents in the request."""
        return len(self.documents)

    def expired(self, now: float | None = None) -> bool:
        """True when the deadline (a `time.monotonic()` value) has passed at `now`."""
        now = time.monotonic() if now is None else now
        return self.deadline is not None and now >= self.deadline


def fail(fut: Future, exc: BaseException) -> None:
    """Set `exc` on `fut` unless it is already done or cancelled."""
    if not fut.done():
        try:
            fut.set_exception(exc)
        except InvalidStateError:  # cancelled or finished meanwhile
            pass
