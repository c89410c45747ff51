"""Install: cluster settings, connector, model group, deployed remote model, smoke predict, search pipeline."""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from reranker.pipeline.bodies import (
    cluster_settings_body,
    connector_body,
    default_pipeline_body,
    model_body,
    model_group_body,
    pipeline_body,
    smoke_predict_body,
    trusted_endpoint_regex,
)
from reranker.pipeline.cluster import (
    InstallReport,
    Step,
    _as_list,
    _effective,
    _flat_settings,
    _is_private_host,
    _java_regex_matches,
    _req,
    _search_by_name,
    _truthy,
)
from reranker.pipeline.options import (
    MEMORY_HEADROOM,
    S_DEFAULT_PIPELINE,
    S_HEAP,
    S_NATIVE,
    S_ONLY_ML_NODE,
    S_PRIVATE_IP,
    S_REGEX,
    InstallError,
    InstallOptions,
)
from reranker.pipeline.state import _state_get, _state_put


def _ensure_cluster_settings(client, opts: InstallOptions, report: InstallReport) -> dict[str, dict]:
    """Set what the connector needs; returns {key: {"before": persistent value or None, "set": value}}."""
    flat = _flat_settings(client)
    changes: dict[str, Any] = {}
    record: dict[str, dict] = {}
    url = opts.rerank_url

    regexes = _as_list(_effective(flat, S_REGEX))
    ours = trusted_endpoint_regex(opts.reranker_url)
    matching = [r for r in regexes if _java_regex_matches(r, url)]
    if matching:
        report.steps.append(Step("cluster setting", S_REGEX, "already set", f"{url} matches {matching[0]}"))
    else:
        changes[S_REGEX] = regexes + [ours]
        record[S_REGEX] = {
            "before": flat.get("persistent", {}).get(S_REGEX),
            "added": ours,
            "default": flat.get("defaults", {}).get(S_REGEX),
        }
        report.steps.append(Step("cluster setting", S_REGEX, "set", f"added {ours} to the {len(regexes)} existing entries"))

    host = urlsplit(opts.reranker_url).hostname or ""
    if _is_private_host(host):
        if _truthy(_effective(flat, S_PRIVATE_IP)):
            report.steps.append(Step("cluster setting", S_PRIVATE_IP, "already set", "true"))
        else:
            changes[S_PRIVATE_IP] = True
            record[S_PRIVATE_IP] = {"before": flat.get("persistent", {}).get(S_PRIVATE_IP), "set": "true"}
            report.steps.append(Step("cluster setting", S_PRIVATE_IP, "set", f"true ({host} is a private address)"))
    else:
        report.steps.append(Step("cluster setting", S_PRIVATE_IP, "ok", f"not needed ({host} is public)"))

    nodes = _req(client, "GET", "/_nodes", params={"filter_path": "nodes.*.roles,nodes.*.name"})["nodes"]
    has_ml_node = any("ml" in n.get("roles", []) for n in nodes.values())
    if has_ml_node:
        report.steps.append(Step("cluster setting", S_ONLY_ML_NODE, "ok", "the cluster has ML nodes"))
    elif not _truthy(_effective(flat, S_ONLY_ML_NODE)):
        report.steps.append(Step("cluster setting", S_ONLY_ML_NODE, "already set", "false"))
    else:
        changes[S_ONLY_ML_NODE] = False
        record[S_ONLY_ML_NODE] = {"before": flat.get("persistent", {}).get(S_ONLY_ML_NODE), "set": "false"}
        report.steps.append(Step("cluster setting", S_ONLY_ML_NODE, "set", "false (no node has the ml role)"))

    if len(nodes) == 1:
        stats = _req(
            client,
            "GET",
            "/_nodes/stats/jvm,os",
            params={"filter_path": "nodes.*.jvm.mem.heap_used_percent,nodes.*.os.mem.used_percent"},
        )["nodes"]
        node = next(iter(stats.values()))
        for key, used in ((S_HEAP, node["jvm"]["mem"]["heap_used_percent"]), (S_NATIVE, node["os"]["mem"]["used_percent"])):
            threshold = int(float(_effective(flat, key) or 100))
            if threshold >= 100:
                report.steps.append(Step("cluster setting", key, "already set", f"{threshold} (breaker off)"))
            elif used + MEMORY_HEADROOM >= threshold:
                changes[key] = 100
                record[key] = {"before": flat.get("persistent", {}).get(key), "set": "100"}
                report.steps.append(
                    Step("cluster setting", key, "set", f"100: single node at {used}% >= {threshold}-{MEMORY_HEADROOM}%")
                )
            else:
                report.steps.append(Step("cluster setting", key, "ok", f"{used}% used < {threshold}%"))

    if changes:
        _req(client, "PUT", "/_cluster/settings", body=cluster_settings_body(changes))
    return record


