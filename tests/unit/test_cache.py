"""The score cache: bounded LRU, one model version at a time, whole requests only; in the core: hits skip the
model, a hot swap empties it, and a response never mixes or reuses another version's scores."""

from __future__ import annotations

import time

import numpy as np
import pytest

from reranker.backends.fake import fake_logit
from reranker.core.cache import ENTRY_BYTES, ScoreCache, pair_key

from .conftest import Loads, promote_new

DOCS = ["red summer dress | Dresses | Red", "blue denim jeans | Jeans | Blue", "red leather bag | Handbags | Red"]


def test_bounded_by_entries_and_by_bytes_least_recently_used_out():
    c = ScoreCache(max_entries=3, max_bytes=10**9)
    c.reset("v1")
    c.put("v1", "q", ["a", "b", "c"], np.array([1, 2, 3], np.float32))
    assert c.get("v1", "q", ["a"]) is not None  # "a" is now the most recent
    c.put("v1", "q", ["d"], np.array([4], np.float32))
    assert len(c) == 3 and c.get("v1", "q", ["b"]) is None and c.get("v1", "q", ["a", "c", "d"]).tolist() == [1, 3, 4]
    by_bytes = ScoreCache(max_entries=10**6, max_bytes=2 * ENTRY_BYTES)
    by_bytes.reset("v1")
    by_bytes.put("v1", "q", ["a", "b", "c"], np.array([1, 2, 3], np.float32))
    assert len(by_bytes) == 2 and by_bytes.bytes == 2 * ENTRY_BYTES
    assert not ScoreCache(0, 10**6).enabled and not ScoreCache(10, ENTRY_BYTES - 1).enabled


def test_only_the_current_version_and_whole_requests():
    c = ScoreCache(100, 10**6)
    c.reset("v1")
    c.put("v2", "q", ["a"], np.array([9], np.float32))  # another version's score is never kept
    assert c.get("v2", "q", ["a"]) is None and len(c) == 0
    c.put("v1", "q", ["a", "b"], np.array([1, 2], np.float32))
    assert c.get("v1", "q", ["a", "b", "x"]) is None  # partly cached: scored whole
    assert c.get("v1", "q", ["b", "a"]).tolist() == [2, 1]
    assert c.get("v1", "q", ["a"], truncate_left=True) is None  # another truncation is another pair
    c.reset("v2")
    assert c.get("v1", "q", ["a"]) is None and c.get("v2", "q", ["a"]) is None
    assert (c.hits, c.misses) == (1, 5)
    assert pair_key("q", "ab") != pair_key("qa", "b") and len(pair_key("q", "d" * 10_000)) == 16


def test_a_repeated_request_skips_the_model(make_core):
    loads = Loads(delay_per_pair_s=0.01)
    core = make_core(loads=loads)
    first = core.submit("red dress", DOCS).result(timeout=5)
    runs = loads.loaded[0].runs
    t0 = time.monotonic()
    again = core.submit("red dress", DOCS).result(timeout=5)
    took = time.monotonic() - t0
    assert loads.loaded[0].runs == runs  # no forward pass
    assert took < 0.005 + 0.02  # no 30 ms of simulated model time (plus scheduling slack)
    np.testing.assert_array_equal(again.logits, first.logits)
    assert again.model_version == first.model_version and again.tokens == 0
    assert core.cache.hits == 1


def test_a_hot_swap_empties_the_cache_and_never_serves_old_scores(make_core, registry):
    core = make_core(loads=Loads())
    old = core.submit("red dress", DOCS).result(timeout=5)
    assert len(core.cache) == len(DOCS)
    new_version = promote_new(registry)
    deadline = time.monotonic() + 5
    while core.model_version != new_version and time.monotonic() < deadline:
        time.sleep(0.02)
    assert core.model_version == new_version and len(core.cache) == 0
    res = core.submit("red dress", DOCS).result(timeout=5)
    assert res.model_version == new_version != old.model_version
    np.testing.assert_allclose(res.logits, [fake_logit("red dress", d) for d in DOCS], atol=1e-6)


def test_the_cache_can_be_turned_off(make_core):
    loads = Loads()
    core = make_core(loads=loads, score_cache_entries=0)
    for _ in range(3):
        core.submit("red dress", DOCS).result(timeout=5)
    assert loads.loaded[0].runs == 3 and not core.cache.enabled


@pytest.mark.parametrize("entries", [1, 2, 7])
def test_lru_never_exceeds_its_capacity(entries):
    c = ScoreCache(entries, 10**9)
    c.reset("v")
    for i in range(50):
        c.put("v", "q", [str(i), str(i + 1)], np.array([i, i + 1], np.float32))
        assert len(c) <= entries
