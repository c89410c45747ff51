"""The sidecar's HTTP front, now the package `reranker.http` (see its docstring); this module re-exports
its public names for the importers of `reranker.http_front` (`reranker.serve`, tests, docs)."""

from reranker.http import (
    DEFAULT_MAX_BODY_BYTES,
    HttpError,
    HttpFront,
    cohere_documents,
    create_app,
    f32,
    start_http_front,
    tei_texts,
    truncate_words,
)

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
