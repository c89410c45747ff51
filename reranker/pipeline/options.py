"""What `install-pipeline` is asked to do (`InstallOptions`), its checks, and the names and settings it touches."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fashion_rerank.settings import ModelSettings

DEFAULT_PIPELINE = "rerank-fashion"


#: Hidden index recording what install-pipeline changed (deleted again by the last uninstall).
STATE_INDEX = "fashion-rerank-installs"


#: `document_fields` of the rerank processor: the stored text of `fashion_rerank.product.rerank_text`.
DOCUMENT_FIELD = "rerank_text"


S_REGEX = "plugins.ml_commons.trusted_connector_endpoints_regex"


S_PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"


S_ONLY_ML_NODE = "plugins.ml_commons.only_run_on_ml_node"


S_HEAP = "plugins.ml_commons.jvm_heap_memory_threshold"


S_NATIVE = "plugins.ml_commons.native_memory_threshold"


S_DEFAULT_PIPELINE = "index.search.default_pipeline"


#: Points of headroom below an ml-commons memory threshold under which it is raised on a dev node.
MEMORY_HEADROOM = 10


class InstallError(RuntimeError):
    """The cluster refused a step or the smoke call failed; the message says which step and why."""


def _serve_settings():
    """`fashion_rerank.settings.ServeSettings()` when the sidecar package is built, else None."""
    try:
        from fashion_rerank.settings import ServeSettings
    except ImportError:  # pragma: no cover - issue 3 not merged yet
        return None
    return ServeSettings()


def _deadline_s(serve) -> float:
    """The HTTP front's default per-request deadline in seconds: `FR_SERVE_RERANK_BUDGET_MS` (1.5 s)."""
    value = getattr(serve, "rerank_budget_ms", None) if serve is not None else None
    return float(value) / 1000.0 if isinstance(value, (int, float)) and value > 0 else 1.5


def default_reranker_url(serve=None) -> str:
    """`http(s)://127.0.0.1:<FR_SERVE_HTTP_PORT>` (https when the HTTP front has a TLS certificate)."""
    serve = serve if serve is not None else _serve_settings()
    port = getattr(serve, "http_port", 8080)
    port = port if isinstance(port, int) and port > 0 else 8080
    tls = str(getattr(serve, "http_tls_cert", None) or "") not in ("", ".")
    return f"{'https' if tls else 'http'}://127.0.0.1:{port}"


@dataclass
class InstallOptions:
    """What to install.

    Attributes:
        pipeline: search pipeline name; the connector, model group and model are named after it.
        reranker_url: base URL of the sidecar's HTTP front as the *cluster* reaches it (no path).
        index: index or alias whose `index.search.default_pipeline` is set when `set_default`.
        set_default: make the pipeline the index's default search pipeline.
        api_key: bearer token of the HTTP front (`FR_SERVE_HTTP_API_KEY`); None: no auth header.
        model: model name sent in the Cohere request's `model` field (informational for the sidecar).
        read_timeout_s: connector read timeout, whole seconds: ceil(sidecar deadline) + 1, so the
            sidecar's own 504 arrives before ml-commons gives up.
        connection_timeout_s: connector connect timeout, whole seconds (ml-commons has no finer unit).
        max_connection: connector HTTP connection pool size.
        smoke: run the smoke `_predict` after deploying.
    """

    pipeline: str = DEFAULT_PIPELINE
    reranker_url: str = "http://127.0.0.1:8080"
    index: str | None = None
    set_default: bool = False
    api_key: str | None = None
    model: str = "fashion-ce"
    read_timeout_s: int = 2
    connection_timeout_s: int = 1
    max_connection: int = 30
    smoke: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,100}", self.pipeline or ""):
            raise InstallError(f"pipeline name {self.pipeline!r} must be lowercase letters, digits, '-', '_' or '.'")
        parts = urlsplit(self.reranker_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InstallError(f"--reranker-url {self.reranker_url!r} must look like http://host:port")
        if parts.path not in ("", "/") or parts.query:
            raise InstallError(f"--reranker-url {self.reranker_url!r} must be a base URL without a path; /v1/rerank is added")
        self.reranker_url = f"{parts.scheme}://{parts.netloc}"
        if self.set_default and not self.index:
            raise InstallError("--set-default needs --index")
        if self.read_timeout_s < 1 or self.connection_timeout_s < 1:
            raise InstallError("connector timeouts are whole seconds >= 1")

    @classmethod
    def from_settings(cls, **overrides: Any) -> "InstallOptions":
        """Defaults from `ServeSettings` (HTTP port, TLS, API key, deadline) and `ModelSettings` (name)."""

        serve = _serve_settings()
        key = getattr(serve, "http_api_key", None)
        if key is not None and hasattr(key, "get_secret_value"):
            key = key.get_secret_value()
        values: dict[str, Any] = dict(
            reranker_url=default_reranker_url(serve),
            api_key=key or None,
            model=(serve.models.name if serve is not None else ModelSettings().name),
            read_timeout_s=int(math.ceil(_deadline_s(serve))) + 1,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def connector_name(self) -> str:
        return f"{self.pipeline}-connector"

    @property
    def model_name(self) -> str:
        return f"{self.pipeline}-model"

    @property
    def group_name(self) -> str:
        return f"{self.pipeline}-group"

    @property
    def rerank_url(self) -> str:
        return f"{self.reranker_url}/v1/rerank"

    @property
    def key_fingerprint(self) -> str | None:
        """First 16 hex digits of sha256(api_key), stored to notice a changed key (never the key)."""
        return hashlib.sha256(self.api_key.encode()).hexdigest()[:16] if self.api_key else None
