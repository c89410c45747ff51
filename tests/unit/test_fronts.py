"""The gRPC front and Search's fail-open paths on the fake backend: real gRPC server on a free port, no model,
no OpenSearch (Search's kNN step is not exercised here; `_rerank` gets hand-made hits)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from fashion_rerank.retrieval import Hit
from fashion_rerank.scores import sigmoid
from fashion_rerank.settings import ServeSettings
from reranker.backends.fake import FAIL_MARKER, fake_logit
from reranker.client import RerankerClient
from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    IndexNotFoundError,
    InvalidInputError,
    NoModelError,
    OpenSearchUnavailableError,
    PermissionDeniedError,
    QueueFullError,
    TooLargeError,
    UnauthenticatedError,
)
from reranker.grpc_front import GrpcServer, status_for
from reranker.search import SearchService
from reranker.status import TABLE, UNEXPECTED, status_of

from .conftest import Loads

DOCS = ["red summer dress | Dresses | Red", "blue denim jeans | Jeans | Blue", "red leather bag | Handbags | Red"]


@pytest.fixture
def grpc_server(make_core):
    core = make_core(max_documents=20)
    server = GrpcServer(ServeSettings(grpc_port=0, max_documents=20, threads=1), core)
    server.start()
    yield server
    server.stop(0.5)


def test_rerank_over_grpc_returns_the_served_scores_best_first(grpc_server):
    with RerankerClient(grpc_server.target, timeout=5) as client:
        resp = client.rerank("red dress", DOCS, return_text=True)
        assert client.health() == "SERVING"
    logits = np.asarray([fake_logit("red dress", d) for d in DOCS], np.float32)
    order = np.argsort(-logits)
    assert [r.index for r in resp.results] == order.tolist()
    assert [r.rank for r in resp.results] == [1, 2, 3]
    for r in resp.results:
        assert r.score == pytest.approx(float(sigmoid(logits[r.index])), abs=1e-6)
        assert r.logit == pytest.approx(float(logits[r.index]), abs=1e-5)
        assert r.text == DOCS[r.index]


@pytest.mark.parametrize(
    "query, docs, code",
    [
        ("", DOCS, grpc.StatusCode.INVALID_ARGUMENT),
        ("q", ["d"] * 21, grpc.StatusCode.INVALID_ARGUMENT),
        ("q", [FAIL_MARKER], grpc.StatusCode.INTERNAL),
    ],
)
def test_bad_rerank_calls_get_their_status(grpc_server, query, docs, code):
    with RerankerClient(grpc_server.target, timeout=5) as client, pytest.raises(grpc.RpcError) as err:
        client.rerank(query, docs)
    assert err.value.code() == code and err.value.details()


def test_one_status_table_for_both_fronts():
    cases = {
        InvalidInputError("x"): ("INVALID_ARGUMENT", 400),
        TooLargeError("x"): ("INVALID_ARGUMENT", 413),
        QueueFullError("x"): ("RESOURCE_EXHAUSTED", 429),
        NoModelError("x"): ("FAILED_PRECONDITION", 503),
        DeadlineExceededError("x"): ("DEADLINE_EXCEEDED", 504),
        OpenSearchUnavailableError("x"): ("UNAVAILABLE", 503),
        IndexNotFoundError("x"): ("NOT_FOUND", 404),
        BackendError("x"): ("INTERNAL", 500),
        UnauthenticatedError("x"): ("UNAUTHENTICATED", 401),
        PermissionDeniedError("x"): ("PERMISSION_DENIED", 403),
        RuntimeError("unexpected"): ("INTERNAL", 500),
    }
    for exc, (grpc_code, http) in cases.items():
        st = status_of(exc)
        assert (st.grpc, st.http) == (grpc_code, http)
        assert status_for(exc) == grpc.StatusCode[grpc_code]
    assert status_of(RuntimeError()) is UNEXPECTED and len(TABLE) == 10


def _hits(texts):
    return [Hit(id=str(i), score=1.0 - i / 100, rank=i + 1, source={"rerank_text": t}) for i, t in enumerate(texts)]


def _search(core, **settings):
    return SearchService(ServeSettings(threads=1, **settings), core, client=None, encoder=object(), index="products")


def test_search_reranks_with_the_core(make_core):
    core = make_core()
    logits, scores, version, reason = _search(core)._rerank("red dress", _hits(DOCS), None, "grpc", {})
    np.testing.assert_allclose(logits, [fake_logit("red dress", d) for d in DOCS], atol=1e-6)
    np.testing.assert_allclose(scores, core.models.backend.activation(logits), atol=0)
    assert version == core.model_version and reason is None


def test_search_fails_open_on_a_model_error(make_core):
    core = make_core()
    logits, _, version, reason = _search(core)._rerank("red dress", _hits(["ok", FAIL_MARKER]), None, "grpc", {})
    assert logits is None and reason == "backend_error"


def test_search_fails_open_when_the_budget_runs_out(make_core):
    core = make_core(loads=Loads(delay_per_pair_s=0.05))
    svc = _search(core, rerank_budget_ms=50)
    logits, _, version, reason = svc._rerank("red dress", _hits(["doc"] * 20), None, "grpc", {})
    assert logits is None and reason == "budget"


def test_search_fails_closed_when_asked(make_core):
    core = make_core()
    with pytest.raises(BackendError):
        _search(core, fail_open=False)._rerank("q", _hits([FAIL_MARKER]), None, "grpc", {})
