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
        scores: (n,) float32 served scores, the backend's `activation(logits)` as the model declares it
            (`fashion_rerank.scores`; e.g. in [0, 1] for sigmoid, the logit itself for identity).
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
    client: str = ""
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


def check_fits(core, query: str, texts: Sequence[str], positions: Sequence[int] | None = None, what: str = "text") -> None:
    """TEI's `truncate=false`: refuse the request when a (query, text) pair is longer than the model reads.

    Counts each whole pair with the serving backend's `pair_tokens` (special tokens included, nothing cut)
    and compares it with the model's `max_length`, as TEI compares the encoded pair with its
    `max_input_length`. Does nothing when no model is loaded (`core.submit` then raises NoModelError) or
    `texts` is empty. If a hot swap to a model with a shorter `max_length` lands between this check and
    the scoring, that model cuts the document as with `truncate=true`.

    Args:
        positions: where each text sits in the caller's request, for the error message (default 0..n-1).
        what: what the message calls a text ("text"; "message" for a stream).

    Raises:
        TooLargeError: naming the first over-long text and its token count (INVALID_ARGUMENT, HTTP 413, TEI
            `validation`: `reranker.status`, the answer TEI gives).
    """
    backend = getattr(getattr(core, "models", None), "backend", None)
    if backend is None or not texts:
        return
    lengths = backend.pair_tokens(query, texts)
    over = np.flatnonzero(lengths > backend.max_length)
    if over.size:
        i = int(over[0])
        where = positions[i] if positions is not None else i
        raise TooLargeError(
            f"{what} {where}: `inputs` must have at most {backend.max_length} tokens. Given: {int(lengths[i])} "
            f"(query and text together; set truncate=true to cut the text to fit)"
        )


#: Characters one model token can span at most once whitespace runs are collapsed: WordPiece (BERT, MiniLM)
#: makes each word of up to `max_input_chars_per_word` = 100 characters into one or more tokens and a longer
#: word into one [UNK], so a token covers at most 100 characters plus the space before it. A text cut to
#: `max_length * CHARS_PER_TOKEN` characters therefore keeps every token the model reads.
CHARS_PER_TOKEN = 101


def fit_document(text: str, max_length: int, max_chars: int) -> str:
    """A stored product text cut to what a model of `max_length` tokens per pair can read.

    Texts up to `min(max_chars, max_length * CHARS_PER_TOKEN)` characters come back unchanged; a longer one
    gets its whitespace runs collapsed to single spaces (tokenizers split on whitespace, so the tokens are
    the same) and is cut to that many characters. The model then cuts the pair to `max_length` tokens
    itself, so the score equals the score of the whole text. `max_chars` (the core's `max_text_chars`) wins
    when smaller: with a 512-token model and the default 20,000 characters, only texts averaging over 39
    characters per token would lose tokens the model reads.
    """
    cap = max(1, min(int(max_chars), int(max_length) * CHARS_PER_TOKEN))
    if len(text) <= cap:
        return text
    return " ".join(text[: cap * 4].split())[:cap] if len(text) > cap * 4 else " ".join(text.split())[:cap]


def fit_query(backend, query: str) -> str:
    """`query`, or its longest word-boundary prefix that `backend` accepts as a query (`max_query_tokens()`).

    Search cuts an over-long query for the cross-encoder instead of refusing it (the kNN step used the whole
    query). Counts with `backend.query_tokens` (thread-safe), a binary search over word boundaries: about
    log2(words) tokenizer calls, only for a query that is too long. A single word that is already too long
    is cut by characters the same way. Returns "" only when not even one character fits.
    """
    limit = backend.max_query_tokens()
    if backend.query_tokens(query) <= limit:
        return query
    cuts = [i for i in range(1, len(query)) if query[i].isspace() and not query[i - 1].isspace()]
    if not cuts or backend.query_tokens(query[: cuts[0]]) > limit:
        cuts = list(range(1, len(query)))  # by characters
    lo, hi, best = 0, len(cuts) - 1, ""
    while lo <= hi:
        mid = (lo + hi) // 2
        head = query[: cuts[mid]]
        if backend.query_tokens(head) <= limit:
            best, lo = head, mid + 1
        else:
            hi = mid - 1
    return best.rstrip()
