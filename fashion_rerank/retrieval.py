"""kNN retrieval against the products index, used by the sidecar's `Search` and the labeling job.

Filters go inside the knn clause (OpenSearch "efficient filtering", faiss/lucene engines), so k hits
come back whenever at least k products match the filter, instead of post-filtering the top k.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

#: Name of the vector field in the products index.
VECTOR_FIELD = "embedding"
#: Largest `k` the OpenSearch k-NN plugin accepts in a knn query (documented limit: "k ... can be at most
#: 10,000", OpenSearch k-NN query docs; the plugin's KNNQueryBuilder refuses larger values). Not an index
#: setting, so it cannot be read from the cluster.
KNN_MAX_K = 10_000
#: `index.max_result_window` when an index does not say (the OpenSearch default).
DEFAULT_MAX_RESULT_WINDOW = 10_000


@dataclass(frozen=True)
class Hit:
    """One retrieved product: id, kNN score (OpenSearch `_score`), 1-based rank, `_source` without the vector.

    `fields`: the doc-value fields asked for (`docvalue_fields`), all values of each (a list); `index`: the
    concrete index the hit came from (`_index`, e.g. behind an alias). When a kNN request asked for doc values
    only (no `_source`, no stored fields), `id` is "" and `source` empty until the caller fills them.
    """

    id: str
    score: float
    rank: int
    source: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, list] = field(default_factory=dict)
    index: str = ""


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
    vector: Sequence[float],
    k: int,
    filters: Mapping[str, Any] | None = None,
    vector_field: str = VECTOR_FIELD,
    docvalue_fields: Sequence[str] | None = None,
) -> dict:
    """The OpenSearch query body for top-`k` kNN on `vector_field` with `filters` inside the knn clause
    (filter keys are the index's own field names).

    With `docvalue_fields`, the hits carry only those doc values: no `_source` and no stored field, not even
    `_id` (`stored_fields: _none_`). That skips OpenSearch's fetch of each hit's stored fields, which for 100
    hits was most of the request (docs/performance.md#search-documents: `took` 4.6 -> 1.35 ms).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    knn: dict[str, Any] = {"vector": validate_vector(vector), "k": k}
    flt = build_filter(filters)
    if flt:
        knn["filter"] = flt
    body: dict[str, Any] = {"size": k, "query": {"knn": {vector_field: knn}}}
    if docvalue_fields:
        body.update({"_source": False, "stored_fields": "_none_", "docvalue_fields": list(docvalue_fields)})
    else:
        body["_source"] = {"excludes": [vector_field]}
    return body


def _values(hit: Mapping[str, Any]) -> dict[str, list]:
    """{field: [values]} of a hit's doc-value `fields` (OpenSearch returns a list per field)."""
    return {k: v for k, v in (hit.get("fields") or {}).items() if isinstance(v, list) and v}


@dataclass(frozen=True)
class KnnResult:
    """A kNN answer with what OpenSearch says about its completeness.

    Attributes:
        hits: best first.
        total: `hits.total.value` (products the query matched, as OpenSearch counts them).
        timed_out: OpenSearch stopped at the request's server-side `timeout` and returned what it had.
        shards_total, shards_failed: `_shards.total` and `_shards.failed` (a failed shard's products are missing).
    """

    hits: list[Hit]
    total: int = 0
    timed_out: bool = False
    shards_total: int = 0
    shards_failed: int = 0

    @property
    def partial(self) -> bool:
        """True when OpenSearch itself reports an incomplete answer (timed out or failed shards)."""
        return self.timed_out or self.shards_failed > 0


def knn_search_result(
    client,
    index: str,
    vector: Sequence[float] | np.ndarray,
    k: int,
    filters: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    vector_field: str = VECTOR_FIELD,
    server_timeout_s: float | None = None,
    docvalue_fields: Sequence[str] | None = None,
) -> KnnResult:
    """Top-`k` products for a query vector with the answer's completeness (see `knn_search` for the args).

    `docvalue_fields`: ask for these doc values instead of `_source` (see `knn_query`); the hits then have
    `id` "" and an empty `source`, and `fields` holds the values.
    `server_timeout_s` goes into the body as OpenSearch's search `timeout` (whole milliseconds, at least 1):
    OpenSearch then stops collecting at that time and answers `timed_out: true` with the hits it has, rather
    than working on after the caller has given up. `timeout_s` is the client-side HTTP timeout.

    Raises:
        ValueError: bad vector or k. opensearchpy exceptions propagate (connection errors, 4xx).
    """
    body = knn_query(vector, k, filters, vector_field, docvalue_fields)
    if server_timeout_s is not None:
        body["timeout"] = f"{max(1, int(server_timeout_s * 1000))}ms"
    kwargs = {"request_timeout": timeout_s} if timeout_s else {}
    resp = client.search(index=index, body=body, **kwargs)
    hits = [
        Hit(
            id=h.get("_id", ""),
            score=float(h["_score"]) if h.get("_score") is not None and math.isfinite(h["_score"]) else 0.0,
            rank=i + 1,
            source=h.get("_source", {}),
            fields=_values(h),
            index=h.get("_index", ""),
        )
        for i, h in enumerate(resp["hits"]["hits"])
    ]
    total = resp["hits"].get("total", 0)
    shards = resp.get("_shards", {})
    return KnnResult(
        hits=hits,
        total=int(total.get("value", 0) if isinstance(total, dict) else total or 0),
        timed_out=bool(resp.get("timed_out", False)),
        shards_total=int(shards.get("total", 0)),
        shards_failed=int(shards.get("failed", 0)),
    )


@dataclass(frozen=True)
class DocumentsByValue:
    """What `documents_by_value` read.

    Attributes:
        docs: {value: (`_id`, `_source`)}; a value no document holds is absent.
        ambiguous: some value is held by more than one document, or a document holds several values: the
            field does not identify documents, and `docs` must not be used.
        partial: OpenSearch timed out or lost shards: documents may be missing from `docs`.
    """

    docs: dict[str, tuple[str, dict[str, Any]]]
    ambiguous: bool = False
    partial: bool = False


def documents_by_value(
    client,
    index: str,
    field_name: str,
    values: Sequence[str],
    excludes: Sequence[str] = (VECTOR_FIELD,),
    timeout_s: float | None = None,
) -> DocumentsByValue:
    """The `_id` and `_source` (without `excludes`) of the documents of `index` whose keyword field
    `field_name` holds one of `values`, in one `terms` request (with OpenSearch's own `timeout`, 80 % of
    `timeout_s`).

    Used to read the documents a doc-values-only kNN answer named by their content hash (the indexer's
    `source_hash`, which covers the product id too). `index` should be the concrete index the hits came from.
    Raises opensearchpy exceptions.
    """
    values = list(dict.fromkeys(str(v) for v in values if v not in (None, "")))
    if not values:
        return DocumentsByValue({})
    body: dict[str, Any] = {
        # one more than the values: a value held by two documents shows in the count and the hits
        "size": len(values) + 1,
        "track_total_hits": True,
        "query": {"bool": {"filter": [{"terms": {field_name: values}}]}},
        "_source": {"excludes": list(excludes)},
        "docvalue_fields": [field_name],
    }
    if timeout_s:
        body["timeout"] = f"{max(1, int(0.8 * timeout_s * 1000))}ms"
    kwargs = {"request_timeout": timeout_s} if timeout_s else {}
    resp = client.search(index=index, body=body, **kwargs)
    hits = resp["hits"]["hits"]
    total = resp["hits"].get("total", 0)
    total = int(total.get("value", 0) if isinstance(total, dict) else total or 0)
    shards = resp.get("_shards", {})
    docs: dict[str, tuple[str, dict[str, Any]]] = {}
    ambiguous = total > len(values) or len(hits) > len(values)
    for h in hits:
        held = _values(h).get(field_name, [])
        if len(held) != 1 or str(held[0]) in docs:
            ambiguous = True
            continue
        docs[str(held[0])] = (h["_id"], h.get("_source", {}))
    return DocumentsByValue(
        docs,
        ambiguous=ambiguous,
        partial=bool(resp.get("timed_out", False)) or int(shards.get("failed", 0)) > 0,
    )


def count_matching(
    client, index: str, filters: Mapping[str, Any] | None = None, timeout_s: float | None = None, vector_field: str | None = None
) -> int:
    """Products in `index` matching `filters` (all products without), counted by OpenSearch `_count`.

    With `vector_field`, only products that have a vector there (what kNN can reach at all).
    Raises opensearchpy exceptions.
    """
    clauses: list[dict] = []
    flt = build_filter(filters)
    if flt:
        clauses.append(flt)
    if vector_field:
        clauses.append({"exists": {"field": vector_field}})
    body = {"query": {"bool": {"filter": clauses}}} if clauses else {"query": {"match_all": {}}}
    kwargs = {"request_timeout": timeout_s} if timeout_s else {}
    return int(client.count(index=index, body=body, **kwargs)["count"])


@dataclass(frozen=True)
class IndexLimits:
    """How many hits one kNN search of an index may ask for.

    Attributes:
        max_result_window: the smallest `index.max_result_window` of the indices behind the name (from + size
            of a search may not exceed it; OpenSearch default 10,000).
        knn_max_k: the k-NN plugin's limit on `k` (`KNN_MAX_K`).
    """

    max_result_window: int = DEFAULT_MAX_RESULT_WINDOW
    knn_max_k: int = KNN_MAX_K

    @property
    def max_k(self) -> int:
        """The most candidates one kNN search may ask for: the smaller of the two limits."""
        return min(self.max_result_window, self.knn_max_k)


def read_index_limits(client, index: str, timeout_s: float | None = None) -> IndexLimits:
    """The limits of index or alias `index`, read from its settings (defaults included).

    Raises opensearchpy exceptions (NotFoundError for a missing name).
    """
    kwargs = {"request_timeout": timeout_s} if timeout_s else {}
    resp = client.indices.get_settings(index=index, name="index.max_result_window", include_defaults=True, **kwargs)
    windows = []
    for body in resp.values():
        value = (body.get("settings") or {}).get("index", {}).get("max_result_window")
        if value is None:
            value = (body.get("defaults") or {}).get("index", {}).get("max_result_window")
        windows.append(int(value) if value is not None else DEFAULT_MAX_RESULT_WINDOW)
    return IndexLimits(max_result_window=min(windows) if windows else DEFAULT_MAX_RESULT_WINDOW)


class IndexLimitsCache:
    """`read_index_limits` per index name, kept `ttl_s` seconds (a changed setting is seen within that time).

    Thread-safe. A failed read is not cached (the caller gets the exception; the next call reads again).
    """

    def __init__(self, ttl_s: float = 60.0):
        self.ttl_s = float(ttl_s)
        self._entries: dict[str, tuple[float, IndexLimits]] = {}
        self._lock = threading.Lock()

    def get(self, client, index: str, timeout_s: float | None = None) -> IndexLimits:
        """The limits of `index`, from the cache when read less than `ttl_s` seconds ago."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(index)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        limits = read_index_limits(client, index, timeout_s)
        with self._lock:
            self._entries[index] = (time.monotonic(), limits)
        return limits


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
    return knn_search_result(client, index, vector, k, filters, timeout_s, vector_field).hits


def text_search(
    client, index: str, encoder, query: str, k: int, filters: Mapping[str, Any] | None = None, timeout_s: float | None = None
) -> list[Hit]:
    """Embed `query` with the bi-encoder `encoder` and return the top-`k` kNN hits (see `knn_search`)."""
    if not query or not query.strip():
        raise ValueError("query text is empty")
    return knn_search(client, index, encoder.encode_query(query), k, filters, timeout_s)
