"""The products index: mapping, versioned indices behind an alias, atomic alias swap, retention, rollback.

Layout: every full build writes a new concrete index `<alias>-<UTC timestamp>` (e.g.
`products-20260515-060112-123456`), fills it, refreshes it, runs a smoke kNN query against it, and
then moves the alias in ONE `POST _aliases` call (remove from the old indices + add to the new one), so
readers see either the old or the new index, never none. The previous `keep` complete indices stay
for rollback (`rollback_alias`); older ones are deleted.

Completeness is recorded in the mapping `_meta` (`{"fashion_rerank": {"complete": true, ...}}`), set
after the smoke query; an incomplete index older than the live one (a crashed build) is deleted by
retention, a newer one (possibly a build in progress) is left alone. A build refused by the
partial-index gate (indexer/gate.py) is marked `refused` and stays for inspection until a newer build
goes live (it is then an incomplete index older than the live one).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opensearchpy.exceptions import TransportError

from fashion_rerank.product import ATTRIBUTE_FIELDS
from fashion_rerank.retrieval import VECTOR_FIELD, knn_search
from fashion_rerank.settings import IndexSettings

META_KEY = "fashion_rerank"
#: strftime of the version suffix; lexical order == time order.
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S-%f"
_SUFFIX_RE = r"\d{8}-\d{6}-\d{6}"


class IndexLifecycleError(RuntimeError):
    """Base of the index lifecycle errors; the message says what is wrong and what to do."""


class AliasConflictError(IndexLifecycleError):
    """A concrete index already has the alias's name, so the alias cannot be created or moved."""


class IndexSetupError(IndexLifecycleError):
    """A new index was not created as asked (e.g. `index.knn` is not true) or failed its smoke query."""


# ------------------------------------------------------------------------------------------- mapping


def build_index_body(dimension: int, settings: IndexSettings | None = None, refresh_interval: str | None = "-1") -> dict:
    """Settings + mappings of a products index for vectors of `dimension` floats.

    Fields: `embedding` knn_vector (HNSW, engine/space/m/ef_construction from `settings`);
    `product_id`, `text_hash` (of rerank_text) and `source_hash` (of all fields, for --incremental)
    keyword; `title`/`description` text (BM25); every attribute of ATTRIBUTE_FIELDS a keyword with a
    lowercase normalizer (so a filter `{"gender": "women"}` matches "Women"; `_source` keeps the
    original value); `rerank_text` text with `store: true`. `_meta.fashion_rerank.complete` is false
    until `mark_complete`. `refresh_interval` "-1" switches refresh off for a full build.
    `dynamic: strict` rejects unknown fields instead of growing the mapping. The vector is indexed (HNSW) but
    left out of the stored `_source`: every hit would otherwise load and parse 384 floats it never returns
    (docs/performance.md#search: OpenSearch's `took` 7 ms instead of 11 ms for the top 100 of 20,000 products).
    So an index cannot be copied with `_reindex`; `fashion-rerank index build` rebuilds it from the catalog and
    the embedding cache instead.

    Raises ValueError for a non-positive dimension.
    """
    if dimension <= 0:
        raise ValueError(f"vector dimension must be positive, got {dimension}")
    s = settings or IndexSettings()
    index_settings: dict[str, Any] = {
        "knn": True,
        "number_of_shards": s.shards,
        "number_of_replicas": s.replicas,
        "analysis": {"normalizer": {"lowercase": {"type": "custom", "filter": ["lowercase"]}}},
        # vectors stay in _source (the 2.x default); k-NN 3.x's default "derived source" rebuilds them on read, and a
        # GET racing a segment merge then fails with already_closed_exception (seen on 3.5.0, k-NN issue 3458)
        "knn.derived_source.enabled": False,
    }
    if s.engine == "faiss":
        index_settings["knn.algo_param.ef_search"] = s.ef_search
    if refresh_interval is not None:
        index_settings["refresh_interval"] = refresh_interval
    properties: dict[str, Any] = {
        VECTOR_FIELD: {
            "type": "knn_vector",
            "dimension": dimension,
            "method": {
                "name": "hnsw",
                "engine": s.engine,
                "space_type": s.space_type,
                "parameters": {"m": s.m, "ef_construction": s.ef_construction},
            },
        },
        "product_id": {"type": "keyword"},
        "text_hash": {"type": "keyword"},
        "source_hash": {"type": "keyword"},
        "title": {"type": "text"},
        "description": {"type": "text"},
        "rerank_text": {"type": "text", "store": True},
    }
    for name in ATTRIBUTE_FIELDS:
        properties[name] = {"type": "keyword", "normalizer": "lowercase"}
    return {
        "settings": {"index": index_settings},
        "mappings": {
            "dynamic": "strict",
            "_meta": {META_KEY: {"complete": False}},
            "_source": {"excludes": [VECTOR_FIELD]},
            "properties": properties,
        },
    }


