"""Prometheus metrics of the sidecar, on their own registry and their own HTTP port (default 9464).

Every label comes from a bounded set, never from request content (no query text, no product ids):

| metric (prefix `fashion_rerank_`) | type | labels |
|---|---|---|
| `requests_total` | counter | method (Rerank, Search, tei.Rerank, tei.RerankStream, tei.Info, or the HTTP front's route names), front (grpc, http), code (gRPC code name or HTTP status) |
| `request_duration_seconds` | histogram | method, front |
| `stage_duration_seconds` | histogram | stage (queue, tokenization, inference, embedding, knn) |
| `batch_pairs` | histogram | - (pairs per batch the core formed) |
| `batch_requests` | histogram | - (requests per batch) |
| `candidates_per_request` | histogram | method |
| `queue_depth` | gauge | unit (requests, pairs) |
| `pairs_total` | counter | outcome (scored, abandoned) |
| `fail_open_total` | counter | reason (budget, backend_error, queue_full, too_large, error) |
| `queue_rejected_total` | counter | reason (full: refused at submit; pushed_out: dropped from a full queue for another client's fair share) |
| `knn_partial_total` | counter | kind (short: fewer hits than asked while more products match; timed_out; shards_failed) |
| `search_truncated_total` | counter | kind (query: cut to the model's query tokens; document: stored text cut to what the model reads) |
| `search_documents_total` | counter | source (cache: from Search's document cache; fetched: read by hash for it; source: the kNN answer's own `_source`, no hash field; gone: deleted before it was read) |
| `opensearch_errors_total` | counter | kind (unavailable, timeout, auth, not_found, bad_request, other) |
| `model_info` | gauge = 1 | version (the serving version; the old label is removed on a swap) |
| `model_loads_total` | counter | outcome (ok, error) |
| `score_cache_requests_total` | counter | outcome (hit: every pair was cached, the model was skipped; miss) |
| `score_cache_entries` | gauge | - (pairs held by the score cache) |
| `querylog_records_total` | counter | outcome (written, dropped, error) |
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

NAMESPACE = "fashion_rerank"

#: Latency buckets (seconds): 1 ms .. 30 s, dense around the 50 ms - 2 s range reranking lives in.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.35,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Size buckets for pairs/candidates per batch or request.
SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000)
STAGES = ("queue", "tokenization", "inference", "embedding", "knn")
#: Why a Search answered in kNN order (`fail_open_total{reason}`): the reranking ran out of its budget or the
#: deadline, the model failed, the queue was full (or pushed the request out), a text did not fit the model
#: even after cutting (a hot swap to a shorter model), anything else unexpected.
FAIL_OPEN_REASONS = ("budget", "backend_error", "queue_full", "too_large", "error")


class Metrics:
    """All sidecar metrics on a private `CollectorRegistry` (several servers can live in one process).

    Args:
        registry: where to register (default: a new CollectorRegistry).
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self.requests = Counter(
            "requests",
            "RPCs/requests finished, by method, front and status code",
            ["method", "front", "code"],
            namespace=ns,
            registry=r,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "end-to-end handling time per method",
            ["method", "front"],
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.stage = Histogram(
            "stage_duration_seconds", "time per stage of a request", ["stage"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS
        )
        self.batch_pairs = Histogram(
            "batch_pairs", "(query, document) pairs per batch formed by the core", namespace=ns, registry=r, buckets=SIZE_BUCKETS
        )
        self.batch_requests = Histogram(
            "batch_requests",
            "requests per batch formed by the core",
            namespace=ns,
            registry=r,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
        )
        self.candidates = Histogram(
            "candidates_per_request",
            "documents (Rerank) or kNN candidates (Search) per request",
            ["method"],
            namespace=ns,
            registry=r,
            buckets=SIZE_BUCKETS,
        )
        self.queue_depth = Gauge("queue_depth", "work waiting in the scoring queue", ["unit"], namespace=ns, registry=r)
        self.cache_requests = Counter(
            "score_cache_requests",
            "scoring requests answered from the score cache (hit) or sent to the model (miss)",
            ["outcome"],
            namespace=ns,
            registry=r,
        )
        self.cache_entries = Gauge(
            "score_cache_entries", "(query, document) pairs held by the score cache", namespace=ns, registry=r
        )
        self.pairs = Counter(
            "pairs",
            "pairs scored, or abandoned because their request's deadline passed or client left",
            ["outcome"],
            namespace=ns,
            registry=r,
        )
        self.fail_open = Counter(
            "fail_open",
            "Search answers in kNN order because reranking failed or ran out of budget",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.queue_rejected = Counter(
            "queue_rejected",
            "scoring requests refused by a full queue or pushed out of it for another client's fair share",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.knn_partial = Counter(
            "knn_partial",
            "Search kNN answers that were short (fewer hits than asked while more match), timed out or lost shards",
            ["kind"],
            namespace=ns,
            registry=r,
        )
        self.truncated = Counter(
            "search_truncated",
            "Search texts cut before reranking: the query to the model's query tokens, stored product texts to what it reads",
            ["kind"],
            namespace=ns,
            registry=r,
        )
        self.search_documents = Counter(
            "search_documents",
            "Search candidates by where their _source came from: cache (the document cache), fetched (read by hash "
            "for the cache), source (the kNN answer's own _source: cache off, or no usable hash field), gone (deleted before it was read)",
            ["source"],
            namespace=ns,
            registry=r,
        )
        self.opensearch_errors = Counter("opensearch_errors", "failed OpenSearch calls", ["kind"], namespace=ns, registry=r)
        self.model_info = Gauge(
            "model_info", "the cross-encoder version being served (value 1)", ["version"], namespace=ns, registry=r
        )
        self.model_loads = Counter(
            "model_loads", "cross-encoder loads (start and hot swaps)", ["outcome"], namespace=ns, registry=r
        )
        self.querylog = Counter("querylog_records", "query-log records", ["outcome"], namespace=ns, registry=r)
        for unit in ("requests", "pairs"):
            self.queue_depth.labels(unit).set(0)
        for outcome in ("scored", "abandoned"):
            self.pairs.labels(outcome)
        for reason in FAIL_OPEN_REASONS:
            self.fail_open.labels(reason)
        for reason in ("full", "pushed_out"):
            self.queue_rejected.labels(reason)
        for kind in ("short", "timed_out", "shards_failed"):
            self.knn_partial.labels(kind)
        for kind in ("query", "document"):
            self.truncated.labels(kind)
        self._version: str | None = None
        self._lock = threading.Lock()
        self._server = None

    # -- helpers used by the fronts and the core
    def observe_request(self, method: str, front: str, code: str, seconds: float) -> None:
        """Count one finished request and record its duration."""
        self.requests.labels(method, front, code).inc()
        self.latency.labels(method, front).observe(seconds)

    def set_model_version(self, version: str | None) -> None:
        """Make `version` the only `model_info` series (None: no model)."""
        with self._lock:
            if self._version is not None and self._version != version:
                try:
                    self.model_info.remove(self._version)
                except KeyError:
                    pass
            if version is not None:
                self.model_info.labels(version).set(1)
            self._version = version

    # -- exposition
    def start_http(self, host: str = "127.0.0.1", port: int = 9464) -> int:
        """Serve `/metrics` on host:port (0 = a free port) in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop_http(self) -> None:
        """Stop the `/metrics` server started by `start_http` (no-op when none)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
