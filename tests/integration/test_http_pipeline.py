"""The HTTP front (Cohere / TEI shapes, errors, metrics) and the OpenSearch search-pipeline install.

Everything is real: the scoring core with a cross-encoder from the model registry, the HTTP front on
a free port (uvicorn), the local OpenSearch node with ml-commons and neural-search, a small products
index built by the project's indexer. Names are unique per run so other tests are not disturbed.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from reranker import pipeline as pi
from reranker.pipeline.cluster import _java_regex_matches

QUERIES = ["red summer dress for women", "black leather shoes for men"]
K = 20


# --------------------------------------------------------------------------------------- fixtures


def _fixture_registry(root: Path):
    """A registry holding one promoted CrossEncoder made from the packaged MiniLM (seeded head, untrained)."""
    import torch
    from sentence_transformers import CrossEncoder

    from fashion_rerank.registry import ModelRegistry
    from fashion_rerank.settings import resolve_model_path

    torch.manual_seed(0)
    reg = ModelRegistry(root, "http-test-ce")
    version, folder = reg.new_version_dir()
    model = CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=128, device="cpu")
    model.save_pretrained(str(folder))
    (folder / "model_card.md").write_text("# test fixture cross-encoder (untrained head)\n")
    (folder / "card.json").write_text(json.dumps({"version": version, "base": "packaged:all-MiniLM-L6-v2", "fixture": True}))
    reg.promote(version, reason="test fixture")
    return reg


@pytest.fixture(scope="module")
def registry(request, tmp_path_factory):
    """The session's trained registry when conftest provides one, else a small fixture model."""
    try:
        return request.getfixturevalue("trained_registry")
    except pytest.FixtureLookupError:
        return _fixture_registry(tmp_path_factory.mktemp("registry"))


class Sidecar:
    """A scoring core + metrics + HTTP front (+ gRPC front when available) on free ports, in-process."""

    def __init__(self, registry, **overrides):
        from fashion_rerank.settings import ServeSettings
        from reranker.core import ScoringCore
        from reranker.http_front import start_http_front
        from reranker.metrics import Metrics

        values = dict(
            threads=1, http_port=0, metrics_port=-1, grpc_port=0, querylog_path="", querylog_index="", score_cache_entries=0
        )
        values.update(overrides)
        self.settings = ServeSettings(**values)
        self.metrics = Metrics()
        self.core = ScoringCore(self.settings, registry, self.metrics)
        self.core.start()
        self.front = start_http_front(self.core, self.metrics, self.settings)
        self.url = self.front.url
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.front.stop(1.0)
            self.core.stop(1.0)
            self.running = False


@pytest.fixture(scope="module")
def sidecar(registry):
    sc = Sidecar(registry)
    yield sc
    sc.stop()


@pytest.fixture(scope="module")
def http(sidecar):
    with httpx.Client(base_url=sidecar.url, timeout=30) as client:
        yield client


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------------- HTTP front


