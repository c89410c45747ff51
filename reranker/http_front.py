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
  Results are sorted by `relevance_score` (the sigmoid of the cross-encoder logit, in [0, 1]) best
  first, ties by input index; `top_n` (default: all) cuts the list. `model` is accepted and ignored
  (the sidecar serves one model; its name and version are in `meta`).
- `POST /rerank`, the text-embeddings-inference shape: `{query, texts, truncate?, truncation_direction?,
  raw_scores?, return_text?}` -> bare array `[{index, score, text?}]` sorted by score; `raw_scores`
  returns logits instead of sigmoid scores. Texts are always truncated to the model's max length
  (TEI's `--auto-truncate`), so `truncate` is accepted and has no effect.
- `GET /health` 200 `{status: "ok", model_version}` or 503 while no model is loaded (no auth).
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
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from reranker.errors import (
    BackendError,
    InvalidInputError,
    RerankError,
)
from reranker.status import status_of

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 2_000_000  # TEI's --payload-limit default


class HttpError(Exception):
    """An error answered before the core is called (bad JSON, auth, body size)."""

    def __init__(self, status: int, message: str, error_type: str = "validation"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def _status_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, HttpError):
        return exc.status, exc.error_type
    st = status_of(exc)
    return st.http, st.tei


# --------------------------------------------------------------------------------- request parsing

def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name}: must be true or false, got {value!r}")
    return value


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name}: must be a positive integer, got {value!r}")
    return value


