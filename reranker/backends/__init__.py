"""Model backends behind one interface (`base.Backend`); `load_backend(kind, path, ...)` picks one by name."""

from reranker.backends.base import Backend, Encoded, load_backend, prepare_backend

__all__ = ["Backend", "Encoded", "load_backend", "prepare_backend"]
