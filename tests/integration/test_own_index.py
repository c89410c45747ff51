"""Bring your own index: Search against an index created by hand with a team's own mapping (another vector
field, their own text and id fields, nested attributes), configured through settings alone, with the bi-encoder
configured by path. Real OpenSearch, real models."""

from __future__ import annotations

import uuid

import pytest

from fashion_rerank.product import rerank_text
from fashion_rerank.schema import IndexSchema, parse_field_map
from fashion_rerank.settings import IndexSettings, ModelSettings, OpenSearchSettings, ServeSettings, resolve_model_path
from indexer.catalogs import read_myntra
from reranker.client import RerankerClient

FIELD_MAP = "title=name,description=blurb,colour=attrs.color,product_type=attrs.kind,gender=audience,brand=maker"


@pytest.fixture(scope="module")
def their_index(os_client):
    """A hand-made index: `sku` ids, `name`/`blurb`/`maker` text, nested `attrs`, vectors in `vec` (no rerank_text)."""
    from opensearchpy import helpers

    from fashion_rerank.embedding import BiEncoder

    name = f"t-own-{uuid.uuid4().hex[:8]}"
    products = list(read_myntra(limit=600).products)
    encoder = BiEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), "cpu", 64)  # configured by path
    docs = []
    for p in products:
        docs.append(
            {
                "sku": f"SKU-{p.id}",
                "name": p.title,
                "blurb": p.description,
                "maker": p.get("brand"),
                "audience": p.get("gender"),
                "attrs": {"color": p.get("colour"), "kind": p.get("product_type")},
            }
        )
    # their text for the bi-encoder is their own business; here: name + kind + colour
    vecs = encoder.encode([f"{d['name']} {d['attrs']['kind']} {d['attrs']['color']}" for d in docs])
    os_client.indices.create(
        index=name,
        body={
            "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {
                "properties": {
                    "sku": {"type": "keyword"},
                    "name": {"type": "text"},
                    "blurb": {"type": "text"},
                    "maker": {"type": "keyword"},
                    "audience": {"type": "keyword"},
                    "attrs": {"properties": {"color": {"type": "keyword"}, "kind": {"type": "keyword"}}},
                    "vec": {
                        "type": "knn_vector",
                        "dimension": int(vecs.shape[1]),
                        "method": {"name": "hnsw", "engine": "lucene", "space_type": "innerproduct"},
                    },
                }
            },
        },
    )
    actions = ({"_index": name, "_id": str(uuid.uuid4()), "_source": {**d, "vec": v.tolist()}} for d, v in zip(docs, vecs))
    helpers.bulk(os_client, actions, refresh=True)
    yield name, products
    os_client.indices.delete(index=name, ignore_unavailable=True)


def test_schema_maps_their_document_to_our_product_text():
    schema = IndexSchema(vector_field="vec", id_field="sku", text_field=None, field_map=parse_field_map(FIELD_MAP))
    src = {
        "sku": "SKU-1",
        "name": "Red Dress",
        "blurb": "summer",
        "attrs": {"color": "Red", "kind": "Dresses"},
        "audience": "Women",
    }
    p = schema.product("doc-1", src)
    assert p.id == "SKU-1" and p.title == "Red Dress" and p.get("colour") == "Red" and p.get("product_type") == "Dresses"
    assert schema.text("doc-1", src) == rerank_text(p)
    with pytest.raises(ValueError, match="not one of our fields"):
        parse_field_map("price=cost")


def test_search_works_on_their_index_by_configuration(their_index, trained_registry, opensearch_url, tmp_path):
    from reranker.serve import Sidecar

    name, products = their_index
    settings = ServeSettings(
        grpc_port=0,
        metrics_port=-1,
        http_port=0,
        threads=1,
        querylog_path=None,
        querylog_index=None,
        rerank_budget_ms=60_000,
        models=ModelSettings(bi_encoder=resolve_model_path("packaged:all-MiniLM-L6-v2")),
        index=IndexSettings(vector_field="vec", id_field="sku", text_field="", field_map=FIELD_MAP),
    )
    sc = Sidecar(settings, trained_registry, OpenSearchSettings(url=opensearch_url, index_alias=name)).start()
    try:
        with RerankerClient(sc.target, timeout=60) as c:
            resp = c.search("black watch for women", top_k=30, top_n=5)
            assert resp.reranked and len(resp.hits) == 5
            assert all(h.id.startswith("SKU-") for h in resp.hits)
            by_id = {f"SKU-{p.id}": p for p in products}
            for h in resp.hits:
                p = by_id[h.id]
                assert h.product.title == p.title and h.product.colour == p.get("colour")
                assert h.product.product_type == p.get("product_type")
            # the cross-encoder read the mapped product text: a watch query puts watches first
            assert resp.hits[0].product.product_type == "Watches"
            # filters are given in our names and sent in theirs (attrs.color)
            flt = c.search("watch", top_k=20, top_n=10, filters={"colour": ["Black"]})
            assert flt.hits and all(h.product.colour == "Black" for h in flt.hits)
    finally:
        sc.stop()
