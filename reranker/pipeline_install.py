"""`fashion-rerank opensearch install-pipeline` / `uninstall-pipeline`: plug the sidecar into OpenSearch.

OpenSearch's neural-search `rerank` response processor calls a model registered in ml-commons; a
remote model is an ml-commons HTTP *connector* (connectors speak HTTP only, no gRPC). This module
configures a running cluster so that

    GET /products/_search?search_pipeline=rerank-fashion

comes back reranked by the sidecar's HTTP front (`POST /v1/rerank`, Cohere shape, `reranker.http_front`):

1. cluster settings the connector needs, each extended or set only when needed and reported:
   - `plugins.ml_commons.trusted_connector_endpoints_regex` gets one more regex for the reranker URL
     (the list is *extended*: ml-commons replaces the whole list on update, so the current value,
     including its defaults, is read first);
   - `plugins.ml_commons.connector.private_ip_enabled: true` when the reranker host is a private,
     loopback or link-local address or a name this machine cannot resolve (ml-commons refuses to
     call private IPs otherwise: SSRF protection, ml-commons#2126);
   - `plugins.ml_commons.only_run_on_ml_node: false` when no node has the `ml` role (a development
     cluster), otherwise ml-commons finds no node to deploy the model on;
   - `plugins.ml_commons.jvm_heap_memory_threshold` / `native_memory_threshold` raised to 100 (which
     turns the ml-commons memory circuit breakers off) on a single-node cluster whose heap or RAM use
     is within 10 points of the threshold, since a tripped breaker refuses model deploys;
2. an ml-commons HTTP connector to `<reranker-url>/v1/rerank` using the built-in
   `connector.pre_process.cohere.rerank` / `connector.post_process.cohere.rerank` functions (no
   Painless), with `client_config` timeouts in whole seconds derived from the sidecar's deadline;
3. a model group and a remote model using that connector, deployed;
4. a smoke `_predict` (text similarity) that proves the cluster reaches the reranker;
5. a search pipeline with the `rerank` processor (`ml_opensearch` model, `document_fields:
   ["rerank_text"]`, `ignore_failure: true` so searches fail open to kNN order);
6. optionally `index.search.default_pipeline` on the products index.

Idempotent: objects are found by name (`<pipeline>-connector`, `<pipeline>-model`,
`<pipeline>-group`) and compared with the wanted body, so a second run reports "already" everywhere
and changes nothing. What install changed in the cluster settings (and each index setting's previous
value) is recorded in the small hidden index `fashion-rerank-installs`; `uninstall-pipeline` removes
everything it created and restores those settings once the last installed pipeline is removed, then
deletes the record index. The JSON bodies live in the `*_body` functions below (also printed by
`install-pipeline --dry-run` and shown in docs/opensearch-integration.md).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import math
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

DEFAULT_PIPELINE = "rerank-fashion"
#: Hidden index recording what install-pipeline changed (deleted again by the last uninstall).
STATE_INDEX = "fashion-rerank-installs"
#: `document_fields` of the rerank processor: the stored text of `indexer.product.rerank_text`.
DOCUMENT_FIELD = "rerank_text"

S_REGEX = "plugins.ml_commons.trusted_connector_endpoints_regex"
S_PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
S_ONLY_ML_NODE = "plugins.ml_commons.only_run_on_ml_node"
S_HEAP = "plugins.ml_commons.jvm_heap_memory_threshold"
S_NATIVE = "plugins.ml_commons.native_memory_threshold"
S_DEFAULT_PIPELINE = "index.search.default_pipeline"
#: Points of headroom below an ml-commons memory threshold under which it is raised on a dev node.
MEMORY_HEADROOM = 10


class InstallError(RuntimeError):
    """The cluster refused a step or the smoke call failed; the message says which step and why."""


# ------------------------------------------------------------------------------------------ options

def _serve_settings():
    """`reranker.settings.ServeSettings()` when the sidecar package is built, else None."""
    try:
        from reranker.settings import ServeSettings
    except ImportError:  # pragma: no cover - issue 3 not merged yet
        return None
    return ServeSettings()


def _deadline_s(serve) -> float:
    """The HTTP front's default per-request deadline in seconds: `FR_SERVE_RERANK_BUDGET_MS` (1.5 s)."""
    value = getattr(serve, "rerank_budget_ms", None) if serve is not None else None
    return float(value) / 1000.0 if isinstance(value, (int, float)) and value > 0 else 1.5