def test_cohere_rerank_shape_sorted_and_complete(http, sidecar):
    docs = ["Red floral cotton summer dress", {"text": "Black leather ankle boots"}, "Blue denim jeans", "Red midi dress"]
    r = http.post("/v1/rerank", json={"model": "anything", "query": "red dress", "documents": docs, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    uuid.UUID(body["id"])
    assert body["meta"]["api_version"]["version"] == "1"
    assert body["meta"]["model_version"] == sidecar.core.model_version == r.headers["x-model-version"]
    results = body["results"]
    assert sorted(x["index"] for x in results) == [0, 1, 2, 3]
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    texts = [d if isinstance(d, str) else d["text"] for d in docs]
    assert all(x["document"]["text"] == texts[x["index"]] for x in results)

    # the same scores as the core computes directly, in the TEI shape as logits
    direct = sidecar.core.submit("red dress", texts, front="test").result(30)
    for x in results:
        assert x["relevance_score"] == pytest.approx(float(direct.scores[x["index"]]), abs=1e-6)
    tei = http.post("/rerank", json={"query": "red dress", "texts": texts, "raw_scores": True, "return_text": True})
    assert tei.status_code == 200, tei.text
    ranks = tei.json()
    assert isinstance(ranks, list) and len(ranks) == 4
    assert [x["index"] for x in ranks] == [x["index"] for x in results]
    for x in ranks:
        assert x["text"] == texts[x["index"]]
        assert _sigmoid(x["score"]) == pytest.approx(float(direct.scores[x["index"]]), abs=1e-6)

    top = http.post("/v2/rerank", json={"query": "red dress", "documents": texts, "top_n": 2}).json()
    assert [x["index"] for x in top["results"]] == [x["index"] for x in results[:2]]
    assert "document" not in top["results"][0] and top["meta"]["api_version"]["version"] == "2"


def test_missing_or_null_document_text_is_scored_as_empty(http):
    r = http.post("/v1/rerank", json={"query": "red dress", "documents": ["", None, {}, {"text": None}, "Red dress"]})
    assert r.status_code == 200, r.text
    by_index = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    assert len(by_index) == 5
    for i in (1, 2, 3):  # same text, same score (up to float noise of padding within a batch)
        assert by_index[i] == pytest.approx(by_index[0], abs=1e-5)
    assert by_index[4] != pytest.approx(by_index[0], abs=1e-5)


def test_health_models_and_metrics_labelled_http(http, sidecar):
    h = http.get("/health")
    assert h.status_code == 200 and h.json()["model_version"] == sidecar.core.model_version
    models = http.get("/v1/models").json()["data"]
    assert models and models[0]["version"] == sidecar.core.model_version

    def count(code: str) -> float:
        return (
            sidecar.metrics.registry.get_sample_value(
                "fashion_rerank_requests_total", {"method": "/v1/rerank", "front": "http", "code": code}
            )
            or 0.0
        )

    ok0, bad0 = count("200"), count("400")
    assert http.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]}).status_code == 200
    assert http.post("/v1/rerank", json={"query": "q"}).status_code == 400
    assert count("200") == ok0 + 1 and count("400") == bad0 + 1
    assert (
        sidecar.metrics.registry.get_sample_value(
            "fashion_rerank_request_duration_seconds_count", {"method": "/v1/rerank", "front": "http"}
        )
        or 0
    ) >= 2


