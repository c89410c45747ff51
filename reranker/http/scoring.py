"""Scoring one HTTP request on the core, and the numbers and headers the answer is made of."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from reranker.errors import BackendError


def f32(value: float) -> float:
    """A float32 score as the shortest decimal that round-trips it (e.g. 0.507347, as Cohere answers).

    Scores are float32 (the model's precision, also on gRPC). Printing them at double precision
    ("0.5073469877243042") is not only noise: ml-commons reads the connector's JSON with json-smart,
    which turns numbers of more than 18 characters into BigDecimal, and its Cohere post-process function
    then fails with a ClassCastException (BigDecimal cannot be cast to Double). Checked on 2.19.1:
    0.12345678901234567 fails, 0.5073469877243042 works.
    """
    return float(str(np.float32(value)))


def truncate_words(text: str, max_tokens: int | None) -> str:
    """Cut `text` to about `max_tokens` tokens (whitespace words; a word is >= 1 wordpiece, so this
    never keeps fewer tokens than asked). None: unchanged. The model truncates each pair to its own
    max length anyway."""
    if max_tokens is None:
        return text
    words = text.split()
    return text if len(words) <= max_tokens else " ".join(words[:max_tokens])


@dataclass
class Scored:
    """One request's scores, one per text in input order.

    Attributes:
        scores: served scores, activation(logit) as the model declares it (`fashion_rerank.scores`), each rounded with `f32`.
        logits: raw cross-encoder logits, each rounded with `f32`.
        model_version: registry version that scored them.
        timings: seconds per stage from the core ("queue", "tokenize", "inference", "total").
        tokens: tokens the model read (after truncation, special tokens included).
    """

    scores: list[float]
    logits: list[float]
    model_version: str
    timings: dict[str, float]
    tokens: int


async def score_texts(core: Any, query: str, texts: Sequence[str], deadline: float | None, truncate_left: bool = False) -> Scored:
    """Score `texts` against `query` on `core` (`front="http"`).

    Args:
        core: a `reranker.core.ScoringCore`.
        deadline: `time.monotonic()` value after which the core drops the work; None: no deadline.
        truncate_left: cut over-long texts at their start instead of their end.

    Raises:
        what `ScoringCore.score` raises (InvalidInputError, TooLargeError, QueueFullError, NoModelError,
        DeadlineExceededError, BackendError), and BackendError when the core answers a score count other
        than the text count or a non-finite score (an answer never has fewer scores than documents).
    """
    result = await core.score(query, texts, deadline=deadline, front="http", truncate_left=truncate_left)
    scores = [f32(s) for s in result.scores]
    logits = [f32(x) for x in result.logits]
    if len(scores) != len(texts) or len(logits) != len(texts):
        raise BackendError(f"model returned {len(scores)} scores for {len(texts)} documents")
    if not all(math.isfinite(s) for s in scores + logits):
        raise BackendError("model returned non-finite scores")
    return Scored(scores, logits, result.model_version, dict(result.timings or {}), int(result.tokens or 0))


def best_first(values: Sequence[float]) -> list[int]:
    """Indices of `values` from the highest value to the lowest; ties by index (stable, deterministic)."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


#: core timing key -> response header (both spellings of each key the core has used).
TIMING_HEADERS = (
    ("queue", "x-queue-time"),
    ("queue_s", "x-queue-time"),
    ("inference", "x-inference-time"),
    ("inference_s", "x-inference-time"),
    ("tokenize", "x-tokenization-time"),
    ("tokenize_s", "x-tokenization-time"),
)


def timing_headers(scored: Scored, started: float) -> dict[str, str]:
    """TEI's timing headers in milliseconds (one decimal): `x-total-time` since `started` (a
    `time.perf_counter()` value), `x-queue-time`, `x-inference-time`, `x-tokenization-time` from the core;
    plus `x-model-version` and `x-compute-tokens`."""
    h = {"x-total-time": f"{(time.perf_counter() - started) * 1000:.1f}", "x-model-version": str(scored.model_version)}
    for key, name in TIMING_HEADERS:
        if key in scored.timings:
            h[name] = f"{scored.timings[key] * 1000:.1f}"
    h["x-compute-tokens"] = str(scored.tokens)
    return h
