"""kNN retrieval against the products index, used by the sidecar's `Search` and the labeling job.

Filters go inside the knn clause (OpenSearch "efficient filtering", faiss/lucene engines), so k hits
come back whenever at least k products match the filter, instead of post-filtering the top k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

#: Name of the vector field in the products index.
VECTOR_FIELD = "embedding"


@dataclass(frozen=True)
class Hit:
    """One retrieved product: id, kNN score (OpenSearch `_score`), 1-based rank, `_source` without the vector."""

    id: str
    score: float
    rank: int
    source: dict[str, Any] = field(default_factory=dict)


def validate_vector(vector: Sequence[float] | np.ndarray, dimension: int | None = None) -> list[float]:
    """Check a query vector and return it as a list of floats.

    Raises:
        ValueError: empty, wrong dimension, non-finite values, or all zeros (cosine/inner product of a
            zero vector is meaningless, and OpenSearch would rank arbitrarily).
    """
    arr = np.asarray(vector, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("query vector is empty")
    if dimension is not None and arr.size != dimension:
        raise ValueError(f"query vector has dimension {arr.size}, the index expects {dimension}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("query vector contains NaN or infinite values")
    if not np.any(arr):
        raise ValueError("query vector is all zeros")
    return arr.tolist()


def build_filter(filters: Mapping[str, str | Sequence[str]] | None) -> dict | None:
    """Attribute filters {field: value or [values]} -> a bool filter of term/terms clauses (None if empty)."""
    if not filters:
        return None
    clauses = []
    for name, value in filters.items():
        if isinstance(value, str):
            clauses.append({"term": {name: value}})
        else:
            values = [v for v in value if v]
            if values:
                clauses.append({"terms": {name: list(values)}})
    return {"bool": {"filter": clauses}} if clauses else None


def knn_query(
    vector: Sequence[float], k: int, filters: Mapping[str, Any] | None = None, vector_field: str = VECTOR_FIELD
) -> dict:
    """The OpenSearch query body for top-`k` kNN on `vector_field` with `filters` inside the knn clause
    (filter keys are the index's own field names)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    knn: dict[str, Any] = {"vector": validate_vector(vector), "k": k}
    flt = build_filter(filters)
    if flt:
        knn["filter"] = flt
    return {"size": k, "query": {"knn": {vector_field: knn}}, "_source": {"excludes": [vector_field]}}


def knn_search(
    client,
    index: str,
    vector: Sequence[float] | np.ndarray,
    k: int,
    filters: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    vector_field: str = VECTOR_FIELD,
) -> list[Hit]:
    """Top-`k` products for a query vector, best first.

    Args:
        client: an opensearch-py client (`fashion_rerank.opensearch.make_client`).
        index: index or alias name.
        vector: query vector (dimension of the index).
        k: number of hits wanted (also the HNSW candidate count).
        filters: {attribute: value | [values]} applied inside the knn clause.
        timeout_s: request timeout in seconds (defaults to the client's).
        vector_field: the index's knn_vector field (a team's own index may name it otherwise).

    Raises:
        ValueError: bad vector or k. opensearchpy exceptions propagate (connection errors, 4xx).
    """
    body = knn_query(vector, k, filters, vector_field)
    kwargs = {"request_timeout": timeout_s} if timeout_s else {}
    resp = client.search(index=index, body=body, **kwargs)
    return [
        Hit(
            id=h["_id"],
            score=float(h["_score"]) if h.get("_score") is not None and math.isfinite(h["_score"]) else 0.0,
            rank=i + 1,
            source=h.get("_source", {}),
        )
        for i, h in enumerate(resp["hits"]["hits"])
    ]


def text_search(
    client, index: str, encoder, query: str, k: int, filters: Mapping[str, Any] | None = None, timeout_s: float | None = None
) -> list[Hit]:
    """Embed `query` with the bi-encoder `encoder` and return the top-`k` kNN hits (see `knn_search`)."""
    if not query or not query.strip():
        raise ValueError("query text is empty")
    return knn_search(client, index, encoder.encode_query(query), k, filters, timeout_s)
