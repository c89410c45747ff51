"""Candidate pools: for each sampled query, the retrieval top-k (the hard candidates the reranker will
actually face), a seeded sample of the deeper kNN ranks Search also reranks, and a few random catalog products
(easy negatives that anchor the low end of the scale).

Product texts are always `rerank_text(Product.from_fields(hit.source))`, the same text the sidecar scores.
"""

from __future__ import annotations

import hashlib
import random

from fashion_rerank.product import Product, rerank_text, text_hash
from fashion_rerank.retrieval import VECTOR_FIELD, text_search
from labeling.store import Candidate


def catalog_id(client, alias: str) -> str:
    """Identify the catalog behind `alias`: the concrete index name(s) it points to, joined by "+".

    A re-index behind the alias (a new concrete index) is a new catalog, so queries are judged again for it;
    unchanged product texts keep their judgments anyway (the key holds the text hash).
    Raises opensearchpy.NotFoundError when neither an alias nor an index of that name exists.
    """
    if client.indices.exists_alias(name=alias):
        return "+".join(sorted(client.indices.get_alias(name=alias).keys()))
    resp = client.indices.get(index=alias)
    return "+".join(sorted(resp.keys()))


def _seed(query: str) -> int:
    return int.from_bytes(hashlib.sha1(query.encode()).digest()[:4], "big")


def random_products(client, index: str, n: int, seed: int, exclude_ids: set[str] | None = None) -> list[tuple[str, dict]]:
    """`n` pseudo-random products [(id, source)], reproducible for a seed (`function_score` `random_score`)."""
    if n <= 0:
        return []
    query: dict = {
        "function_score": {
            "query": {"match_all": {}},
            "random_score": {"seed": seed, "field": "_seq_no"},
            "boost_mode": "replace",
        }
    }
    if exclude_ids:
        query = {"bool": {"must": [query], "must_not": [{"ids": {"values": sorted(exclude_ids)}}]}}
    resp = client.search(index=index, body={"size": n, "query": query, "_source": {"excludes": [VECTOR_FIELD]}})
    return [(h["_id"], h.get("_source", {})) for h in resp["hits"]["hits"]]


def _candidate(pid: str, source: dict, rank: int | None, score: float | None) -> Candidate:
    text = rerank_text(Product.from_fields(source, id=pid))
    return Candidate(product_id=pid, text=text, text_hash=text_hash(text), knn_rank=rank, knn_score=score)


def build_pool(
    client,
    index: str,
    encoder,
    query: str,
    top_k: int,
    random_extras: int,
    deep_extras: int = 0,
    deep_depth: int = 0,
) -> list[Candidate]:
    """kNN top-`top_k` for `query` (ranked), then `deep_extras` of the kNN ranks `top_k`+1 .. `deep_depth` (a
    seeded sample, in rank order), then `random_extras` random products not among them.

    The deep sample covers the rest of what Search reranks (its top_k, e.g. 50 or 100) at a fraction of the
    judging cost: a model trained on the top 20 alone never sees the candidates ranked 21-50 that it must push
    down at serving time.

    Args:
        client: opensearch-py client; index: the products alias; encoder: the bi-encoder (`load_bi_encoder()`).
        deep_extras, deep_depth: 0 (either) for no deep sample.
    Raises:
        ValueError for an empty query; opensearchpy errors propagate.
    """
    depth = deep_depth if deep_extras > 0 and deep_depth > top_k else top_k
    hits = text_search(client, index, encoder, query, depth)
    pool = [_candidate(h.id, h.source, h.rank, h.score) for h in hits[:top_k]]
    deep = hits[top_k:]
    if deep and deep_extras > 0:
        rng = random.Random(_seed(query))
        picked = sorted(rng.sample(range(len(deep)), min(deep_extras, len(deep))))
        pool += [_candidate(deep[i].id, deep[i].source, deep[i].rank, deep[i].score) for i in picked]
    seen = {c.product_id for c in pool}
    for pid, src in random_products(client, index, random_extras, _seed(query), seen):
        pool.append(_candidate(pid, src, None, None))
    return pool
