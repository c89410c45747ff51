"""Search's document cache against the real OpenSearch node, the real indexer and the real models.

The index is built by the indexer (`run_index`, which writes each product's `source_hash`) from real Myntra rows;
Search asks its kNN request for that hash only and reads `_source` for the products it has not seen
(`reranker.documents`). Each test compares a sidecar with the cache against one without it (every candidate's
`_source` from the kNN answer) and reads the sidecar's `search_documents_total` counters.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid

import pytest

from fashion_rerank.embedding import EmbeddingCache, load_bi_encoder
from fashion_rerank.settings import OpenSearchSettings, ServeSettings
from indexer.catalogs import read_myntra
from indexer.index import managed_indices
from indexer.run import run_index
from reranker.client import RerankerClient

N = 60
QUERIES = ["red dress for women", "black sports shoes", "blue denim jeans", "white cotton shirt for men"]


def _rows(n: int) -> list[dict]:
    return [{"id": p.id, "title": p.title, **dict(p.attributes)} for p in read_myntra(limit=n).products]


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _documents(port: int) -> dict[str, float]:
    """search_documents_total by source, scraped from the sidecar's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {"cache": 0.0, "fetched": 0.0, "source": 0.0, "gone": 0.0}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "fashion_rerank_search_documents_total":
                out[s.labels["source"]] = s.value
    return out


def _answer(resp) -> list[tuple]:
    """What a shopper sees of a Search: ids in order, scores, and the product fields."""
    return [(h.id, round(h.rerank_logit, 4), round(h.retrieval_score, 5), h.product.title, h.product.colour) for h in resp.hits]


@pytest.fixture(scope="module")
def encoder():
    return load_bi_encoder()