def _query(body: dict) -> str:
    query = body.get("query")
    if not isinstance(query, str):
        raise InvalidInputError("query: required, must be a string" if query is None else f"query: must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInputError("query: must not be empty")
    return query


def cohere_documents(value: Any, field_name: str = "documents") -> list[str]:
    """Cohere `documents` -> list of texts. Entries may be strings, `{"text": ...}` objects or null.

    A null entry, an object without `text` or with `"text": null` is scored as "" (documented).
    Raises InvalidInputError naming the field/index for any other shape.
    """
    if not isinstance(value, list):
        raise InvalidInputError(f"{field_name}: required, must be a list of strings or {{\"text\": ...}} objects"
                                if value is None else f"{field_name}: must be a list, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{field_name}: must not be empty")
    texts: list[str] = []
    for i, doc in enumerate(value):
        if doc is None:
            texts.append("")
        elif isinstance(doc, str):
            texts.append(doc)
        elif isinstance(doc, dict):
            text = doc.get("text")
            if text is None:
                texts.append("")
            elif isinstance(text, str):
                texts.append(text)
            else:
                raise InvalidInputError(f"{field_name}[{i}].text: must be a string, got {type(text).__name__}")
        else:
            raise InvalidInputError(f"{field_name}[{i}]: must be a string or {{\"text\": ...}}, got {type(doc).__name__}")
    return texts


def tei_texts(value: Any) -> list[str]:
    """TEI `texts` -> list of strings (null entries scored as ""). Raises InvalidInputError otherwise."""
    if not isinstance(value, list):
        raise InvalidInputError("texts: required, must be a list of strings" if value is None
                                else f"texts: must be a list, got {type(value).__name__}")
    if not value:
        raise InvalidInputError("texts: must not be empty")
    out = []
    for i, text in enumerate(value):
        if text is None:
            out.append("")
        elif isinstance(text, str):
            out.append(text)
        else:
            raise InvalidInputError(f"texts[{i}]: must be a string, got {type(text).__name__}")
    return out


def f32(value: float) -> float:
    """A float32 score as the shortest decimal that round-trips it (e.g. 0.507347, as Cohere answers).

    Scores are float32 (the model's precision, also on gRPC). Printing them at double precision
    ("0.5073469877243042") is not only noise: ml-commons reads the connector's JSON with json-smart,
    which turns numbers of more than 18 characters into BigDecimal, and its Cohere post-process function
    then fails with a ClassCastException (BigDecimal cannot be cast to Double). Checked on 2.19.1:
    0.12345678901234567 fails, 0.5073469877243042 works.
    """
    return float(str(np.float32(value)))


def truncate_words(text: str, max_tokens: int | None) -> str:
    """Cut `text` to about `max_tokens` tokens (whitespace words; a word is >= 1 wordpiece, so this
    never keeps fewer tokens than asked). None: unchanged. The model truncates each pair to its own
    max length anyway."""
    if max_tokens is None:
        return text
    words = text.split()
    return text if len(words) <= max_tokens else " ".join(words[:max_tokens])


# -------------------------------------------------------------------------------------------- app

@dataclass
class _Scored:
    scores: list[float]
    logits: list[float]
    model_version: str
    timings: dict[str, float]
    tokens: int


def create_app(core, metrics=None, settings=None) -> FastAPI:
    """The FastAPI application over `core` (a `reranker.core.ScoringCore`).

    Args:
        core: scoring core; `await core.score(query, documents, deadline, front="http")`.
        metrics: the sidecar's metrics object (`reranker.metrics`), or None.
        settings: `ServeSettings`; reads `http_api_key`, `http_max_body_bytes`, the default deadline
            and `model name` when present.
    """
    api_key = _secret(getattr(settings, "http_api_key", None))
    max_body = int(getattr(settings, "http_max_body_bytes", None) or DEFAULT_MAX_BODY_BYTES)
    default_deadline_s = _default_deadline_s(settings)
    model_name = _model_name()

    app = FastAPI(title="fashion-rerank", docs_url=None, redoc_url=None, openapi_url=None)

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HttpError(401, "missing or invalid bearer token (Authorization: Bearer <FR_SERVE_HTTP_API_KEY>)", "unauthorized")

    async def read_json(request: Request) -> dict:
        check_auth(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise HttpError(413, f"request body is {length} bytes, more than the limit of {max_body}")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_body:
                raise HttpError(413, f"request body is more than the limit of {max_body} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HttpError(400, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def deadline_for(request: Request) -> float | None:
        budget = default_deadline_s
        header = request.headers.get("x-request-timeout-ms")
        if header:
            try:
                asked = float(header) / 1000.0
            except ValueError:
                raise HttpError(400, f"X-Request-Timeout-Ms: must be a number of milliseconds, got {header!r}")
            if not math.isfinite(asked) or asked <= 0:
                raise HttpError(400, f"X-Request-Timeout-Ms: must be positive, got {header!r}")
            budget = min(budget, asked) if budget else asked
        return time.monotonic() + budget if budget else None

    async def score(query: str, texts: list[str], deadline: float | None, truncate_left: bool = False) -> _Scored:
        result = await core.score(query, texts, deadline=deadline, front="http", truncate_left=truncate_left)
        scores = [f32(s) for s in result.scores]
        logits = [f32(x) for x in result.logits]
        if len(scores) != len(texts) or len(logits) != len(texts):
            raise BackendError(f"model returned {len(scores)} scores for {len(texts)} documents")
        if not all(math.isfinite(s) for s in scores + logits):
            raise BackendError("model returned non-finite scores")
        return _Scored(scores, logits, result.model_version, dict(result.timings or {}), int(result.tokens or 0))

    def timing_headers(scored: _Scored, started: float) -> dict[str, str]:
        h = {"x-total-time": f"{(time.perf_counter() - started) * 1000:.1f}", "x-model-version": str(scored.model_version)}
        for key, name in (("queue", "x-queue-time"), ("queue_s", "x-queue-time"), ("inference", "x-inference-time"),
                          ("inference_s", "x-inference-time"), ("tokenize", "x-tokenization-time"), ("tokenize_s", "x-tokenization-time")):
            if key in scored.timings:
                h[name] = f"{scored.timings[key] * 1000:.1f}"
        h["x-compute-tokens"] = str(scored.tokens)
        return h

    async def handle(request: Request, route: str, work: Callable, error_body: Callable[[str, str], Any]):
        started = time.perf_counter()
        try:
            return await work(started)
        except (HttpError, RerankError) as exc:
            status, etype = _status_of(exc)
            headers = {"Retry-After": "1"} if status in (429, 503) else {}
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if status >= 500 and status != 503:
                log.warning("%s %s -> %d: %s", request.method, route, status, exc)
            _count(metrics, route, status, time.perf_counter() - started)
            return JSONResponse(error_body(str(exc), etype), status_code=status, headers=headers)
        except Exception as exc:  # noqa: BLE001 - never leak a traceback to the caller
            log.exception("%s %s failed", request.method, route)
            _count(metrics, route, 500, time.perf_counter() - started)
            return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "backend"), status_code=500)

    def cohere_error(message: str, _etype: str) -> dict:
        return {"message": message}

    def tei_error(message: str, etype: str) -> dict:
        return {"error": message, "error_type": etype}

    async def cohere_rerank(request: Request, version: str):
        async def work(started: float):
            body = await read_json(request)
            query = _query(body)
            texts = cohere_documents(body.get("documents"))
            top_n = _positive_int(body, "top_n")
            max_tokens = _positive_int(body, "max_tokens_per_doc")
            return_documents = _bool(body, "return_documents", False)
            model = body.get("model")
            if model is not None and not isinstance(model, str):
                raise InvalidInputError(f"model: must be a string, got {type(model).__name__}")
            scored = await score(query, [truncate_words(t, max_tokens) for t in texts], deadline_for(request))
            order = sorted(range(len(texts)), key=lambda i: (-scored.scores[i], i))
            if top_n is not None:
                order = order[:top_n]
            results = []
            for i in order:
                item: dict[str, Any] = {"index": i, "relevance_score": scored.scores[i]}
                if return_documents:
                    item["document"] = {"text": texts[i]}
                results.append(item)
            payload = {
                "id": str(uuid.uuid4()),
                "results": results,
                "meta": {
                    "api_version": {"version": version},
                    "billed_units": {"search_units": 1},
                    "model": model_name,
                    "model_version": scored.model_version,
                },
            }
            _count(metrics, route, 200, time.perf_counter() - started, len(texts))
            return JSONResponse(payload, headers=timing_headers(scored, started))

        route = "/v1/rerank" if version == "1" else "/v2/rerank"
        return await handle(request, route, work, cohere_error)

    @app.post("/v1/rerank")
    async def rerank_v1(request: Request):
        """Cohere v1 rerank."""
        return await cohere_rerank(request, "1")

    @app.post("/v2/rerank")
    async def rerank_v2(request: Request):
        """Cohere v2 rerank (same fields)."""
        return await cohere_rerank(request, "2")

    @app.post("/rerank")
    async def rerank_tei(request: Request):
        """text-embeddings-inference rerank."""

        async def work(started: float):
            body = await read_json(request)
            query = _query(body)
            texts = tei_texts(body.get("texts"))
            raw_scores = _bool(body, "raw_scores", False)
            return_text = _bool(body, "return_text", False)
            _bool(body, "truncate", False)
            direction = body.get("truncation_direction")
            if direction is not None and direction not in ("Left", "Right", "left", "right"):
                raise InvalidInputError(f"truncation_direction: must be \"Left\" or \"Right\", got {direction!r}")
            left = direction in ("Left", "left")
            scored = await score(query, texts, deadline_for(request), truncate_left=left)
            values = scored.logits if raw_scores else scored.scores
            order = sorted(range(len(texts)), key=lambda i: (-values[i], i))
            out = []
            for i in order:
                item: dict[str, Any] = {"index": i, "score": values[i]}
                if return_text:
                    item["text"] = texts[i]
                out.append(item)
            _count(metrics, "/rerank", 200, time.perf_counter() - started, len(texts))
            return JSONResponse(out, headers=timing_headers(scored, started))

        return await handle(request, "/rerank", work, tei_error)

    @app.get("/health")
    async def health():
        """200 when a model is loaded, else 503 (load balancers / readiness probes)."""
        version = core.model_version
        if version is None:
            return JSONResponse({"status": "no model loaded"}, status_code=503)
        return {"status": "ok", "model": model_name, "model_version": version}

    @app.get("/v1/models")
    async def models(request: Request):
        """The served model (OpenAI-style list)."""

        async def work(started: float):
            check_auth(request)
            version = core.model_version
            data = [] if version is None else [{"id": model_name, "object": "model", "version": version, "owned_by": "fashion-rerank"}]
            return JSONResponse({"object": "list", "data": data})

        return await handle(request, "/v1/models", work, cohere_error)

    return app


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value) or None


