"""The query log: a sample of live `Search` queries in OpenSearch User Behavior Insights `ubi_queries` shape.

The labeling job reads it back (`read_query_log`) to pick queries to grade. One record:

    {"query_id": "<uuid4>", "query_response_id": "<uuid4>", "user_query": "red midi dress",
     "query_response_hit_ids": ["15970", "39386"], "timestamp": "2026-11-30T06:15:00.123+00:00",
     "application": "fashion-rerank", "client_id": "web-42",
     "query_attributes": {"filters": {"gender": ["Women"]}, "top_k": 100, "top_n": 10, "reranked": true,
                          "model_version": "20261130T061500Z"}}

Field names, types and the index mapping follow UBI's `queries-mapping.json` (opensearch-project/
user-behavior-insights, see docs/reference/peer-apis.md#ubi_queries-mapping), so an OpenSearch with the UBI plugin
and this log share one index. E-mail addresses and phone numbers are replaced by "[email]" / "[phone]"
in the query text before anything is written. Records are written by a background thread; the request
path only samples and enqueues (a full buffer drops the record and counts it).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import re
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from fashion_rerank.ubi import ensure_index

log = logging.getLogger(__name__)


_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)


# A run of digits, spaces, dots, dashes, slashes and parentheses with an optional leading "+". It is taken
# for a phone number when it holds 9 to 15 digits (E.164 allows at most 15), or 7-8 digits written the way
# phone numbers are (a leading "+", a dash or parentheses: "555-0134", "(030) 1234"). Sizes ("32"),
# style numbers with spaces ("501 2019") and SKUs with letters are left alone.
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().\-/]{5,}\d(?!\w)")


def scrub(text: str) -> str:
    """`text` with e-mail addresses replaced by "[email]" and phone numbers by "[phone]"."""
    text = _EMAIL.sub("[email]", text)

    def phone(m: re.Match) -> str:
        s = m.group(0)
        digits = sum(c.isdigit() for c in s)
        formatted = s.startswith(("+", "(")) or "-" in s or "(" in s
        return "[phone]" if 9 <= digits <= 15 or (7 <= digits <= 8 and formatted) else s

    return _PHONE_CANDIDATE.sub(phone, text)


def ubi_record(
    query: str,
    hit_ids: Sequence[str],
    *,
    query_id: str | None = None,
    application: str = "fashion-rerank",
    client_id: str = "",
    attributes: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """One `ubi_queries` document for a query (text scrubbed) and the ids of the hits it returned, best first."""
    ts = (timestamp or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "query_id": query_id or str(uuid.uuid4()),
        "query_response_id": str(uuid.uuid4()),
        "user_query": scrub(query),
        "query_response_hit_ids": [str(h) for h in hit_ids],
        "timestamp": ts.isoformat(timespec="milliseconds"),
        "application": application,
        "client_id": scrub(client_id or ""),
        "query_attributes": dict(attributes or {}),
    }


class QueryLogger:
    """Samples queries and writes them off the request path to a JSONL file and/or an OpenSearch index.

    Args:
        sample_rate: share of queries logged, 0..1.
        path: JSONL file (appended; parent folders created), or None.
        index: OpenSearch index name (created with the UBI mapping), or None.
        client: opensearch-py client, needed when `index` is set.
        application: UBI `application` value.
        max_buffer: records buffered before new ones are dropped.
        metrics: optional `reranker.metrics.Metrics` (`querylog_records_total{outcome}`).
        seed: random seed of the sampler (tests).
    """

    def __init__(
        self,
        sample_rate: float = 0.1,
        path: str | Path | None = None,
        index: str | None = None,
        client=None,
        application: str = "fashion-rerank",
        max_buffer: int = 10_000,
        metrics=None,
        seed: int | None = None,
    ):
        if index and client is None:
            raise ValueError("an OpenSearch client is needed to log queries to an index")
        self.sample_rate = float(sample_rate)
        self.path = Path(path) if path else None
        self.index = index or None
        self.client = client
        self.application = application
        self.metrics = metrics
        self._rng = random.Random(seed)
        self._q: queue.Queue = queue.Queue(maxsize=max_buffer)
        self._thread: threading.Thread | None = None
        self._index_ready = False

    @classmethod
    def from_settings(cls, settings, client=None, metrics=None) -> "QueryLogger":
        """Build from `ServeSettings` (querylog_* fields)."""
        return cls(
            settings.querylog_sample_rate,
            settings.querylog_path,
            settings.querylog_index,
            client,
            settings.querylog_application,
            settings.querylog_queue,
            metrics,
        )

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0 and (self.path is not None or self.index is not None)

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="query-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is buffered (up to `timeout` seconds) and stop the writer thread."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout)
            self._thread = None

    def log(
        self,
        query: str,
        hit_ids: Sequence[str],
        *,
        query_id: str | None = None,
        client_id: str = "",
        attributes: Mapping[str, Any] | None = None,
    ) -> bool:
        """Sample and enqueue one query; returns True when it was queued for writing. Never blocks."""
        if not self.enabled or self._rng.random() >= self.sample_rate:
            return False
        rec = ubi_record(
            query, hit_ids, query_id=query_id, application=self.application, client_id=client_id, attributes=attributes
        )
        try:
            self._q.put_nowait(rec)
        except queue.Full:
            self._count("dropped")
            return False
        return True

    def _count(self, outcome: str, n: int = 1) -> None:
        if self.metrics and n:
            self.metrics.querylog.labels(outcome).inc(n)

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._q.get()
            batch = []
            if item is None:
                stop = True
            else:
                batch.append(item)
            while len(batch) < 500:
                try:
                    item = self._q.get(timeout=0.2 if batch else 0)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if batch:
                self._write(batch)

    def _write(self, batch: list[dict]) -> None:
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    for rec in batch:
                        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self._count("written", len(batch))
            except OSError as exc:
                log.warning("query log: cannot write %s: %s", self.path, exc)
                self._count("error", len(batch))
        if self.index is not None:
            from opensearchpy import helpers

            try:
                if not self._index_ready:
                    ensure_index(self.client, self.index)
                    self._index_ready = True
                ok, errors = helpers.bulk(
                    self.client, ({"_index": self.index, "_id": r["query_id"], "_source": r} for r in batch), raise_on_error=False
                )
                self._count("written", ok)
                self._count("error", len(errors) if isinstance(errors, list) else 0)
            except Exception as exc:  # noqa: BLE001 - OpenSearch down: drop, count, keep serving
                log.warning("query log: cannot write to index %s: %s", self.index, exc)
                self._count("error", len(batch))
