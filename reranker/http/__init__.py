"""The sidecar's HTTP front: Cohere- and TEI-shaped rerank endpoints over the shared scoring core.

OpenSearch's ml-commons connectors speak HTTP only, so this front is what a search pipeline calls
(`reranker.pipeline`). It runs beside the gRPC front in the same process, on the same
`ScoringCore` (same batching queue, same model, same metrics labelled `front="http"`).

Endpoints (JSON in, JSON out):

- `POST /v1/rerank` (also `/v2/rerank`), the Cohere rerank shape, which ml-commons'
  `connector.pre_process.cohere.rerank` / `connector.post_process.cohere.rerank`, Elasticsearch's
  `custom` inference service, LangChain and LiteLLM's Cohere clients speak:
  request  `{model?, query, documents: [string | {text} | null], top_n?, return_documents?, max_tokens_per_doc?}`
  response `{id, results: [{index, relevance_score, document?: {text}}], meta: {api_version, billed_units, model, model_version}}`
  Results are sorted by `relevance_score` (the served score: activation(logit) as the model declares it,
  in [0, 1] for a sigmoid model) best first, ties by input index; `top_n` (default: all) cuts the list.
  `model` is accepted and ignored (the sidecar serves one model; its name and version are in `meta`).
- `POST /rerank`, the text-embeddings-inference shape: `{query, texts, truncate?, truncation_direction?,
  raw_scores?, return_text?}` -> bare array `[{index, score, text?}]` sorted by score; `raw_scores`
  returns logits instead of the served scores. As TEI: with `truncate` false (the default) a (query, text) pair
  longer than the model reads is refused (413, `validation`); with `truncate` true the text is cut to fit.
- `GET /health` 200 `{status: "ok", model, model_version}` or 503 `{status: "no model loaded"}` (no auth).
- `GET /v1/models` the served model (name, version) in an OpenAI-style list.

Missing or null document text (`null`, `{}`, `{"text": null}`) is scored as the empty string, so
the answer always holds one score per document; ml-commons sends "" for a hit missing `rerank_text`.

Errors (`reranker.errors` taxonomy): 400 bad JSON or field, naming it (`documents[3]: ...`), 401 bad
or missing bearer token when `FR_SERVE_HTTP_API_KEY` is set, 413 too many documents / too long a
text / body over `FR_SERVE_HTTP_MAX_BODY_BYTES`, 429 queue full (with `Retry-After: 1`), 503 no
model loaded, 504 deadline exceeded, 500 backend failure. Cohere endpoints answer `{"message": ...}`,
the TEI endpoint `{"error": ..., "error_type": ...}` as those servers do. A successful answer never
has fewer scores than documents.

Each request gets the sidecar's default deadline; a client may lower it with the header
`X-Request-Timeout-Ms`. Timing headers follow TEI: `x-total-time`, `x-queue-time`,
`x-inference-time` (ms), plus `x-model-version`.

Package layout (one concept per module):

- `models`:  pydantic request/response bodies (the OpenAPI document) and the field checks that name a bad field;
- `request`: the size-limited JSON body and the request's deadline (`X-Request-Timeout-Ms`);
- `auth`:    the bearer token (`FR_SERVE_HTTP_API_KEY`, compared with `hmac.compare_digest`);
- `errors`:  error bodies, statuses (from `reranker.status`, the one table) and headers;
- `scoring`: one request on the core, float32 score rounding (`f32`), ranking and timing headers;
- `app`:     `create_app(core, settings, metrics)` and `start_http_front` (uvicorn in a thread, TLS).

`reranker.http_front` re-exports the names below for older imports.
"""

from reranker.http.app import HttpFront, create_app, start_http_front
from reranker.http.errors import HttpError
from reranker.http.models import cohere_documents, tei_texts
from reranker.http.request import DEFAULT_MAX_BODY_BYTES
from reranker.http.scoring import f32, truncate_words

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HttpError",
    "HttpFront",
    "cohere_documents",
    "create_app",
    "f32",
    "start_http_front",
    "tei_texts",
    "truncate_words",
]
