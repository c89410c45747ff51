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

from reranker.pipeline.bodies import (
    connector_body,
    default_pipeline_body,
    model_body,
    pipeline_body,
)
from reranker.pipeline.install import install_pipeline, smoke_predict
from reranker.pipeline.options import (
    DEFAULT_PIPELINE,
    S_REGEX,
    STATE_INDEX,
    InstallError,
    InstallOptions,
    default_reranker_url,
)
from reranker.pipeline.uninstall import uninstall_pipeline

__all__ = [
    "DEFAULT_PIPELINE",
    "STATE_INDEX",
    "S_REGEX",
    "InstallError",
    "InstallOptions",
    "connector_body",
    "default_pipeline_body",
    "default_reranker_url",
    "install_pipeline",
    "model_body",
    "pipeline_body",
    "smoke_predict",
    "uninstall_pipeline",
]
