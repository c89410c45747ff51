"""The HTTP front (`reranker.http`) on the fake backend, in-process through FastAPI's TestClient: no model,
no OpenSearch, no socket (one test starts the real uvicorn thread on a free port).

Scores are checked against the fake model itself: a Cohere `relevance_score` is
`f32(sigmoid(fake_logit(query, document)))`, a TEI raw score `f32(fake_logit(...))`.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fashion_rerank.registry import ModelRegistry
from fashion_rerank.scores import sigmoid
from fashion_rerank.settings import ModelSettings, ServeSettings
from reranker.backends.fake import FAIL_MARKER, NAN_MARKER, FakeBackend, fake_logit
from reranker.core import ScoreResult, ScoringCore
from reranker.errors import InvalidInputError
from reranker.http import (
    DEFAULT_MAX_BODY_BYTES,
    HttpError,
    cohere_documents,
    create_app,
    f32,
    start_http_front,
    tei_texts,
    truncate_words,
)
from reranker.metrics import Metrics

from .conftest import promote_new

DOCS = [
    "red summer dress | Dresses | Red",
    {"text": "blue denim jeans | Jeans | Blue"},
    "red leather bag | Handbags | Red",
    "black leather boots | Shoes | Black",
]
TEXTS = [d if isinstance(d, str) else d["text"] for d in DOCS]
QUERY = "red dress"


def served(query: str, texts: list[str]) -> list[float]:
    """What the front answers as Cohere relevance scores for `texts` (the fake model's sigmoid, float32)."""
    logits = np.asarray([fake_logit(query, t) for t in texts], np.float32)
    return [f32(s) for s in sigmoid(logits)]


def best_first(values: list[float]) -> list[int]:
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


class Front:
    """A started ScoringCore on FakeBackends, the app over it, and a TestClient of the app."""

    def __init__(self, registry: ModelRegistry, loader=None, metrics: Metrics | None = None, **settings):
        self.settings = ServeSettings(threads=1, registry_poll_s=0.05, **settings)
        self.core = ScoringCore(self.settings, registry, loader=loader or (lambda version, path: FakeBackend(version)))
        self.core.start()
        self.metrics = metrics
        self.app = create_app(self.core, self.settings, metrics)
        self.client = TestClient(self.app)

    def close(self) -> None:
        self.client.close()
        self.core.stop(1.0)


@pytest.fixture
def make_front(tmp_path):
    """`make_front(registry=None, loader=None, metrics=None, **serve_settings) -> Front` (a promoted fake model by default)."""
    fronts: list[Front] = []

    def make(registry: ModelRegistry | None = None, **kw) -> Front:
        if registry is None:
            registry = ModelRegistry(tmp_path / "models", "m")
            promote_new(registry)
        front = Front(registry, **kw)
        fronts.append(front)
        return front

    yield make
    for f in fronts:
        f.close()


@pytest.fixture
def front(make_front) -> Front:
    return make_front(max_documents=10, max_text_chars=200, http_max_body_bytes=2_000)


@pytest.fixture
def client(front) -> TestClient:
    return front.client


# ------------------------------------------------------------------------------------ happy paths


def test_cohere_rerank_answers_every_document_best_first_with_the_model_scores(client, front):
    r = client.post("/v1/rerank", json={"model": "anything", "query": QUERY, "documents": DOCS, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    uuid.UUID(body["id"])
    assert list(body) == ["id", "results", "meta"]
    assert body["meta"] == {
        "api_version": {"version": "1"},
        "billed_units": {"search_units": 1},
        "model": ModelSettings().name,
        "model_version": front.core.model_version,
    }
    expected = served(QUERY, TEXTS)
    assert [x["index"] for x in body["results"]] == best_first(expected)
    for x in body["results"]:
        assert list(x) == ["index", "relevance_score", "document"]
        assert x["relevance_score"] == expected[x["index"]]
        assert x["document"] == {"text": TEXTS[x["index"]]}
    assert r.headers["x-model-version"] == front.core.model_version
    assert int(r.headers["x-compute-tokens"]) > 0
    for name in ("x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time"):
        assert float(r.headers[name]) >= 0.0


def test_cohere_v2_top_n_cuts_and_documents_are_left_out_by_default(client):
    docs = ["red dress", "blue jeans", "red bag", "dress red", "green hat"]
    r = client.post("/v2/rerank", json={"query": QUERY, "documents": docs, "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["api_version"] == {"version": "2"}
    expected = served(QUERY, docs)
    assert [x["index"] for x in body["results"]] == best_first(expected)[:2]
    assert all(set(x) == {"index", "relevance_score"} for x in body["results"])
    whole = client.post("/v2/rerank", json={"query": QUERY, "documents": docs, "top_n": 50}).json()["results"]
    assert len(whole) == len(docs)


def test_null_and_textless_documents_are_scored_as_empty(client):
    docs = ["", None, {}, {"text": None}, {"text": "red dress", "id": 7}]
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "return_documents": None})
    assert r.status_code == 200, r.text
    by_index = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    assert by_index == dict(enumerate(served(QUERY, ["", "", "", "", "red dress"])))


def test_max_tokens_per_doc_cuts_documents_to_that_many_words(client):
    doc = "blue denim jeans red dress"
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": [doc], "max_tokens_per_doc": 3, "return_documents": True})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["relevance_score"] == served(QUERY, ["blue denim jeans"])[0]
    assert result["document"] == {"text": doc}  # the text as sent, not the cut one


def test_tei_rerank_answers_a_bare_array_of_scores_or_logits(client, front):
    r = client.post("/rerank", json={"query": QUERY, "texts": TEXTS + [None], "return_text": True, "truncate": True})
    assert r.status_code == 200, r.text
    ranks = r.json()
    expected = served(QUERY, TEXTS + [""])
    assert [x["index"] for x in ranks] == best_first(expected)
    for x in ranks:
        assert list(x) == ["index", "score", "text"]
        assert x["score"] == expected[x["index"]]
        assert x["text"] == (TEXTS + [""])[x["index"]]
    assert r.headers["x-model-version"] == front.core.model_version

    raw = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    logits = [f32(fake_logit(QUERY, t)) for t in TEXTS]
    assert [x["index"] for x in raw] == best_first(logits)
    assert all(set(x) == {"index", "score"} and x["score"] == logits[x["index"]] for x in raw)


def test_tei_truncation_direction_picks_the_end_kept(make_front):
    """The fake model reads `room` document words after 3 special tokens and the 2 query words."""
    room = max(5, getattr(FakeBackend("probe"), "min_document_tokens", 1))
    front = make_front(loader=lambda version, path: FakeBackend(version, max_length=3 + 2 + room))
    words = ["red", "dress"] + [f"w{i}" for i in range(2 * room)]
    right, left = " ".join(words[:room]), " ".join(words[-room:])
    kept = {"Right": right, "right": right, "Left": left, "left": left, None: right}
    for direction, expected in kept.items():
        body = {"query": QUERY, "texts": [" ".join(words)], "truncation_direction": direction, "truncate": True}
        r = front.client.post("/rerank", json=body)
        assert r.status_code == 200, r.text
        assert r.json()[0]["score"] == served(QUERY, [expected])[0], direction
    assert served(QUERY, [right]) != served(QUERY, [left])


def test_health_and_models(client, front):
    version = front.core.model_version
    h = client.get("/health")
    assert h.status_code == 200
    assert h.json() == {"status": "ok", "model": ModelSettings().name, "model_version": version}
    m = client.get("/v1/models")
    assert m.status_code == 200
    assert m.json() == {
        "object": "list",
        "data": [{"id": ModelSettings().name, "object": "model", "version": version, "owned_by": "fashion-rerank"}],
    }


def test_no_docs_pages_but_the_openapi_document_is_published_and_checked_in(client):
    for path in ("/docs", "/redoc"):
        assert client.get(path).status_code == 404
    live = client.get("/openapi.json")  # open like /health: a schema, no data
    assert live.status_code == 200
    from pathlib import Path

    from reranker.http.openapi import openapi_document, render

    checked_in = (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text()
    assert render(live.json()) == render(openapi_document()) == checked_in, (
        "docs/openapi.json is stale: python -m reranker.http.openapi docs/openapi.json"
    )


def test_the_openapi_document_describes_request_and_response_bodies(front):
    doc = front.app.openapi()
    schemas = doc["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    cohere = doc["paths"]["/v1/rerank"]["post"]
    request = resolve(cohere["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["required"]) == {"query", "documents"}
    assert {"query", "documents", "top_n", "max_tokens_per_doc", "return_documents", "model"} <= set(request["properties"])
    assert all(p.get("description") for p in request["properties"].values())
    item_refs = [s.get("$ref", s.get("type")) for s in request["properties"]["documents"]["items"]["anyOf"]]
    assert item_refs == ["string", "#/components/schemas/DocumentObject", "null"]
    assert "DocumentObject" in schemas
    response = resolve(cohere["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(response["properties"]) == {"id", "results", "meta"}
    for status in ("400", "401", "413", "429", "500", "503", "504"):
        assert resolve(cohere["responses"][status]["content"]["application/json"]["schema"])["required"] == ["message"]
    tei = doc["paths"]["/rerank"]["post"]
    assert resolve(tei["requestBody"]["content"]["application/json"]["schema"])["required"] == ["query", "texts"]
    assert tei["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert set(resolve(tei["responses"]["429"]["content"]["application/json"]["schema"])["required"]) == {"error", "error_type"}
    assert {"/v2/rerank", "/health", "/v1/models"} <= set(doc["paths"])


# ----------------------------------------------------------------------------------- 400 answers


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/v1/rerank", {"documents": ["a"]}, "query: required, must be a string"),
        ("/v1/rerank", {"query": None, "documents": ["a"]}, "query: required, must be a string"),
        ("/v1/rerank", {"query": 3, "documents": ["a"]}, "query: must be a string, got int"),
        ("/v1/rerank", {"query": "   ", "documents": ["a"]}, "query: must not be empty"),
        ("/v1/rerank", {"query": "q"}, 'documents: required, must be a list of strings or {"text": ...} objects'),
        ("/v1/rerank", {"query": "q", "documents": "a"}, "documents: must be a list, got str"),
        ("/v1/rerank", {"query": "q", "documents": {"text": "a"}}, "documents: must be a list, got dict"),
        ("/v1/rerank", {"query": "q", "documents": []}, "documents: must not be empty"),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a", "b", "c", 7]},
            'documents[3]: must be a string or {"text": ...}, got int',
        ),
        ("/v1/rerank", {"query": "q", "documents": ["a", [1]]}, 'documents[1]: must be a string or {"text": ...}, got list'),
        ("/v1/rerank", {"query": "q", "documents": ["a", {"text": 5}]}, "documents[1].text: must be a string, got int"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "top_n: must be a positive integer, got 0"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": True}, "top_n: must be a positive integer, got True"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 2.0}, "top_n: must be a positive integer, got 2.0"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": "3"}, "top_n: must be a positive integer, got '3'"),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "max_tokens_per_doc": -1},
            "max_tokens_per_doc: must be a positive integer, got -1",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "return_documents": "yes"},
            "return_documents: must be true or false, got 'yes'",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "return_documents": 1},
            "return_documents: must be true or false, got 1",
        ),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "model": 5}, "model: must be a string, got int"),
        # the first bad field in the order query, documents, top_n, max_tokens_per_doc, return_documents, model
        ("/v1/rerank", {"query": 3, "documents": 4, "top_n": 0}, "query: must be a string, got int"),
        ("/v1/rerank", {"query": "q", "documents": [7], "top_n": 0}, 'documents[0]: must be a string or {"text": ...}, got int'),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "return_documents": "x", "model": 3},
            "return_documents: must be true or false, got 'x'",
        ),
        ("/rerank", {"texts": ["a"]}, "query: required, must be a string"),
        ("/rerank", {"query": "q"}, "texts: required, must be a list of strings"),
        ("/rerank", {"query": "q", "texts": "a"}, "texts: must be a list, got str"),
        ("/rerank", {"query": "q", "texts": []}, "texts: must not be empty"),
        ("/rerank", {"query": "q", "texts": ["a", 3]}, "texts[1]: must be a string, got int"),
        ("/rerank", {"query": "q", "texts": ["a", {"text": "b"}]}, "texts[1]: must be a string, got dict"),
        ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "y"}, "raw_scores: must be true or false, got 'y'"),
        ("/rerank", {"query": "q", "texts": ["a"], "return_text": 0}, "return_text: must be true or false, got 0"),
        ("/rerank", {"query": "q", "texts": ["a"], "truncate": "no"}, "truncate: must be true or false, got 'no'"),
        (
            "/rerank",
            {"query": "q", "texts": ["a"], "truncation_direction": "Up"},
            'truncation_direction: must be "Left" or "Right", got \'Up\'',
        ),
        (
            "/rerank",
            {"query": "q", "texts": ["a"], "truncation_direction": 5},
            'truncation_direction: must be "Left" or "Right", got 5',
        ),
    ],
)
def test_a_bad_field_is_a_400_that_names_it(client, path, body, message):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    if path == "/rerank":
        assert r.json() == {"error": message, "error_type": "validation"}
    else:
        assert r.json() == {"message": message}
    assert "retry-after" not in r.headers


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            b"{not json",
            "request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b"", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff\xfe", "request body is not valid JSON: "),
        (b"[1, 2]", "request body must be a JSON object, got list"),
        (b"null", "request body must be a JSON object, got NoneType"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, path, raw, message):
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    got = r.json()["message"] if path != "/rerank" else r.json()["error"]
    assert got.startswith(message) if message.endswith(": ") else got == message


