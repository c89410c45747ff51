"""The score cache: logits of (query, document text) pairs already scored by the serving model version.

Shopper traffic repeats itself: head queries come back many times a minute (the demo's replay is
Zipf-distributed: its top query is ~20% of all searches), and each brings back mostly the same kNN
candidates. A request whose every pair is in the cache is answered without touching the model or the queue.

- Key: a 16-byte BLAKE2b digest of (query, truncation side, document text); the texts themselves are not
  kept, so an entry costs the same whatever the text length: `ENTRY_BYTES` (digest, logit, LRU links and
  dict slot, measured with tracemalloc on CPython 3.11: ~150 bytes; 200 is the budget used).
- Bounded by entries and by bytes, least recently used first out.
- One model version at a time: `reset(version)` empties it when the model is swapped, and `put` ignores
  scores of any other version, so a lookup can never return another version's score.
- Only whole requests are answered from the cache (every pair present); a partly cached request is
  scored whole, so the scores of one response always come from one model version.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

#: Accounted bytes per entry (see the module docstring).
ENTRY_BYTES = 200


def pair_key(query: str, document: str, truncate_left: bool = False) -> bytes:
    """16-byte digest of one (query, document) pair as the model sees it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(query.encode("utf-8", "surrogatepass"))
    h.update(b"\x00L\x00" if truncate_left else b"\x00R\x00")
    h.update(document.encode("utf-8", "surrogatepass"))
    return h.digest()


class ScoreCache:
    """LRU cache of logits for one model version. Thread-safe.

    Args:
        max_entries: most pairs kept (0 disables the cache).
        max_bytes: most accounted bytes kept (`ENTRY_BYTES` per pair).
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.capacity = max(0, min(int(max_entries), int(max_bytes) // ENTRY_BYTES))
        self._data: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self.version: str | None = None
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """False when the bounds leave no room for a single entry."""
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """Accounted bytes held now."""
        return len(self._data) * ENTRY_BYTES

    def reset(self, version: str | None) -> None:
        """Empty the cache and accept scores of `version` only from now on (called on every model swap)."""
        with self._lock:
            self._data.clear()
            self.version = version

    def get(self, version: str, query: str, documents: Sequence[str], truncate_left: bool = False) -> np.ndarray | None:
        """Logits (n,) float32 of every pair when all are cached for `version`, else None (counts a hit or a miss)."""
        if not self.enabled or not documents:
            return None
        keys = [pair_key(query, d, truncate_left) for d in documents]
        with self._lock:
            if version != self.version or any(k not in self._data for k in keys):
                self.misses += 1
                return None
            out = np.empty(len(keys), dtype=np.float32)
            for i, k in enumerate(keys):
                self._data.move_to_end(k)
                out[i] = self._data[k]
            self.hits += 1
            return out

    def put(self, version: str, query: str, documents: Sequence[str], logits: np.ndarray, truncate_left: bool = False) -> None:
        """Remember `logits` (n,) of `documents` for `query`, scored by `version`; ignored for another version."""
        if not self.enabled:
            return
        keys = [pair_key(query, d, truncate_left) for d in documents]
        with self._lock:
            if version != self.version:
                return
            for k, v in zip(keys, np.asarray(logits, dtype=np.float32).tolist()):
                self._data[k] = v
                self._data.move_to_end(k)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
