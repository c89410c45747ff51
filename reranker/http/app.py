"""The HTTP front's FastAPI application (`create_app`) and its uvicorn server thread (`start_http_front`).

Every rerank request goes: bearer token (`auth`) -> body, size-limited JSON object (`request`) -> fields
(`models.parse`) -> deadline header (`request.deadline_for`) -> the core (`scoring.score_texts`) -> the
answer, or at any step the error answer of `errors.error_response`. Each finished rerank request is
counted in the sidecar's metrics as `requests_total{method=<route>, front="http", code=<status>}` with its
duration, and its document count in `candidates_per_request{method=<route>}` when it succeeded; errors
of `/v1/models` are counted the same way (its successes and `/health` are not).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from fashion_rerank.settings import ModelSettings
from reranker.core.request import check_fits
from reranker.http.auth import BearerAuth
from reranker.http.errors import ErrorBody, cohere_error, error_response, tei_error
from reranker.http.models import (
    ApiVersion,
    BilledUnits,
    CohereErrorBody,
    CohereMeta,
    CohereRerankRequest,
    CohereRerankResponse,
    CohereResult,
    Health,
    ModelCard,
    ModelList,
    ResultDocument,
    TeiErrorBody,
    TeiRank,
    TeiRerankRequest,
    openapi_schemas,
    parse,
    request_body,
)
from reranker.http.request import deadline_for, default_deadline_s, max_body_bytes, read_json
from reranker.http.scoring import best_first, score_texts, timing_headers, truncate_words

log = logging.getLogger(__name__)

#: Error statuses a rerank endpoint answers (see `reranker.status`), for the OpenAPI document.
_ERRORS = {
    400: "a malformed body or field (named first in the message), or a bad X-Request-Timeout-Ms",
    401: "missing or wrong bearer token (only when FR_SERVE_HTTP_API_KEY is set)",
    413: "too many documents, too long a text, or a body over FR_SERVE_HTTP_MAX_BODY_BYTES",
    429: "the scoring queue is full (Retry-After: 1)",
    500: "the model failed",
    503: "no model loaded (Retry-After: 1)",
    504: "the deadline passed before scoring finished",
}


def _error_responses(body: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": body, "description": text} for status, text in _ERRORS.items()}


def create_app(core: Any, settings: Any = None, metrics: Any = None) -> FastAPI:
    """The FastAPI application over `core` (a `reranker.core.ScoringCore`).

    Args:
        core: scoring core; `await core.score(query, documents, deadline, front="http")`, `core.model_version`.
        settings: `ServeSettings` or None; reads `http_api_key`, `http_max_body_bytes` and
            `rerank_budget_ms` (the default deadline) when present. The model name comes from
            `ModelSettings().name`, read once here.
        metrics: the sidecar's `reranker.metrics.Metrics`, or None.

    The app serves no docs pages; `GET /openapi.json` (no token needed, like `/health`) publishes the
    document `app.openapi()` builds (request bodies included, although the routes read them by hand to keep
    the checks above in order). `docs/openapi.json` is a copy, kept equal by a test.
    """
    auth = BearerAuth.from_settings(settings)
    max_bytes = max_body_bytes(settings)
    default_s = default_deadline_s(settings)
    model_name = settings.models.name if getattr(settings, "models", None) is not None else ModelSettings().name

    app = FastAPI(title="fashion-rerank", docs_url=None, redoc_url=None, openapi_url=None)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            known = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, value in openapi_schemas().items():
                known.setdefault(name, value)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def answer(
        request: Request, route: str, error_body: ErrorBody, work: Callable[[float], Awaitable[Response]]
    ) -> Response:
        """`await work(started)`, or the error answer (counted) of what it raised."""
        started = time.perf_counter()
        try:
            return await work(started)
        except Exception as exc:  # noqa: BLE001 - every error becomes an answer, never a traceback
            response = error_response(exc, error_body, f"{request.method} {route}")
            _count(metrics, route, response.status_code, time.perf_counter() - started)
            return response

    async def cohere_rerank(request: Request, version: str) -> Response:
        route = f"/v{version}/rerank"

        async def work(started: float) -> Response:
            auth.check(request.headers)
            req = parse(CohereRerankRequest, await read_json(request, max_bytes))
            texts = req.texts()
            scored = await score_texts(
                core, req.query, [truncate_words(t, req.max_tokens_per_doc) for t in texts], deadline_for(request, default_s)
            )
            results = [
                CohereResult(
                    index=i,
                    relevance_score=scored.scores[i],
                    document=ResultDocument(text=texts[i]) if req.return_documents else None,
                )
                for i in best_first(scored.scores)[: req.top_n]
            ]
            payload = CohereRerankResponse(
                id=str(uuid.uuid4()),
                results=results,
                meta=CohereMeta(
                    api_version=ApiVersion(version=version),
                    billed_units=BilledUnits(search_units=1),
                    model=model_name,
                    model_version=scored.model_version,
                ),
            )
            _count(metrics, route, 200, time.perf_counter() - started, len(texts))
            return JSONResponse(payload.model_dump(exclude_none=True), headers=timing_headers(scored, started))

        return await answer(request, route, cohere_error, work)

    cohere_doc = dict(
        response_model=CohereRerankResponse,
        responses=_error_responses(CohereErrorBody),
        openapi_extra=request_body(CohereRerankRequest),
    )

    @app.post("/v1/rerank", **cohere_doc)
    async def rerank_v1(request: Request):
        """Cohere v1 rerank: `documents` scored against `query`, best first."""
        return await cohere_rerank(request, "1")

    @app.post("/v2/rerank", **cohere_doc)
    async def rerank_v2(request: Request):
        """Cohere v2 rerank (same fields as v1)."""
        return await cohere_rerank(request, "2")

    @app.post(
        "/rerank",
        response_model=list[TeiRank],
        responses=_error_responses(TeiErrorBody),
        openapi_extra=request_body(TeiRerankRequest),
    )
    async def rerank_tei(request: Request):
        """text-embeddings-inference rerank: a bare array of `{index, score, text?}`, best first."""

        async def work(started: float) -> Response:
            auth.check(request.headers)
            req = parse(TeiRerankRequest, await read_json(request, max_bytes))
            texts = req.text_list()
            if not req.truncate:
                check_fits(core, req.query, texts)
            scored = await score_texts(core, req.query, texts, deadline_for(request, default_s), truncate_left=req.truncate_left)
            values = scored.logits if req.raw_scores else scored.scores
            ranks = [TeiRank(index=i, score=values[i], text=texts[i] if req.return_text else None) for i in best_first(values)]
            _count(metrics, "/rerank", 200, time.perf_counter() - started, len(texts))
            return JSONResponse([r.model_dump(exclude_none=True) for r in ranks], headers=timing_headers(scored, started))

        return await answer(request, "/rerank", tei_error, work)

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "no model loaded"}})
    async def health():
        """200 when a model is loaded, else 503 (load balancers / readiness probes); needs no token."""
        version = core.model_version
        if version is None:
            return JSONResponse(Health(status="no model loaded").model_dump(exclude_none=True), status_code=503)
        return JSONResponse(Health(status="ok", model=model_name, model_version=version).model_dump())

    @app.get("/v1/models", response_model=ModelList, responses={401: {"model": CohereErrorBody, "description": _ERRORS[401]}})
    async def models(request: Request):
        """The served model (OpenAI-style list; empty while none is loaded)."""

        async def work(started: float) -> Response:
            auth.check(request.headers)
            version = core.model_version
            data = [] if version is None else [ModelCard(id=model_name, version=version)]
            return JSONResponse(ModelList(data=data).model_dump())

        return await answer(request, "/v1/models", cohere_error, work)

    return app


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


def _path(value: Any) -> str | None:
    """A settings path, None when unset or empty (pydantic turns "" into Path('.'))."""
    return None if value is None or str(value) in ("", ".") else str(value)


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
    """Serve `create_app(core, settings, metrics)` with uvicorn in a daemon thread; returns once listening.

    Host/port default to `settings.http_host` (127.0.0.1) and `settings.http_port` (8080); port 0
    picks a free port. TLS (HTTPS only) is on when `settings.http_tls_cert` and `http_tls_key` are set.

    Raises:
        RuntimeError: only one of the TLS files is set; or the server did not start within 15 s
            (e.g. the port is taken); the message says why.
    """
    import uvicorn

    host = host or getattr(settings, "http_host", None) or "127.0.0.1"
    port = int(port if port is not None else getattr(settings, "http_port", 8080))
    cert = _path(getattr(settings, "http_tls_cert", None))
    key = _path(getattr(settings, "http_tls_key", None))
    if bool(cert) != bool(key):
        raise RuntimeError("TLS needs both FR_SERVE_HTTP_TLS_CERT and FR_SERVE_HTTP_TLS_KEY")
    config = uvicorn.Config(
        create_app(core, settings, metrics),
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
