"""Who may call the gRPC front: TLS (optionally mutual) and a bearer token, like the HTTP front has.

Settings (`FR_SERVE_*`, `fashion_rerank.settings.ServeSettings`):

- `grpc_tls_cert` + `grpc_tls_key` (PEM files): the port serves TLS instead of plaintext;
- `grpc_tls_client_ca` (PEM bundle, needs the two above): mutual TLS, a client must present a
  certificate signed by this CA or the handshake fails (clients see UNAVAILABLE);
- `grpc_api_key`: every call must carry the metadata `authorization: Bearer <key>` (scheme
  case-insensitive, token compared in constant time with `hmac.compare_digest`); a missing or wrong
  token gets UNAUTHENTICATED (`reranker.status`: `UnauthenticatedError`) before any handler runs.
  `grpc.health.v1.Health` stays open, so load balancers and orchestrators probe without a token.

The token is never logged or echoed: the refusal message names the metadata key, not what was sent.
"""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path
from typing import Any, Callable

import grpc

from reranker.errors import UnauthenticatedError
from reranker.status import status_of

log = logging.getLogger(__name__)

#: Services answered without a token (health checking must work for probes).
OPEN_SERVICES = ("grpc.health.v1.Health",)
UNAUTHENTICATED = "missing or invalid bearer token (metadata `authorization: Bearer <FR_SERVE_GRPC_API_KEY>`)"


def secret_value(value: Any) -> str | None:
    """The secret from a setting: a pydantic `SecretStr`, a string or None; "" is None (no auth)."""
    if value is None:
        return None
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value) or None


def _abort_handler(handler: grpc.RpcMethodHandler, on_refuse: Callable[[], None]) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    code = grpc.StatusCode[status_of(UnauthenticatedError()).grpc]

    def refuse(_request_or_iterator, context):
        on_refuse()
        context.abort(code, UNAUTHENTICATED)

    ser = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **ser)
    return grpc.stream_stream_rpc_method_handler(refuse, **ser)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <token>` with UNAUTHENTICATED (health excepted).

    Args:
        token: the expected token (non-empty).
        metrics: optional `reranker.metrics.Metrics`; a refusal is counted as
            `requests_total{method=<full method>, front="grpc", code="UNAUTHENTICATED"}`.
    """

    def __init__(self, token: str, metrics=None):
        if not token:
            raise ValueError("BearerTokenInterceptor needs a non-empty token")
        self._token = token.encode()
        self._metrics = metrics

    def _allowed(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = (value if isinstance(value, str) else value.decode(errors="replace")).partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token)
        return False

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        handler = continuation(handler_call_details)
        if handler is None or method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
            return handler
        if self._allowed(handler_call_details.invocation_metadata):
            return handler
        t0 = time.monotonic()

        service, _, name = method.lstrip("/").partition("/")
        label = f"tei.{name}" if service.startswith("tei.") else name  # the method names of the other metrics

        def count() -> None:
            if self._metrics is not None:
                self._metrics.observe_request(label, "grpc", "UNAUTHENTICATED", time.monotonic() - t0)

        return _abort_handler(handler, count)


def interceptors(settings, metrics=None) -> list[grpc.ServerInterceptor]:
    """The server interceptors `settings` ask for: a BearerTokenInterceptor when `grpc_api_key` is set."""
    token = secret_value(getattr(settings, "grpc_api_key", None))
    return [BearerTokenInterceptor(token, metrics)] if token else []


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def server_credentials(settings) -> grpc.ServerCredentials | None:
    """TLS credentials from `grpc_tls_cert`/`grpc_tls_key` (+ `grpc_tls_client_ca`: client certificates
    required), or None for plaintext.

    Raises:
        ValueError: only one of cert/key given, a client CA without them, or a file cannot be read.
    """
    cert, key, client_ca = (getattr(settings, n, None) for n in ("grpc_tls_cert", "grpc_tls_key", "grpc_tls_client_ca"))
    if not cert and not key:
        if client_ca:
            raise ValueError("FR_SERVE_GRPC_TLS_CLIENT_CA needs FR_SERVE_GRPC_TLS_CERT and FR_SERVE_GRPC_TLS_KEY")
        return None
    if not (cert and key):
        raise ValueError("gRPC TLS needs both FR_SERVE_GRPC_TLS_CERT and FR_SERVE_GRPC_TLS_KEY")
    pair = [(_read(key, "gRPC TLS key"), _read(cert, "gRPC TLS certificate"))]
    if client_ca:
        return grpc.ssl_server_credentials(pair, root_certificates=_read(client_ca, "gRPC client CA"), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def describe(settings) -> str:
    """What protects the gRPC port, for the start log line: e.g. "TLS, client certificates, bearer token"."""
    parts = []
    if getattr(settings, "grpc_tls_cert", None):
        parts.append("TLS")
        if getattr(settings, "grpc_tls_client_ca", None):
            parts.append("client certificates")
    else:
        parts.append("plaintext")
    parts.append("bearer token" if secret_value(getattr(settings, "grpc_api_key", None)) else "no token")
    return ", ".join(parts)
