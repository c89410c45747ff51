"""The score convention, in one place: what a served score means.

A cross-encoder returns one logit per (query, document) pair. Every front (gRPC `Rerank` and `Search`,
the Cohere- and TEI-shaped HTTP routes) serves `score = sigmoid(logit)`, a float in [0, 1] where higher
means more relevant; TEI's `raw_scores` and the gRPC `logit` fields return the logit itself. The
promotion gate and evaluation rank by the same scores (sigmoid is monotonic, so ranks are the logits').
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function of logits `x` (any shape), float32 in [0, 1], same shape."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out.astype(np.float32)
