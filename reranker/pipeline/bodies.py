"""The JSON bodies `install-pipeline` sends (also printed by `--dry-run`, shown in docs/opensearch-integration.md)."""

from __future__ import annotations

import re
from typing import Any

from reranker.pipeline.options import (
    DOCUMENT_FIELD,
    S_ONLY_ML_NODE,
    S_PRIVATE_IP,
    S_REGEX,
    InstallOptions,
)


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
        (
            "PUT",
            "/_cluster/settings",
            cluster_settings_body(
                {
                    S_REGEX: ["<every regex currently in the list>", trusted_endpoint_regex(opts.reranker_url)],
                    S_PRIVATE_IP: True,
                    S_ONLY_ML_NODE: False,
                }
            ),
        ),
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
