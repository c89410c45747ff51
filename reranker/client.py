"""A small Python client of the sidecar (`fashion_rerank.v1.Reranker`, plus health).

    with RerankerClient("127.0.0.1:50051") as c:
        r = c.rerank("red midi dress", ["Women Red Midi Dress", {"title": "Men Black Jeans", "gender": "Men"}], top_n=1)
        s = c.search("red midi dress", top_k=100, top_n=10, filters={"gender": "Women"})

Calls return the protobuf responses (`RerankResponse`, `SearchResponse`) and raise `grpc.RpcError` with
the server's status code and message on failure. Message sizes are limited on the client too
(`max_message_bytes`, default the server's default of 16 MiB).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fashion_rerank.v1 import reranker_pb2, reranker_pb2_grpc, tei_pb2_grpc

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

DocumentLike = str | Mapping[str, Any] | tuple[str, str] | reranker_pb2.Document


def to_document(doc: DocumentLike) -> reranker_pb2.Document:
    """A text, a (id, text) pair, a mapping of product fields ("id"/"product_id", "title", attributes...)
    or a `Document` -> `Document`. Raises TypeError for anything else."""
    if isinstance(doc, reranker_pb2.Document):
        return doc
    if isinstance(doc, str):
        return reranker_pb2.Document(text=doc)
    if isinstance(doc, tuple) and len(doc) == 2:
        return reranker_pb2.Document(id=str(doc[0]), text=str(doc[1]))
    if isinstance(doc, Mapping):
        names = {f.name for f in reranker_pb2.Product.DESCRIPTOR.fields}
        fields = {k: str(v) for k, v in doc.items() if k in names and v is not None}
        doc_id = str(doc.get("id") or doc.get("product_id") or "")
        if "text" in doc:
            return reranker_pb2.Document(id=doc_id, text=str(doc["text"]))
        return reranker_pb2.Document(id=doc_id, product=reranker_pb2.Product(**fields))
    raise TypeError(f"cannot turn {type(doc).__name__} into a Document")


class _BearerMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a plaintext channel."""

    def __init__(self, token: str):
        self._md = ("authorization", f"Bearer {token}")

    def _details(self, d):
        return d._replace(metadata=[*(d.metadata or ()), self._md]) if hasattr(d, "_replace") else _Details(d, self._md)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, md):
        self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
        self.wait_for_ready, self.compression = getattr(d, "wait_for_ready", None), getattr(d, "compression", None)
        self.metadata = [*(d.metadata or ()), md]


class RerankerClient:
    """Client of a running sidecar.

    Args:
        target: "host:port" of the gRPC server.
        timeout: default per-call deadline in seconds (None: no deadline).
        max_message_bytes: max send/receive message size on this channel.
        token: bearer token sent as `authorization: Bearer <token>` (the server's FR_SERVE_GRPC_API_KEY).
        tls: connect with TLS (implied by `root_certificates` or `client_cert`); system roots unless
            `root_certificates` (PEM bytes of a private CA) are given.
        client_cert, client_key: PEM bytes of a client certificate for mutual TLS.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        timeout: float | None = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
    ):
        self.target = target
        self.timeout = timeout
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls or root_certificates or client_cert:
            creds = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            if token:
                creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
            if token:  # call credentials need TLS; on plaintext the metadata is added by an interceptor
                self.channel = grpc.intercept_channel(self.channel, _BearerMetadata(token))
        self.stub = reranker_pb2_grpc.RerankerStub(self.channel)
        self.tei = tei_pb2_grpc.RerankStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    @classmethod
    def from_settings(cls, settings, target: str | None = None, timeout: float | None = 30.0) -> "RerankerClient":
        """A client for the sidecar that `settings` (`ServeSettings`) describe: its host and port (or `target`),
        TLS when `grpc_tls_cert` is set (trusting `grpc_tls_ca`, else the system roots) and its
        `grpc_api_key` as the bearer token. Mutual TLS is not covered (the project's clients hold no
        client certificate). Raises OSError when `grpc_tls_ca` cannot be read."""
        key = settings.grpc_api_key
        token = (key.get_secret_value() if hasattr(key, "get_secret_value") else key) or None
        tls = settings.grpc_tls_cert is not None
        roots = open(settings.grpc_tls_ca, "rb").read() if tls and settings.grpc_tls_ca else None
        return cls(
            target or f"{settings.grpc_host}:{settings.grpc_port}",
            timeout=timeout,
            max_message_bytes=settings.max_message_bytes,
            token=token,
            tls=tls,
            root_certificates=roots,
        )

    def rerank(
        self,
        query: str,
        documents: Iterable[DocumentLike],
        top_n: int = 0,
        return_text: bool = False,
        timeout: float | None = None,
    ) -> reranker_pb2.RerankResponse:
        """Score `documents` against `query`; results best first (`top_n` of them, 0 = all)."""
        req = reranker_pb2.RerankRequest(
            query=query, documents=[to_document(d) for d in documents], top_n=top_n, return_text=return_text
        )
        return self.stub.Rerank(req, timeout=timeout or self.timeout)

    def search(
        self,
        query: str,
        top_k: int = 0,
        top_n: int = 0,
        filters: Mapping[str, str | Sequence[str]] | None = None,
        index: str = "",
        client_id: str = "",
        timeout: float | None = None,
    ) -> reranker_pb2.SearchResponse:
        """kNN `top_k` candidates (0 = server default), reranked, best `top_n` returned.

        `filters`: {attribute: value or [values]}, e.g. {"gender": "Women", "colour": ["Red", "Maroon"]}.
        """
        flt = [
            reranker_pb2.AttributeFilter(field=k, values=[v] if isinstance(v, str) else list(v))
            for k, v in (filters or {}).items()
        ]
        req = reranker_pb2.SearchRequest(query=query, top_k=top_k, top_n=top_n, filters=flt, index=index, client_id=client_id)
        return self.stub.Search(req, timeout=timeout or self.timeout)

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """Health status name ("SERVING", "NOT_SERVING", ...) of `service` ("" = the whole server)."""
        resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "RerankerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
