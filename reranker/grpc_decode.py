"""Request bytes that do not parse as the method's message get INVALID_ARGUMENT, not INTERNAL.

gRPC Python answers `INTERNAL "Exception deserializing request!"` by itself when a request message does not
parse (garbage bytes, a truncated message, invalid UTF-8 in a proto3 `string` field, which protobuf refuses),
before any handler runs: the client's mistake would read as a server fault. `DecodeCheck` is a server
interceptor that swaps the deserializer of the sidecar's own methods for one that never raises: a message
that fails to parse becomes an `UndecodableRequest` carrying an `InvalidInputError` that names the message
type and protobuf's reason. The handler raises that error (`reranker.grpc_front._rpc` does it for a unary
request; for a request stream this module wraps the iterator, which raises it when the bad message is
reached), so the call is answered and counted like any other bad input: INVALID_ARGUMENT
(`reranker.status`). Services not named (health, reflection) keep gRPC's own behaviour.

Found by `tests/unit/test_fuzz_grpc.py`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import grpc

from reranker.errors import InvalidInputError


class UndecodableRequest:
    """Stands in for a request message that did not parse; `error` is the InvalidInputError to raise."""

    def __init__(self, error: InvalidInputError):
        self.error = error


def _lenient(decode: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, or anything a deserializer raises
            return UndecodableRequest(InvalidInputError(f"the request of {method} is not a valid message: {exc}"))

    return deserialize


def checked(requests: Iterable[Any]) -> Iterator[Any]:
    """The messages of a request stream; raises the InvalidInputError of the first one that did not parse."""
    for request in requests:
        if isinstance(request, UndecodableRequest):
            raise request.error
        yield request


class DecodeCheck(grpc.ServerInterceptor):
    """Server interceptor: the methods of `services` (full names, e.g. "tei.v1.Rerank") get an
    `UndecodableRequest` instead of gRPC's INTERNAL for a request that does not parse (module docstring)."""

    def __init__(self, services: Iterable[str]):
        self.prefixes = tuple(f"/{s}/" for s in services)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_deserializer is None or not method.startswith(self.prefixes):
            return handler
        changes: dict[str, Any] = {"request_deserializer": _lenient(handler.request_deserializer, method)}
        if handler.request_streaming:
            kind = "stream_stream" if handler.response_streaming else "stream_unary"
            behavior = getattr(handler, kind)
            changes[kind] = lambda requests, context: behavior(checked(requests), context)
        return handler._replace(**changes)