@pytest.mark.parametrize(
    "header, message",
    [
        ("soon", "X-Request-Timeout-Ms: must be a number of milliseconds, got 'soon'"),
        ("0", "X-Request-Timeout-Ms: must be positive, got '0'"),
        ("-5", "X-Request-Timeout-Ms: must be positive, got '-5'"),
        ("nan", "X-Request-Timeout-Ms: must be positive, got 'nan'"),
        ("inf", "X-Request-Timeout-Ms: must be positive, got 'inf'"),
    ],
)
def test_a_bad_timeout_header_is_a_400(client, header, message):
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"X-Request-Timeout-Ms": header})
    assert r.status_code == 400 and r.json() == {"message": message}


def test_fields_are_checked_before_the_timeout_header(client):
    r = client.post("/v1/rerank", json={"query": ""}, headers={"X-Request-Timeout-Ms": "soon"})
    assert r.json() == {"message": "query: must not be empty"}


# ----------------------------------------------------------------------------------- 413 answers


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/v1/rerank", {"query": "q", "documents": ["a"] * 11}, "11 documents in one request; the limit is 10"),
        ("/rerank", {"query": "q", "texts": ["a"] * 11}, "11 documents in one request; the limit is 10"),
        ("/v1/rerank", {"query": "q", "documents": ["a", "x" * 201]}, "document 1 has 201 characters; the limit is 200"),
        ("/v1/rerank", {"query": "q" * 201, "documents": ["a"]}, "query has 201 characters; the limit is 200"),
    ],
)
def test_too_many_documents_or_too_long_a_text_is_a_413(client, path, body, message):
    r = client.post(path, json=body)
    assert r.status_code == 413, r.text
    assert r.json() == ({"error": message, "error_type": "validation"} if path == "/rerank" else {"message": message})


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(client):
    big = b'{"query": "q", "documents": ["' + b"x" * 2_100 + b'"]}'
    r = client.post("/v1/rerank", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"message": f"request body is {len(big)} bytes, more than the limit of 2000"}

    def chunks():  # no Content-Length: refused while reading
        yield big[:1_000]
        yield big[1_000:]

    r = client.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "request body is more than the limit of 2000 bytes", "error_type": "validation"}


