"""The scoring core on the fake backend: results, validation, batching across requests, deadlines,
cancellation, back-pressure, model failures and hot swap. No model, no OpenSearch."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from fashion_rerank.scores import sigmoid
from fashion_rerank.settings import ServeSettings
from reranker.backends.fake import FAIL_MARKER, NAN_MARKER, fake_logit
from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    InvalidInputError,
    NoModelError,
    QueueFullError,
    TooLargeError,
)

from .conftest import Loads, promote_new

DOCS = [
    "red summer dress | Dresses | Red",
    "blue denim jeans | Jeans | Blue",
    "red leather bag | Handbags | Red",
    "white sneakers | Casual Shoes | White",
]


def test_scores_in_input_order_with_the_served_convention(make_core):
    core = make_core()
    res = core.submit("red dress", DOCS).result(timeout=5)
    want = np.asarray([fake_logit("red dress", d) for d in DOCS], dtype=np.float32)
    np.testing.assert_allclose(res.logits, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.scores, sigmoid(want), atol=1e-7)
    assert res.model_version == core.model_version and res.tokens > 0
    assert set(res.timings) == {"queue", "tokenize", "inference", "total"}
    assert res.scores[0] > res.scores[1]  # both query words matched beats none


def test_empty_document_list_resolves_at_once(make_core):
    res = make_core().submit("red dress", []).result(timeout=1)
    assert res.logits.shape == (0,) and res.scores.shape == (0,)


@pytest.mark.parametrize(
    "query, docs, err",
    [
        ("", ["x"], InvalidInputError),
        ("   ", ["x"], InvalidInputError),
        (None, ["x"], InvalidInputError),
        ("q", "not a list", InvalidInputError),
        ("q", ["ok", 3], InvalidInputError),
        ("q", ["x"] * 11, TooLargeError),
        ("q" * 101, ["x"], TooLargeError),
        ("q", ["x" * 101], TooLargeError),
    ],
)
def test_bad_requests_are_refused_before_queueing(make_core, query, docs, err):
    core = make_core(max_documents=10, max_text_chars=100, queue_pairs=100)
    with pytest.raises(err):
        core.submit(query, docs)
    assert core.queue_depth() == (0, 0)


def test_a_query_that_leaves_no_room_for_the_document_is_too_large(make_core):
    core = make_core(loads=None)
    long_query = " ".join(["word"] * 200)  # 200 tokens > max_length 128 - 3 - 8
    with pytest.raises(TooLargeError, match="tokens"):
        core.submit(long_query, ["doc"])


def test_concurrent_requests_share_batches_and_get_their_own_scores(make_core):
    loads = Loads(delay_per_pair_s=0.002)
    core = make_core(loads=loads, max_batch_pairs=64)
    queries = [f"query {i} red" for i in range(12)]
    futs = [core.submit(q, DOCS) for q in queries]
    for q, f in zip(queries, futs):
        res = f.result(timeout=10)
        np.testing.assert_allclose(res.logits, [fake_logit(q, d) for d in DOCS], atol=1e-6)
    # 12 requests x 4 pairs went through fewer forward passes than requests: batched across requests
    assert loads.loaded[0].runs < len(queries)


def test_a_full_queue_refuses_at_once(make_core):
    core = make_core(loads=Loads(delay_per_pair_s=0.05), max_documents=10, queue_pairs=10, max_batch_pairs=10)
    first = core.submit("q", ["a"] * 10)  # taken by the worker
    time.sleep(0.05)
    core.submit("q", ["b"] * 10)  # fills the queue
    t0 = time.monotonic()
    with pytest.raises(QueueFullError):
        core.submit("q", ["c"])
    assert time.monotonic() - t0 < 0.1
    first.result(timeout=5)


def test_a_passed_deadline_drops_the_rest_of_the_work(make_core):
    loads = Loads(delay_per_pair_s=0.01)
    core = make_core(loads=loads, sub_batch=5, sub_batch_tokens=1)
    fut = core.submit("q", ["doc"] * 100, deadline=time.monotonic() + 0.1)
    with pytest.raises(DeadlineExceededError, match="deadline"):
        fut.result(timeout=5)
    # the worker stopped within a sub-batch or two, not after 100 pairs (1 s)
    t0 = time.monotonic()
    core.submit("q", ["x"]).result(timeout=5)
    assert time.monotonic() - t0 < 0.5


def test_a_cancelled_request_frees_the_worker(make_core):
    core = make_core(loads=Loads(delay_per_pair_s=0.01), sub_batch=5, sub_batch_tokens=1)
    fut = core.submit("q", ["doc"] * 200)
    time.sleep(0.05)
    fut.cancel()
    t0 = time.monotonic()
    core.submit("q", ["x"]).result(timeout=5)
    assert time.monotonic() - t0 < 0.5


def test_a_model_failure_fails_only_its_batch(make_core):
    core = make_core()
    with pytest.raises(BackendError):
        core.submit("q", ["fine", FAIL_MARKER]).result(timeout=5)
    with pytest.raises(BackendError, match="non-finite"):
        core.submit("q", ["fine", NAN_MARKER]).result(timeout=5)
    assert core.submit("q", ["fine"]).result(timeout=5).logits.shape == (1,)


def test_no_model_promoted_is_no_model_error(tmp_path):
    from fashion_rerank.registry import ModelRegistry
    from fashion_rerank.settings import ServeSettings
    from reranker.core import ScoringCore

    core = ScoringCore(ServeSettings(threads=1), ModelRegistry(tmp_path, "none"), loader=Loads())
    core.start()
    try:
        assert core.model_version is None
        with pytest.raises(NoModelError):
            core.submit("q", ["d"])
    finally:
        core.stop(1.0)


def test_hot_swap_under_load_fails_no_request_and_releases_the_old_model(make_core, registry):
    loads = Loads(delay_per_pair_s=0.001)
    core = make_core(loads=loads)
    first = core.model_version
    errors, results = [], []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                results.append(core.submit("red dress", DOCS).result(timeout=5).model_version)
            except Exception as exc:  # noqa: BLE001 - counted and asserted
                errors.append(exc)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(client)
        time.sleep(0.1)
        second = promote_new(registry)
        deadline = time.monotonic() + 5
        while core.model_version != second and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        stop.set()
    assert not errors
    assert core.model_version == second and {first, second} <= set(results)
    assert loads.loaded[0].closed and not loads.loaded[-1].closed


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(make_core, registry):
    loads = Loads()
    core = make_core(loads=loads)
    first = core.model_version
    bad = promote_new(registry)
    loads.fail_versions.add(bad)
    time.sleep(0.3)
    assert core.model_version == first
    assert core.submit("q", ["d"]).result(timeout=5).model_version == first


def test_stop_fails_what_is_left_with_deadline_exceeded(make_core):
    core = make_core(loads=Loads(delay_per_pair_s=0.01), sub_batch=1, sub_batch_tokens=1)
    futs = [core.submit("q", ["d"] * 50) for _ in range(3)]
    core.stop(0.05)
    outcomes = []
    for f in futs:
        try:
            f.result(timeout=5)
            outcomes.append("ok")
        except DeadlineExceededError:
            outcomes.append("deadline")
    assert "deadline" in outcomes
    with pytest.raises(QueueFullError):
        core.submit("q", ["d"])


def test_several_workers_score_concurrent_requests_correctly(make_core):
    loads = Loads(delay_per_pair_s=0.001)
    core = make_core(loads=loads, workers=3, threads=6, max_batch_pairs=8, backend="torch")
    assert core.workers == 3 and core.threads_per_worker == 2  # torch: each worker its share of the threads
    queries = [f"query {i} red" for i in range(30)]
    futs = [core.submit(q, DOCS) for q in queries]
    for q, f in zip(queries, futs):
        np.testing.assert_allclose(f.result(timeout=10).logits, [fake_logit(q, d) for d in DOCS], atol=1e-6)
    # more than one worker ran forward passes (batches hold at most 2 requests of 4 pairs: 15+ batches)
    assert len(loads.loaded[0].run_threads) >= 2
    assert loads.loaded[0].run_threads <= {"rerank-worker-0", "rerank-worker-1", "rerank-worker-2"}


def test_worker_layout_defaults_follow_the_backend():
    """onnx shares its threads among concurrent calls, so by default every thread gets a worker and each
    worker's backend may use all threads; other backends get one worker, or threads // workers each."""
    from reranker.backends import default_workers, worker_threads

    assert default_workers("onnx", 2) == 2 and worker_threads("onnx", 2, 2) == 2
    assert default_workers("torch", 4) == 1 and worker_threads("torch", 4, 2) == 2
    assert default_workers("fake", 3) == 1 and worker_threads("fake", 1, 4) == 1
    assert ServeSettings(threads=2).workers == 0  # 0 = the backend's default