def new_index_name(alias: str, now: datetime | None = None) -> str:
    """`<alias>-<UTC timestamp>`, e.g. `products-20260515-060112-123456` (microseconds; sorts by time)."""
    now = now or datetime.now(timezone.utc)
    return f"{alias}-{now.strftime(TIMESTAMP_FORMAT)}"


def native_engine_available(client, engine: str = "faiss") -> bool | None:
    """Whether the cluster's k-NN plugin has the JNI library of a native `engine` ("faiss", "nmslib").

    Looks at `plugins/opensearch-knn/` under each node's `path.home` (from `_nodes/settings`) for
    `libopensearchknn_<engine>*`. Returns False when a node's home is visible on this machine and the
    library is missing (the local dev node installed from Maven Central), True when every visible node
    has it, None when no node's home is visible here (a remote cluster: nothing can be said).
    """

    try:
        nodes = client.nodes.info(metric="settings", filter_path="nodes.*.settings.path.home").get("nodes", {})
    except TransportError:  # e.g. a managed cluster that forbids _nodes: nothing can be said
        return None
    seen = False
    for info in nodes.values():
        home = Path(info.get("settings", {}).get("path", {}).get("home", "/nonexistent"))
        knn = home / "plugins" / "opensearch-knn"
        if not knn.is_dir():
            continue
        seen = True
        if not any(knn.rglob(f"libopensearchknn_{engine}*")):
            return False
    return True if seen else None


def create_index(client, name: str, dimension: int, settings: IndexSettings | None = None) -> None:
    """Create the versioned index `name` (refresh off for the build) and verify `index.knn` is true.

    Raises:
        IndexSetupError: a native engine (faiss) was asked for but the node lacks its JNI library (see
            IndexSettings: such an index would kill the node at its first refresh), or the created index
            does not have `index.knn: true` (it is deleted again).
        opensearchpy.RequestError: e.g. the name exists already.
    """
    s = settings or IndexSettings()
    if s.engine != "lucene" and native_engine_available(client, s.engine) is False:
        raise IndexSetupError(
            f"the k-NN plugin of this OpenSearch node has no {s.engine} native library (the plugin zip from "
            f"Maven Central ships none); a {s.engine} index would crash the node at its first refresh. Use "
            "FR_INDEX_ENGINE=lucene, or a node from the full OpenSearch distribution."
        )
    client.indices.create(index=name, body=build_index_body(dimension, s), request_timeout=s.request_timeout_s)
    got = client.indices.get_settings(index=name, name="index.knn", request_timeout=s.request_timeout_s)
    knn = got.get(name, {}).get("settings", {}).get("index", {}).get("knn")
    if str(knn).lower() != "true":
        client.indices.delete(index=name, ignore_unavailable=True)
        raise IndexSetupError(
            f"index {name!r} was created without index.knn=true (got {knn!r}); is the k-NN plugin installed "
            "on this cluster? (`fashion-rerank opensearch status` lists the plugins of the local node)"
        )
    client.cluster.health(
        index=name, wait_for_status="yellow", timeout=f"{int(s.request_timeout_s)}s", request_timeout=s.request_timeout_s + 5
    )


def index_dimension(client, index: str) -> int:
    """Dimension of the `embedding` knn_vector of `index` (an index or an alias on one index)."""
    mapping = client.indices.get_mapping(index=index)
    (body,) = mapping.values()
    return int(body["mappings"]["properties"][VECTOR_FIELD]["dimension"])


# ------------------------------------------------------------------------------------------- aliases


def check_alias_name(client, alias: str) -> None:
    """Raise AliasConflictError when a concrete index (not an alias) is named `alias`."""
    if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
        raise AliasConflictError(
            f"a concrete index named {alias!r} exists, so {alias!r} cannot be an alias. fashion-rerank writes "
            f"versioned indices '{alias}-<timestamp>' behind the alias {alias!r}. Reindex that index into a "
            f"versioned one and delete it, or pick another alias (--alias or OPENSEARCH_INDEX_ALIAS)."
        )


def alias_indices(client, alias: str) -> list[str]:
    """Concrete indices the alias points to (sorted), [] when the alias does not exist."""
    if not client.indices.exists_alias(name=alias):
        return []
    return sorted(client.indices.get_alias(name=alias).keys())


def current_index(client, alias: str) -> str | None:
    """The one index behind `alias`, or None. Raises IndexLifecycleError when the alias spans several indices."""
    held = alias_indices(client, alias)
    if len(held) > 1:
        raise IndexLifecycleError(f"alias {alias!r} points to several indices {held}; point it at one index first")
    return held[0] if held else None