def _default_deadline_s(settings: Any) -> float | None:
    """Default per-request deadline: `rerank_budget_ms` (the time a search gives the reranker)."""
    value = getattr(settings, "rerank_budget_ms", None) if settings is not None else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) / 1000.0
    return None


def _path(value: Any) -> str | None:
    """A settings path, None when unset or empty (pydantic turns "" into Path('.'))."""
    return None if value is None or str(value) in ("", ".") else str(value)


def _model_name() -> str:
    from fashion_rerank.settings import ModelSettings

    return ModelSettings().name


def _count(metrics: Any, route: str, status: int, seconds: float, documents: int | None = None) -> None:
    """Record one finished HTTP request: `requests_total{method=route, front="http", code=status}`,
    its duration, and the documents per request (`candidates_per_request{method=route}`)."""
    if metrics is None:
        return
    try:
        metrics.observe_request(route, "http", str(status), seconds)
        if documents is not None:
            metrics.candidates.labels(route).observe(documents)
    except Exception:  # noqa: BLE001 - metrics never fail a request
        log.debug("metrics update failed", exc_info=True)


# ------------------------------------------------------------------------------------------ server

class HttpFront:
    """A running uvicorn server in a background thread with its own event loop.

    Attributes:
        host, port: where it listens (port is the bound one, also when 0 was asked).
        url: `http(s)://host:port`.
    """

    def __init__(self, server, thread: threading.Thread, host: str, port: int, tls: bool):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish for up to `grace_s` seconds, then close."""
        self._server.config.timeout_graceful_shutdown = max(0.0, grace_s)
        self._server.should_exit = True
        self._thread.join(grace_s + 5.0)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5.0)


def start_http_front(core, metrics=None, settings=None, host: str | None = None, port: int | None = None) -> HttpFront:
    """Serve `create_app(core, metrics, settings)` with uvicorn in a daemon thread; returns once listening.

    Host/port default to `settings.http_host` (127.0.0.1) and `settings.http_port` (8080); port 0
    picks a free port. TLS is on when `settings.http_tls_cert` and `http_tls_key` are set.

    Raises:
        RuntimeError: the server did not start within 15 s (e.g. the port is taken); the message
            says why.
    """
    import uvicorn

    host = host or getattr(settings, "http_host", None) or "127.0.0.1"
    port = int(port if port is not None else getattr(settings, "http_port", 8080))
    cert = _path(getattr(settings, "http_tls_cert", None))
    key = _path(getattr(settings, "http_tls_key", None))
    if bool(cert) != bool(key):
        raise RuntimeError("TLS needs both FR_SERVE_HTTP_TLS_CERT and FR_SERVE_HTTP_TLS_KEY")
    config = uvicorn.Config(
        create_app(core, metrics, settings),
        host=host,
        port=port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starter
            failure.append(exc)

    thread = threading.Thread(target=run, name="http-front", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15.0
    while not server.started:
        if not thread.is_alive() or failure:
            why = failure[0] if failure else "server exited"
            raise RuntimeError(f"HTTP front could not listen on {host}:{port}: {why}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"HTTP front did not start on {host}:{port} within 15 s")
        time.sleep(0.02)
    bound = port
    for srv in getattr(server, "servers", []) or []:
        for sock in getattr(srv, "sockets", []) or []:
            bound = sock.getsockname()[1]
            break
    log.info("HTTP front listening on %s:%d", host, bound)
    return HttpFront(server, thread, host, bound, bool(cert))