def default_reranker_url(serve=None) -> str:
    """`http(s)://127.0.0.1:<FR_SERVE_HTTP_PORT>` (https when the HTTP front has a TLS certificate)."""
    serve = serve if serve is not None else _serve_settings()
    port = getattr(serve, "http_port", 8080)
    port = port if isinstance(port, int) and port > 0 else 8080
    tls = str(getattr(serve, "http_tls_cert", None) or "") not in ("", ".")
    return f"{'https' if tls else 'http'}://127.0.0.1:{port}"


@dataclass
class InstallOptions:
    """What to install.

    Attributes:
        pipeline: search pipeline name; the connector, model group and model are named after it.
        reranker_url: base URL of the sidecar's HTTP front as the *cluster* reaches it (no path).
        index: index or alias whose `index.search.default_pipeline` is set when `set_default`.
        set_default: make the pipeline the index's default search pipeline.
        api_key: bearer token of the HTTP front (`FR_SERVE_HTTP_API_KEY`); None: no auth header.
        model: model name sent in the Cohere request's `model` field (informational for the sidecar).
        read_timeout_s: connector read timeout, whole seconds: ceil(sidecar deadline) + 1, so the
            sidecar's own 504 arrives before ml-commons gives up.
        connection_timeout_s: connector connect timeout, whole seconds (ml-commons has no finer unit).
        max_connection: connector HTTP connection pool size.
        smoke: run the smoke `_predict` after deploying.
    """

    pipeline: str = DEFAULT_PIPELINE
    reranker_url: str = "http://127.0.0.1:8080"
    index: str | None = None
    set_default: bool = False
    api_key: str | None = None
    model: str = "fashion-ce"
    read_timeout_s: int = 2
    connection_timeout_s: int = 1
    max_connection: int = 30
    smoke: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,100}", self.pipeline or ""):
            raise InstallError(f"pipeline name {self.pipeline!r} must be lowercase letters, digits, '-', '_' or '.'")
        parts = urlsplit(self.reranker_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InstallError(f"--reranker-url {self.reranker_url!r} must look like http://host:port")
        if parts.path not in ("", "/") or parts.query:
            raise InstallError(f"--reranker-url {self.reranker_url!r} must be a base URL without a path; /v1/rerank is added")
        self.reranker_url = f"{parts.scheme}://{parts.netloc}"
        if self.set_default and not self.index:
            raise InstallError("--set-default needs --index")
        if self.read_timeout_s < 1 or self.connection_timeout_s < 1:
            raise InstallError("connector timeouts are whole seconds >= 1")

    @classmethod
    def from_settings(cls, **overrides: Any) -> "InstallOptions":
        """Defaults from `ServeSettings` (HTTP port, TLS, API key, deadline) and `ModelSettings` (name)."""
        from fashion_rerank.settings import ModelSettings

        serve = _serve_settings()
        key = getattr(serve, "http_api_key", None)
        if key is not None and hasattr(key, "get_secret_value"):
            key = key.get_secret_value()
        values: dict[str, Any] = dict(
            reranker_url=default_reranker_url(serve),
            api_key=key or None,
            model=ModelSettings().name,
            read_timeout_s=int(math.ceil(_deadline_s(serve))) + 1,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def connector_name(self) -> str:
        return f"{self.pipeline}-connector"

    @property
    def model_name(self) -> str:
        return f"{self.pipeline}-model"

    @property
    def group_name(self) -> str:
        return f"{self.pipeline}-group"

    @property
    def rerank_url(self) -> str:
        return f"{self.reranker_url}/v1/rerank"

    @property
    def key_fingerprint(self) -> str | None:
        """First 16 hex digits of sha256(api_key), stored to notice a changed key (never the key)."""
        return hashlib.sha256(self.api_key.encode()).hexdigest()[:16] if self.api_key else None


# ---------------------------------------------------------------------------------------- JSON bodies

def trusted_endpoint_regex(reranker_url: str) -> str:
    """The regex added to `trusted_connector_endpoints_regex`: `^<escaped base URL>/.*$`."""
    return "^" + re.escape(reranker_url.rstrip("/")) + "/.*$"


#: ml-commons fills `${parameters.documents}` (a JSON array), `${parameters.query}` (escaped) and
#: `${parameters.top_n}` (= number of documents) through `connector.pre_process.cohere.rerank`.
REQUEST_BODY_TEMPLATE = (
    '{ "documents": ${parameters.documents}, "query": "${parameters.query}", '
    '"model": "${parameters.model}", "top_n": ${parameters.top_n}, "return_documents": false }'
)


def connector_body(opts: InstallOptions) -> dict:
    """`POST /_plugins/_ml/connectors/_create` body: HTTP connector to `<url>/v1/rerank`, Cohere functions.

    ml-commons requires a `credential` object; without an API key it holds a placeholder and no
    Authorization header is sent. `client_config` timeouts are whole seconds (ConnectorClientConfig).
    """
    headers = {"content-type": "application/json"}
    if opts.api_key:
        headers["Authorization"] = "Bearer ${credential.api_key}"
    return {
        "name": opts.connector_name,
        "description": f"fashion-rerank cross-encoder sidecar at {opts.reranker_url} (Cohere rerank API)",
        "version": "1",
        "protocol": "http",
        "parameters": {"model": opts.model},
        "credential": {"api_key": opts.api_key or "none"},
        "client_config": {
            "connection_timeout": opts.connection_timeout_s,
            "read_timeout": opts.read_timeout_s,
            "max_connection": opts.max_connection,
            "max_retry_times": 0,
        },
        "actions": [
            {
                "action_type": "predict",
                "method": "POST",
                "url": opts.rerank_url,
                "headers": headers,
                "request_body": REQUEST_BODY_TEMPLATE,
                "pre_process_function": "connector.pre_process.cohere.rerank",
                "post_process_function": "connector.post_process.cohere.rerank",
            }
        ],
    }


def model_group_body(opts: InstallOptions) -> dict:
    """`POST /_plugins/_ml/model_groups/_register` body."""
    return {"name": opts.group_name, "description": f"fashion-rerank search pipeline {opts.pipeline}"}


def model_body(opts: InstallOptions, connector_id: str, model_group_id: str) -> dict:
    """`POST /_plugins/_ml/models/_register?deploy=true` body: a remote model on the connector."""
    return {
        "name": opts.model_name,
        "function_name": "remote",
        "model_group_id": model_group_id,
        "connector_id": connector_id,
        "description": f"fashion-rerank cross-encoder via {opts.rerank_url}",
    }


def smoke_predict_body() -> dict:
    """`POST /_plugins/_ml/_predict/text_similarity/<model_id>` body: two documents, one query."""
    return {"query_text": "red summer dress", "text_docs": ["Red floral cotton summer dress", "Black leather ankle boots"]}


def pipeline_body(opts: InstallOptions, model_id: str) -> dict:
    """`PUT /_search/pipeline/<pipeline>` body: the neural-search rerank response processor, failing open."""
    return {
        "description": f"fashion-rerank: rerank hits with the cross-encoder sidecar at {opts.reranker_url}",
        "response_processors": [
            {
                "rerank": {
                    "ml_opensearch": {"model_id": model_id},
                    "context": {"document_fields": [DOCUMENT_FIELD]},
                    "ignore_failure": True,
                }
            }
        ],
    }


def default_pipeline_body(pipeline: str | None) -> dict:
    """`PUT /<index>/_settings` body that sets (or with None removes) the index's default search pipeline."""
    return {"index": {"search.default_pipeline": pipeline}}


def cluster_settings_body(settings: dict[str, Any]) -> dict:
    """`PUT /_cluster/settings` body (persistent; None removes a setting, restoring its default)."""
    return {"persistent": settings}


def example_search_body(query_text: str = "red summer dress", k: int = 50) -> dict:
    """A kNN search reranked by the pipeline; the vector is the query's bi-encoder embedding."""
    return {
        "size": k,
        "query": {"knn": {"embedding": {"vector": ["<384 floats: bi-encoder embedding of the query>"], "k": k}}},
        "_source": {"excludes": ["embedding"]},
        "ext": {"rerank": {"query_context": {"query_text": query_text}}},
    }


def request_plan(opts: InstallOptions) -> list[tuple[str, str, dict | None]]:
    """Every request a fresh install sends, in order, with placeholders for ids and current values.

    This is what `install-pipeline --dry-run` prints; a user of a managed cluster can apply it by hand.
    """
    cid, gid, mid = "<connector_id>", "<model_group_id>", "<model_id>"
    plan: list[tuple[str, str, dict | None]] = [
        ("GET", "/_cluster/settings?include_defaults=true&flat_settings=true", None),
        ("PUT", "/_cluster/settings", cluster_settings_body({
            S_REGEX: ["<every regex currently in the list>", trusted_endpoint_regex(opts.reranker_url)],
            S_PRIVATE_IP: True,
            S_ONLY_ML_NODE: False,
        })),
        ("POST", "/_plugins/_ml/connectors/_create", connector_body(opts)),
        ("POST", "/_plugins/_ml/model_groups/_register", model_group_body(opts)),
        ("POST", "/_plugins/_ml/models/_register?deploy=true", model_body(opts, cid, gid)),
        ("POST", f"/_plugins/_ml/_predict/text_similarity/{mid}", smoke_predict_body()),
        ("PUT", f"/_search/pipeline/{opts.pipeline}", pipeline_body(opts, mid)),
    ]
    if opts.set_default and opts.index:
        plan.append(("PUT", f"/{opts.index}/_settings", default_pipeline_body(opts.pipeline)))
    plan.append(("POST", f"/{opts.index or 'products'}/_search?search_pipeline={opts.pipeline}", example_search_body()))
    return plan


# ----------------------------------------------------------------------------------- small helpers

@dataclass
class Step:
    """One reported action: `what` (object), `name`, `status` (created/updated/set/already/removed/...), detail."""

    what: str
    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"  {self.what:<18} {self.name:<52} {self.status}{(' - ' + self.detail) if self.detail else ''}"


@dataclass
class InstallReport:
    """Result of `install_pipeline`: the ids created or found and every step taken."""

    pipeline: str
    connector_id: str = ""
    model_group_id: str = ""
    model_id: str = ""
    steps: list[Step] = field(default_factory=list)
    smoke_scores: list[float] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything in the cluster was created, updated or set."""
        return any(s.status not in ("already", "already set", "ok", "skipped", "passed") for s in self.steps)


def _req(client, method: str, path: str, body: dict | None = None, params: dict | None = None, ok404: bool = False):
    """`client.transport.perform_request`, returning None for 404 when `ok404`, else raising InstallError."""
    from opensearchpy.exceptions import NotFoundError, TransportError

    try:
        return client.transport.perform_request(method, path, params=params, body=body)
    except NotFoundError:
        if ok404:
            return None
        raise InstallError(f"{method} {path}: not found")
    except TransportError as exc:
        info = exc.info if isinstance(exc.info, (dict, str)) else ""
        reason = info.get("error", info) if isinstance(info, dict) else info
        if isinstance(reason, dict):
            reason = reason.get("reason") or json.dumps(reason)[:500]
        raise InstallError(f"{method} {path} failed ({exc.status_code}): {reason or exc.error}") from exc


def _flat_settings(client) -> dict[str, dict[str, Any]]:
    """{'persistent': {...}, 'transient': {...}, 'defaults': {...}} with flat keys."""
    return _req(client, "GET", "/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"})


def _effective(flat: dict, key: str) -> Any:
    """Value in effect: transient over persistent over default (None if unknown)."""
    for level in ("transient", "persistent", "defaults"):
        if key in flat.get(level, {}):
            return flat[level][key]
    return None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _truthy(value: Any) -> bool:
    return str(value).lower() == "true"


def _is_private_host(host: str) -> bool:
    """True for private/loopback/link-local addresses, and for names this machine cannot resolve."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if addr.is_private or addr.is_loopback or addr.is_link_local:
            return True
    return False


def _search_by_name(client, kind: str, name: str) -> list[dict]:
    """ml-commons objects (`connectors`, `models`, `model_groups`) with exactly this name, oldest first."""
    body = {"query": {"term": {"name.keyword": name}}, "size": 100, "sort": [{"created_time": {"order": "asc", "unmapped_type": "long"}}]}
    resp = _req(client, "POST", f"/_plugins/_ml/{kind}/_search", body=body, ok404=True)
    if not resp:
        return []
    hits = resp.get("hits", {}).get("hits", [])
    out = []
    for h in hits:
        src = dict(h.get("_source", {}))
        if src.get("name") != name:
            continue
        if kind == "models" and "chunk_number" in src:
            continue
        src["_id"] = h["_id"]
        out.append(src)
    return out


# ------------------------------------------------------------------------------------- state record

def _state_get(client, doc_id: str) -> dict | None:
    resp = _req(client, "GET", f"/{STATE_INDEX}/_doc/{doc_id}", ok404=True)
    return resp.get("_source") if resp and resp.get("found") else None


def _state_put(client, doc_id: str, doc: dict) -> None:
    if not client.indices.exists(index=STATE_INDEX):
        from opensearchpy.exceptions import RequestError

        try:
            client.indices.create(index=STATE_INDEX, body={"settings": {
                "index": {"hidden": True, "number_of_shards": 1, "number_of_replicas": 0}},
                "mappings": {"dynamic": False, "properties": {"kind": {"type": "keyword"}}}})
        except RequestError as exc:  # created concurrently
            if "resource_already_exists" not in str(exc):
                raise
    _req(client, "PUT", f"/{STATE_INDEX}/_doc/{doc_id}", body=doc, params={"refresh": "true"})


def _state_delete(client, doc_id: str) -> None:
    _req(client, "DELETE", f"/{STATE_INDEX}/_doc/{doc_id}", params={"refresh": "true"}, ok404=True)


def _state_installs(client) -> list[dict]:
    if not client.indices.exists(index=STATE_INDEX):
        return []
    resp = _req(client, "POST", f"/{STATE_INDEX}/_search", body={"query": {"term": {"kind": "pipeline"}}, "size": 1000})
    return [h["_source"] for h in resp["hits"]["hits"]]


def _drop_state_index_if_empty(client) -> bool:
    if not client.indices.exists(index=STATE_INDEX):
        return False
    count = _req(client, "GET", f"/{STATE_INDEX}/_count")["count"]
    if count == 0:
        _req(client, "DELETE", f"/{STATE_INDEX}", ok404=True)
        return True
    return False


# ------------------------------------------------------------------------------------------ install

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
        record[S_REGEX] = {"before": flat.get("persistent", {}).get(S_REGEX), "added": ours,
                           "default": flat.get("defaults", {}).get(S_REGEX)}
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
        stats = _req(client, "GET", "/_nodes/stats/jvm,os", params={
            "filter_path": "nodes.*.jvm.mem.heap_used_percent,nodes.*.os.mem.used_percent"})["nodes"]
        node = next(iter(stats.values()))
        for key, used in ((S_HEAP, node["jvm"]["mem"]["heap_used_percent"]), (S_NATIVE, node["os"]["mem"]["used_percent"])):
            threshold = int(float(_effective(flat, key) or 100))
            if threshold >= 100:
                report.steps.append(Step("cluster setting", key, "already set", f"{threshold} (breaker off)"))
            elif used + MEMORY_HEADROOM >= threshold:
                changes[key] = 100
                record[key] = {"before": flat.get("persistent", {}).get(key), "set": "100"}
                report.steps.append(Step("cluster setting", key, "set", f"100: single node at {used}% >= {threshold}-{MEMORY_HEADROOM}%"))
            else:
                report.steps.append(Step("cluster setting", key, "ok", f"{used}% used < {threshold}%"))

    if changes:
        _req(client, "PUT", "/_cluster/settings", body=cluster_settings_body(changes))
    return record


def _java_regex_matches(pattern: str, url: str) -> bool:
    """Whether a `trusted_connector_endpoints_regex` entry fully matches `url` (Java `matches()`)."""
    try:
        return re.fullmatch(pattern, url) is not None
    except re.error:
        return False


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
    if len(scores) != len(body["text_docs"]) or not all(0.0 <= s <= 1.0 for s in scores):
        raise InstallError(f"smoke predict returned scores {scores}, expected {len(body['text_docs'])} values in [0, 1]")
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
        settings_doc["changed"].setdefault(key, {"before": rec["before"], "set": rec.get("set"), "added": [],
                                                 "default": rec.get("default")})
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
    mine = [m for m in models if m.get("connector_id") == report.connector_id and m.get("model_group_id") == report.model_group_id]
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
        resp = _req(client, "POST", "/_plugins/_ml/models/_register", params={"deploy": "true"},
                    body=model_body(opts, report.connector_id, report.model_group_id))
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
        "kind": "pipeline", "pipeline": opts.pipeline, "reranker_url": opts.reranker_url,
        "regex": trusted_endpoint_regex(opts.reranker_url), "connector_id": report.connector_id,
        "model_group_id": report.model_group_id, "model_id": report.model_id,
        "key_fingerprint": opts.key_fingerprint, "default_pipeline_before": defaults_before,
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


# ---------------------------------------------------------------------------------------- uninstall

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
    current = _req(client, "GET", f"/_all/_settings/{S_DEFAULT_PIPELINE}",
                   params={"flat_settings": "true", "expand_wildcards": "all"}) or {}
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


# ---------------------------------------------------------------------------------------------- CLI

def _how_to_call(opts: InstallOptions, report: InstallReport) -> str:
    index = opts.index or "products"
    body = json.dumps(example_search_body(), indent=2)
    lines = [
        "",
        f"Search pipeline '{opts.pipeline}' reranks with the sidecar at {opts.rerank_url} (model {report.model_id}).",
        "Call it with a kNN query and the query text for the reranker:",
        f"  POST /{index}/_search?search_pipeline={opts.pipeline}",
        "  " + body.replace("\n", "\n  "),
    ]
    if opts.set_default:
        lines.append(f"It is also the default search pipeline of '{index}', so plain /{index}/_search is reranked "
                     "(still pass ext.rerank.query_context).")
    lines.append("If the sidecar is down or slow, searches still answer in kNN order (ignore_failure: true).")
    lines.append(f"Remove everything with: fashion-rerank opensearch uninstall-pipeline --pipeline {opts.pipeline}")
    return "\n".join(lines)


def _cmd_install(args: argparse.Namespace) -> int:
    try:
        opts = InstallOptions.from_settings(
            pipeline=args.pipeline, reranker_url=args.reranker_url, index=args.index,
            set_default=args.set_default, api_key=args.api_key, smoke=not args.no_smoke,
        )
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for method, path, body in request_plan(opts):
            shown = json.loads(json.dumps(body)) if body is not None else None
            if shown and "credential" in shown and opts.api_key:
                shown["credential"]["api_key"] = "<FR_SERVE_HTTP_API_KEY>"
            print(f"{method} {path}")
            if shown is not None:
                print(json.dumps(shown, indent=2))
            print()
        return 0
    from fashion_rerank.opensearch import make_client
    from fashion_rerank.settings import OpenSearchSettings

    client = make_client()
    print(f"installing search pipeline '{opts.pipeline}' into {OpenSearchSettings().url}:")
    try:
        report = install_pipeline(client, opts, out=print)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("nothing changed (already installed)" if not report.changed else "done")
    print(_how_to_call(opts, report))
    return 0


def _cmd_uninstall(args: argparse.Namespace) -> int:
    from fashion_rerank.opensearch import make_client
    from fashion_rerank.settings import OpenSearchSettings

    print(f"removing search pipeline '{args.pipeline}' from {OpenSearchSettings().url}:")
    try:
        uninstall_pipeline(make_client(), args.pipeline, out=print)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_pipeline_commands(osub: argparse._SubParsersAction) -> None:
    """Register `install-pipeline` and `uninstall-pipeline` under `fashion-rerank opensearch`."""
    p = osub.add_parser(
        "install-pipeline",
        help="install a search pipeline that reranks hits with the sidecar's HTTP front (idempotent)",
        description=(
            "Configure a running OpenSearch cluster (OPENSEARCH_URL) so a search pipeline reranks hits with the "
            "sidecar's HTTP front: the ml-commons cluster settings the connector needs (extended, never replaced), an "
            "HTTP connector to <reranker-url>/v1/rerank, a deployed remote model, a smoke _predict, and a search "
            "pipeline with the rerank processor (ignore_failure: true, so searches fail open to kNN order). "
            "Idempotent; uninstall-pipeline removes it all. --dry-run prints the JSON it sends."
        ),
    )
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="search pipeline name (default %(default)s)")
    p.add_argument("--reranker-url", default=None,
                   help="base URL of the sidecar's HTTP front as OpenSearch reaches it "
                        "(default http://127.0.0.1:$FR_SERVE_HTTP_PORT)")
    p.add_argument("--index", default=None, help="index or alias for --set-default (e.g. products)")
    p.add_argument("--set-default", action="store_true", help="make it the index's default search pipeline")
    p.add_argument("--api-key", default=None, help="bearer token of the HTTP front (default $FR_SERVE_HTTP_API_KEY)")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke _predict (e.g. sidecar not started yet)")
    p.add_argument("--dry-run", action="store_true", help="print the requests and JSON bodies; contact nothing")
    p.set_defaults(func=_cmd_install)

    u = osub.add_parser("uninstall-pipeline", help="remove the search pipeline, model, connector and restore settings")
    u.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="search pipeline name (default %(default)s)")
    u.set_defaults(func=_cmd_uninstall)
