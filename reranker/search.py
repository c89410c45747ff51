"""`Search`: embed the query, take kNN candidates from OpenSearch, rerank them within a budget.

Shared by the fronts (the gRPC `Search` RPC; an HTTP route can call the same `SearchService`).

Failure handling:
- OpenSearch unreachable, timing out or answering 5xx -> `OpenSearchUnavailableError` (gRPC UNAVAILABLE)
  before the caller's deadline: the kNN request timeout is cut to the time left. Nothing is cached about
  the failure, so the next request after OpenSearch is back succeeds (recovery by itself).
- No model promoted yet -> the kNN order with `reranked=False` (not an error, not a fail-open).
- The reranker fails (model error, full queue, or the budget `rerank_budget_ms` runs out) -> with
  `fail_open` the kNN order with `reranked=False` and `fail_open_total{reason}` counted; without it the
  error itself (INTERNAL, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from opensearchpy import exceptions as ose

from fashion_rerank.product import ATTRIBUTE_FIELDS, Product
from fashion_rerank.retrieval import Hit, knn_search
from fashion_rerank.schema import IndexSchema, schema_from_settings
from fashion_rerank.settings import OpenSearchSettings, ServeSettings
from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    IndexNotFoundError,
    InvalidInputError,
    NoModelError,
    OpenSearchUnavailableError,
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
    ) -> SearchResult:
        """Run one search. `deadline` is a `time.monotonic()` value.

        Raises:
            InvalidInputError / TooLargeError: bad query, top_k/top_n, filters or index name.
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
        timings: dict[str, float] = {}

        # 1. query embedding
        t0 = time.monotonic()
        vector = self.encoder.encode_query(query)
        timings["embedding"] = time.monotonic() - t0
        if m:
            m.stage.labels("embedding").observe(timings["embedding"])

        # 2. kNN, cut to the time left before the deadline
        timeout = s.knn_timeout_s
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceededError("the deadline passed before the kNN query was sent")
            timeout = min(timeout, max(0.01, left - min(0.25, 0.2 * left)))
        t0 = time.monotonic()
        try:
            their_filters = {self.schema.field(k): v for k, v in flt.items()}
            hits: list[Hit] = knn_search(
                self.client, index, vector, top_k, their_filters or None, timeout_s=timeout, vector_field=self.schema.vector_field
            )
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - opensearch-py exceptions, mapped below
            raise _opensearch_error(exc, m, index) from exc
        finally:
            timings["knn"] = time.monotonic() - t0
        if m:
            m.stage.labels("knn").observe(timings["knn"])
            m.candidates.labels("Search").observe(len(hits))

        # 3. rerank within the budget
        logits, scores, version, reason = self._rerank(query, hits, deadline, front, timings)
        if logits is not None:
            order = np.argsort(-logits, kind="stable")
        else:
            order = np.arange(len(hits))
            scores = None
        out = []
        for rank, i in enumerate(order[:top_n].tolist(), start=1):
            h = hits[i]
            out.append(
                SearchHit(
                    id=self.schema.product_id(h.id, h.source),
                    source=h.source,
                    rank=rank,
                    rerank_score=float(scores[i]) if scores is not None else 0.0,
                    rerank_logit=float(logits[i]) if logits is not None else 0.0,
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

    def _rerank(
        self, query: str, hits: list[Hit], deadline: float | None, front: str, timings: dict[str, float]
    ) -> tuple[np.ndarray | None, np.ndarray | None, str | None, str | None]:
        """(logits or None, served scores (the model's activation of the logits) or None, model version or None,
        fail-open reason or None)."""
        s = self.settings
        version = self.core.model_version
        if version is None:
            return None, None, None, None
        if not hits:
            return np.zeros(0, np.float32), np.zeros(0, np.float32), version, None
        texts = [self.schema.text(h.id, h.source) for h in hits]
        budget_end = time.monotonic() + s.rerank_budget_ms / 1000.0
        end = budget_end if deadline is None else min(deadline, budget_end)
        fut = None
        try:
            fut = self.core.submit(query, texts, deadline=end, front=front)
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
