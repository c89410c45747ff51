"""A fake cross-encoder: deterministic scores computed from the texts, no model, no framework.

For fast tests of everything around the model (the core's batching, deadlines and hot swap, both fronts,
the fail-open paths) and for load tests of the fronts (`FR_SERVE_BACKEND=fake`). It is never a reranker:
its score is the share of query words found in the document, which only *looks* like relevance.

- tokens: whitespace words; a pair is `3 + query words + document words` tokens (3 special tokens, as BERT),
  the document side truncated to `max_length`, never the query;
- logit of (query, document): `8 * (matched query words / query words) - 4 + 0.001 * (stable hash % 100)`,
  so every logit lies in [-4, 4.1) and equal texts always give equal logits;
- `delay_per_pair_s`: seconds each scored pair sleeps (simulated compute: deadlines, queues, budgets);
- a document containing `FAIL_MARKER` makes `run` raise RuntimeError; one containing `NAN_MARKER` scores NaN.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from reranker.backends.base import Backend, Encoded

#: A document with this text makes the whole forward pass fail (a model error).
FAIL_MARKER = "__fake_backend_fail__"
#: A document with this text gets a NaN logit (a numerically broken model).
NAN_MARKER = "__fake_backend_nan__"


def _words(text: str) -> list[str]:
    return text.lower().replace("|", " ").split()


def fake_logit(query: str, document: str) -> float:
    """The fake model's logit for one pair (see the module docstring); pure and deterministic."""
    q = _words(query)
    d = set(_words(document))
    share = sum(w in d for w in q) / max(1, len(q))
    jitter = int(hashlib.sha256(f"{query}\x00{document}".encode()).hexdigest()[:8], 16) % 100
    return float(8.0 * share - 4.0 + 0.001 * jitter)


class FakeBackend(Backend):
    """Deterministic stand-in for a cross-encoder (see module docstring).

    Args:
        version: reported with every score.
        max_length: tokens per pair (documents are cut to fit).
        delay_per_pair_s: simulated compute per scored pair, seconds.
    """

    def __init__(self, version: str = "fake-1", max_length: int = 128, delay_per_pair_s: float = 0.0):
        self.version = version
        self.max_length = int(max_length)
        self.delay_per_pair_s = float(delay_per_pair_s)
        self.closed = False
        self.runs = 0
        self.run_threads: set[str] = set()  # names of the threads that ran forward passes

    def query_tokens(self, query: str) -> int:
        return len(_words(query))

    def pair_tokens(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """(len(documents),) int64: `3 + query words + document words` of each pair, not truncated (what
        `encode` gives before it cuts a document to `max_length`)."""
        qn = self.query_tokens(query)
        return np.asarray([3 + qn + len(d.split()) for d in documents], dtype=np.int64)

    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries for {len(documents)} documents")
        texts, lengths = [], []
        for i, (q, d) in enumerate(zip(queries, documents)):
            qn = self.query_tokens(q)
            room = self.max_length - 3 - qn
            if room < 1:
                raise ValueError(f"cannot fit a (query, document) pair into {self.max_length} tokens")
            words = d.split()
            kept = words[-room:] if truncate_left and truncate_left[i] else words[:room]
            texts.append((q, " ".join(kept)))
            lengths.append(3 + qn + len(kept))
        return Encoded(lengths=np.asarray(lengths, dtype=np.int64), data=texts)

    def run(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        if self.closed:
            raise RuntimeError("fake backend used after close()")
        self.runs += 1
        self.run_threads.add(threading.current_thread().name)
        pairs = [encoded.data[int(i)] for i in indices]
        if any(FAIL_MARKER in d for _, d in pairs):
            raise RuntimeError("fake backend failure (FAIL_MARKER in a document)")
        if self.delay_per_pair_s:
            time.sleep(self.delay_per_pair_s * len(pairs))
        return np.asarray([np.nan if NAN_MARKER in d else fake_logit(q, d) for q, d in pairs], dtype=np.float32)

    def close(self) -> None:
        self.closed = True


def load(
    path: str | Path | None = None,
    version: str | None = None,
    max_length: int | None = None,
    delay_per_pair_s: float = 0.0,
    **_ignored,
) -> FakeBackend:
    """A FakeBackend; `path` is accepted for the backend interface and ignored (its name is the default version)."""
    name = version or (Path(path).name if path else "fake-1")
    return FakeBackend(version=name, max_length=max_length or 128, delay_per_pair_s=delay_per_pair_s)