@pytest.fixture
def catalog(os_client, encoder, tmp_path):
    """(alias, catalog path, rows, embedding cache): N real products indexed by the indexer behind a fresh alias."""
    alias = f"t-docs-{uuid.uuid4().hex[:8]}"
    rows = _rows(N)
    path = tmp_path / "catalog.jsonl"
    _write(path, rows)
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    run_index(str(path), alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    yield alias, path, rows, cache
    for name in managed_indices(os_client, alias):
        os_client.indices.delete(index=name, ignore_unavailable=True)


def _pair(trained_registry, opensearch_url, alias: str, indices: str = ""):
    """(with the document cache, without it) sidecars reading `alias` (and `indices`, the allow-list)."""
    from reranker.serve import Sidecar

    out = []
    for entries in (100_000, 0):
        s = ServeSettings(
            grpc_port=0,
            metrics_port=0,
            http_port=0,
            threads=1,
            querylog_path=None,
            querylog_index=None,
            rerank_budget_ms=60_000,
            score_cache_entries=0,
            document_cache_entries=entries,
            search_indices=indices,
        )
        sc = Sidecar(s, trained_registry, OpenSearchSettings(url=opensearch_url, index_alias=alias, timeout_s=10))
        sc.start()
        out.append(sc)
    return out


@pytest.fixture
def sidecars(trained_registry, opensearch_url, catalog):
    """(with the document cache, without it): two started sidecars on the catalog's alias."""
    out = _pair(trained_registry, opensearch_url, catalog[0])
    yield out
    for sc in out:
        sc.stop(1.0)


def _search_all(sc, top_k: int = N, top_n: int = 10) -> list[list[tuple]]:
    with RerankerClient(sc.target, timeout=120) as c:
        return [_answer(c.search(q, top_k=top_k, top_n=top_n)) for q in QUERIES]


def test_search_reads_each_document_once_and_answers_as_from_source(sidecars):
    cached, plain = sidecars
    first = _search_all(cached)
    after_first = _documents(cached.metrics_port)
    # every candidate of the first round was read by hash (some products come back for several queries)
    assert after_first["source"] == 0 and after_first["gone"] == 0
    assert after_first["fetched"] == N and after_first["cache"] == len(QUERIES) * N - N
    second = _search_all(cached)
    after_second = _documents(cached.metrics_port)
    assert after_second["fetched"] == N  # nothing read again
    assert after_second["cache"] == after_first["cache"] + len(QUERIES) * N

    reference = _search_all(plain)
    assert _documents(plain.metrics_port)["source"] == len(QUERIES) * N
    assert _documents(plain.metrics_port)["cache"] == 0
    assert first == second == reference
    assert all(len(a) == 10 for a in first)


def test_a_changed_or_deleted_product_is_never_served_from_the_cache(sidecars, catalog, os_client, encoder, tmp_path):
    cached, plain = sidecars
    alias, path, rows, cache = catalog
    with RerankerClient(cached.target, timeout=120) as c:
        before = {h.id: h.product for h in c.search(QUERIES[0], top_k=N, top_n=N).hits}
    assert len(before) == N
    changed, removed = rows[5], rows[11]
    changed["title"] = changed["title"] + " With Pockets"
    changed["colour"] = "Magenta"
    rows2 = [r for r in rows if r is not removed]
    _write(path, rows2)
    inc = run_index(str(path), incremental=True, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    assert (inc.indexed, inc.deleted) == (1, 1)

    with RerankerClient(cached.target, timeout=120) as c:
        after = {h.id: h.product for h in c.search(QUERIES[0], top_k=N, top_n=N).hits}
    assert removed["id"] not in after and len(after) == N - 1
    assert after[changed["id"]].title.endswith("With Pockets")
    assert after[changed["id"]].colour == "Magenta"
    # only the changed product was read again; everything else came from the cache
    docs = _documents(cached.metrics_port)
    assert docs["fetched"] == N + 1 and docs["gone"] == 0
    assert _search_all(cached) == _search_all(plain)


def test_a_document_without_the_hash_field_makes_search_read_source(sidecars, catalog, os_client, encoder, caplog):
    cached, plain = sidecars
    alias = catalog[0]
    # a product written by someone else, without the indexer's source_hash: a copy of one with a new id
    src = os_client.search(index=alias, body={"size": 1, "query": {"term": {"product_id": catalog[2][0]["id"]}}})
    doc = dict(src["hits"]["hits"][0]["_source"])
    doc.pop("source_hash")
    doc["product_id"] = "stranger-1"
    doc["embedding"] = encoder.encode([doc["rerank_text"]])[0].tolist()  # the indexer keeps vectors out of _source
    os_client.index(index=alias, id="stranger-1", body=doc, refresh=True)

    with caplog.at_level(logging.WARNING, logger="reranker.search"):
        answers = _search_all(cached, top_k=N + 1)
    assert any("by its hash field 'source_hash'" in r.getMessage() for r in caplog.records)
    docs = _documents(cached.metrics_port)
    # every Search was answered from the kNN answer's _source, the first after one doc-values-only kNN request
    assert docs["source"] == len(QUERIES) * (N + 1) and docs["fetched"] == 0
    assert answers == _search_all(plain, top_k=N + 1)
    with RerankerClient(cached.target, timeout=120) as c:
        ids = [h.id for h in c.search(QUERIES[0], top_k=N + 1, top_n=N + 1).hits]
    assert "stranger-1" in ids


def _copies(os_client, alias: str, encoder, n: int) -> list[dict]:
    """The first `n` documents of `alias` with their vectors (the indexer keeps vectors out of `_source`)."""
    hits = os_client.search(index=alias, body={"size": n, "sort": [{"product_id": "asc"}]})["hits"]["hits"]
    vectors = encoder.encode([h["_source"]["rerank_text"] for h in hits])
    return [{**h["_source"], "embedding": v.tolist()} for h, v in zip(hits, vectors)]


def _index(os_client, name: str, docs: list[dict], ids: list[str], dimension: int, hash_mapping: dict | None = None):
    props = {
        "embedding": {
            "type": "knn_vector",
            "dimension": dimension,
            "method": {"name": "hnsw", "space_type": "innerproduct", "engine": "lucene"},
        },
        "product_id": {"type": "keyword"},
        "source_hash": hash_mapping or {"type": "keyword"},
    }
    os_client.indices.create(
        index=name, body={"settings": {"index": {"knn": True, "number_of_replicas": 0}}, "mappings": {"properties": props}}
    )
    for doc_id, doc in zip(ids, docs):
        os_client.index(index=name, id=doc_id, body=doc)
    os_client.indices.refresh(index=name)


@pytest.fixture
def own_indices(os_client):
    made: list[str] = []
    yield made
    for name in made:
        os_client.indices.delete(index=name, ignore_unavailable=True)


def _ids(sc, index: str = "", top_k: int = 30) -> list[list[tuple]]:
    with RerankerClient(sc.target, timeout=120) as c:
        return [[(h.id, h.product.title) for h in c.search(q, top_k=top_k, top_n=top_k, index=index).hits] for q in QUERIES]


def test_equal_hashes_in_two_indices_keep_each_index_own_documents(
    trained_registry, opensearch_url, catalog, os_client, encoder, own_indices
):
    docs = _copies(os_client, catalog[0], encoder, 20)
    base = f"t-docs-two-{uuid.uuid4().hex[:6]}"
    a, b, alias = f"{base}-a", f"{base}-b", f"{base}-alias"
    own_indices += [a, b]
    # the same products and hashes in both indices, under other ids in b; one alias over both
    _index(os_client, a, docs[:10], [f"a-{d['product_id']}" for d in docs[:10]], encoder.dimension)
    _index(os_client, b, docs, [f"b-{d['product_id']}" for d in docs], encoder.dimension)
    os_client.indices.put_alias(index=[a, b], name=alias)
    cached, plain = _pair(trained_registry, opensearch_url, alias, indices=f"{alias},{a},{b}")
    try:
        assert _ids(cached) == _ids(plain)  # 30 hits: every copy in a and in b, each with its own id
        assert _ids(cached, index=b) == _ids(plain, index=b)
        assert all(i.startswith("b-") for row in _ids(cached, index=b) for i, _ in row)
        assert _ids(cached, index=a, top_k=10) == _ids(plain, index=a, top_k=10)
        assert _documents(cached.metrics_port)["gone"] == 0 and _documents(cached.metrics_port)["source"] == 0
    finally:
        for sc in (cached, plain):
            sc.stop(1.0)


@pytest.mark.parametrize("case", ["text", "no_doc_values", "shared", "several"])
def test_a_hash_field_that_cannot_identify_documents_makes_search_read_source(
    trained_registry, opensearch_url, catalog, os_client, encoder, own_indices, case
):
    docs = _copies(os_client, catalog[0], encoder, 12)
    name = f"t-docs-{case.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    own_indices.append(name)
    mapping = {"text": {"type": "text"}, "no_doc_values": {"type": "keyword", "doc_values": False}}.get(case)
    if case == "shared":  # a hash of the content only: two products with the same text share it
        for d in docs:
            d["source_hash"] = d["text_hash"]
        docs[1] = {**docs[0], "product_id": docs[1]["product_id"]}
    if case == "several":
        for d in docs:
            d["source_hash"] = [d["source_hash"], "a-shared-value"]
    _index(os_client, name, docs, [d["product_id"] for d in docs], encoder.dimension, mapping)
    cached, plain = _pair(trained_registry, opensearch_url, name)
    try:
        assert _ids(cached, top_k=12) == _ids(plain, top_k=12)
        got = _documents(cached.metrics_port)
        assert got["source"] == len(QUERIES) * 12 and got["cache"] == 0 and got["gone"] == 0
    finally:
        for sc in (cached, plain):
            sc.stop(1.0)
