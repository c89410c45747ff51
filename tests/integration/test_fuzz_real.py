"""Short fuzzing runs against the real parts: the sidecar (`reranker.serve.Sidecar`: gRPC and HTTP fronts, the
ONNX backend of the `trained_registry` cross-encoder with its real tokenizer, the real bi-encoder) and the
real OpenSearch node (a unique index of 120 held-out Myntra products).

What the unit fuzzing (`tests/unit/test_fuzz_grpc.py`, `test_fuzz_http.py`) cannot show: that odd text
survives the real tokenizers (zero-width and bidi marks, NUL, astral planes, one 5,000-character word, a
query longer than the model's 64 tokens) and that odd filters, index names and numbers sent on to OpenSearch
come back as the documented codes. Each call has a deadline; answers must be OK or a documented client
error, never INTERNAL, UNKNOWN or UNAVAILABLE (OpenSearch is up), and a Search that answers OK must hold
hits that satisfy its filters. About 30 s on an idle 2-core machine.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
import uuid

import grpc
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from fashion_rerank.product import ATTRIBUTE_FIELDS, rerank_text
from fashion_rerank.settings import OpenSearchSettings, ServeSettings
from fashion_rerank.v1 import reranker_pb2, tei_pb2

OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
SEARCH_CODES = {OK, INVALID, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
RERANK_CODES = {OK, INVALID}
DEADLINE_S = 60.0
# No shrinking: shrinking replays examples of up to 20 MB thousands of times under hypothesis' tracer, which
# took a CI machine's 24 GiB; a failure is reported with the example as generated.
FUZZ = settings(
    phases=(Phase.explicit, Phase.generate),
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)
ODD = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "red\x00dress",
        "\u3000",
        "\u200b",
        "\u200b\u200c\u200d",
        "\ufeff",
        "\u202eevil",
        "\U0010ffff",
        "\U0001f457\U0001f9e5",
        "Ünïcödé Kleid",
        "连衣裙 红色",
        "a" * 5000,
        "red " * 80,  # over the 64-token model's room for a query
        "black watch",
        "women blue jeans",
    ]
)
STRING = st.one_of(TEXT, ODD)


@pytest.fixture(scope="module")
def fuzz_index(os_client):
    """A unique k-NN index of 120 held-out Myntra products with the agreed fields; deleted afterwards."""
    from opensearchpy import helpers

    from fashion_rerank.embedding import load_bi_encoder
    from indexer.catalogs import read_myntra

    products = list(read_myntra(limit=3120).products)[3000:]
    name = f"t-fuzz-{uuid.uuid4().hex[:8]}"
    encoder = load_bi_encoder()
    props = {f: {"type": "keyword"} for f in ATTRIBUTE_FIELDS}
    props.update(
        {
            "embedding": {
                "type": "knn_vector",
                "dimension": encoder.dimension,
                "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
            },
            "product_id": {"type": "keyword"},
            "title": {"type": "text"},
            "description": {"type": "text"},
            "rerank_text": {"type": "text"},
        }
    )
    os_client.indices.create(
        index=name,
        body={
            "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": props},
        },
    )
    vectors = encoder.encode([rerank_text(p) for p in products])
    helpers.bulk(
        os_client,
        ({"_index": name, "_id": p.id, "_source": {**p.to_source(), "embedding": v.tolist()}} for p, v in zip(products, vectors)),
        refresh=True,
    )
    yield name, products
    os_client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def sidecar(trained_registry, fuzz_index, opensearch_url):
    from reranker.http import start_http_front
    from reranker.serve import Sidecar

    sc = Sidecar(
        ServeSettings(
            grpc_port=0,
            metrics_port=-1,
            http_port=0,
            threads=1,
            querylog_path=None,
            querylog_index=None,
            rerank_budget_ms=30_000,
            fail_open=False,  # a reranker fault must show as a code here, not hide behind the kNN order
        ),
        trained_registry,
        OpenSearchSettings(url=opensearch_url, index_alias=fuzz_index[0]),
    )
    sc.start()
    http = start_http_front(sc.core, sc.metrics, sc.settings, port=0)
    channel = grpc.insecure_channel(sc.target)
    yield sc, channel, http
    channel.close()
    http.stop(1.0)
    sc.stop(1.0)


def _call(channel, method: str, request, response_type):
    fn = channel.unary_unary(
        method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_type.FromString
    )
    t0 = time.monotonic()
    try:
        return OK, "", fn(request, timeout=DEADLINE_S), time.monotonic() - t0
    except grpc.RpcError as err:
        return err.code(), err.details(), None, time.monotonic() - t0


def _check(code, details, seconds, allowed, what):
    event(code.name)
    assert seconds < DEADLINE_S, f"{what}: took {seconds:.1f} s"
    assert code in allowed, f"{what}: {code.name} {details!r}"


ATTRIBUTE = st.sampled_from(["colour", "gender", "product_type", "usage", "season", "brand"])
VALUES = st.lists(st.one_of(ODD, st.sampled_from(["Black", "Blue", "Women", "Men", "Watches", "Casual"])), min_size=1, max_size=3)
FILTER = st.one_of(
    st.builds(lambda f, v: reranker_pb2.AttributeFilter(field=f, values=v), ATTRIBUTE, VALUES),
    st.builds(
        lambda f, v: reranker_pb2.AttributeFilter(field=f, values=v),
        st.sampled_from(["", "title", "embedding", "colour.keyword"]),
        st.lists(ODD, max_size=2),
    ),
    # many values: 70,000 is over OpenSearch's index.max_terms_count (65,536); values of up to 100 characters
    # keep the message under max_message_bytes (70,000 copies of the 5,000-character one were 350 MB)
    st.builds(
        lambda v, n: reranker_pb2.AttributeFilter(field="colour", values=[v] * n),
        ODD.filter(lambda v: len(v) <= 100),
        st.sampled_from([1000, 70_000]),
    ),
    # a message over the sidecar's 16 MiB max_message_bytes (4,000 x 5,000 characters: 20 MB)
    st.just(reranker_pb2.AttributeFilter(field="colour", values=["a" * 5000] * 4000)),
)
NUMBER = st.one_of(st.sampled_from([0, 1, 5, 50, 1000, 1001, 2**32 - 1]), st.integers(0, 60))


VALID_FILTER = st.builds(lambda f, v: reranker_pb2.AttributeFilter(field=f, values=v), ATTRIBUTE, VALUES)
#: requests of Search's shape (a known attribute, top_n <= top_k <= 1000, the served index) with odd text
VALID_SHAPE = st.builds(
    lambda q, kn, f, c: reranker_pb2.SearchRequest(query=q, top_k=kn[0], top_n=kn[1], filters=f, client_id=c),
    STRING.map(lambda q: q if q.strip() else q + "dress"),
    st.integers(1, 60).flatmap(lambda k: st.tuples(st.just(k), st.integers(0, k))),
    st.lists(VALID_FILTER, max_size=2),
    STRING,
)
ANY_SHAPE = st.builds(
    reranker_pb2.SearchRequest,
    query=STRING,
    top_k=NUMBER,
    top_n=NUMBER,
    filters=st.lists(FILTER, max_size=2),
    index=st.sampled_from(["", "", "", "t-fuzz-missing", "products", "*", "a,b", "UPPER"]),
    client_id=STRING,
)


@settings(FUZZ, max_examples=40)
@given(req=st.one_of(VALID_SHAPE, VALID_SHAPE, ANY_SHAPE))
def test_fuzz_search_on_real_opensearch(sidecar, req):
    sc, channel, _ = sidecar
    filters = req.filters
    code, details, resp, s = _call(channel, "/fashion_rerank.v1.Reranker/Search", req, reranker_pb2.SearchResponse)
    if req.ByteSize() > sc.settings.max_message_bytes:  # gRPC's own answer to an oversized message (reranker.status)
        _check(code, details, s, {grpc.StatusCode.RESOURCE_EXHAUSTED}, "Search over max_message_bytes")
        return
    _check(code, details, s, SEARCH_CODES, "Search")
    if code == OK:
        wanted: dict[str, set[str]] = {}
        for f in filters:
            wanted.setdefault(f.field, set()).update(f.values)
        for hit in resp.hits:
            for field, values in wanted.items():
                assert getattr(hit.product, field) in values, (field, values, hit.product)
        assert all(math.isfinite(h.rerank_score) for h in resp.hits)


def _document(products):
    product = st.sampled_from(products).map(
        lambda p: reranker_pb2.Product(title=p.title, **{k: v for k, v in p.attributes.items() if k in ATTRIBUTE_FIELDS})
    )
    return st.one_of(
        STRING.map(lambda t: reranker_pb2.Document(id="t", text=t)),
        product.map(lambda p: reranker_pb2.Document(id="p", product=p)),
        st.builds(
            lambda t: reranker_pb2.Document(id="odd", product=reranker_pb2.Product(title=t, colour=t, description=t)), STRING
        ),
    )


@FUZZ
@given(data=st.data(), query=STRING, top_n=NUMBER)
def test_fuzz_rerank_with_the_real_tokenizer(sidecar, fuzz_index, data, query, top_n):
    _, channel, _ = sidecar
    docs = data.draw(st.lists(_document(fuzz_index[1]), max_size=6))
    req = reranker_pb2.RerankRequest(query=query, documents=docs, top_n=top_n, return_text=True)
    code, details, resp, s = _call(channel, "/fashion_rerank.v1.Reranker/Rerank", req, reranker_pb2.RerankResponse)
    _check(code, details, s, RERANK_CODES, "Rerank")
    if code == OK:
        assert len(resp.results) == (min(len(docs), top_n) if top_n else len(docs))
        assert all(0.0 <= r.score <= 1.0 and math.isfinite(r.logit) for r in resp.results)


@FUZZ
@given(query=STRING, texts=st.lists(STRING, max_size=6), truncate=st.booleans(), direction=st.sampled_from([0, 1, 5]))
def test_fuzz_tei_rerank_with_the_real_tokenizer(sidecar, query, texts, truncate, direction):
    _, channel, _ = sidecar
    req = tei_pb2.RerankRequest(query=query, texts=texts, truncate=truncate, truncation_direction=direction, return_text=True)
    code, details, resp, s = _call(channel, "/tei.v1.Rerank/Rerank", req, tei_pb2.RerankResponse)
    _check(code, details, s, RERANK_CODES, "tei.Rerank")
    if code == OK:
        assert sorted(r.index for r in resp.ranks) == list(range(len(texts)))
        assert all(r.text == texts[r.index] for r in resp.ranks)


@FUZZ
@given(
    path=st.sampled_from(["/v1/rerank", "/rerank"]),
    query=STRING,
    texts=st.lists(st.one_of(STRING, st.none()), min_size=1, max_size=6),
    truncate=st.booleans(),
)
def test_fuzz_http_with_the_real_model(sidecar, path, query, texts, truncate):
    _, _, http = sidecar
    body = (
        {"query": query, "documents": texts} if path == "/v1/rerank" else {"query": query, "texts": texts, "truncate": truncate}
    )
    req = urllib.request.Request(http.url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        status, answer = err.code, json.loads(err.read())
    event(f"{path} {status}")
    assert status in (200, 400, 413), (status, answer)
    if status == 200:
        scores = [r["score"] for r in answer] if path == "/rerank" else [r["relevance_score"] for r in answer["results"]]
        assert len(scores) == len(texts) and all(math.isfinite(x) for x in scores)
