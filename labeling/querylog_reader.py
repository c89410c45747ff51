"""Read the sidecar's query log: records in the OpenSearch UBI `ubi_queries` shape, from JSONL or an index.

A record (UBI 1.3 `ubi_queries` mapping, see docs/reference/peer-apis.md#ubi_queries-mapping):
    {"query_id", "user_query", "query_response_hit_ids": [...], "timestamp", "application", "client_id",
     "query_attributes": {...}}
Only `user_query` is required here. `query_response_hit_ids` may be a list or a single id.

Sources: a path to a JSONL file, or the name of an OpenSearch index. Reading the raw records is delegated to
the kernel's `fashion_rerank.ubi.read_query_log` (one reader of the format the sidecar writes); this module
turns them into `LoggedQuery` and counts records without a query in `QueryLogRead.skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fashion_rerank.ubi import read_query_log as read_raw


@dataclass(frozen=True)
class LoggedQuery:
    """One logged search: the shopper's text and what was shown."""

    user_query: str
    query_id: str = ""
    timestamp: str = ""
    hit_ids: tuple[str, ...] = ()
    application: str = ""
    client_id: str = ""
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class QueryLogRead:
    """Records read from a query log (an iterator, filled while iterating) and lines skipped with reasons."""

    records: Iterator[LoggedQuery]
    skipped: list[tuple[int | str, str]] = field(default_factory=list)
    read: int = 0


def is_file_source(source: str | Path) -> bool:
    """True when `source` names a JSONL file rather than an OpenSearch index."""
    s = str(source)
    return Path(s).exists() or s.endswith((".jsonl", ".ndjson", ".json")) or "/" in s


def _record(obj: Any) -> LoggedQuery | str:
    if not isinstance(obj, dict):
        return "not a JSON object"
    q = obj.get("user_query")
    if not isinstance(q, str) or not q.strip():
        return "no user_query"
    hits = obj.get("query_response_hit_ids") or ()
    if isinstance(hits, str):
        hits = (hits,)
    attrs = obj.get("query_attributes") if isinstance(obj.get("query_attributes"), dict) else {}
    return LoggedQuery(
        user_query=q,
        query_id=str(obj.get("query_id") or ""),
        timestamp=str(obj.get("timestamp") or ""),
        hit_ids=tuple(str(h) for h in hits),
        application=str(obj.get("application") or ""),
        client_id=str(obj.get("client_id") or ""),
        attributes=attrs,
    )


def read_query_log(source: str | Path, client=None, limit: int | None = None) -> QueryLogRead:
    """Open a query log. Iterate `.records`; `.skipped` and `.read` fill as you go.

    Args:
        source: a JSONL path (anything that exists as a file, ends in .jsonl/.ndjson/.json or contains "/"),
            else an OpenSearch index name (read with `client`, default `fashion_rerank.opensearch.make_client()`).
        limit: stop after this many records read.
    Raises:
        FileNotFoundError: a file source that does not exist.
        opensearchpy.NotFoundError (while iterating): the index does not exist.
    Invalid JSON lines are skipped by the sidecar's reader (logged as warnings).
    """

    out = QueryLogRead(records=iter(()))
    if is_file_source(source):
        if not Path(source).exists():
            raise FileNotFoundError(f"query log file {source} does not exist")
        raw = read_raw(source)
    else:
        if client is None:
            from fashion_rerank.opensearch import make_client

            client = make_client()
        raw = read_raw(str(source), client=client)

    def records():
        for n, obj in enumerate(raw, start=1):
            if limit is not None and out.read >= limit:
                return
            out.read += 1
            rec = _record(obj)
            if isinstance(rec, str):
                out.skipped.append((n, rec))
            else:
                yield rec

    out.records = records()
    return out