def _connector_differs(existing: dict, wanted: dict, fingerprint_changed: bool) -> list[str]:
    def norm(actions):
        return [dict(a, action_type=str(a.get("action_type", "")).upper()) for a in actions or []]

    diffs = [k for k in ("description", "version", "protocol", "parameters") if existing.get(k) != wanted.get(k)]
    if norm(existing.get("actions")) != norm(wanted.get("actions")):
        diffs.append("actions")
    have_cc = existing.get("client_config") or {}
    if any(have_cc.get(k) != v for k, v in wanted["client_config"].items()):
        diffs.append("client_config")
    if fingerprint_changed:
        diffs.append("credential")
    return diffs


def _wait_deployed(client, model_id: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        model = _req(client, "GET", f"/_plugins/_ml/models/{model_id}")
        state = model.get("model_state", "")
        if state == "DEPLOYED":
            return state
        if state == "DEPLOY_FAILED":
            break
        time.sleep(0.5)
    raise InstallError(f"model {model_id} did not deploy (state {state or 'unknown'}); see GET /_plugins/_ml/models/{model_id}")


def _undeploy(client, model_id: str) -> None:
    _req(client, "POST", f"/_plugins/_ml/models/{model_id}/_undeploy", ok404=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        model = _req(client, "GET", f"/_plugins/_ml/models/{model_id}", ok404=True)
        if not model or model.get("model_state") not in ("DEPLOYED", "DEPLOYING", "PARTIALLY_DEPLOYED"):
            return
        time.sleep(0.5)


def smoke_predict(client, model_id: str) -> list[float]:
    """Call the deployed model through ml-commons (`text_similarity` predict); returns the scores.

    Raises InstallError when the cluster cannot reach the reranker or the answer is malformed.
    """
    body = smoke_predict_body()
    resp = _req(client, "POST", f"/_plugins/_ml/_predict/text_similarity/{model_id}", body=body)
    try:
        outputs = resp["inference_results"][0]["output"]
        scores = [float(o["data"][0]) for o in outputs]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InstallError(f"smoke predict returned an unexpected answer: {json.dumps(resp)[:500]}") from exc
    # served scores are activation(logit) as the model declares it (fashion_rerank.scores): in [0, 1] for a
    # sigmoid model, any real number for an identity one; so only the count and finiteness are checked
    if len(scores) != len(body["text_docs"]) or not all(math.isfinite(s) for s in scores):
        raise InstallError(f"smoke predict returned scores {scores}, expected {len(body['text_docs'])} finite values")
    return scores


def install_pipeline(client, opts: InstallOptions, out: Callable[[str], None] | None = None) -> InstallReport:
    """Configure the cluster behind `client` (opensearch-py) so `opts.pipeline` reranks with the sidecar.

    Idempotent (see the module docstring). Prints each step through `out` as it happens.

    Returns:
        InstallReport with connector/model group/model ids, the steps and the smoke-test scores.
    Raises:
        InstallError: a request was refused (message names the step and OpenSearch's reason), the
            model did not deploy, or the smoke `_predict` could not reach the reranker.
    """
    out = out or (lambda line: None)
    report = InstallReport(pipeline=opts.pipeline)

    def step(*args: str) -> None:
        report.steps.append(Step(*args))
        out(report.steps[-1].line())

    n0 = len(report.steps)
    changed_settings = _ensure_cluster_settings(client, opts, report)
    for s in report.steps[n0:]:
        out(s.line())

    doc_id = f"pipeline:{opts.pipeline}"
    state = _state_get(client, doc_id) or {}
    settings_doc = _state_get(client, "settings") or {"kind": "settings", "changed": {}}
    for key, rec in changed_settings.items():
        settings_doc["changed"].setdefault(
            key, {"before": rec["before"], "set": rec.get("set"), "added": [], "default": rec.get("default")}
        )
        if "added" in rec and rec["added"] not in settings_doc["changed"][key]["added"]:
            settings_doc["changed"][key]["added"].append(rec["added"])
    if changed_settings:
        _state_put(client, "settings", settings_doc)

    # -- connector
    wanted = connector_body(opts)
    found = _search_by_name(client, "connectors", opts.connector_name)
    fp_changed = bool(state) and state.get("key_fingerprint") != opts.key_fingerprint
    models = _search_by_name(client, "models", opts.model_name)
    if found:
        report.connector_id = found[0]["_id"]
        diffs = _connector_differs(found[0], wanted, fp_changed)
        if diffs:
            for m in models:  # ml-commons refuses to update a connector a deployed model uses
                _undeploy(client, m["_id"])
            update = {k: v for k, v in wanted.items() if k != "name"}
            _req(client, "PUT", f"/_plugins/_ml/connectors/{report.connector_id}", body=update)
            step("connector", opts.connector_name, "updated", f"{report.connector_id}: {', '.join(diffs)}")
            models = _search_by_name(client, "models", opts.model_name)
        else:
            step("connector", opts.connector_name, "already", report.connector_id)
    else:
        resp = _req(client, "POST", "/_plugins/_ml/connectors/_create", body=wanted)
        report.connector_id = resp["connector_id"]
        step("connector", opts.connector_name, "created", f"{report.connector_id} -> {opts.rerank_url}")

    # -- model group
    groups = _search_by_name(client, "model_groups", opts.group_name)
    if groups:
        report.model_group_id = groups[0]["_id"]
        step("model group", opts.group_name, "already", report.model_group_id)
    else:
        resp = _req(client, "POST", "/_plugins/_ml/model_groups/_register", body=model_group_body(opts))
        report.model_group_id = resp["model_group_id"]
        step("model group", opts.group_name, "created", report.model_group_id)

    # -- model
    mine = [
        m for m in models if m.get("connector_id") == report.connector_id and m.get("model_group_id") == report.model_group_id
    ]
    if mine:
        report.model_id = mine[0]["_id"]
        # the search index lags behind state changes; GET is real-time
        model_state = _req(client, "GET", f"/_plugins/_ml/models/{report.model_id}").get("model_state")
        if model_state == "DEPLOYED":
            step("model", opts.model_name, "already", f"{report.model_id} deployed")
        else:
            _req(client, "POST", f"/_plugins/_ml/models/{report.model_id}/_deploy")
            _wait_deployed(client, report.model_id)
            step("model", opts.model_name, "deployed", report.model_id)
    else:
        resp = _req(
            client,
            "POST",
            "/_plugins/_ml/models/_register",
            params={"deploy": "true"},
            body=model_body(opts, report.connector_id, report.model_group_id),
        )
        report.model_id = resp.get("model_id") or _model_from_task(client, resp["task_id"])
        _wait_deployed(client, report.model_id)
        step("model", opts.model_name, "created", f"{report.model_id} deployed")

    # -- smoke predict
    if opts.smoke:
        try:
            report.smoke_scores = smoke_predict(client, report.model_id)
        except InstallError as exc:
            raise InstallError(
                f"OpenSearch cannot get scores from the reranker at {opts.rerank_url}: {exc}. Is the sidecar "
                "running with its HTTP front, and reachable from the OpenSearch nodes at that address? "
                "Fix it and run install-pipeline again (or --no-smoke)."
            ) from exc
        step("smoke _predict", opts.model_name, "passed", "scores " + ", ".join(f"{s:.4f}" for s in report.smoke_scores))
    else:
        step("smoke _predict", opts.model_name, "skipped", "--no-smoke")

    # -- search pipeline
    body = pipeline_body(opts, report.model_id)
    have = _req(client, "GET", f"/_search/pipeline/{opts.pipeline}", ok404=True)
    have = (have or {}).get(opts.pipeline)
    if have is None:
        _req(client, "PUT", f"/_search/pipeline/{opts.pipeline}", body=body)
        step("search pipeline", opts.pipeline, "created", f"rerank processor -> model {report.model_id}")
    elif have != body:
        _req(client, "PUT", f"/_search/pipeline/{opts.pipeline}", body=body)
        step("search pipeline", opts.pipeline, "updated", f"rerank processor -> model {report.model_id}")
    else:
        step("search pipeline", opts.pipeline, "already", f"rerank processor -> model {report.model_id}")

    # -- index default pipeline
    defaults_before: dict[str, Any] = dict(state.get("default_pipeline_before", {}))
    if opts.set_default and opts.index:
        # all settings: a filtered GET leaves out indices that lack the setting
        current = _req(client, "GET", f"/{opts.index}/_settings", params={"flat_settings": "true"})
        to_set = {name: s.get("settings", {}).get(S_DEFAULT_PIPELINE) for name, s in current.items()}
        pending = {name: v for name, v in to_set.items() if v != opts.pipeline}
        if pending:
            _req(client, "PUT", f"/{','.join(sorted(pending))}/_settings", body=default_pipeline_body(opts.pipeline))
            for name, before in pending.items():
                defaults_before.setdefault(name, before)
            step("index setting", f"{opts.index} {S_DEFAULT_PIPELINE}", "set", f"{opts.pipeline} on {', '.join(sorted(pending))}")
        else:
            step("index setting", f"{opts.index} {S_DEFAULT_PIPELINE}", "already set", opts.pipeline)

    new_state = {
        "kind": "pipeline",
        "pipeline": opts.pipeline,
        "reranker_url": opts.reranker_url,
        "regex": trusted_endpoint_regex(opts.reranker_url),
        "connector_id": report.connector_id,
        "model_group_id": report.model_group_id,
        "model_id": report.model_id,
        "key_fingerprint": opts.key_fingerprint,
        "default_pipeline_before": defaults_before,
    }
    if new_state != state:
        _state_put(client, doc_id, new_state)
    return report


def _model_from_task(client, task_id: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = _req(client, "GET", f"/_plugins/_ml/tasks/{task_id}")
        if task.get("model_id"):
            return task["model_id"]
        if task.get("state") == "FAILED":
            raise InstallError(f"model registration failed: {task.get('error')}")
        time.sleep(0.5)
    raise InstallError(f"model registration task {task_id} did not finish in {timeout_s:.0f}s")
