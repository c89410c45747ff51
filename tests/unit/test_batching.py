"""The sub-batch rule (reranker.batching), as properties over any pair lengths and settings (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reranker.batching import plan_sub_batches, sub_batch_pairs


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=512), min_size=0, max_size=300),
    sub_batch=st.integers(min_value=1, max_value=64),
    sub_batch_tokens=st.integers(min_value=1, max_value=8192),
    max_batch_tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=20000)),
)
def test_every_pair_once_longest_first_within_the_bounds(lengths, sub_batch, sub_batch_tokens, max_batch_tokens):
    arr = np.asarray(lengths, dtype=np.int64)
    batches = plan_sub_batches(arr, sub_batch, sub_batch_tokens, max_batch_tokens)
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every pair exactly once
    assert all(len(b) >= 1 for b in batches)
    assert np.all(np.diff(arr[flat]) <= 0) if len(flat) else True  # longest first
    for b in batches:
        width = int(arr[b].max())
        if len(b) > 1:  # a single pair always goes, whatever its size
            assert len(b) <= sub_batch_pairs(width, sub_batch, sub_batch_tokens)
            assert max_batch_tokens is None or width * len(b) <= max_batch_tokens


def test_short_pairs_fill_a_pass_to_the_token_budget():
    assert sub_batch_pairs(80, 25, 2048) == 25
    assert sub_batch_pairs(20, 25, 2048) == 102
    assert [len(b) for b in plan_sub_batches(np.full(100, 20), 25, 2048)] == [100]
