"""The interface every cross-encoder backend implements, so the scoring core never sees a framework.

A backend tokenizes once per batch (`encode`), then the core runs length-sorted sub-batches of the
encoded pairs (`run`), checking deadlines in between. `score` is the one-call convenience for a single
query (benchmarks, tests, offline use).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fashion_rerank.scores import DEFAULT, Activation

#: backend name -> "module:function" returning a Backend; the function is `load(path, **kwargs)`.
BACKENDS: dict[str, str] = {
    "torch": "reranker.backends.torch_backend:load",
    "onnx": "reranker.backends.onnx_backend:load",
}


@dataclass
class Encoded:
    """Tokenized (query, document) pairs of one batch.

    Attributes:
        lengths: (n,) int array, tokens per pair after truncation (special tokens included).
        data: backend-specific per-pair token data (e.g. ids and token type ids).
    """

    lengths: np.ndarray
    data: Any = field(repr=False, default=None)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


class Backend(ABC):
    """A loaded cross-encoder.

    Attributes:
        version: what the loaded model reports with every score: the registry version (or path); a backend
            that serves a derived form adds a suffix (the ONNX backend: "<version>+onnx-int8").
        registry_version: the registry version alone (compare this with the registry's `current` pointer).
        max_length: tokens per (query, document) pair the model reads; the document side is truncated
            to fit, never the query.
        activation: the function from logit to served score that the model declares
            (`fashion_rerank.scores`); backends set it when they load a model (default: sigmoid, what a
            one-label model that declares nothing gets).
    """

    version: str
    max_length: int
    activation: Activation = DEFAULT

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Served scores `activation(logits)`, float32, same shape as `logits` (see `fashion_rerank.scores`)."""
        return self.activation(logits)

    @property
    def registry_version(self) -> str:
        """The registry version this backend loaded (default: `version`; backends with a suffix override it)."""
        value = self.__dict__.get("registry_version")
        return value if value is not None else self.version

    @registry_version.setter
    def registry_version(self, value: str) -> None:
        self.__dict__["registry_version"] = value

    #: tokens always left for the document: a query longer than max_length - 3 - this is refused.
    min_document_tokens: int = 8

    @abstractmethod
    def query_tokens(self, query: str) -> int:
        """Tokens of `query` alone (no special tokens). Thread-safe."""

    def max_query_tokens(self) -> int:
        """Longest query (in tokens) accepted: the pair must still fit `min_document_tokens` of document."""
        return self.max_length - 3 - self.min_document_tokens

    def pair_tokens(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Tokens of each whole (query, documents[i]) pair, not truncated, special tokens included.

        Returns a (len(documents),) int64 array; a value above `max_length` means `encode` would cut that
        document (TEI's `truncate=false` refuses such a pair). Thread-safe: the gRPC and HTTP fronts call it
        from their handler threads while the worker runs `encode`.

        This default assumes a BERT-style pair, `[CLS] query [SEP] document [SEP]` (3 special tokens, as
        `max_query_tokens`), and counts each text with `query_tokens`; backends override it with one exact,
        batched tokenizer call.
        """
        q = self.query_tokens(query)
        return np.fromiter((3 + q + self.query_tokens(d) for d in documents), dtype=np.int64, count=len(documents))

    @abstractmethod
    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        """Tokenize pairs (queries[i], documents[i]) once; documents truncated to fit `max_length`.

        `truncate_left[i]` drops tokens from the start of document i instead of its end (TEI's
        truncation_direction=LEFT). Raises ValueError for a query longer than `max_query_tokens()`.
        """

    @abstractmethod
    def run(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        """Logits (len(indices),) float32 for the pairs `indices` of `encoded`, padded to their longest."""

    def score(self, query: str, documents: Sequence[str], sub_batch: int = 25, sub_batch_tokens: int = 2048) -> np.ndarray:
        """Logits (len(documents),) float32 in input order: encode once, then length-sorted (longest first)
        sub-batches of `sub_batch` pairs, or more short pairs up to `sub_batch_tokens` padded tokens."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        enc = self.encode([query] * len(documents), documents)
        order = np.argsort(-enc.lengths, kind="stable")
        out = np.empty(len(documents), dtype=np.float32)
        pos = 0
        while pos < len(order):
            size = max(sub_batch, sub_batch_tokens // max(1, int(enc.lengths[order[pos]])))
            idx = order[pos : pos + size]
            out[idx] = self.run(enc, idx)
            pos += size
        return out

    def close(self) -> None:
        """Release the model (the core calls this after a hot swap)."""


#: Backends that share their `threads` among concurrent `run` calls themselves (one call alone spreads over
#: all of them, concurrent calls take one each): with these every scoring worker gets all the threads.
SHARES_THREADS = frozenset({"onnx"})


def default_workers(kind: str, threads: int) -> int:
    """Scoring workers when the settings name none: one per thread for backends in `SHARES_THREADS` (a lone
    request still gets every thread; with requests in flight each worker scores its own on one thread, no
    waiting at a split's join: docs/performance.md, "Workers and threads"), else 1."""
    return max(1, int(threads)) if kind in SHARES_THREADS else 1


def worker_threads(kind: str, threads: int, workers: int) -> int:
    """Threads to load backend `kind` with when `workers` scoring workers call it: `threads` for backends in
    `SHARES_THREADS` (they divide them among concurrent calls), else `threads // workers` (at least 1)."""
    if kind in SHARES_THREADS:
        return max(1, int(threads))
    return max(1, int(threads) // max(1, int(workers)))


def prepare_backend(kind: str, threads: int | None = None) -> None:
    """Process-wide set-up of backend `kind` (thread counts, runtime warm-up), called once by the core's
    `start()` in the caller's (main) thread, before any model is loaded. No-op for backends without one."""
    mod, _ = BACKENDS[kind].split(":") if kind in BACKENDS else (None, None)
    if mod is None:
        raise ValueError(f"unknown backend {kind!r}; available: {', '.join(sorted(BACKENDS))}")
    prepare = getattr(importlib.import_module(mod), "prepare", None)
    if prepare is not None:
        prepare(threads)


def load_backend(kind: str, path: str | Path, **kwargs) -> Backend:
    """Load the model folder `path` with backend `kind` (see BACKENDS); kwargs go to its `load`.

    Raises:
        ValueError: unknown backend name.
    """
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend {kind!r}; available: {', '.join(sorted(BACKENDS))}") from None
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)(path, **kwargs)
