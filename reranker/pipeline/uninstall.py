"""Uninstall: remove what install created and restore the cluster settings it changed."""

from __future__ import annotations

from typing import Any, Callable

from reranker.pipeline.bodies import cluster_settings_body, default_pipeline_body
from reranker.pipeline.cluster import (
    Step,
    _as_list,
    _effective,
    _flat_settings,
    _req,
    _search_by_name,
)
from reranker.pipeline.install import _undeploy
from reranker.pipeline.options import (
    DEFAULT_PIPELINE,
    S_DEFAULT_PIPELINE,
    S_HEAP,
    S_NATIVE,
    S_ONLY_ML_NODE,
    S_PRIVATE_IP,
    S_REGEX,
    STATE_INDEX,
    InstallOptions,
)
from reranker.pipeline.state import (
    _drop_state_index_if_empty,
    _state_delete,
    _state_get,
    _state_installs,
    _state_put,
)


def uninstall_pipeline(client, pipeline: str = DEFAULT_PIPELINE, out: Callable[[str], None] | None = None) -> list[Step]:
    """Remove what `install_pipeline` created for `pipeline`; restore what it changed.

    Order: index default-pipeline settings that point at the pipeline (restored to their recorded
    previous value, else removed), the search pipeline, the model (undeploy + delete), the model
    group, the connector; cluster settings are restored when no other installed pipeline remains
    (a setting is put back only if it still holds the value install set; regexes install added are
    removed from the trusted list), and the record index is deleted once empty. Missing objects are
    reported as "absent", so uninstalling twice is harmless.

    Returns the steps taken. Raises InstallError when OpenSearch refuses a removal.
    """
    out = out or (lambda line: None)
    opts = InstallOptions(pipeline=pipeline)
    steps: list[Step] = []

    def step(*args: str) -> None:
        steps.append(Step(*args))
        out(steps[-1].line())

    doc_id = f"pipeline:{pipeline}"
    state = _state_get(client, doc_id) or {}

    # index settings pointing at the pipeline (found by value, so nothing is left dangling)
    current = (
        _req(client, "GET", f"/_all/_settings/{S_DEFAULT_PIPELINE}", params={"flat_settings": "true", "expand_wildcards": "all"})
        or {}
    )
    before = state.get("default_pipeline_before", {})
    pointing = [name for name, s in current.items() if s.get("settings", {}).get(S_DEFAULT_PIPELINE) == pipeline]
    for name in sorted(pointing):
        prev = before.get(name)
        _req(client, "PUT", f"/{name}/_settings", body=default_pipeline_body(prev if prev != pipeline else None))
        step("index setting", f"{name} {S_DEFAULT_PIPELINE}", "restored", repr(prev) if prev else "removed")

    if _req(client, "GET", f"/_search/pipeline/{pipeline}", ok404=True):
        _req(client, "DELETE", f"/_search/pipeline/{pipeline}")
        step("search pipeline", pipeline, "removed")
    else:
        step("search pipeline", pipeline, "absent")

    models = _search_by_name(client, "models", opts.model_name)
    for m in models:
        _undeploy(client, m["_id"])
        _req(client, "DELETE", f"/_plugins/_ml/models/{m['_id']}", ok404=True)
        step("model", opts.model_name, "removed", m["_id"])
    if not models:
        step("model", opts.model_name, "absent")

    groups = _search_by_name(client, "model_groups", opts.group_name)
    # registering a model without a group makes one named after the model; remove that too
    groups += _search_by_name(client, "model_groups", opts.model_name)
    for g in groups:
        _req(client, "DELETE", f"/_plugins/_ml/model_groups/{g['_id']}", ok404=True)
        step("model group", g.get("name", opts.group_name), "removed", g["_id"])
    if not groups:
        step("model group", opts.group_name, "absent")

    connectors = _search_by_name(client, "connectors", opts.connector_name)
    for c in connectors:
        _req(client, "DELETE", f"/_plugins/_ml/connectors/{c['_id']}", ok404=True)
        step("connector", opts.connector_name, "removed", c["_id"])
    if not connectors:
        step("connector", opts.connector_name, "absent")

    _state_delete(client, doc_id)
    _restore_cluster_settings(client, step)
    if _drop_state_index_if_empty(client):
        step("record index", STATE_INDEX, "removed")
    return steps


def _restore_cluster_settings(client, step: Callable[..., None]) -> None:
    settings_doc = _state_get(client, "settings")
    if not settings_doc:
        return
    remaining = _state_installs(client)
    flat = _flat_settings(client)
    persistent = flat.get("persistent", {})
    changed = settings_doc.get("changed", {})
    changes: dict[str, Any] = {}
    keep: dict[str, dict] = {}

    rec = changed.get(S_REGEX)
    if rec:
        needed = {r.get("regex") for r in remaining}
        drop = [r for r in rec.get("added", []) if r not in needed]
        keep_added = [r for r in rec.get("added", []) if r in needed]
        if drop:
            now = _as_list(_effective(flat, S_REGEX))
            left = [r for r in now if r not in drop]
            before = rec.get("before")
            if not keep_added and before is None and left == _as_list(rec.get("default")):
                changes[S_REGEX] = None
            elif not keep_added and before is not None and left == _as_list(before):
                changes[S_REGEX] = before
            else:
                changes[S_REGEX] = left
            step("cluster setting", S_REGEX, "restored", f"removed {', '.join(drop)}")
        if keep_added:
            keep[S_REGEX] = dict(rec, added=keep_added)

    for key in (S_PRIVATE_IP, S_ONLY_ML_NODE, S_HEAP, S_NATIVE):
        rec = changed.get(key)
        if not rec:
            continue
        if remaining:
            keep[key] = rec
            continue
        if str(persistent.get(key)) == str(rec.get("set")):
            changes[key] = rec.get("before")
            step("cluster setting", key, "restored", repr(rec.get("before")) if rec.get("before") is not None else "default")
        else:
            step("cluster setting", key, "left", f"changed since install (now {persistent.get(key)!r})")

    if changes:
        _req(client, "PUT", "/_cluster/settings", body=cluster_settings_body(changes))
    if keep:
        _state_put(client, "settings", dict(settings_doc, changed=keep))
    else:
        _state_delete(client, "settings")