def managed_indices(client, alias: str) -> list[str]:
    """Versioned indices `<alias>-<timestamp>` of this alias, oldest first."""
    pattern = re.compile(rf"^{re.escape(alias)}-{_SUFFIX_RE}$")
    found = client.indices.get(index=f"{alias}-*", expand_wildcards="open,closed", ignore_unavailable=True, allow_no_indices=True)
    return sorted(name for name in found if pattern.match(name))


def index_meta(client, index: str) -> dict:
    """The `_meta.fashion_rerank` record of an index ({} when absent)."""
    mapping = client.indices.get_mapping(index=index)
    return (mapping.get(index, {}).get("mappings", {}).get("_meta") or {}).get(META_KEY, {})


def mark_complete(client, index: str, **info: Any) -> None:
    """Record in the mapping `_meta` that `index` was fully built (with counts etc. in `info`)."""
    meta = {"complete": True, "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
    client.indices.put_mapping(index=index, body={"_meta": {META_KEY: meta}})


def mark_refused(client, index: str, reasons: list[str], **info: Any) -> None:
    """Record in the mapping `_meta` that `index` was built but refused by the partial-index gate.

    It stays `complete: false`, so it is never a rollback target; retention deletes it once a newer
    build goes live. `reasons` are the gate's sentences (indexer/gate.py).
    """
    meta = {
        "complete": False,
        "refused": list(reasons),
        "refused_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
    }
    client.indices.put_mapping(index=index, body={"_meta": {META_KEY: meta}})


def smoke_query(client, index: str, vector, timeout_s: float | None = None) -> None:
    """Run a k=1 kNN query with `vector` on `index`; raise IndexSetupError unless a hit comes back."""
    hits = knn_search(client, index, vector, k=1, timeout_s=timeout_s)
    if not hits:
        raise IndexSetupError(f"smoke kNN query on {index!r} returned no hit; the alias was not moved")


def swap_alias(client, alias: str, new_index: str, request_timeout_s: float = 60.0) -> list[str]:
    """Point `alias` at `new_index` only, in ONE atomic `_aliases` call. Returns the indices it left.

    Every index that held the alias is removed from it in the same request that adds the new index,
    so a search on the alias never finds it missing or doubled. Raises AliasConflictError when a
    concrete index has the alias's name.
    """
    check_alias_name(client, alias)
    old = [i for i in alias_indices(client, alias) if i != new_index]
    actions = [{"remove": {"index": i, "alias": alias}} for i in old]
    actions.append({"add": {"index": new_index, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions}, request_timeout=request_timeout_s)
    return old


def apply_retention(client, alias: str, keep: int) -> list[str]:
    """Delete versioned indices of `alias` beyond the `keep` newest complete ones before the live index.

    Never deletes the live index (behind the alias) nor any index newer than it (a build in progress).
    Incomplete indices older than the live one (crashed builds) are deleted. Returns deleted names.
    """
    live = set(alias_indices(client, alias))
    managed = managed_indices(client, alias)
    newest_live = max(live) if live else None
    kept = 0
    doomed: list[str] = []
    for name in reversed(managed):  # newest first
        if name in live or (newest_live is not None and name > newest_live):
            continue
        if newest_live is None:  # no live index: keep everything, nothing to roll back to
            continue
        if index_meta(client, name).get("complete") and kept < keep:
            kept += 1
            continue
        doomed.append(name)
    for name in doomed:
        client.indices.delete(index=name, ignore_unavailable=True)
    return doomed


def rollback_alias(client, alias: str) -> tuple[str, str]:
    """Move `alias` back to the newest complete index older than the live one. Returns (from, to).

    Raises IndexLifecycleError when there is no live index or no complete previous index to go back to.
    """
    live = current_index(client, alias)
    if live is None:
        raise IndexLifecycleError(f"alias {alias!r} does not exist; nothing to roll back")
    previous = [n for n in managed_indices(client, alias) if n < live and index_meta(client, n).get("complete")]
    if not previous:
        raise IndexLifecycleError(f"no complete index older than {live!r} is kept for alias {alias!r}")
    swap_alias(client, alias, previous[-1])
    return live, previous[-1]


def finish_build(client, index: str, refresh_interval: str, timeout_s: float) -> None:
    """Restore the live refresh interval on `index` and refresh it, so every document is searchable."""
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": refresh_interval}}, request_timeout=timeout_s)
    client.indices.refresh(index=index, request_timeout=timeout_s)


def unique_index_name(client, alias: str) -> str:
    """A `new_index_name` that does not exist yet (retries on the next microsecond)."""
    for _ in range(100):
        name = new_index_name(alias)
        if not client.indices.exists(index=name):
            return name
        time.sleep(0.001)
    raise IndexLifecycleError(f"could not find a free index name for alias {alias!r}")
