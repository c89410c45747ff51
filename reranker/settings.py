"""Settings of the sidecar (`FR_SERVE_*` environment variables or the `FASHION_RERANK_CONFIG` file).

Where the defaults come from:
- `sub_batch = 25`: length-sorted sub-batches of 25 were the fastest torch fp32 configuration for
  100 pairs of ~76 tokens on 2 cores, and needed the least memory (shared/reference/cpu-rerank-measurements.md
  §3); `sub_batch_tokens = 2048` (about 25 x 80) lets shorter pairs fill a pass to the same work.
- `max_documents = 1000`, `max_batch_pairs = 256`, `max_batch_tokens = 16384` (TEI's default
  `--max-batch-tokens`): a request never waits for more than a few batches of others.
- `threads`: the container's CPU quota (`fashion_rerank.settings.cpu_quota`), not the host's cores.
- `rerank_budget_ms = 1500`: 100 candidates take about 1 s with torch fp32 on 2 cores (same source).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from fashion_rerank.settings import _config, cpu_quota


class ServeSettings(BaseSettings):
    """Everything `fashion-rerank serve` reads. Environment prefix `FR_SERVE_` (e.g. `FR_SERVE_GRPC_PORT`).

    Ports: gRPC and metrics 0 = a free port (tests); metrics < 0 = off; HTTP front only when http_port > 0.
    """

    model_config = _config("FR_SERVE_")

    # -- listeners
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    grpc_workers: int = Field(64, gt=0, description="gRPC handler threads")
    max_concurrent_rpcs: int = Field(512, gt=0, description="RPCs in progress before gRPC answers RESOURCE_EXHAUSTED")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, le=65535, description="Prometheus /metrics; 0 = free port, <0 = off")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, le=65535, description="HTTP front (reranker.http_front), started when > 0")
    # HTTP front extras (reranker.http_front): bearer-token auth, TLS, request size
    http_api_key: SecretStr | None = Field(None, description="HTTP front: require `Authorization: Bearer <key>`; unset/empty = no auth")
    http_tls_cert: Path | None = Field(None, description="HTTP front: PEM certificate file; with http_tls_key it serves HTTPS")
    http_tls_key: Path | None = Field(None, description="HTTP front: PEM private key file of http_tls_cert")
    http_max_body_bytes: int = Field(2_000_000, gt=0, description="HTTP front: largest request body (TEI's --payload-limit default)")

    # -- limits
    max_documents: int = Field(1000, gt=0, description="documents per Rerank request / top_k per Search")
    max_text_chars: int = Field(20_000, gt=0, description="characters per query or document text")
    max_message_bytes: int = Field(16 * 1024 * 1024, gt=1024, description="gRPC max send/receive message size (server and client)")

    # -- scoring core
    backend: str = Field("torch", description="model backend (reranker.backends): torch")
    queue_pairs: int = Field(4000, gt=0, description="(query, document) pairs waiting in the queue before RESOURCE_EXHAUSTED")
    max_batch_pairs: int = Field(256, gt=0, description="pairs per batch formed across concurrent requests")
    max_batch_tokens: int = Field(16384, gt=0, description="padded tokens per forward pass (sub-batch)")
    sub_batch: int = Field(25, gt=0, description="pairs per length-sorted forward pass (at least)")
    sub_batch_tokens: int = Field(2048, gt=0, description="short pairs: fill a forward pass up to this many padded tokens")
    threads: int = Field(default_factory=cpu_quota, gt=0, description="torch intra-op threads (default: CPU quota)")
    registry_poll_s: float = Field(2.0, gt=0, description="how often the registry's `current` pointer is read")

    # -- Search
    default_top_k: int = Field(100, gt=0)
    default_top_n: int = Field(10, gt=0)
    rerank_budget_ms: float = Field(1500.0, gt=0, description="time Search gives the reranker before failing open/closed")
    fail_open: bool = Field(True, description="Search returns the kNN order when reranking fails or runs out of budget")
    knn_timeout_s: float = Field(5.0, gt=0, description="OpenSearch kNN request timeout when the caller sets no deadline")

    # -- shutdown
    grace_s: float = Field(10.0, ge=0, description="SIGTERM: time in-flight calls get to finish")
    drain_s: float = Field(0.0, ge=0, description="SIGTERM: time health shows NOT_SERVING before the server stops accepting")

    # -- query log (UBI `ubi_queries` shape)
    querylog_sample_rate: float = Field(0.1, ge=0, le=1, description="share of Search queries logged")
    querylog_path: Path | None = Field(Path("var/query_log/ubi_queries.jsonl"), description="JSONL file; empty = off")
    querylog_index: str | None = Field("ubi_queries", description="OpenSearch index; empty = off")
    querylog_application: str = "fashion-rerank"
    querylog_queue: int = Field(10_000, gt=0, description="log records buffered before new ones are dropped")

    @model_validator(mode="after")
    def _check(self) -> "ServeSettings":
        if self.queue_pairs < self.max_documents:
            raise ValueError(f"queue_pairs ({self.queue_pairs}) must be >= max_documents ({self.max_documents})")
        if self.default_top_n > self.default_top_k:
            raise ValueError("default_top_n must be <= default_top_k")
        if self.querylog_path is not None and str(self.querylog_path) in ("", "."):
            self.querylog_path = None
        if not self.querylog_index:
            self.querylog_index = None
        return self
