"""Search's document cache: the `_source` of products Search has already fetched, by content hash.

Why: OpenSearch's fetch phase reads each hit's stored fields (`_id`, `_source`) from a compressed block of its
own; for 100 kNN candidates that was most of the request (`took` 4.6 of which ~3.3 ms fetch on the demo's
44,446 products; 6.1 ms at the client against 3.0 ms for a request that asks for one doc-value field only,
docs/performance.md#search-documents). A catalog is small next to its traffic and the same products come back
for many queries, so Search asks the kNN request for the hash field's doc values only and reads `_source` only
for the products it has not seen (`fashion_rerank.retrieval.documents_by_value`, one request).

- Key: the concrete index a hit came from and the value of the index schema's `hash_field` (the indexer's
  `source_hash`: a hash of the product id and every indexed field), "<index>\x00<hash>". A changed document
  has a new hash, so the cache can never serve an old version of it; another index (a rebuild behind the
  alias, a second index) has its own entries. Search uses the hash only where it identifies documents: one
  value per document, no value shared (`reranker.search.SearchService._documents`).
- Bounded by entries and by bytes (an estimate of each `_source`'s Python size, `source_bytes`), least
  recently used first out. Thread-safe.
- Entries are shared between requests: callers must not modify a returned `_source`.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any, Iterable, Mapping

#: Accounted bytes of one entry besides its `_source` (key string, tuple, LRU links, dict slot).
ENTRY_OVERHEAD = 200


def source_bytes(value: Any) -> int:
    """Estimated memory of a JSON value as Python holds it (`sys.getsizeof`, summed over containers), bytes."""
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sys.getsizeof(k) + source_bytes(v) for k, v in value.items())
    if isinstance(value, list):
        return sys.getsizeof(value) + sum(source_bytes(v) for v in value)
    return sys.getsizeof(value)


class DocumentCache:
    """LRU cache {hash value: (document `_id`, `_source`)}.

    Args:
        max_entries: most documents kept (0 disables the cache).
        max_bytes: most accounted bytes kept (`source_bytes` + `ENTRY_OVERHEAD` per document).

    Attributes:
        hits, misses: documents answered from the cache / not found in it, since start.
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self._data: OrderedDict[str, tuple[str, dict[str, Any], int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """False when the bounds leave no room for a document."""
        return self.max_entries > 0 and self.max_bytes > ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """{key: (`_id`, `_source`)} of the `keys` held (each marked recently used); counts hits and misses."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        with self._lock:
            for k in keys:
                if k in out:
                    continue
                entry = self._data.get(k)
                if entry is None:
                    self.misses += 1
                    continue
                self._data.move_to_end(k)
                self.hits += 1
                out[k] = (entry[0], entry[1])
        return out

    def put_many(self, documents: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
        """Keep {key: (`_id`, `_source`)}; a document larger than the whole byte bound is not kept."""
        if not self.enabled:
            return
        with self._lock:
            for k, (doc_id, source) in documents.items():
                size = source_bytes(source) + ENTRY_OVERHEAD
                if size > self.max_bytes:
                    continue
                old = self._data.pop(k, None)
                if old is not None:
                    self.bytes -= old[2]
                self._data[k] = (doc_id, source, size)
                self.bytes += size
                while self._data and (len(self._data) > self.max_entries or self.bytes > self.max_bytes):
                    _, (_, _, n) = self._data.popitem(last=False)
                    self.bytes -= n

    def clear(self) -> None:
        """Drop every document."""
        with self._lock:
            self._data.clear()
            self.bytes = 0
