"""`fashion-rerank serve`: the sidecar process (gRPC front, metrics endpoint, optional HTTP front).

`Sidecar` wires the parts together and is what tests start in-process; `run_server` is the blocking
entry point of the console script: it logs where it listens, the model version and the thread count,
and on SIGTERM/SIGINT sets health to NOT_SERVING, lets in-flight calls finish within `grace_s`, and exits.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import threading
import time

from fashion_rerank.opensearch import hosts, make_client
from fashion_rerank.registry import ModelRegistry, SingleModel
from fashion_rerank.settings import ModelSettings, OpenSearchSettings, ServeSettings
from reranker import grpc_auth
from reranker.core import ScoringCore
from reranker.grpc_front import GrpcServer
from reranker.metrics import Metrics
from reranker.querylog import QueryLogger
from reranker.search import SearchService

log = logging.getLogger("reranker.serve")


def load_query_encoder(models: ModelSettings):
    """The bi-encoder Search embeds queries with: `models.query_encoder` "onnx" (default: onnxruntime + tokenizers,
    no torch; `fashion_rerank.onnx_cache.ensure_bi_encoder_onnx`) or "torch" (sentence-transformers).

    Raises what the loaders raise (FileNotFoundError, ExportUnavailableError with what to install or set).
    """
    if models.query_encoder == "torch":
        from fashion_rerank.embedding import load_bi_encoder

        return load_bi_encoder(models.bi_encoder, models.device)
    from fashion_rerank.onnx_cache import ensure_bi_encoder_onnx
    from fashion_rerank.onnx_embedding import OnnxBiEncoder

    return OnnxBiEncoder(ensure_bi_encoder_onnx(models.bi_encoder, models.bi_encoder_onnx or None), device=models.device)


class Sidecar:
    """All parts of one sidecar process.

    Args:
        settings: `ServeSettings` (default: from the environment / config file).
        registry: model registry (default `ModelRegistry()` from `FR_MODEL_*`).
        opensearch: OpenSearch connection settings for Search and the query log (default from `OPENSEARCH_*`).
        encoder: bi-encoder for Search queries (default: `fashion_rerank.embedding.load_bi_encoder()`, loaded at start).

    After `start()`: `grpc_port`, `metrics_port` (None when off), `target` ("host:port"), `core`,
    `metrics`, `search`, `http_front` (None unless reranker.http_front exists and http_port > 0).
    """

    def __init__(
        self,
        settings: ServeSettings | None = None,
        registry: ModelRegistry | None = None,
        opensearch: OpenSearchSettings | None = None,
        encoder=None,
    ):
        self.settings = settings or ServeSettings()
        if registry is None:
            s = self.settings
            registry = SingleModel(s.model) if s.model else ModelRegistry(s.models.registry_dir, s.models.name)
        self.registry = registry
        self.opensearch = opensearch or OpenSearchSettings()
        self._encoder = encoder
        self.metrics = Metrics()
        self.core = ScoringCore(self.settings, self.registry, self.metrics, device=self.settings.models.device)
        self.grpc: GrpcServer | None = None
        self.search: SearchService | None = None
        self.querylog: QueryLogger | None = None
        self.http_front = None
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None
        self._stopped = False

    @property
    def target(self) -> str:
        return f"{self.settings.grpc_host}:{self.grpc_port}"

    def start(self) -> "Sidecar":
        """Start metrics, core (loads `current`), query log, Search, gRPC and (if present) the HTTP front."""
        s = self.settings

        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.start_http(s.metrics_host, s.metrics_port)
        self.core.start()
        # no retry against one node (the Search budget is better spent failing open); with several nodes in
        # OPENSEARCH_URL a refused or dropped connection is retried once on each other node (timeouts are not)
        client = make_client(self.opensearch, max_retries=len(hosts(self.opensearch.url)) - 1, timeout=s.knn_timeout_s)
        self.querylog = QueryLogger.from_settings(s, client if s.querylog_index else None, self.metrics)
        self.querylog.start()
        encoder = self._encoder
        if encoder is None:
            encoder = load_query_encoder(s.models)
        self.search = SearchService(s, self.core, client, encoder, self.opensearch.index_alias, self.querylog, self.metrics)
        self.grpc = GrpcServer(s, self.core, self.metrics, self.search)
        self.grpc_port = self.grpc.start()
        if s.http_port > 0 and importlib.util.find_spec("reranker.http_front") is not None:
            from reranker import http_front

            self.http_front = http_front.start_http_front(self.core, self.metrics, s)
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING, wait `drain_s`, stop accepting, let in-flight calls finish
        within `grace_s` (default `settings.grace_s`), then stop the core, query log and metrics."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.grace_s if grace_s is None else grace_s
        if self.grpc is not None:
            self.grpc.set_not_serving()
        if self.settings.drain_s:
            time.sleep(self.settings.drain_s)
        t0 = time.monotonic()
        stoppers = []
        if self.http_front is not None:
            stoppers.append(threading.Thread(target=self.http_front.stop, args=(grace,), daemon=True))
        if self.grpc is not None:
            stoppers.append(threading.Thread(target=self.grpc.stop, args=(grace,), daemon=True))
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(grace + 5.0)
        self.core.stop(max(0.0, grace - (time.monotonic() - t0)))
        if self.querylog is not None:
            self.querylog.stop()
        self.metrics.stop_http()

    def __enter__(self) -> "Sidecar":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_server(settings: ServeSettings | None = None, registry: ModelRegistry | None = None) -> int:
    """Run the sidecar until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # opensearch-py logs every successful request at INFO (one line per Search); failures stay (WARNING)
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    settings = settings or ServeSettings()
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if settings.backend == "torch" or settings.models.query_encoder == "torch":
        import torch  # only this configuration imports torch; the default (onnx) never does

        torch.set_num_threads(settings.threads)
        try:
            torch.set_num_interop_threads(settings.threads)
        except RuntimeError:  # already set or used in this process
            pass
    sidecar = Sidecar(settings, registry)
    sidecar.start()
    version = sidecar.core.model_version
    log.info(
        "gRPC listening on %s (fashion_rerank.v1.Reranker, tei.v1.Rerank, health, reflection; %s)",
        sidecar.target,
        grpc_auth.describe(settings),
    )
    if sidecar.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, sidecar.metrics_port)
    if sidecar.http_front is not None:
        log.info("HTTP front on %s:%d", settings.http_host, settings.http_port)
    log.info(
        "model %s version %s from %s; backend %s, workers %d, model threads %d; OpenSearch %s, index %s",
        sidecar.registry.name,
        version or "(none promoted: Search answers in kNN order)",
        sidecar.registry.dir,
        settings.backend,
        sidecar.core.workers,
        sidecar.core.threads_per_worker,
        sidecar.opensearch.url,
        sidecar.opensearch.index_alias,
    )
    stop.wait()
    log.info(
        "signal %s: health NOT_SERVING, finishing in-flight calls (grace %.1f s)",
        signal.Signals(received[0]).name if received else "?",
        settings.grace_s,
    )
    sidecar.stop()
    log.info("stopped")
    return 0
