"""The gRPC front: `fashion_rerank.v1.Reranker`, TEI's `tei.v1.Rerank` and `tei.v1.Info`, health checking and
reflection on one port.

Status codes: `reranker.status` (one table for both fronts).

Each handler passes the call's deadline to the core and registers `future.cancel` as the call's
termination callback, so the worker drops the work of a client that went away.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from concurrent import futures as _futures
from typing import Callable, Iterable

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fashion_rerank import __version__
from fashion_rerank.product import ATTRIBUTE_FIELDS, Product, rerank_text
from fashion_rerank.settings import ServeSettings
from fashion_rerank.v1 import reranker_pb2, reranker_pb2_grpc, tei_pb2, tei_pb2_grpc
from reranker import grpc_auth
from reranker.core import ScoreResult, ScoringCore
from reranker.core.request import check_fits, validate_request
from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    InvalidInputError,
    NoModelError,
    RerankError,
    TooLargeError,
)
from reranker.grpc_decode import DecodeCheck, UndecodableRequest
from reranker.status import status_of

log = logging.getLogger(__name__)

RERANKER_SERVICE = reranker_pb2.DESCRIPTOR.services_by_name["Reranker"].full_name
TEI_SERVICE = tei_pb2.DESCRIPTOR.services_by_name["Rerank"].full_name
TEI_INFO_SERVICE = tei_pb2.DESCRIPTOR.services_by_name["Info"].full_name
#: `Product` message fields, in proto order.
PRODUCT_FIELDS = tuple(f.name for f in reranker_pb2.Product.DESCRIPTOR.fields)
#: Deadlines further away than this are treated as "no deadline" (gRPC reports an infinite one as huge).
_NO_DEADLINE_S = 1e7


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for a scoring/search error (`reranker.status`; INTERNAL for anything unexpected)."""
    return grpc.StatusCode[status_of(exc).grpc]


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a `time.monotonic()` value, or None when the client set none."""
    left = context.time_remaining()
    if left is None or left > _NO_DEADLINE_S:
        return None
    return time.monotonic() + left


def _wait(fut: concurrent.futures.Future, context: grpc.ServicerContext, deadline: float | None) -> ScoreResult:
    context.add_callback(fut.cancel)  # client gone or call over: the worker drops what is left
    try:
        return fut.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()) + 0.05)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise DeadlineExceededError("deadline passed while the request was being scored") from None
    except concurrent.futures.CancelledError:
        raise DeadlineExceededError("the call was cancelled") from None


def _rpc(method: str) -> Callable:
    """Decorator for servicer methods: times the call, maps RerankError to its status code (with the
    error's message as details), turns anything unexpected into INTERNAL (logged), and records
    `requests_total{method, front="grpc", code}` and the latency histogram on `servicer.metrics`."""

    def wrap(fn: Callable) -> Callable:
        def handler(servicer, request, context):
            t0 = time.monotonic()
            code = grpc.StatusCode.OK
            try:
                if isinstance(request, UndecodableRequest):  # bytes that do not parse: reranker.grpc_decode
                    raise request.error
                return fn(servicer, request, context)
            except RerankError as exc:
                code = status_for(exc)
                if not context.is_active() and context.time_remaining() > 0:
                    code = grpc.StatusCode.CANCELLED  # the client went away
                context.abort(code, str(exc))
            except Exception as exc:  # noqa: BLE001 - last resort: INTERNAL with a message, logged
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", method)
                context.abort(code, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                if servicer.metrics is not None:
                    servicer.metrics.observe_request(method, "grpc", code.name, time.monotonic() - t0)

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def document_text(doc: reranker_pb2.Document, index: int) -> str:
    """The text scored for a `Document`: its `text`, or `rerank_text` of its product fields.

    Raises InvalidInputError when it has neither, or a product without a title.
    """
    kind = doc.WhichOneof("content")
    if kind == "text":
        return doc.text
    if kind == "product":
        fields = {f: getattr(doc.product, f) for f in PRODUCT_FIELDS}
        product = Product.from_fields(fields, id=doc.id)
        if not product.title:
            raise InvalidInputError(f"document {index}: product has no title")
        return rerank_text(product)
    raise InvalidInputError(f"document {index} has neither text nor product")


def _timings_ms(t: dict[str, float]) -> reranker_pb2.Timings:
    return reranker_pb2.Timings(
        queue_ms=t.get("queue", 0.0) * 1e3,
        tokenization_ms=t.get("tokenize", 0.0) * 1e3,
        inference_ms=t.get("inference", 0.0) * 1e3,
        embedding_ms=t.get("embedding", 0.0) * 1e3,
        knn_ms=t.get("knn", 0.0) * 1e3,
        total_ms=t.get("total", 0.0) * 1e3,
    )


def model_dtype(backend) -> str:
    """TEI's `model_dtype` for a backend: "float32", "float16" or "int8" (an ONNX backend's `variant`; the
    torch backend loads float32)."""
    variant = str(getattr(backend, "variant", "") or "fp32")
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(variant, variant)


def product_message(source: dict, id: str = "", product: Product | None = None) -> reranker_pb2.Product:
    """`product` (or, without it, an index `_source` read with our field names) -> `Product` message."""
    p = product if product is not None else Product.from_fields(source, id=id)
    return reranker_pb2.Product(
        product_id=p.id, title=p.title, description=p.description, **{k: p.attributes.get(k, "") for k in ATTRIBUTE_FIELDS}
    )


class RerankerServicer(reranker_pb2_grpc.RerankerServicer):
    """`fashion_rerank.v1.Reranker`: Rerank (core) and Search (`reranker.search.SearchService`)."""

    def __init__(self, core: ScoringCore, settings: ServeSettings, metrics=None, search=None):
        self.core, self.settings, self.metrics, self.search = core, settings, metrics, search

    @_rpc("Rerank")
    def Rerank(self, request: reranker_pb2.RerankRequest, context) -> reranker_pb2.RerankResponse:
        n = len(request.documents)
        if n > self.settings.max_documents:
            raise TooLargeError(f"{n} documents in one request; the limit is {self.settings.max_documents}")
        texts = [document_text(d, i) for i, d in enumerate(request.documents)]
        deadline = _deadline(context)
        res = _wait(self.core.submit(request.query, texts, deadline, front="grpc"), context, deadline)
        if self.metrics:
            self.metrics.candidates.labels("Rerank").observe(n)
        order = np.argsort(-res.logits, kind="stable")
        if request.top_n:
            order = order[: request.top_n]
        results = [
            reranker_pb2.RerankResult(
                id=request.documents[i].id,
                index=i,
                score=float(res.scores[i]),
                logit=float(res.logits[i]),
                rank=r,
                text=texts[i] if request.return_text else "",
            )
            for r, i in enumerate(order.tolist(), start=1)
        ]
        return reranker_pb2.RerankResponse(
            results=results, model_version=res.model_version, timings=_timings_ms(res.timings), tokens=res.tokens
        )

    @_rpc("Search")
    def Search(self, request: reranker_pb2.SearchRequest, context) -> reranker_pb2.SearchResponse:
        if self.search is None:
            raise BackendError("Search is not configured on this server")
        filters: dict[str, list[str]] = {}
        for f in request.filters:
            if not f.field:
                raise InvalidInputError("a filter has no field")
            filters.setdefault(f.field, []).extend(f.values)
        res = self.search.search(
            request.query,
            top_k=request.top_k,
            top_n=request.top_n,
            filters=filters,
            index=request.index,
            client_id=request.client_id,
            deadline=_deadline(context),
            front="grpc",
            peer=context.peer() or "",
        )
        hits = [
            reranker_pb2.SearchHit(
                id=h.id,
                product=product_message(h.source, h.id, h.product),
                rank=h.rank,
                rerank_score=h.rerank_score,
                rerank_logit=h.rerank_logit,
                retrieval_score=h.retrieval_score,
                retrieval_rank=h.retrieval_rank,
            )
            for h in res.hits
        ]
        return reranker_pb2.SearchResponse(
            hits=hits,
            model_version=res.model_version,
            reranked=res.reranked,
            query_id=res.query_id,
            timings=_timings_ms(res.timings),
            candidates=res.candidates,
        )


class TeiRerankServicer(tei_pb2_grpc.RerankServicer):
    """Hugging Face TEI's `tei.v1.Rerank` on the sidecar's core.

    As TEI: ranks sorted by score, best first; `raw_scores` returns the logit instead of the served score;
    `return_text` echoes the text. `truncate` as TEI's: false (the proto default) refuses a request in
    which a (query, text) pair is longer than the model's `max_length` tokens (INVALID_ARGUMENT, see
    `check_fits`); true cuts over-long texts to fit, at their end or, with `truncation_direction=LEFT`,
    at their start. In RerankStream `truncate` and `truncation_direction` count per message, `raw_scores`
    and `return_text` from the first one (as TEI).

    Unlike TEI: only the text is ever cut, never the query (TEI cuts the longer side of the pair first), so
    a query too long to leave room for a text is refused even with `truncate=true`; an empty `texts` list
    returns an empty response.
    """

    def __init__(self, core: ScoringCore, settings: ServeSettings, metrics=None):
        self.core, self.settings, self.metrics = core, settings, metrics

    def _response(
        self,
        query_texts: list[tuple[str, str]],
        results: list[tuple[float, float]],
        tokens: int,
        timings: dict[str, float],
        raw_scores: bool,
        return_text: bool,
    ) -> tei_pb2.RerankResponse:
        ranks = []
        order = sorted(range(len(results)), key=lambda i: -results[i][1])
        for i in order:
            score, logit = results[i]
            rank = tei_pb2.Rank(index=i, score=logit if raw_scores else score)
            if return_text:
                rank.text = query_texts[i][1]
            ranks.append(rank)
        chars = sum(len(q) + len(t) for q, t in query_texts)
        ns = lambda k: int(max(0.0, timings.get(k, 0.0)) * 1e9)  # noqa: E731
        meta = tei_pb2.Metadata(
            compute_chars=chars,
            compute_tokens=tokens,
            total_time_ns=ns("total"),
            tokenization_time_ns=ns("tokenize"),
            queue_time_ns=ns("queue"),
            inference_time_ns=ns("inference"),
        )
        return tei_pb2.RerankResponse(ranks=ranks, metadata=meta)

    @_rpc("tei.Rerank")
    def Rerank(self, request: tei_pb2.RerankRequest, context) -> tei_pb2.RerankResponse:
        texts = list(request.texts)
        if len(texts) > self.settings.max_documents:
            raise TooLargeError(f"{len(texts)} texts in one request; the limit is {self.settings.max_documents}")
        left = request.truncation_direction == tei_pb2.TRUNCATION_DIRECTION_LEFT
        if not request.truncate:
            validate_request(request.query, texts, self.settings)
            check_fits(self.core, request.query, texts)
        deadline = _deadline(context)
        res = _wait(self.core.submit(request.query, texts, deadline, front="grpc", truncate_left=left), context, deadline)
        if self.metrics:
            self.metrics.candidates.labels("tei.Rerank").observe(len(texts))
        results = list(zip(res.scores.tolist(), res.logits.tolist()))
        return self._response(
            [(request.query, t) for t in texts], results, res.tokens, res.timings, request.raw_scores, request.return_text
        )

    @_rpc("tei.RerankStream")
    def RerankStream(self, request_iterator: Iterable[tei_pb2.RerankStreamRequest], context) -> tei_pb2.RerankResponse:
        pairs: list[tuple[str, str]] = []
        first = None
        #: (query, cut at the start, truncate) -> indices of the stream's messages with those values
        groups: dict[tuple[str, bool, bool], list[int]] = {}
        for msg in request_iterator:
            if first is None:
                first = msg
            left = msg.truncation_direction == tei_pb2.TRUNCATION_DIRECTION_LEFT
            groups.setdefault((msg.query, left, msg.truncate), []).append(len(pairs))
            pairs.append((msg.query, msg.text))
            if len(pairs) > self.settings.max_documents:
                raise TooLargeError(f"more than {self.settings.max_documents} texts in one stream")
        if first is None:
            return tei_pb2.RerankResponse(metadata=tei_pb2.Metadata())
        for (q, _, truncate), idx in groups.items():
            if not truncate:
                texts = [pairs[i][1] for i in idx]
                validate_request(q, texts, self.settings)
                check_fits(self.core, q, texts, positions=idx, what="message")
        deadline = _deadline(context)
        submitted = []
        for (q, left, _), idx in groups.items():
            fut = self.core.submit(q, [pairs[i][1] for i in idx], deadline, front="grpc", truncate_left=left)
            # when the call ends early (a later group refused, an earlier one failed), the worker drops this work
            context.add_callback(fut.cancel)
            submitted.append((idx, fut))
        results: list[tuple[float, float]] = [(0.0, 0.0)] * len(pairs)
        tokens = 0
        timings: dict[str, float] = {}
        for idx, fut in submitted:
            res = _wait(fut, context, deadline)
            tokens += res.tokens
            for k, v in res.timings.items():
                timings[k] = max(timings.get(k, 0.0), v)
            for j, i in enumerate(idx):
                results[i] = (float(res.scores[j]), float(res.logits[j]))
        if self.metrics:
            self.metrics.candidates.labels("tei.RerankStream").observe(len(pairs))
        return self._response(pairs, results, tokens, timings, first.raw_scores, first.return_text)


class TeiInfoServicer(tei_pb2_grpc.InfoServicer):
    """Hugging Face TEI's `tei.v1.Info`: what this server serves, for TEI clients that ask before they rerank.

    Fields (TEI's names and numbers): `version` the fashion-rerank package version; `model_id` the registry's
    model name; `model_sha` the serving version (the string every score reports); `model_dtype` see
    `model_dtype`; `model_type` RERANKER; `max_input_length` the serving model's `max_length` (tokens per
    (query, text) pair, special tokens included); `max_batch_tokens` the padded tokens of one forward pass
    (`ServeSettings.max_batch_tokens`); `max_batch_requests` the pairs in one batch across requests
    (`max_batch_pairs`: TEI queues each pair of a rerank call as one request); `max_client_batch_size` the
    texts in one call (`max_documents`); `max_concurrent_requests` the RPCs in progress before
    RESOURCE_EXHAUSTED (`max_concurrent_rpcs`); `tokenization_workers` 1 (the core's worker tokenizes each
    batch). `sha` and `docker_label` are not set.

    Raises NoModelError (FAILED_PRECONDITION) while no model is loaded, as Rerank would.
    """

    def __init__(self, core: ScoringCore, settings: ServeSettings, metrics=None):
        self.core, self.settings, self.metrics = core, settings, metrics

    @_rpc("tei.Info")
    def Info(self, request: tei_pb2.InfoRequest, context) -> tei_pb2.InfoResponse:
        backend = self.core.models.backend
        if backend is None:
            raise NoModelError(f"no cross-encoder is promoted in {self.core.registry.dir} yet")
        s = self.settings
        return tei_pb2.InfoResponse(
            version=__version__,
            model_id=self.core.registry.name,
            model_sha=backend.version,
            model_dtype=model_dtype(backend),
            model_type=tei_pb2.MODEL_TYPE_RERANKER,
            max_concurrent_requests=s.max_concurrent_rpcs,
            max_input_length=backend.max_length,
            max_batch_tokens=s.max_batch_tokens,
            max_batch_requests=s.max_batch_pairs,
            max_client_batch_size=s.max_documents,
            tokenization_workers=1,
        )


class GrpcServer:
    """The sidecar's gRPC server: Reranker, tei.v1.Rerank, tei.v1.Info, grpc.health.v1.Health and reflection.

    Args:
        settings: host, port (0 = free port), workers, message size limit, and who may call
            (`reranker.grpc_auth`: TLS / mutual TLS, bearer token; health stays open).
        core: the scoring core.
        metrics: optional Metrics.
        search: optional `reranker.search.SearchService` (Search answers INTERNAL without it).
    """

    SERVICES = (RERANKER_SERVICE, TEI_SERVICE, TEI_INFO_SERVICE)

    def __init__(self, settings: ServeSettings, core: ScoringCore, metrics=None, search=None):
        self.settings = settings
        self.metrics = metrics
        opts = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.server(
            _futures.ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="grpc"),
            options=opts,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            interceptors=[*grpc_auth.interceptors(settings, metrics), DecodeCheck(self.SERVICES)],
        )
        reranker = RerankerServicer(core, settings, metrics, search)
        tei = TeiRerankServicer(core, settings, metrics)
        reranker_pb2_grpc.add_RerankerServicer_to_server(reranker, self.server)
        tei_pb2_grpc.add_RerankServicer_to_server(tei, self.server)
        tei_pb2_grpc.add_InfoServicer_to_server(TeiInfoServicer(core, settings, metrics), self.server)
        self.health = health.HealthServicer(
            experimental_non_blocking=True, experimental_thread_pool=_futures.ThreadPoolExecutor(max_workers=2)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*self.SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        credentials = grpc_auth.server_credentials(settings)  # None: plaintext
        self.tls = credentials is not None
        self.port = self.server.add_secure_port(address, credentials) if credentials else self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.grpc_host}:{settings.grpc_port}")

    @property
    def target(self) -> str:
        """host:port clients connect to."""
        return f"{self.settings.grpc_host}:{self.port}"

    def start(self) -> int:
        """Start serving; health answers SERVING for "" and each service. Returns the bound port."""
        self.server.start()
        for name in ("", *self.SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def set_not_serving(self) -> None:
        """Health answers NOT_SERVING from now on (first step of a graceful shutdown)."""
        self.health.enter_graceful_shutdown()

    def stop(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new calls, give in-flight calls `grace_s` seconds, then cancel them."""
        self.set_not_serving()
        self.server.stop(grace_s).wait()