@pytest.mark.parametrize(
    "path, payload, status, needle",
    [
        ("/v1/rerank", b"{not json", 400, "not valid JSON"),
        ("/v1/rerank", [1, 2], 400, "JSON object"),
        ("/v1/rerank", {"documents": ["a"]}, 400, "query"),
        ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 400, "query"),
        ("/v1/rerank", {"query": "q"}, 400, "documents"),
        ("/v1/rerank", {"query": "q", "documents": []}, 400, "documents"),
        ("/v1/rerank", {"query": "q", "documents": ["a", "b", 7]}, 400, "documents[2]"),
        ("/v1/rerank", {"query": "q", "documents": ["a", {"text": 5}]}, 400, "documents[1].text"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "yes"}, 400, "return_documents"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": -1}, 400, "max_tokens_per_doc"),
        ("/rerank", {"query": "q", "texts": ["a", 3]}, 400, "texts[1]"),
        ("/rerank", {"query": "q", "texts": "a"}, 400, "texts"),
        ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "Up"}, 400, "truncation_direction"),
        ("/v1/rerank", {"query": "q", "documents": ["a"] * 1001}, 413, "1001 documents"),
        ("/v1/rerank", {"query": "q", "documents": ["a", "x" * 20_001]}, 413, "document 1"),
        ("/v1/rerank", {"query": "q", "documents": ["x" * 2_100_000]}, 413, "limit"),
        ("/rerank", {"query": "q", "texts": ["a"] * 1001}, 413, "1001 documents"),
    ],
)
def test_http_errors_have_their_status_and_name_the_field(http, path, payload, status, needle):
    if isinstance(payload, bytes):
        r = http.post(path, content=payload, headers={"content-type": "application/json"})
    else:
        r = http.post(path, json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    message = body["message"] if path != "/rerank" else body["error"]
    assert needle in message
    if path == "/rerank":
        assert body["error_type"]


def test_deadline_header_gives_504(http):
    r = http.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 50}, headers={"X-Request-Timeout-Ms": "0.001"})
    assert r.status_code == 504, r.text
    assert (
        http.post("/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"X-Request-Timeout-Ms": "soon"}).status_code
        == 400
    )


def test_no_model_gives_503(tmp_path):
    from fashion_rerank.registry import ModelRegistry

    sc = Sidecar(ModelRegistry(tmp_path, "empty"))
    try:
        with httpx.Client(base_url=sc.url, timeout=10) as c:
            r = c.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
            assert r.status_code == 503 and "no cross-encoder" in r.json()["message"]
            t = c.post("/rerank", json={"query": "q", "texts": ["a"]})
            assert t.status_code == 503 and t.json()["error_type"] == "unhealthy"
            assert c.get("/health").status_code == 503
    finally:
        sc.stop()


def test_queue_full_gives_429(registry):
    """A small queue (50 pairs): while the worker scores one request and another waits, more get 429."""
    sc = Sidecar(registry, queue_pairs=50, max_documents=50, max_batch_pairs=50, sub_batch=5, rerank_budget_ms=120_000)
    try:
        docs = ["a fairly long product description of a red cotton summer dress with floral print " * 4] * 50
        busy = sc.core.submit("red dress", docs, front="test")  # the worker takes this one
        time.sleep(0.2)
        codes: list[int] = []
        lock = threading.Lock()

        def call() -> None:
            with httpx.Client(base_url=sc.url, timeout=60) as c:
                r = c.post("/v1/rerank", json={"query": "red dress", "documents": docs})
                with lock:
                    codes.append(r.status_code)
                    if r.status_code == 429:
                        assert r.headers["retry-after"] == "1" and "queue is full" in r.json()["message"]

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        busy.result(120)
        assert 429 in codes and set(codes) <= {200, 429}, codes
    finally:
        sc.stop()


def test_bearer_token_auth(registry):
    sc = Sidecar(registry, http_api_key="s3cret")
    try:
        with httpx.Client(base_url=sc.url, timeout=30) as c:
            body = {"query": "q", "documents": ["a"]}
            r = c.post("/v1/rerank", json=body)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert c.post("/v1/rerank", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.post("/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
            assert c.get("/health").status_code == 200  # probes need no token
    finally:
        sc.stop()


def test_tls(registry, tmp_path):
    """With a certificate and key the front serves HTTPS only."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    proc = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {proc.stderr[-200:]}")
    sc = Sidecar(registry, http_tls_cert=str(cert), http_tls_key=str(key))
    try:
        assert sc.url.startswith("https://")
        import ssl

        with httpx.Client(base_url=sc.url, timeout=30, verify=ssl.create_default_context(cafile=str(cert))) as c:
            assert c.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.post(sc.url.replace("https", "http") + "/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=5)
    finally:
        sc.stop()


# ------------------------------------------------------------------------------ OpenSearch pipeline


@pytest.fixture(scope="module")
def products(os_client):
    """A ~300-product index (bundled Myntra catalog) behind a unique alias, built by the project's indexer."""
    from indexer.index import managed_indices
    from indexer.run import run_index

    alias = f"t-http-{uuid.uuid4().hex[:8]}"
    summary = run_index("myntra", limit=300, alias=alias, client=os_client, progress=False)
    assert summary.indexed >= 250
    yield alias
    for name in managed_indices(os_client, alias):
        os_client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def encoder():
    from fashion_rerank.embedding import load_bi_encoder

    return load_bi_encoder()


def _knn_body(encoder, query: str) -> dict:
    from fashion_rerank.retrieval import knn_query

    body = knn_query(encoder.encode_query(query), K)
    body["ext"] = {"rerank": {"query_context": {"query_text": query}}}
    return body


def _hits(os_client, alias: str, body: dict, pipeline: str | None = None) -> list[dict]:
    params = {"search_pipeline": pipeline} if pipeline else {}
    return os_client.search(index=alias, body=body, params=params)["hits"]["hits"]


def _snapshot(os_client, alias: str) -> dict:
    """What install/uninstall may touch: cluster settings, pipelines, ml-commons objects, index settings."""
    import warnings

    from opensearchpy.exceptions import NotFoundError

    with warnings.catch_warnings():  # ml-commons' search reads its system indices near-real-time: refresh first
        warnings.simplefilter("ignore")
        os_client.indices.refresh(index=".plugins-ml-*", allow_no_indices=True, ignore_unavailable=True, expand_wildcards="all")
    snap: dict = {"settings": os_client.cluster.get_settings(flat_settings=True)}
    try:
        snap["pipelines"] = os_client.transport.perform_request("GET", "/_search/pipeline")
    except NotFoundError:
        snap["pipelines"] = {}
    for kind in ("connectors", "models", "model_groups"):
        try:
            r = os_client.transport.perform_request(
                "POST", f"/_plugins/_ml/{kind}/_search", body={"query": {"match_all": {}}, "size": 1000}
            )
            snap[kind] = sorted(
                (h["_id"], json.dumps({k: v for k, v in h["_source"].items() if k not in ("last_updated_time",)}, sort_keys=True))
                for h in r["hits"]["hits"]
            )
        except NotFoundError:
            snap[kind] = []
    snap["index_settings"] = os_client.indices.get_settings(index=alias, flat_settings=True)
    snap["state_index"] = os_client.indices.exists(index=pi.STATE_INDEX)
    return snap


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def full_sidecar(registry, encoder):
    """The real sidecar process object (`reranker.serve.Sidecar`: gRPC + HTTP fronts on one core), in-process.

    Only the pipeline tests use it; the fail-open test stops it.
    """
    from fashion_rerank.settings import ServeSettings
    from reranker.serve import Sidecar as ServeSidecar

    settings = ServeSettings(threads=1, grpc_port=0, http_port=_free_port(), metrics_port=-1, querylog_path="", querylog_index="")
    sc = ServeSidecar(settings, registry, encoder=encoder).start()
    assert sc.http_front is not None
    sc.url = sc.http_front.url
    yield sc
    sc.stop(1.0)


@pytest.fixture(scope="module")
def installed(opensearch_ml, os_client, products, full_sidecar):
    """Install a uniquely named pipeline; yields (options, report, snapshot before, snapshot after)."""
    name = f"t-rerank-{uuid.uuid4().hex[:8]}"
    before = _snapshot(os_client, products)
    opts = pi.InstallOptions.from_settings(pipeline=name, reranker_url=full_sidecar.url, index=products, set_default=True)
    lines: list[str] = []
    try:
        report = pi.install_pipeline(os_client, opts, out=lines.append)
    except Exception:
        pi.uninstall_pipeline(os_client, name)
        raise
    after = _snapshot(os_client, products)
    yield opts, report, before, after, lines
    pi.uninstall_pipeline(os_client, name)


def test_http_scores_equal_grpc_scores(full_sidecar):
    """The same (query, document) pairs get the same float32 scores on both fronts of one sidecar."""
    from fashion_rerank.product import rerank_text
    from indexer.catalogs import read_myntra
    from reranker.client import RerankerClient

    texts = [rerank_text(p) for p in read_myntra(limit=40).products]
    with RerankerClient(full_sidecar.target) as g, httpx.Client(base_url=full_sidecar.url, timeout=60) as h:
        for query in QUERIES:
            grpc_resp = g.rerank(query, texts)
            http_resp = h.post("/v1/rerank", json={"query": query, "documents": texts})
            assert http_resp.status_code == 200, http_resp.text
            by_grpc = {r.index: np.float32(r.score) for r in grpc_resp.results}
            by_http = {r["index"]: np.float32(r["relevance_score"]) for r in http_resp.json()["results"]}
            assert len(by_grpc) == len(by_http) == len(texts)
            assert by_http == by_grpc
            assert http_resp.json()["meta"]["model_version"] == grpc_resp.model_version


@pytest.mark.slow
def test_install_reports_every_object(installed):
    opts, report, before, after, lines = installed
    assert report.connector_id and report.model_id and report.model_group_id
    assert len(report.smoke_scores) == 2 and all(0 <= s <= 1 for s in report.smoke_scores)
    statuses = {(s.what, s.name): s.status for s in report.steps}
    assert statuses[("connector", opts.connector_name)] == "created"
    assert statuses[("model", opts.model_name)] == "created"
    assert statuses[("search pipeline", opts.pipeline)] == "created"
    assert statuses[("smoke _predict", opts.model_name)] == "passed"
    assert any(s.what == "cluster setting" and s.name == pi.S_REGEX and s.status in ("set", "already set") for s in report.steps)
    assert len(lines) == len(report.steps)
    assert opts.pipeline in after["pipelines"]
    regexes = after["settings"]["persistent"].get(pi.S_REGEX) or []
    assert any(_java_regex_matches(r, opts.rerank_url) for r in regexes)


@pytest.mark.slow
def test_pipeline_search_is_knn_hits_reordered_by_sidecar_scores(os_client, products, installed, encoder, full_sidecar):
    opts = installed[0]
    for query in QUERIES:
        body = _knn_body(encoder, query)
        plain = _hits(os_client, products, body, pipeline="_none")
        reranked = _hits(os_client, products, body, pipeline=opts.pipeline)
        assert len(plain) == K
        assert sorted(h["_id"] for h in reranked) == sorted(h["_id"] for h in plain)

        # what the sidecar says for this query and these hits (in kNN order, as OpenSearch sends them)
        texts = [h["_source"].get("rerank_text", "") for h in plain]
        with httpx.Client(base_url=full_sidecar.url, timeout=30) as c:
            res = c.post("/v1/rerank", json={"query": query, "documents": texts}).json()["results"]
        score_of = {plain[x["index"]]["_id"]: x["relevance_score"] for x in res}
        got = [h["_score"] for h in reranked]
        assert got == sorted(got, reverse=True)
        for h in reranked:
            assert h["_score"] == pytest.approx(score_of[h["_id"]], abs=1e-5)
        expected = [pid for pid, _ in sorted(score_of.items(), key=lambda kv: -kv[1])]
        assert [h["_id"] for h in reranked] == expected or all(
            math.isclose(score_of[a], score_of[b], abs_tol=1e-6) for a, b in zip([h["_id"] for h in reranked], expected) if a != b
        )
        assert [h["_id"] for h in reranked] != [h["_id"] for h in plain]  # it really reordered

        # the index's default search pipeline (set_default) reranks a plain _search too
        default = _hits(os_client, products, body)
        assert [h["_id"] for h in default] == [h["_id"] for h in reranked]


@pytest.mark.slow
def test_install_twice_changes_nothing(os_client, products, installed):
    opts, report, _before, after, _lines = installed
    again = pi.install_pipeline(os_client, opts)
    assert not again.changed, [s.line() for s in again.steps]
    assert (again.connector_id, again.model_id, again.model_group_id) == (
        report.connector_id,
        report.model_id,
        report.model_group_id,
    )
    now = _snapshot(os_client, products)
    assert now == after, {k: (after[k], now[k]) for k in now if now[k] != after[k]}


@pytest.mark.slow
def test_dry_run_prints_the_bodies_install_sends(installed, capsys):
    from cli.main import main

    opts = installed[0]
    assert (
        main(["opensearch", "install-pipeline", "--dry-run", "--pipeline", opts.pipeline, "--reranker-url", opts.reranker_url])
        == 0
    )
    out = capsys.readouterr().out
    blocks = _request_blocks(out)
    assert blocks["POST /_plugins/_ml/connectors/_create"] == pi.connector_body(opts)
    assert blocks[f"PUT /_search/pipeline/{opts.pipeline}"] == pi.pipeline_body(opts, "<model_id>")


def _request_blocks(text: str) -> dict[str, dict]:
    """`METHOD /path` lines each followed by a JSON body -> {"METHOD /path": body}."""
    blocks: dict[str, dict] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.split(" ")[0] in ("GET", "PUT", "POST", "DELETE") and i + 1 < len(lines) and lines[i + 1].startswith("{"):
            j = i + 1
            buf = []
            while j < len(lines) and lines[j].strip():
                buf.append(lines[j])
                j += 1
            blocks[line.strip()] = json.loads("\n".join(buf))
            i = j
        else:
            i += 1
    return blocks


def test_docs_show_the_bodies_install_sends():
    """docs/opensearch-integration.md holds the dry-run output for the default options, verbatim."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "opensearch-integration.md").read_text()
    opts = pi.InstallOptions.from_settings(
        pipeline="rerank-fashion", reranker_url="http://127.0.0.1:8080", index="products", set_default=True
    )
    blocks = _request_blocks(doc.replace("```json", "").replace("```", ""))
    assert blocks["POST /_plugins/_ml/connectors/_create"] == pi.connector_body(opts)
    assert blocks["PUT /_search/pipeline/rerank-fashion"] == pi.pipeline_body(opts, "<model_id>")
    assert blocks["POST /_plugins/_ml/models/_register?deploy=true"] == pi.model_body(opts, "<connector_id>", "<model_group_id>")
    assert blocks["PUT /products/_settings"] == pi.default_pipeline_body("rerank-fashion")


@pytest.mark.slow
def test_sidecar_down_search_fails_open_to_knn_order(os_client, products, installed, encoder, full_sidecar):
    opts = installed[0]
    body = _knn_body(encoder, QUERIES[0])
    plain = _hits(os_client, products, body, pipeline="_none")
    full_sidecar.stop(1.0)
    reranked = _hits(os_client, products, body, pipeline=opts.pipeline)
    assert [h["_id"] for h in reranked] == [h["_id"] for h in plain]
    assert [h["_score"] for h in reranked] == [h["_score"] for h in plain]


@pytest.mark.slow
def test_uninstall_leaves_the_cluster_as_before(os_client, products, installed):
    opts, _report, before, _after, _lines = installed
    steps = pi.uninstall_pipeline(os_client, opts.pipeline)
    assert {(s.what, s.status) for s in steps} >= {
        ("search pipeline", "removed"),
        ("model", "removed"),
        ("connector", "removed"),
        ("index setting", "restored"),
    }
    now = _snapshot(os_client, products)
    assert now == before, {k: (before[k], now[k]) for k in now if now[k] != before[k]}
    again = pi.uninstall_pipeline(os_client, opts.pipeline)  # twice is harmless
    assert {s.status for s in again} <= {"absent"}
