"""Model backends behind one interface (`base.Backend`); `load_backend(kind, path, ...)` picks one by name."""

from reranker.backends.base import Backend, Encoded, default_workers, load_backend, prepare_backend, worker_threads

__all__ = ["Backend", "Encoded", "default_workers", "load_backend", "prepare_backend", "worker_threads"]
