"""TEI's `tei.v1.Info` and TEI's `truncate` flag on the gRPC front, with the fake backend (no model, no
OpenSearch): a real gRPC server on a free port, TEI's own stubs.

The fake backend counts whitespace words as tokens: a pair is `3 + query words + text words` tokens, and the
loader here gives a model of `MAX_LENGTH` tokens per pair.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fashion_rerank import __version__
from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import ServeSettings
from fashion_rerank.v1 import tei_pb2, tei_pb2_grpc
from reranker.backends.base import Backend, Encoded
from reranker.backends.fake import FakeBackend, fake_logit
from reranker.core import ScoringCore
from reranker.grpc_front import TEI_INFO_SERVICE, GrpcServer
from reranker.metrics import Metrics

from .conftest import Loads

MAX_LENGTH = 16
QUERY = "red dress"  # 2 tokens: a pair holds 16 - 3 - 2 = 11 text words before it must be cut
SETTINGS = dict(max_documents=20, max_batch_pairs=64, max_batch_tokens=4096, max_concurrent_rpcs=32)


def words(n: int, stem: str = "w") -> str:
    """A text of `n` distinct words (n fake tokens); the first two are "red dress"."""
    return " ".join(["red", "dress", *[f"{stem}{i}" for i in range(n - 2)]][:n])


@pytest.fixture
def served(make_core):
    """(channel, metrics, core) of a started GrpcServer on the fake backend (MAX_LENGTH tokens per pair)."""
    core = make_core(loads=Loads(max_length=MAX_LENGTH), **SETTINGS)
    metrics = Metrics()
    server = GrpcServer(ServeSettings(grpc_port=0, threads=1, **SETTINGS), core, metrics)
    server.start()
    channel = grpc.insecure_channel(server.target)
    yield channel, metrics, core
    channel.close()
    server.stop(0.5)


def rerank(channel, texts, truncate=False, left=False, raw_scores=True) -> tei_pb2.RerankResponse:
    direction = tei_pb2.TRUNCATION_DIRECTION_LEFT if left else tei_pb2.TRUNCATION_DIRECTION_RIGHT
    req = tei_pb2.RerankRequest(
        query=QUERY, texts=texts, truncate=truncate, raw_scores=raw_scores, return_text=True, truncation_direction=direction
    )
    return tei_pb2_grpc.RerankStub(channel).Rerank(req, timeout=5)


def logits_by_index(resp: tei_pb2.RerankResponse) -> dict[int, float]:
    return {r.index: r.score for r in resp.ranks}


# ------------------------------------------------------------------ Info


def test_info_describes_the_serving_reranker_and_the_limits(served):
    channel, metrics, core = served
    info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=5)
    assert info.model_type == tei_pb2.MODEL_TYPE_RERANKER
    assert info.version == __version__
    assert info.model_id == core.registry.name
    assert info.model_sha == core.model_version and info.HasField("model_sha")
    assert info.model_dtype == "float32"
    assert info.max_input_length == MAX_LENGTH
    assert info.max_batch_tokens == SETTINGS["max_batch_tokens"]
    assert info.HasField("max_batch_requests") and info.max_batch_requests == SETTINGS["max_batch_pairs"]
    assert info.max_client_batch_size == SETTINGS["max_documents"]
    assert info.max_concurrent_requests == SETTINGS["max_concurrent_rpcs"]
    assert info.tokenization_workers == 1
    assert not info.HasField("sha") and not info.HasField("docker_label")
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=TEI_INFO_SERVICE), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert metrics.requests.labels("tei.Info", "grpc", "OK")._value.get() == 1


def test_info_field_numbers_are_teis():
    """TEI clients decode by field number: these are text-embeddings-inference proto/tei.proto's."""
    fields = {f.name: f.number for f in tei_pb2.InfoResponse.DESCRIPTOR.fields}
    assert fields == {
        "version": 1,
        "sha": 2,
        "docker_label": 3,
        "model_id": 4,
        "model_sha": 5,
        "model_dtype": 6,
        "model_type": 7,
        "max_concurrent_requests": 8,
        "max_input_length": 9,
        "max_batch_tokens": 10,
        "max_batch_requests": 11,
        "max_client_batch_size": 12,
        "tokenization_workers": 13,
    }
    assert dict(tei_pb2.ModelType.items()) == {"MODEL_TYPE_EMBEDDING": 0, "MODEL_TYPE_CLASSIFIER": 1, "MODEL_TYPE_RERANKER": 2}