def test_without_settings_the_defaults_apply(make_front):
    front = make_front()
    app = create_app(front.core)  # no settings: no auth, TEI's 2 MB body limit, no default deadline
    with TestClient(app) as c:
        assert c.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
        r = c.post(
            "/v1/rerank", content=b"{" + b" " * DEFAULT_MAX_BODY_BYTES + b"}", headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "limit of 2000000" in r.json()["message"]


# ----------------------------------------------------------------------------------- 401 answers


def test_bearer_token(make_front):
    front = make_front(http_api_key="s3cret")
    c = front.client
    body = {"query": "q", "documents": ["a"]}
    message = "missing or invalid bearer token (Authorization: Bearer <FR_SERVE_HTTP_API_KEY>)"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic s3cret"},
        {"Authorization": "s3cret"},
        {"Authorization": "Bearer"},
    ):
        r = c.post("/v1/rerank", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
        assert r.json() == {"message": message}
    r = c.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 401 and r.json() == {"error": message, "error_type": "unauthorized"}
    # the token comes before anything else: a bad body without a token is still a 401
    assert c.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"}).status_code == 401
    assert c.get("/v1/models").status_code == 401
    for headers in ({"Authorization": "Bearer s3cret"}, {"Authorization": "bearer  s3cret "}):
        assert c.post("/v1/rerank", json=body, headers=headers).status_code == 200, headers
    assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/health").status_code == 200  # probes need no token


def test_an_empty_api_key_means_no_auth(make_front):
    front = make_front(http_api_key="")
    assert front.client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200


# ------------------------------------------------------------------------------ 429, 503, 504, 500


class GatedBackend(FakeBackend):
    """A FakeBackend whose forward pass waits for `gate` (holds the worker busy on demand)."""

    def __init__(self, version: str, gate: threading.Event):
        super().__init__(version)
        self.gate = gate

    def run(self, encoded, indices):
        self.gate.wait(10)
        return super().run(encoded, indices)


def test_a_full_queue_is_a_429_with_retry_after(make_front):
    gate = threading.Event()
    front = make_front(loader=lambda version, path: GatedBackend(version, gate), queue_pairs=4, max_documents=4)
    core = front.core
    try:
        busy = core.submit("q", ["a1", "a2", "a3", "a4"], front="test")  # the worker takes it and waits
        end = time.monotonic() + 5
        while not (core.busy and core.queue_depth() == (0, 0)) and time.monotonic() < end:
            time.sleep(0.005)
        waiting = core.submit("q", ["b1", "b2", "b3", "b4"], front="test")  # fills the queue
        r = front.client.post("/v1/rerank", json={"query": "q", "documents": ["c"]})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json() == {"message": "scoring queue is full (4 pairs waiting, limit 4); retry later"}
        t = front.client.post("/rerank", json={"query": "q", "texts": ["c"]})
        assert t.status_code == 429 and t.headers["retry-after"] == "1" and t.json()["error_type"] == "overloaded"
    finally:
        gate.set()
    busy.result(5)
    waiting.result(5)


def test_no_model_is_a_503_with_retry_after(make_front, tmp_path):
    front = make_front(registry=ModelRegistry(tmp_path / "empty", "m"))
    r = front.client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["message"].startswith("no cross-encoder is promoted in ")
    t = front.client.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert t.status_code == 503 and t.json()["error_type"] == "unhealthy"
    h = front.client.get("/health")
    assert h.status_code == 503 and h.json() == {"status": "no model loaded"} and "retry-after" not in h.headers
    assert front.client.get("/v1/models").json() == {"object": "list", "data": []}


def test_a_passed_deadline_is_a_504(client):
    r = client.post(
        "/v1/rerank", json={"query": "q", "documents": ["deadline test"]}, headers={"X-Request-Timeout-Ms": "0.000001"}
    )
    assert r.status_code == 504, r.text
    t = client.post("/rerank", json={"query": "q", "texts": ["deadline test"]}, headers={"X-Request-Timeout-Ms": "0.000001"})
    assert t.status_code == 504 and t.json()["error_type"] == "timeout"
    assert "retry-after" not in r.headers


@pytest.mark.parametrize(
    "marker, message",
    [
        (FAIL_MARKER, "the model failed on this batch: fake backend failure (FAIL_MARKER in a document)"),
        (NAN_MARKER, "the model returned non-finite scores"),
    ],
)
def test_a_backend_failure_is_a_500(client, marker, message):
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a", marker]})
    assert r.status_code == 500 and r.json() == {"message": message}
    assert "retry-after" not in r.headers
    t = client.post("/rerank", json={"query": "q", "texts": [marker]})
    assert t.status_code == 500 and t.json() == {"error": message, "error_type": "backend"}


class StubCore:
    """A core that answers `result` (or raises it) for any request."""

    model_version = "stub-1"

    def __init__(self, result):
        self.result = result

    async def score(self, query, documents, deadline=None, front="grpc", truncate_left=False):
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_an_unexpected_error_is_a_500_without_details():
    with TestClient(create_app(StubCore(ZeroDivisionError("secret detail")))) as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert r.status_code == 500 and r.json() == {"message": "internal error: ZeroDivisionError"}
        t = c.post("/rerank", json={"query": "q", "texts": ["a"]})
        assert t.status_code == 500 and t.json() == {"error": "internal error: ZeroDivisionError", "error_type": "backend"}


def test_fewer_scores_than_documents_is_a_500():
    one = ScoreResult(np.zeros(1, np.float32), np.full(1, 0.5, np.float32), "stub-1", {}, 0)
    with TestClient(create_app(StubCore(one))) as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert r.status_code == 500 and r.json() == {"message": "model returned 1 scores for 2 documents"}


# ------------------------------------------------------------------------------------------ metrics


def test_requests_are_counted_by_route_and_status(make_front):
    metrics = Metrics()
    front = make_front(metrics=metrics)

    def count(route: str, code: str) -> float:
        return (
            metrics.registry.get_sample_value("fashion_rerank_requests_total", {"method": route, "front": "http", "code": code})
            or 0.0
        )

    assert front.client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]}).status_code == 200
    assert front.client.post("/v1/rerank", json={"query": "q"}).status_code == 400
    assert front.client.post("/v2/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
    assert front.client.post("/rerank", json={"query": "q", "texts": ["a"], "raw_scores": 1}).status_code == 400
    assert (count("/v1/rerank", "200"), count("/v1/rerank", "400"), count("/v2/rerank", "200"), count("/rerank", "400")) == (
        1,
        1,
        1,
        1,
    )
    assert metrics.registry.get_sample_value("fashion_rerank_candidates_per_request_sum", {"method": "/v1/rerank"}) == 3
    assert (
        metrics.registry.get_sample_value(
            "fashion_rerank_request_duration_seconds_count", {"method": "/v1/rerank", "front": "http"}
        )
        == 2
    )


# ------------------------------------------------------------------------------ helpers and server


def test_document_and_text_helpers():
    assert cohere_documents(["a", None, {}, {"text": None}, {"text": "b"}]) == ["a", "", "", "", "b"]
    assert tei_texts(["a", None]) == ["a", ""]
    for call, message in [
        (lambda: cohere_documents(None, "docs"), 'docs: required, must be a list of strings or {"text": ...} objects'),
        (lambda: cohere_documents([1.5]), 'documents[0]: must be a string or {"text": ...}, got float'),
        (lambda: cohere_documents(["a", {"text": []}], "docs"), "docs[1].text: must be a string, got list"),
        (lambda: tei_texts(None), "texts: required, must be a list of strings"),
        (lambda: tei_texts([]), "texts: must not be empty"),
        (lambda: tei_texts([True]), "texts[0]: must be a string, got bool"),
    ]:
        with pytest.raises(InvalidInputError) as err:
            call()
        assert str(err.value) == message


def test_f32_and_truncate_words():
    assert f32(0.5073469877243042) == 0.507347
    assert len(repr(f32(0.12345678901234567))) <= 18
    assert truncate_words("a b  c d", None) == "a b  c d"
    assert truncate_words("a b  c d", 2) == "a b"
    assert truncate_words("a b  c", 3) == "a b  c"


def test_http_front_module_re_exports_the_package():
    import reranker.http as package
    import reranker.http_front as module

    for name in package.__all__:
        assert getattr(module, name) is getattr(package, name)
    assert issubclass(HttpError, Exception) and HttpError(401, "m", "unauthorized").status == 401


def test_start_http_front_serves_on_a_free_port(make_front):
    front = make_front()
    settings = front.settings.model_copy(update={"http_port": 0})
    server = start_http_front(front.core, None, settings)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        r = httpx.post(server.url + "/v1/rerank", json={"query": QUERY, "documents": TEXTS}, timeout=10)
        assert r.status_code == 200
        assert [x["index"] for x in r.json()["results"]] == best_first(served(QUERY, TEXTS))
    finally:
        server.stop(1.0)


def test_tls_needs_both_files(make_front, tmp_path):
    front = make_front()
    settings = front.settings.model_copy(update={"http_port": 0, "http_tls_cert": tmp_path / "cert.pem"})
    with pytest.raises(RuntimeError, match="TLS needs both"):
        start_http_front(front.core, None, settings)


def test_tei_truncate_false_refuses_an_over_long_text_as_tei_does(make_front):
    client = make_front().client
    long_text = " ".join(["dress"] * 300)
    r = client.post("/rerank", json={"query": QUERY, "texts": ["short", long_text]})
    assert r.status_code == 413 and r.json()["error_type"] == "validation"
    assert "text 1" in r.json()["error"] and "truncate=true" in r.json()["error"]
    ok = client.post("/rerank", json={"query": QUERY, "texts": ["short", long_text], "truncate": True})
    assert ok.status_code == 200 and len(ok.json()) == 2
