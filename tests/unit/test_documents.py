"""Search's document cache (`reranker.documents`) and how Search uses it, with a fake OpenSearch client.

The real node is in tests/integration/test_search_documents.py; here: the cache's bounds, and the case the
node cannot be made to show on demand: a product deleted between the kNN answer and the read of its document.
"""

from __future__ import annotations

import numpy as np

from fashion_rerank.settings import ServeSettings
from reranker.documents import ENTRY_OVERHEAD, DocumentCache, source_bytes
from reranker.search import SearchService


def _doc(i: int, pad: int = 0) -> tuple[str, dict]:
    return str(i), {"product_id": str(i), "title": f"product {i}" + "x" * pad}


def test_cache_keeps_the_most_recent_documents_within_entries_and_bytes():
    c = DocumentCache(max_entries=3, max_bytes=10**6)
    c.put_many({f"h{i}": _doc(i) for i in range(3)})
    assert c.get_many(["h0"]) == {"h0": _doc(0)}  # h0 is now the most recent
    c.put_many({"h3": _doc(3)})
    assert set(c.get_many(["h0", "h1", "h2", "h3"])) == {"h0", "h2", "h3"}
    assert (c.hits, c.misses) == (4, 1) and len(c) == 3

    one = source_bytes(_doc(0, pad=1000)[1]) + ENTRY_OVERHEAD
    c = DocumentCache(max_entries=100, max_bytes=2 * one + 10)
    c.put_many({f"h{i}": _doc(i, pad=1000) for i in range(5)})
    assert len(c) == 2 and c.bytes <= c.max_bytes
    c.put_many({"huge": _doc(9, pad=10 * one)})  # larger than the whole bound: not kept, nothing pushed out
    assert len(c) == 2 and not c.get_many(["huge"])
    assert not DocumentCache(0, 10**6).enabled and not DocumentCache(10, 10).enabled
    c.clear()
    assert len(c) == 0 and c.bytes == 0


class FakeOpenSearch:
    """Answers the doc-values kNN request with hashes h0..h4; the document of h2 is gone by the second request.
    (It has no `indices` API: Search then uses the OpenSearch default limits.)"""

    def __init__(self):
        self.bodies: list[dict] = []

    def search(self, index, body, **kwargs):
        self.bodies.append(body)
        if "knn" in body["query"]:
            hits = [{"_score": 1.0 - i / 10, "fields": {"source_hash": [f"h{i}"]}} for i in range(5)]
        else:
            wanted = body["query"]["bool"]["filter"][0]["terms"]["source_hash"]
            hits = [
                {"_id": str(k[1:]), "_source": {"product_id": k[1:], "rerank_text": f"text {k}"}, "fields": {"source_hash": [k]}}
                for k in wanted
                if k != "h2"
            ]
        return {"hits": {"hits": hits, "total": {"value": len(hits)}}, "_shards": {"total": 1, "failed": 0}}


class OneVector:
    dimension = 4

    def encode_query(self, query):
        return np.full(4, 0.5, np.float32)


class NoModel:
    model_version = None


def test_a_product_deleted_between_knn_and_its_read_is_left_out():
    client = FakeOpenSearch()
    svc = SearchService(ServeSettings(threads=1), NoModel(), client=client, encoder=OneVector(), index="products")
    res = svc.search("red dress", top_k=5, top_n=5)
    assert [h.id for h in res.hits] == ["0", "1", "3", "4"]
    assert [h.retrieval_rank for h in res.hits] == [1, 2, 4, 5]
    assert [h.source["rerank_text"] for h in res.hits] == ["text h0", "text h1", "text h3", "text h4"]
    knn, fetch = client.bodies
    assert knn["_source"] is False and knn["stored_fields"] == "_none_" and knn["docvalue_fields"] == ["source_hash"]
    assert sorted(fetch["query"]["bool"]["filter"][0]["terms"]["source_hash"]) == ["h0", "h1", "h2", "h3", "h4"]
    # the second Search reads only what the cache lacks: the gone product, which is still gone
    svc.search("red dress", top_k=5, top_n=5)
    assert client.bodies[3]["query"]["bool"]["filter"][0]["terms"]["source_hash"] == ["h2"]