def test_info_without_a_model_is_failed_precondition(tmp_path):
    registry = ModelRegistry(tmp_path / "models", "fake-ce")  # nothing promoted
    s = ServeSettings(grpc_port=0, threads=1, registry_poll_s=0.05)
    core = ScoringCore(s, registry, loader=Loads())
    core.start()
    server = GrpcServer(s, core)
    server.start()
    try:
        with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as err:
            tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        server.stop(0.5)
        core.stop(1.0)


# ------------------------------------------------------------------ truncate


def test_truncate_false_refuses_an_over_long_pair_with_invalid_argument(served):
    channel, metrics, _ = served
    fits, too_long = words(11), words(12)  # 3 + 2 + 11 = 16 tokens fit; 17 do not
    with pytest.raises(grpc.RpcError) as err:
        rerank(channel, [fits, too_long], truncate=False)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "text 1" in err.value.details() and "Given: 17" in err.value.details()
    assert metrics.requests.labels("tei.Rerank", "grpc", "INVALID_ARGUMENT")._value.get() == 1
    assert metrics.pairs.labels("scored")._value.get() == 0  # refused before anything was queued


def test_truncate_false_scores_pairs_that_fit_whole(served):
    channel, _, _ = served
    texts = [words(11), words(3)]
    got = logits_by_index(rerank(channel, texts, truncate=False))
    for i, t in enumerate(texts):
        assert got[i] == pytest.approx(fake_logit(QUERY, t), abs=1e-5)


@pytest.mark.parametrize("left", [False, True])
def test_truncate_true_cuts_the_text_to_fit(served, left):
    channel, _, _ = served
    long = words(30)
    resp = rerank(channel, [long], truncate=True, left=left)
    kept = long.split()[-11:] if left else long.split()[:11]
    assert resp.ranks[0].score == pytest.approx(fake_logit(QUERY, " ".join(kept)), abs=1e-5)
    assert resp.ranks[0].text == long  # return_text echoes the text as sent
    assert resp.metadata.compute_tokens == MAX_LENGTH


def test_truncate_false_is_checked_even_when_the_scores_are_cached(served):
    channel, _, _ = served
    long = words(30)
    rerank(channel, [long], truncate=True)  # scored and cached (cut)
    with pytest.raises(grpc.RpcError) as err:
        rerank(channel, [long], truncate=False)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def stream(channel, messages):
    """messages: (text, truncate) pairs sent as one RerankStream call with QUERY."""
    reqs = (tei_pb2.RerankStreamRequest(query=QUERY, text=t, truncate=tr, raw_scores=True) for t, tr in messages)
    return tei_pb2_grpc.RerankStub(channel).RerankStream(reqs, timeout=5)


def test_rerank_stream_honours_truncate_per_message(served):
    channel, _, _ = served
    long = words(30)
    resp = stream(channel, [(words(4), False), (long, True)])
    got = logits_by_index(resp)
    assert got[0] == pytest.approx(fake_logit(QUERY, words(4)), abs=1e-5)
    assert got[1] == pytest.approx(fake_logit(QUERY, " ".join(long.split()[:11])), abs=1e-5)
    with pytest.raises(grpc.RpcError) as err:
        stream(channel, [(words(4), True), (words(5), False), (long, False)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "message 2" in err.value.details()


def test_an_over_long_query_is_refused_whatever_truncate_says(served):
    """Only the text is ever cut: a query that leaves no room for a text is TooLargeError in both modes."""
    channel, _, _ = served
    for truncate in (False, True):
        req = tei_pb2.RerankRequest(query=words(12), texts=["a"], truncate=truncate)
        with pytest.raises(grpc.RpcError) as err:
            tei_pb2_grpc.RerankStub(channel).Rerank(req, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ pair_tokens


def test_fake_pair_tokens_match_what_encode_reads_when_nothing_is_cut():
    b = FakeBackend(max_length=MAX_LENGTH)
    texts = [words(1), words(11), words(12), words(40)]
    n = b.pair_tokens(QUERY, texts)
    assert n.dtype == np.int64 and n.tolist() == [6, 16, 17, 45]
    enc = b.encode([QUERY] * len(texts), texts)
    assert enc.lengths.tolist() == np.minimum(n, MAX_LENGTH).tolist()


class _Words(Backend):
    """A backend with only `query_tokens`: the base class's `pair_tokens` default."""

    version, max_length = "w", 16

    def query_tokens(self, query: str) -> int:
        return len(query.split())

    def encode(self, queries, documents, truncate_left=None) -> Encoded:  # pragma: no cover - not used
        raise NotImplementedError

    def run(self, encoded, indices):  # pragma: no cover - not used
        raise NotImplementedError


def test_base_pair_tokens_counts_a_bert_style_pair():
    assert _Words().pair_tokens("a b", ["c", "c d e", ""]).tolist() == [6, 8, 5]
    assert _Words().pair_tokens("a b", []).shape == (0,)
