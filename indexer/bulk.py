"""Streaming bulk through opensearch-py's `helpers.streaming_bulk`, one result per document.

- Per-item 429s (the node's write queue or indexing pressure is full, or a retryable block such as
  `read_only_allow_delete`) are retried by the helper itself: `max_retries` times, sleeping
  `initial_backoff_s * 2**(attempt-1)` seconds (capped at `max_backoff_s`) before each retry, and only
  the rejected documents are re-sent. A whole `_bulk` request answered 429 is retried the same way.
- Every other per-item error (mapping error, 403 write block, 404 on delete, ...) is reported once as a
  failed `BulkResult(id, op, status, error)` and not retried; the rest of the chunk goes on.
- Request-level failures other than 429 (connection refused, timeout after the client's own retries,
  413) raise the opensearch-py exception: they are not about one document.
- Every request carries an explicit `request_timeout`, and is bounded by `chunk_docs` documents AND
  `max_chunk_bytes` bytes of body (the helper starts a new request before either would be exceeded;
  a single document larger than the byte cap goes alone).

Retries replay writes, so only actions that give the same result when applied twice are accepted:
`index` with an explicit `_id` (a replay overwrites the same document with the same source) and
`delete` with an explicit `_id` (a replay finds nothing: 404, which callers treat as done). Both the
helper's 429 retries and the client's own retry of a request whose connection broke after it was sent
(`make_client`: `max_retries=2`) can replay a request that OpenSearch already applied. `create` (409
on replay), `update` (scripts and partial docs need not be idempotent) and any action without `_id`
(a replay would add a second document) raise ValueError before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from opensearchpy import helpers


@dataclass(frozen=True)
class BulkResult:
    """Outcome of one bulk action.

    Attributes:
        id: the document `_id`.
        op: "index", "create", "update" or "delete".
        ok: True for a 2xx item status.
        status: the item's HTTP status (e.g. 201 created, 200 updated, 404 delete of a missing doc, 429).
        error: "type: reason" from OpenSearch for a failed item, "" otherwise.
    """

    id: str
    op: str
    ok: bool
    status: int
    error: str = ""


#: Bulk operations that are safe to replay (see the module doc); every action needs an explicit `_id`.
RETRY_SAFE_OPS = ("index", "delete")


def check_retry_safe(action: Mapping[str, Any]) -> None:
    """Raise ValueError unless `action` is an `index` or `delete` with an explicit, non-empty `_id`."""
    op = action.get("_op_type", "index")
    if op not in RETRY_SAFE_OPS:
        raise ValueError(f"bulk action {op!r} is not safe to retry; only {RETRY_SAFE_OPS} with an explicit _id are sent")
    if not str(action.get("_id") or ""):
        raise ValueError(f"bulk {op} action without an explicit _id: a retried request would add a second document")


def _checked(actions: Iterable[dict]) -> Iterable[dict]:
    """`actions`, each checked by `check_retry_safe`: all up front for a list or tuple, else lazily."""
    if isinstance(actions, (list, tuple)):
        for a in actions:
            check_retry_safe(a)
        return actions

    def lazily() -> Iterator[dict]:
        for a in actions:
            check_retry_safe(a)
            yield a

    return lazily()


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        text = f"{err.get('type', 'error')}: {err.get('reason', '')}".strip()
        cause = err.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type', '')}: {cause['reason']})"
        return text
    return str(err or "")


def bulk_results(
    client,
    actions: Iterable[dict],
    *,
    chunk_docs: int = 500,
    max_chunk_bytes: int = 50 * 1024 * 1024,
    max_retries: int = 5,
    initial_backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    request_timeout_s: float = 120.0,
) -> Iterator[BulkResult]:
    """Send `actions` in `_bulk` requests and yield one BulkResult per action, in order of completion.

    Args:
        client: opensearch-py client.
        actions: helper-style dicts, e.g. `{"_op_type": "index", "_index": i, "_id": id, "_source": {...}}`
            or `{"_op_type": "delete", "_index": i, "_id": id}`. Consumed lazily (a generator is fine).
        chunk_docs: documents per `_bulk` request; `max_chunk_bytes` caps a request's body in bytes
            (IndexSettings.max_chunk_bytes; the default here is the helper's own order of magnitude).
        max_retries, initial_backoff_s, max_backoff_s: 429 retry policy of `helpers.streaming_bulk`.
        request_timeout_s: client timeout of each `_bulk` request, seconds.

    Raises:
        ValueError: an action that is not safe to retry (not `index`/`delete`, or no `_id`); for a list
            nothing is sent, for a generator the actions before it may have been.
        opensearchpy.TransportError / ConnectionError: a request-level failure other than 429, or a 429
        that persists after `max_retries` retries.
    """
    for ok, item in helpers.streaming_bulk(
        client,
        _checked(actions),
        chunk_size=chunk_docs,
        max_chunk_bytes=max_chunk_bytes,
        raise_on_error=False,
        raise_on_exception=True,
        max_retries=max_retries,
        initial_backoff=initial_backoff_s,  # type: ignore[arg-type]  # the helper does float arithmetic
        max_backoff=max_backoff_s,  # type: ignore[arg-type]
        yield_ok=True,
        request_timeout=request_timeout_s,
    ):
        ((op, info),) = item.items()
        status = int(info.get("status", 0) or 0)
        yield BulkResult(
            id=str(info.get("_id", "")),
            op=op,
            ok=bool(ok),
            status=status,
            error="" if ok else _error_text(info.get("error")),
        )
