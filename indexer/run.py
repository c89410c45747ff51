"""`fashion-rerank index`: catalog -> rerank_text -> embeddings (cached) -> bulk -> refresh -> alias swap.

Full build (default): a new versioned index `<alias>-<timestamp>` is created and filled in chunks of
`FR_INDEX_CHUNK_PRODUCTS` products (text -> embed with cache -> bulk; the bulk of one chunk runs in a
background thread while the next chunk is embedded, so at most two chunks are in memory), then
refreshed, smoke-queried and put behind the alias in one atomic `_aliases` call; old indices beyond
`FR_INDEX_KEEP` are deleted. If nothing could be indexed the new index is deleted and the alias stays.

Incremental (`--incremental`): works in place on the index behind the alias. A product whose stored
`source_hash` (hash of its fields and of its `rerank_text` hash, the `text_hash` field) is unchanged is
left alone; a new or changed one is indexed again (re-embedded only if its `rerank_text` changed: the
embedding cache has the others; a change of e.g. `category`, which is not part of the text, is caught
too), and documents whose id is no longer in the catalog are deleted (not with `--limit`, which
reads only part of the catalog; note that a product whose row became invalid, e.g. lost its title, is
no longer in the catalog and is deleted). Without an index behind the alias it falls back to a full build.

Bad input stops nothing: catalog rows (missing id, empty title, duplicate id, malformed line), vectors
(zero, non-finite, wrong dimension) and per-item bulk errors are each recorded as `Skipped(row or id,
reason)` in the summary and the rest goes on. When `run_index` returns, every indexed document is
searchable (the index was refreshed).

No partial index goes live (indexer/gate.py): after the refresh a full build compares the new index's
count with the rows read and with the previous index; when too many rows failed
(`FR_INDEX_MAX_FAILED_SHARE`, 0.5%) or the count fell too far (`FR_INDEX_MIN_COUNT_RATIO`, 80%) the alias
stays where it was, the new index is kept (marked refused) and `PartialIndexError` is raised with the
summary. In `--incremental` mode a product whose new row was rejected keeps its old document: it is
listed in `summary.stale` (and retried by the next incremental run, since its stored hash is the old
one); above the failed share the run raises `PartialIndexError` after its refresh. `allow_partial`
turns both into notes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
from opensearchpy import helpers
from opensearchpy.exceptions import NotFoundError
from tqdm import tqdm

from fashion_rerank.embedding import EmbeddingCache, embed_with_cache, load_bi_encoder
from fashion_rerank.hardware import cpu_has_bf16
from fashion_rerank.opensearch import make_client
from fashion_rerank.product import Product, rerank_text, text_hash
from fashion_rerank.retrieval import VECTOR_FIELD
from fashion_rerank.settings import IndexSettings, OpenSearchSettings
from indexer.bulk import BulkResult, bulk_results
from indexer.catalogs import Skipped, open_catalog
from indexer.cluster import ClusterReport, cluster_report
from indexer.gate import PartialIndexError, count_problems, failed_rows, failed_share, failure_digest, reason_kind, share_problem
from indexer.index import (
    IndexLifecycleError,
    apply_retention,
    check_alias_name,
    create_index,
    current_index,
    finish_build,
    index_dimension,
    mark_complete,
    mark_refused,
    smoke_query,
    swap_alias,
    unique_index_name,
)

#: Decimals kept per vector component in the bulk JSON. float32 carries ~7 significant digits; 6
#: decimals change a unit vector's dot products by < 1e-5 and halve the JSON to encode and parse.
VECTOR_DECIMALS = 6


@dataclass
class IndexSummary:
    """What one `run_index` did.

    Attributes:
        catalog, alias: what was indexed where; `index`: the concrete index written ("" when none).
        mode: "full" or "incremental".
        read: catalog rows read (including skipped rows).
        embedded_computed / embedded_cached: vectors computed by the model / taken from the embedding
            cache (or shared with an identical text in the same chunk).
        indexed: documents written (created or replaced); `unchanged`: incremental, same text hash;
            `deleted`: incremental, documents removed because their product left the catalog.
        skipped: every row or product not indexed, as `Skipped(row number or product id, reason)`.
        seconds: wall time of the whole run; `previous_index`: what the alias pointed to before;
        `deleted_indices`: old versions removed by retention; `notes`: anything worth telling the user.
        previous_count / new_count: `_count` of the previous and of the new index at the gate (None: not
            counted, e.g. incremental); `alias_moved`: whether this run moved the alias.
        stale: incremental only, ids whose old document is still served although the catalog changed
            (new row rejected) or dropped it (delete failed); each also has its reason in `skipped`.
        refused: the partial-index gate's reasons (indexer/gate.py); non-empty with `alias_moved`
            False means the build was refused, with `alias_moved` True that `allow_partial` overrode it.
        cluster: the cluster's health after the run (`indexer.cluster.ClusterReport.to_dict`: status, nodes
            present / expected, unassigned shards); None when it could not be read.
    """

    catalog: str
    alias: str
    mode: str = "full"
    index: str = ""
    read: int = 0
    embedded_computed: int = 0
    embedded_cached: int = 0
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    previous_index: str | None = None
    deleted_indices: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    previous_count: int | None = None
    new_count: int | None = None
    alias_moved: bool = False
    stale: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    cluster: dict | None = None

    @property
    def failed(self) -> list[Skipped]:
        """Skipped rows whose product is not in the index as read (all but duplicate-id rows)."""
        return failed_rows(self.skipped)

    @property
    def failed_share(self) -> float:
        """len(failed) / (rows read - duplicate rows), the share the gate compares with max_failed_share."""
        return failed_share(self.read, self.skipped)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Counts of skipped rows per reason kind (ids and numbers left out), most frequent first."""
        return dict(Counter(reason_kind(s.reason) for s in self.skipped).most_common())

    @property
    def products_per_s(self) -> float:
        """Products handled (indexed + unchanged) per second of wall time."""
        return (self.indexed + self.unchanged) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with `skipped` as [{row, reason}] and the derived figures added."""
        d = asdict(self)
        d["skipped_by_reason"] = self.skipped_by_reason
        d["failed"] = len(self.failed)
        d["failed_share"] = round(self.failed_share, 6)
        d["failures"] = failure_digest(self.failed)
        d["products_per_s"] = round(self.products_per_s, 1)
        d["seconds"] = round(self.seconds, 2)
        return d

    def format(self, max_rows: int = 10) -> str:
        """Human-readable summary (what `fashion-rerank index` prints)."""
        lines = [
            f"{self.mode} index of {self.catalog!r} -> alias {self.alias!r} on index {self.index or '(none)'}",
            f"  read {self.read}, indexed {self.indexed}, unchanged {self.unchanged}, deleted {self.deleted}, "
            f"skipped {len(self.skipped)}",
            f"  embeddings: {self.embedded_computed} computed, {self.embedded_cached} from cache",
            f"  {self.seconds:.1f} s, {self.products_per_s:.0f} products/s",
        ]
        if self.failed:
            lines.append(f"  failed {len(self.failed)} ({self.failed_share:.2%} of the rows read): {failure_digest(self.failed)}")
        if self.stale:
            ids = ", ".join(self.stale[:max_rows]) + (" ..." if len(self.stale) > max_rows else "")
            lines.append(f"  STALE {len(self.stale)} documents still served from an older catalog row: {ids}")
        for r in self.refused:
            lines.append(f"  {'REFUSED' if not self.alias_moved and self.mode == 'full' else 'over the limit'}: {r}")
        if self.mode == "full" and self.index and not self.alias_moved:
            lines.append(
                f"  alias {self.alias!r} NOT moved (still on {self.previous_index or 'nothing'}); {self.index} kept for inspection"
            )
        if self.previous_index and self.alias_moved:
            lines.append(f"  previous index {self.previous_index} kept for rollback")
        if self.deleted_indices:
            lines.append(f"  retention deleted {', '.join(self.deleted_indices)}")
        for reason, n in self.skipped_by_reason.items():
            lines.append(f"  skipped {n:>6} x {reason}")
        for s in self.skipped[:max_rows]:
            lines.append(f"    row {s.row}: {s.reason}")
        if len(self.skipped) > max_rows:
            lines.append(f"    ... {len(self.skipped) - max_rows} more (use --json for all)")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.cluster:
            lines.append(f"  {ClusterReport(**{k: v for k, v in self.cluster.items() if k != 'missing_nodes'}).format()}")
        return "\n".join(lines)


def vector_problem(vector: Any, dimension: int) -> str | None:
    """Why `vector` cannot be indexed (wrong dimension, non-finite, all zeros), or None when it is fine."""
    arr = np.asarray(vector, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != dimension:
        return f"wrong vector dimension: {arr.size}, the index expects {dimension}"
    if not np.all(np.isfinite(arr)):
        return "non-finite vector: NaN or infinite values"
    if not np.any(arr):
        return "zero vector"
    return None


def _precision(encoder, mode: str):
    """Context manager for the embedding step: CPU bf16 autocast when `mode` asks for it (see IndexSettings)."""

    device = str(getattr(getattr(encoder, "_model", None), "device", "cpu"))
    if mode == "off" or not device.startswith("cpu") or (mode == "auto" and not cpu_has_bf16()):
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def _chunks(items: Iterable[Product], size: int) -> Iterator[list[Product]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _existing_hashes(client, index: str, timeout_s: float) -> dict[str, str]:
    """{_id: source_hash} of every document of `index` (scroll; "" for documents without the field)."""

    out: dict[str, str] = {}
    for hit in helpers.scan(
        client, index=index, query={"query": {"match_all": {}}}, _source=["source_hash"], size=5000, request_timeout=timeout_s
    ):
        out[hit["_id"]] = (hit.get("_source") or {}).get("source_hash", "")
    return out


def _source_hash(product: Product, rerank_hash: str) -> str:
    """Hash of every indexed field of `product` (title, description, attributes, rerank_text hash)."""
    fields = {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "attributes": dict(sorted(product.attributes.items())),
        "text_hash": rerank_hash,
    }
    return text_hash(json.dumps(fields, sort_keys=True, ensure_ascii=False))


@dataclass
class _ChunkOutcome:
    indexed: int = 0
    deleted: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def _send(client, actions: list[dict], s: IndexSettings) -> _ChunkOutcome:
    out = _ChunkOutcome()
    for r in bulk_results(
        client,
        actions,
        chunk_docs=s.bulk_docs,
        max_chunk_bytes=s.max_chunk_bytes,
        max_retries=s.max_retries,
        initial_backoff_s=s.initial_backoff_s,
        max_backoff_s=s.max_backoff_s,
        request_timeout_s=s.request_timeout_s,
    ):
        _tally(out, r)
    return out


def _count(client, index: str, timeout_s: float) -> int | None:
    """`_count` of `index`, None when it no longer exists."""
    try:
        return int(client.count(index=index, request_timeout=timeout_s)["count"])
    except NotFoundError:
        return None


def _tally(out: _ChunkOutcome, r: BulkResult) -> None:
    if r.op == "delete":
        if r.ok or r.status == 404:  # 404: already gone, which is what was asked
            out.deleted += int(r.ok)
        else:
            out.skipped.append(Skipped(r.id, f"bulk delete failed {r.status}: {r.error}"))
    elif r.ok:
        out.indexed += 1
    else:
        out.skipped.append(Skipped(r.id, f"bulk {r.status} {r.error}"))


def run_index(
    catalog_spec: str,
    limit: int | None = None,
    incremental: bool = False,
    *,
    alias: str | None = None,
    mapping: str | None = None,
    hm_path: str | None = None,
    client=None,
    encoder=None,
    cache=None,
    use_cache: bool = True,
    settings: IndexSettings | None = None,
    progress: bool = True,
    allow_partial: bool = False,
) -> IndexSummary:
    """Index a catalog into OpenSearch behind `alias` and return the summary.

    Args:
        catalog_spec: "myntra" (bundled), "hm" (needs `hm_path` or $FR_HM_ARTICLES) or a file path
            (CSV/TSV/JSONL/Parquet, optionally .gz) read with `mapping` ("id=Col,title=Col,...").
        limit: index at most this many valid products (the first ones of the catalog).
        incremental: update the index behind the alias in place (see module doc).
        alias: the alias (default `OPENSEARCH_INDEX_ALIAS`, "products"); versioned indices are `<alias>-<ts>`.
        client: opensearch-py client (default `make_client()`).
        encoder: object with `.encode(texts) -> (n, dim) array`, `.dimension`, `.cache_key`
            (default `load_bi_encoder()`, all-MiniLM-L6-v2, 384 dimensions).
        cache: an `EmbeddingCache` (default: the one in the cache folder); `use_cache=False` embeds everything.
        settings: IndexSettings (default from FR_INDEX_*).
        progress: show a tqdm progress bar on stderr (products; hidden when stderr is not a terminal).
        allow_partial: serve a full build the partial-index gate refuses, and do not raise for an
            incremental run over the failed share (the reasons become notes and `summary.refused`).

    Returns:
        IndexSummary. `summary.indexed == 0` means nothing was indexed (for a full build the alias was
        then left where it was).

    Raises:
        FileNotFoundError / ValueError: unknown catalog, missing file, bad `mapping`.
        AliasConflictError: a concrete index has the alias's name.
        IndexLifecycleError: alias spans several indices, model/index dimension mismatch (incremental),
            index created without k-NN, failed smoke query.
        PartialIndexError (an IndexLifecycleError): the partial-index gate refused the build (alias not
            moved, new index kept) or an incremental run failed above the share; `.summary` is the
            IndexSummary, `.reasons` the gate's sentences.
        opensearchpy exceptions: the cluster cannot be reached or refuses a whole request.
        A full build that raises deletes its half-built index; the alias is untouched.
    """

    t0 = time.perf_counter()
    s = settings or IndexSettings()
    alias = alias or OpenSearchSettings().index_alias
    summary = IndexSummary(catalog=catalog_spec, alias=alias, mode="incremental" if incremental else "full")
    catalog = open_catalog(catalog_spec, limit=limit, mapping=mapping, hm_path=hm_path)
    client = client or make_client()
    check_alias_name(client, alias)
    encoder = encoder or load_bi_encoder()
    if use_cache and cache is None:
        cache = EmbeddingCache()
    if not use_cache:
        cache = None
    dim = int(encoder.dimension)

    existing: dict[str, str] | None = None
    target: str | None = None
    if incremental:
        target = current_index(client, alias)
        if target is None:
            summary.mode = "full"
            summary.notes.append(f"no index behind alias {alias!r}: --incremental fell back to a full build")
        else:
            have = index_dimension(client, target)
            if have != dim:
                raise IndexLifecycleError(
                    f"the model makes {dim}-dimensional vectors but {target!r} holds {have}; run a full index "
                    "(without --incremental) to rebuild with the new model"
                )
            existing = _existing_hashes(client, target, s.request_timeout_s)
    full = existing is None
    if full:
        summary.previous_index = current_index(client, alias)
        target = unique_index_name(client, alias)
        try:
            create_index(client, target, dim, s)
        except BaseException:
            client.indices.delete(index=target, ignore_unavailable=True)
            raise
    assert target is not None
    summary.index = target

    smoke_vector: list[float] | None = None
    bar = tqdm(
        total=limit,
        unit="products",
        desc=f"index {alias}",
        disable=None if progress else True,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    pending: Future | None = None
    swapped = False
    refusal: PartialIndexError | None = None
    replaced: set[str] = set()  # incremental: ids whose old document is being replaced or deleted

    def collect(fut: Future | None) -> None:
        if fut is not None:
            res: _ChunkOutcome = fut.result()
            summary.indexed += res.indexed
            summary.deleted += res.deleted
            summary.skipped.extend(res.skipped)

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk") as pool:
            for chunk in _chunks(catalog.products, s.chunk_products):
                texts = [rerank_text(p) for p in chunk]
                hashes = [text_hash(t) for t in texts]
                todo = list(range(len(chunk)))
                if existing is not None:
                    todo = []
                    for i, (p, h) in enumerate(zip(chunk, hashes)):
                        old = existing.pop(p.id, None)
                        if old == _source_hash(p, h):
                            summary.unchanged += 1
                        else:
                            todo.append(i)
                            if old is not None:
                                replaced.add(p.id)
                with _precision(encoder, s.embed_bf16):
                    vectors, computed = embed_with_cache(encoder, [texts[i] for i in todo], cache)
                summary.embedded_computed += computed
                summary.embedded_cached += len(todo) - computed
                actions: list[dict] = []
                for i, vec in zip(todo, vectors):
                    p = chunk[i]
                    problem = vector_problem(vec, dim)
                    if problem:
                        summary.skipped.append(Skipped(p.id, problem))
                        continue
                    arr = np.asarray(vec, dtype=np.float64)
                    arr /= np.linalg.norm(arr)  # exact unit length, so innerproduct == cosine (bf16 drifts ~1e-3)
                    values = np.round(arr, VECTOR_DECIMALS).tolist()
                    if smoke_vector is None:
                        smoke_vector = values
                    src = p.to_source()
                    src["text_hash"] = hashes[i]
                    src["source_hash"] = _source_hash(p, hashes[i])
                    src[VECTOR_FIELD] = values
                    actions.append({"_op_type": "index", "_index": target, "_id": p.id, "_source": src})
                collect(pending)  # at most one chunk in flight while the next one is embedded
                pending = pool.submit(_send, client, actions, s) if actions else None
                bar.update(len(chunk))
            collect(pending)
            pending = None
            if existing and limit is None:
                deletes = [{"_op_type": "delete", "_index": target, "_id": i} for i in existing]
                replaced.update(existing)
                collect(pool.submit(_send, client, deletes, s))
            elif existing:
                summary.notes.append(
                    f"--limit given: {len(existing)} indexed products beyond the limit were not checked or deleted"
                )
        bar.close()
        summary.read = catalog.read
        summary.skipped[:0] = catalog.skipped  # catalog rows first, in row order

        if not full:
            client.indices.refresh(index=target, request_timeout=s.request_timeout_s)
            summary.stale = [str(x.row) for x in summary.failed if isinstance(x.row, str) and x.row in replaced]
            problem = share_problem(summary.read, summary.skipped, s)
            if problem:
                summary.refused = [problem]
                if allow_partial:
                    summary.notes.append(f"--allow-partial: {problem}")
                else:
                    refusal = PartialIndexError(
                        [f"incremental update of {target} (in place, already live): {problem}"]
                        + (
                            [f"{len(summary.stale)} stale documents still served: {', '.join(summary.stale[:10])}"]
                            if summary.stale
                            else []
                        ),
                        summary,
                    )
        elif summary.indexed == 0:
            client.indices.delete(index=target, ignore_unavailable=True)
            summary.notes.append(f"nothing was indexed: {target} deleted, alias {alias!r} left unchanged")
            summary.index = ""
        else:
            finish_build(client, target, s.refresh_interval, s.request_timeout_s)
            summary.new_count = _count(client, target, s.request_timeout_s)
            if summary.previous_index:
                summary.previous_count = _count(client, summary.previous_index, s.request_timeout_s)
            problem = share_problem(summary.read, summary.skipped, s)
            summary.refused = ([problem] if problem else []) + count_problems(
                indexed=summary.indexed,
                new_count=summary.new_count or 0,
                previous_index=summary.previous_index,
                previous_count=summary.previous_count,
                limit=limit,
                settings=s,
            )
            if summary.refused and not allow_partial:
                mark_refused(client, target, summary.refused, catalog=catalog_spec, documents=summary.new_count)
                refusal = PartialIndexError(
                    [f"alias {alias!r} not moved to {target}", *summary.refused]
                    + [f"{target} kept for inspection; --allow-partial serves it anyway"],
                    summary,
                )
            else:
                if summary.refused:
                    summary.notes.extend(f"--allow-partial: served despite: {r}" for r in summary.refused)
                smoke_query(client, target, smoke_vector, timeout_s=s.request_timeout_s)
                mark_complete(
                    client,
                    target,
                    catalog=catalog_spec,
                    documents=summary.indexed,
                    dimension=dim,
                    model=getattr(encoder, "cache_key", ""),
                )
                swap_alias(client, alias, target, s.request_timeout_s)
                swapped = summary.alias_moved = True
                summary.deleted_indices = apply_retention(client, alias, s.keep)
    except BaseException:
        bar.close()
        if full and target and not swapped:  # never delete an index the alias already serves
            try:
                client.indices.delete(index=target, ignore_unavailable=True)
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        raise
    summary.seconds = time.perf_counter() - t0
    report = cluster_report(client)
    summary.cluster = report.to_dict() if report else None
    if refusal is not None:
        raise refusal
    return summary


# ------------------------------------------------------------------------------------------------ CLI
