"""`Search`: embed the query, take kNN candidates from OpenSearch, rerank them within a budget.

Shared by the fronts (the gRPC `Search` RPC; an HTTP route can call the same `SearchService`).

Failure handling:
- An index or alias outside the allow-list (`search_indices`, default the configured alias) ->
  `PermissionDeniedError` (PERMISSION_DENIED), with the same message whether the name exists or not;
  OpenSearch is not asked.
- top_k above what the index allows (`index.max_result_window`, read from its settings and kept
  `index_limits_ttl_s`; the k-NN plugin's k limit of 10,000) -> InvalidInputError naming the limit.
- OpenSearch unreachable, timing out, answering 5xx or refusing the sidecar's credentials (401/403) ->
  `OpenSearchUnavailableError` (gRPC UNAVAILABLE)
  before the caller's deadline: the kNN request timeout is cut to the time left, and the request carries
  OpenSearch's own search `timeout` (80% of that), so OpenSearch stops with what it has instead of working
  for a caller that gave up. Nothing is cached about the failure, so the next request after OpenSearch is
  back succeeds (recovery by itself).
- A partial kNN answer (`timed_out`, failed shards, or fewer hits than asked while `_count` says more
  products match) is served as it is, logged and counted (`knn_partial_total{kind}`).
- No model promoted yet -> the kNN order with `reranked=False` (not an error, not a fail-open).
- The reranker side never fails a Search: a query longer than the model reads is cut for the cross-encoder
  (the kNN step used all of it; `search_truncated_total{kind="query"}`), each stored product text is cut to
  what the model reads (`fit_document`; `kind="document"`), at most `rerank_window` candidates are reranked
  (the rest follow in kNN order). Any failure that is left (model error, full queue or pushed out of it,
  the budget `rerank_budget_ms` or the deadline running out, a text that still does not fit, anything
  unexpected) gives, with `fail_open`, the kNN order with `reranked=False` and `fail_open_total{reason}`
  counted; without it the error itself (INTERNAL, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, INVALID_ARGUMENT).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from opensearchpy import exceptions as ose

from fashion_rerank.product import ATTRIBUTE_FIELDS, Product
from fashion_rerank.retrieval import (
    KNN_MAX_K,
    Hit,
    IndexLimits,
    IndexLimitsCache,
    KnnResult,
    count_matching,
    documents_by_value,
    knn_search_result,
)
from fashion_rerank.schema import IndexSchema, schema_from_settings
from fashion_rerank.settings import OpenSearchSettings, ServeSettings
from reranker.core.request import fit_document, fit_query
from reranker.documents import DocumentCache
from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    IndexNotFoundError,
    InvalidInputError,
    NoModelError,
    OpenSearchUnavailableError,
    PermissionDeniedError,
    QueueFullError,
    RerankError,
    TooLargeError,
)

log = logging.getLogger(__name__)

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,254}$")


@dataclass
class SearchHit:
    """One returned product. Scores: `rerank_score` = activation(`rerank_logit`), the served score as the model
    declares it (`fashion_rerank.scores`; 0 when not reranked).

    `id` is the product id (the index schema's `id_field`, else the document `_id`); `product` is our view of
    the document through the index schema; `source` the raw `_source` without the vector.
    """

    id: str
    source: dict[str, Any]
    rank: int
    rerank_score: float
    rerank_logit: float
    retrieval_score: float
    retrieval_rank: int
    product: Product | None = None


@dataclass
class SearchResult:
    """Hits best first, the scoring model version ("" when not reranked) and timings in seconds."""

    hits: list[SearchHit]
    model_version: str
    reranked: bool
    query_id: str
    candidates: int
    timings: dict[str, float] = field(default_factory=dict)
    fail_open_reason: str | None = None


def _opensearch_error(exc: Exception, metrics, index: str) -> RerankError:

    if isinstance(exc, ose.ConnectionTimeout):
        kind, err = "timeout", OpenSearchUnavailableError(f"OpenSearch timed out: {exc}")
    elif isinstance(exc, ose.ConnectionError):
        kind, err = "unavailable", OpenSearchUnavailableError(f"OpenSearch is unreachable: {exc}")
    elif isinstance(exc, (ose.AuthenticationException, ose.AuthorizationException)):
        # the sidecar's own credentials or role: an outage for the shopper (UNAVAILABLE), named for the operator
        kind, err = (
            "auth",
            OpenSearchUnavailableError(
                f"OpenSearch refused the sidecar's credentials ({exc.status_code}): check OPENSEARCH_USER / "
                "OPENSEARCH_PASSWORD and the user's read permission on the index"
            ),
        )
    elif isinstance(exc, ose.NotFoundError):
        kind, err = "not_found", IndexNotFoundError(f"index or alias {index!r} does not exist")
    elif isinstance(exc, ose.RequestError):
        kind, err = "bad_request", InvalidInputError(f"OpenSearch rejected the kNN query on {index!r}: {exc.error}")
    elif (
        isinstance(exc, ose.TransportError)
        and isinstance(exc.status_code, int)
        and (exc.status_code >= 500 or exc.status_code == 429)
    ):
        kind, err = "unavailable", OpenSearchUnavailableError(f"OpenSearch answered {exc.status_code}: {exc.error}")
    else:
        kind, err = "other", BackendError(f"OpenSearch call failed: {exc}")
    if metrics:
        metrics.opensearch_errors.labels(kind).inc()
    return err


def normalize_filters(filters: Mapping[str, str | Sequence[str]] | None) -> dict[str, list[str]]:
    """{attribute: value | [values]} -> {attribute: [values]}; attributes must be in ATTRIBUTE_FIELDS.

    Raises InvalidInputError for an unknown attribute or a filter without values.
    """
    out: dict[str, list[str]] = {}
    for name, value in (filters or {}).items():
        if name not in ATTRIBUTE_FIELDS:
            raise InvalidInputError(f"cannot filter on {name!r}; filterable attributes: {', '.join(ATTRIBUTE_FIELDS)}")
        values = [value] if isinstance(value, str) else list(value)
        values = [v for v in values if isinstance(v, str) and v.strip()]
        if not values:
            raise InvalidInputError(f"filter on {name!r} has no values")
        out.setdefault(name, []).extend(values)
    return out


class SearchService:
    """Query -> embedding -> OpenSearch kNN (filters inside the knn clause) -> rerank -> top_n hits.

    Args:
        settings: `ServeSettings` (defaults, limits, budget, fail_open, knn timeout).
        core: the `ScoringCore`.
        client: opensearch-py client (build it with `max_retries=0`: the deadline leaves no time for retries).
        encoder: bi-encoder with `encode_query(str) -> (dim,)` (default `fashion_rerank.embedding.load_bi_encoder()`).
        index: default index or alias (default `OpenSearchSettings().index_alias`).
        querylog: optional `reranker.querylog.QueryLogger`.
        metrics: optional `reranker.metrics.Metrics`.
    """

    def __init__(
        self,
        settings: ServeSettings,
        core,
        client,
        encoder=None,
        index: str | None = None,
        querylog=None,
        metrics=None,
        schema: IndexSchema | None = None,
    ):

        self.settings = settings
        self.core = core
        self.client = client
        self._encoder = encoder
        self.index = index or OpenSearchSettings().index_alias
        self.querylog = querylog
        self.metrics = metrics
        self.schema = schema or schema_from_settings(settings.index)
        names = [n.strip() for n in settings.search_indices.split(",") if n.strip()]
        #: the names Search may read (the allow-list); exact names, no patterns
        self.allowed: frozenset[str] = frozenset(names or [self.index])
        self.limits = IndexLimitsCache(settings.index_limits_ttl_s)
        #: `_source` of the products Search has fetched, by the schema's hash field (reranker.documents)
        self.documents = DocumentCache(settings.document_cache_entries, settings.document_cache_bytes)
        #: index name -> when a hit without the hash field was seen there (Search reads `_source` there for
        #: `index_limits_ttl_s` seconds, then tries the hash field again)
        self._without_hash: dict[str, float] = {}

    @property
    def encoder(self):
        if self._encoder is None:
            from fashion_rerank.embedding import load_bi_encoder

            self._encoder = load_bi_encoder()
        return self._encoder

    def search(
        self,
        query: str,
        top_k: int = 0,
        top_n: int = 0,
        filters: Mapping[str, Any] | None = None,
        index: str = "",
        client_id: str = "",
        deadline: float | None = None,
        front: str = "grpc",
        peer: str = "",
    ) -> SearchResult:
        """Run one search. `deadline` is a `time.monotonic()` value.

        `client_id` (else `peer`, the caller's connection) names the client for the scoring core's fair queue.

        Raises:
            InvalidInputError / TooLargeError: bad query, top_k/top_n, filters or index name; top_k above the
                index's limits.
            PermissionDeniedError: `index` is not on the allow-list (`search_indices`).
            OpenSearchUnavailableError: OpenSearch unreachable / timed out / 5xx.
            IndexNotFoundError: no such index or alias.
            DeadlineExceededError: the deadline passed (before kNN finished, or while reranking with fail-closed).
            QueueFullError / BackendError: reranking failed and `fail_open` is off.
        """

        s, m = self.settings, self.metrics
        t_start = time.monotonic()
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query is empty")
        if len(query) > s.max_text_chars:
            raise TooLargeError(f"query has {len(query)} characters; the limit is {s.max_text_chars}")
        top_k = int(top_k or s.default_top_k)
        top_n = int(top_n or min(s.default_top_n, top_k))
        if top_k > s.max_documents:
            raise TooLargeError(f"top_k {top_k} is above the limit {s.max_documents}")
        if top_n > top_k:
            raise InvalidInputError(f"top_n ({top_n}) must not exceed top_k ({top_k})")
        flt = normalize_filters(filters)
        index = index or self.index
        if not _INDEX_NAME.match(index):
            raise InvalidInputError(f"{index!r} is not a valid index or alias name (no wildcards or lists)")
        if index not in self.allowed:
            # the same words whether `index` exists or not: the answer must not reveal it
            raise PermissionDeniedError(f"Search may not read index or alias {index!r}")
        timings: dict[str, float] = {}
        limits = self._limits(index, deadline)
        if top_k > limits.max_k:
            raise InvalidInputError(
                f"top_k {top_k} is above what {index!r} allows: {limits.max_k} (index.max_result_window "
                f"{limits.max_result_window}, OpenSearch k-NN k limit {KNN_MAX_K})"
            )

        # 1. query embedding
        t0 = time.monotonic()
        vector = self.encoder.encode_query(query)
        timings["embedding"] = time.monotonic() - t0
        if m:
            m.stage.labels("embedding").observe(timings["embedding"])

        # 2. kNN, cut to the time left before the deadline; OpenSearch gets its own timeout inside that. With a
        # hash field, the kNN answer names the products by hash and their `_source` comes from the document
        # cache, or from one more request for those not seen yet (timings["knn"] covers both)
        t0 = time.monotonic()
        their_filters = {self.schema.field(k): v for k, v in flt.items()}
        hash_field = self._hash_field(index)
        # without a caller's deadline, the kNN request and the document read share `knn_timeout_s`
        stage_end = t0 + s.knn_timeout_s if deadline is None else deadline
        knn = self._knn(index, vector, top_k, their_filters, deadline, hash_field) if hash_field else None
        named = self._documents(index, knn, hash_field, deadline, stage_end) if knn is not None else None
        if named is not None:
            knn = named
        else:  # no hash field, or an index where it does not work (read by `_source` for a while)
            knn = self._knn(index, vector, top_k, their_filters, deadline, None, stage_end if hash_field else None)
            self._count_documents("source", len(knn.hits))
        hits: list[Hit] = knn.hits
        timings["knn"] = time.monotonic() - t0
        if m:
            m.stage.labels("knn").observe(timings["knn"])
            m.candidates.labels("Search").observe(len(hits))
        self._check_complete(knn, index, top_k, their_filters or None, deadline)

        # 3. rerank within the budget: the best `rerank_window` candidates by kNN, the rest follow in kNN order
        window = hits[: s.rerank_window]
        logits, scores, version, reason = self._rerank(query, window, deadline, front, timings, client_id or peer)
        if logits is not None:
            order = np.concatenate([np.argsort(-logits, kind="stable"), np.arange(len(window), len(hits))])
        else:
            order = np.arange(len(hits))
            scores = None
        out = []
        for rank, i in enumerate(order[:top_n].tolist(), start=1):
            h = hits[i]
            scored = scores is not None and i < len(window)
            out.append(
                SearchHit(
                    id=self.schema.product_id(h.id, h.source),
                    source=h.source,
                    rank=rank,
                    rerank_score=float(scores[i]) if scored else 0.0,
                    rerank_logit=float(logits[i]) if scored else 0.0,
                    retrieval_score=h.score,
                    retrieval_rank=h.rank,
                    product=self.schema.product(h.id, h.source),
                )
            )
        timings["total"] = time.monotonic() - t_start
        query_id = str(uuid.uuid4())
        if self.querylog is not None:
            self.querylog.log(
                query,
                [h.id for h in out],
                query_id=query_id,
                client_id=client_id,
                attributes={
                    "filters": flt,
                    "top_k": top_k,
                    "top_n": top_n,
                    "reranked": logits is not None,
                    "model_version": version or "",
                    "index": index,
                },
            )
        return SearchResult(
            hits=out,
            model_version=version or "",
            reranked=logits is not None,
            query_id=query_id,
            candidates=len(hits),
            timings=timings,
            fail_open_reason=reason,
        )

    def _knn(
        self,
        index: str,
        vector: np.ndarray,
        top_k: int,
        filters: Mapping[str, Any],
        deadline: float | None,
        hash_field: str | None,
        stage_end: float | None = None,
    ) -> KnnResult | None:
        """The kNN request: doc values of `hash_field` only when given, else `_source`. Errors are mapped as
        documented, except that a 400 to the doc-values request returns None (the caller then asks for
        `_source`), and turns the hash field off for `index` a while when it names the field (text, or no doc
        values).
        `stage_end` (monotonic) cuts the timeout further (a second request within one Search's budget)."""
        timeout = self._timeout(deadline)
        if stage_end is not None:
            timeout = min(timeout, max(0.01, stage_end - time.monotonic()))
        try:
            return knn_search_result(
                self.client,
                index,
                vector,
                top_k,
                filters or None,
                timeout_s=timeout,
                vector_field=self.schema.vector_field,
                server_timeout_s=0.8 * timeout,
                docvalue_fields=[hash_field] if hash_field else None,
            )
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        except ose.RequestError as exc:
            if hash_field:  # the `_source` request that follows reports any other 400 (e.g. a bad filter) itself
                if hash_field in str(exc.info) or hash_field in str(exc.error):
                    self._hash_unusable(index, hash_field, f"OpenSearch refused its doc values ({exc.error})")
                return None
            raise _opensearch_error(exc, self.metrics, index) from exc
        except Exception as exc:  # noqa: BLE001 - opensearch-py exceptions, mapped below
            raise _opensearch_error(exc, self.metrics, index) from exc

    def _hash_field(self, index: str) -> str | None:
        """The schema's hash field when Search may read `index` by it (cache on, not found unusable lately)."""
        field_name = self.schema.hash_field
        if not field_name or not self.documents.enabled:
            return None
        seen = self._without_hash.get(index)
        if seen is not None and time.monotonic() - seen < self.settings.index_limits_ttl_s:
            return None
        return field_name

    def _hash_unusable(self, index: str, hash_field: str, why: str) -> None:
        """Read `index` by `_source` for `index_limits_ttl_s` seconds (warned once per episode)."""
        if index not in self._without_hash:
            log.warning(
                "Search cannot read %r by its hash field %r (FR_INDEX_HASH_FIELD): %s; it reads _source instead "
                "(slower) and tries again in %.0f s",
                index,
                hash_field,
                why,
                self.settings.index_limits_ttl_s,
            )
        self._without_hash[index] = time.monotonic()

    def _documents(
        self, index: str, knn: KnnResult, hash_field: str, deadline: float | None, stage_end: float
    ) -> KnnResult | None:
        """`knn` (doc values only) with each hit's `_id` and `_source`: from the document cache, keyed by (the
        hit's concrete index, its hash), the rest read by hash from that index in one request each.

        Returns None (the caller then asks for `_source`) when the hash cannot identify the documents: a hit
        without the field or with several values, two hits or documents sharing a value (the hash field is
        then off for `index` a while), or a read that timed out or lost shards (this Search only).
        A product named by the kNN answer but deleted before its read is left out
        (`search_documents_total{source="gone"}`). OpenSearch errors are mapped as for the kNN request.
        """
        keys: list[str] = []
        for h in knn.hits:
            held = h.fields.get(hash_field) or []
            if len(held) != 1 or held[0] in (None, ""):
                self._hash_unusable(index, hash_field, "documents without it or with several values")
                return None
            keys.append(f"{h.index}\x00{held[0]}")
        if len(set(keys)) < len(keys):
            self._hash_unusable(index, hash_field, "several documents share a value")
            return None
        found = self.documents.get_many(keys)
        from_cache, fetched_n = len(found), 0
        missing: dict[str, list[str]] = {}  # concrete index -> hash values to read
        for k in keys:
            if k not in found:
                concrete, value = k.split("\x00", 1)
                missing.setdefault(concrete, []).append(value)
        for concrete, values in missing.items():
            timeout = min(self._timeout(deadline), max(0.01, stage_end - time.monotonic()))
            try:
                read = documents_by_value(
                    self.client, concrete or index, hash_field, values, self.schema.source_excludes(), timeout
                )
            except Exception as exc:  # noqa: BLE001 - opensearch-py exceptions, mapped below
                raise _opensearch_error(exc, self.metrics, index) from exc
            if read.ambiguous:
                self._hash_unusable(index, hash_field, "several documents share a value")
                return None
            if read.partial:
                log.info("reading documents of %r by hash timed out or lost shards; Search reads _source", concrete)
                return None
            fetched = {f"{concrete}\x00{v}": doc for v, doc in read.docs.items()}
            self.documents.put_many(fetched)
            found.update(fetched)
            fetched_n += len(fetched)
        self._without_hash.pop(index, None)
        self._count_documents("cache", from_cache)
        self._count_documents("fetched", fetched_n)
        hits = []
        for h, k in zip(knn.hits, keys):
            doc = found.get(k)
            if doc is not None:
                hits.append(Hit(id=doc[0], score=h.score, rank=h.rank, source=doc[1], fields=h.fields, index=h.index))
        if len(hits) < len(knn.hits):
            log.info("%d kNN hits of %r were deleted before their documents were read", len(knn.hits) - len(hits), index)
            self._count_documents("gone", len(knn.hits) - len(hits))
        return dataclasses.replace(knn, hits=hits)

    def _count_documents(self, source: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.search_documents.labels(source).inc(n)

    def _timeout(self, deadline: float | None) -> float:
        """Seconds an OpenSearch call may take: `knn_timeout_s`, cut to the time left before `deadline` (minus a
        margin to answer in). Raises DeadlineExceededError when the deadline has passed."""
        timeout = self.settings.knn_timeout_s
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceededError("the deadline passed before the kNN query was sent")
            # keep a quarter of what is left (at most 0.5 s) to answer in: 0.25 s was not enough on a loaded 2-CPU machine
            timeout = min(timeout, max(0.01, left - min(0.5, 0.25 * left)))
        return timeout

    def _limits(self, index: str, deadline: float | None) -> IndexLimits:
        """`index`'s limits (cached). OpenSearch unreachable -> its error (UNAVAILABLE); a read refused for
        any other reason (e.g. a user without the `indices:monitor/settings/get` privilege, or a missing index,
        which the kNN request then reports) -> the OpenSearch defaults, so Search still works."""
        try:
            return self.limits.get(self.client, index, timeout_s=self._timeout(deadline))
        except (ose.ConnectionError, ose.ConnectionTimeout) as exc:
            raise _opensearch_error(exc, self.metrics, index) from exc
        except Exception as exc:  # noqa: BLE001 - fall back to the documented defaults
            log.debug("cannot read the limits of %r (%s); using the OpenSearch defaults", index, exc)
            return IndexLimits()

    def _check_complete(
        self, knn: KnnResult, index: str, top_k: int, filters: Mapping[str, Any] | None, deadline: float | None
    ) -> None:
        """Log and count a partial kNN answer (`knn_partial_total{kind}`); the hits are served as they are.

        Short: fewer hits than `top_k` while OpenSearch's `_count` (same filters) says more products match,
        e.g. products without a vector, or an approximate search that came back short. The count is asked
        only for a short answer, best effort within the deadline.
        """
        m, n = self.metrics, len(knn.hits)
        if knn.timed_out:
            log.warning("kNN on %r timed out inside OpenSearch: %d of %d hits served", index, n, top_k)
            if m:
                m.knn_partial.labels("timed_out").inc()
        if knn.shards_failed:
            log.warning(
                "kNN on %r: %d of %d shards failed; their products are missing", index, knn.shards_failed, knn.shards_total
            )
            if m:
                m.knn_partial.labels("shards_failed").inc()
        if n >= top_k or knn.partial:
            return
        try:
            matching = count_matching(self.client, index, filters, timeout_s=min(1.0, self._timeout(deadline)))
        except Exception as exc:  # noqa: BLE001 - the count only informs the log and the metric
            log.debug("cannot count the products matching on %r: %s", index, exc)
            return
        if matching > n:
            log.warning("kNN on %r gave %d hits of %d asked while %d products match", index, n, top_k, matching)
            if m:
                m.knn_partial.labels("short").inc()

    def _fit_texts(self, query: str, hits: list[Hit]) -> tuple[str, list[str]]:
        """The query and the hits' product texts cut to what the serving model reads (counted when cut)."""
        s, m = self.settings, self.metrics
        texts = [self.schema.text(h.id, h.source) for h in hits]
        backend = self.core.models.backend
        if backend is None:
            return query, texts
        fitted = fit_query(backend, query)
        if fitted != query:
            log.info("Search query cut from %d to %d characters for the cross-encoder", len(query), len(fitted))
            if m:
                m.truncated.labels("query").inc()
        cut = [fit_document(t, backend.max_length, s.max_text_chars) for t in texts]
        n_cut = sum(len(a) != len(b) for a, b in zip(texts, cut))
        if n_cut and m:
            m.truncated.labels("document").inc(n_cut)
        return fitted or query, cut

    def _rerank(
        self,
        query: str,
        hits: list[Hit],
        deadline: float | None,
        front: str,
        timings: dict[str, float],
        client: str = "",
    ) -> tuple[np.ndarray | None, np.ndarray | None, str | None, str | None]:
        """(logits or None, served scores (the model's activation of the logits) or None, model version or None,
        fail-open reason or None)."""
        s = self.settings
        version = self.core.model_version
        if version is None:
            return None, None, None, None
        if not hits:
            return np.zeros(0, np.float32), np.zeros(0, np.float32), version, None
        budget_end = time.monotonic() + s.rerank_budget_ms / 1000.0
        end = budget_end if deadline is None else min(deadline, budget_end)
        fut = None
        try:
            query, texts = self._fit_texts(query, hits)
            fut = self.core.submit(query, texts, deadline=end, front=front, client=client)
            res = fut.result(timeout=max(0.0, end - time.monotonic()) + 0.05)
        except NoModelError:
            return None, None, None, None
        except (DeadlineExceededError, concurrent.futures.TimeoutError, concurrent.futures.CancelledError) as exc:
            if fut is not None:
                fut.cancel()
            return self._failed(
                "budget",
                DeadlineExceededError(
                    f"reranking did not finish within its budget ({s.rerank_budget_ms:.0f} ms) or the deadline"
                ),
                exc,
            )
        except QueueFullError as exc:
            return self._failed("queue_full", exc, exc)
        except BackendError as exc:
            return self._failed("backend_error", exc, exc)
        except (TooLargeError, InvalidInputError) as exc:  # a text that still does not fit (e.g. a hot swap)
            return self._failed("too_large", exc, exc)
        except Exception as exc:  # noqa: BLE001 - the reranker side never fails a Search when failing open
            if fut is not None:
                fut.cancel()
            log.exception("reranking failed unexpectedly")
            return self._failed("error", BackendError(f"reranking failed: {type(exc).__name__}: {exc}"), exc)
        timings.update(
            {"queue": res.timings["queue"], "tokenize": res.timings["tokenize"], "inference": res.timings["inference"]}
        )
        return res.logits, res.scores, res.model_version, None

    def _failed(self, reason: str, err: RerankError, cause: BaseException):
        if not self.settings.fail_open:
            raise err from cause
        log.warning("Search fails open (%s): %s", reason, err)
        if self.metrics:
            self.metrics.fail_open.labels(reason).inc()
        return None, None, None, reason
