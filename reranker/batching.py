"""How the scored pairs of a batch are cut into forward passes (one place for the sub-batch rule).

Pairs are sorted by token length, longest first, and run in sub-batches padded only to their own longest
pair. A sub-batch holds `sub_batch` pairs, or more when the pairs are short, so that a pass holds about
`sub_batch_tokens` padded tokens, and never more than `max_batch_tokens` padded tokens. Where the numbers
come from: docs/reference/cpu-measurements.md#sub-batches-and-padding (25 pairs of ~80 tokens was the
fastest and leanest torch shape on 2 cores; fewer, fuller passes cost less per-pass overhead on short
product texts).
"""

from __future__ import annotations

import numpy as np


def sub_batch_pairs(width: int, sub_batch: int, sub_batch_tokens: int) -> int:
    """Pairs per forward pass when the longest pair has `width` tokens: max(sub_batch, sub_batch_tokens // width)."""
    return max(int(sub_batch), int(sub_batch_tokens) // max(1, int(width)))


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Indices of `lengths` (n,) sorted longest first (stable), the order in which pairs are batched."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def plan_sub_batches(
    lengths: np.ndarray, sub_batch: int, sub_batch_tokens: int, max_batch_tokens: int | None = None
) -> list[np.ndarray]:
    """All sub-batches of pairs with token `lengths` (n,): a list of int64 index arrays, longest pairs first.

    Each array holds at most `sub_batch_pairs(width, ...)` pairs and at most `max_batch_tokens` padded tokens
    (width x pairs), and at least one pair. Every index 0..n-1 appears exactly once.
    """
    order = length_order(lengths)
    out: list[np.ndarray] = []
    pos, total = 0, len(order)
    while pos < total:
        idx, width = [], 0
        while pos < total:
            i = int(order[pos])
            w = max(width, int(lengths[i]))
            if idx and (
                len(idx) + 1 > sub_batch_pairs(w, sub_batch, sub_batch_tokens)
                or (max_batch_tokens is not None and w * (len(idx) + 1) > max_batch_tokens)
            ):
                break
            idx.append(i)
            width = w
            pos += 1
        out.append(np.asarray(idx, dtype=np.int64))
    return out
