"""The model holder: which cross-encoder serves, loading a new registry version beside it, hot swap.

A watcher thread polls `registry.current()`; a new version is loaded beside the serving one and the
reference is swapped between batches. The batch in flight finishes on the old model, which is then
released. No request fails because of a swap; a version that fails to load is logged, counted and not
retried until the pointer changes, and the old model keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator

from fashion_rerank.registry import ModelRegistry
from reranker.backends import Backend, load_backend

if TYPE_CHECKING:
    from reranker.metrics import Metrics

log = logging.getLogger(__name__)

#: Loads registry version `version` from folder `path`: the default uses `reranker.backends.load_backend`.
Loader = Callable[[str, "object"], Backend]


class ModelHolder:
    """Holds the serving backend and swaps in new registry versions.

    Args:
        registry: where versions come from (`current` pointer, version folders).
        load: `load(version, path) -> Backend`; raises anything on failure (the old model keeps serving).
        metrics: optional Prometheus metrics (`model_loads_total`, served version).
        on_swap: called with the new version after every successful swap (e.g. to empty a score cache).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        load: Callable[[str, object], Backend],
        metrics: "Metrics | None" = None,
        on_swap: Callable[[str], None] | None = None,
    ):
        self.registry = registry
        self._load = load
        self.metrics = metrics
        self.on_swap = on_swap
        self._backend: Backend | None = None
        self._in_use: Backend | None = None
        self._swap_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._failed_version: str | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def backend(self) -> Backend | None:
        """The serving backend, or None when no version is loaded."""
        return self._backend

    @property
    def version(self) -> str | None:
        """Version the serving model reports with its scores (e.g. "<registry version>+onnx-int8"), or None."""
        b = self._backend
        return b.version if b is not None else None

    @property
    def registry_version(self) -> str | None:
        """The registry version the serving model was loaded from, or None."""
        b = self._backend
        return b.registry_version if b is not None else None

    def check(self) -> str | None:
        """Load the registry's `current` version if it differs from the serving one; returns the serving version."""
        with self._load_lock:
            try:
                version = self.registry.current()
            except OSError as exc:
                log.warning("cannot read the registry pointer in %s: %s", self.registry.dir, exc)
                return self.version
            serving = self.registry_version
            if version is None or version == serving or version == self._failed_version:
                return self.version
            t0 = time.monotonic()
            try:
                backend = self._load(version, self.registry.path(version))
            except Exception as exc:  # noqa: BLE001 - any load failure keeps the old model serving
                self._failed_version = version
                log.error("cannot load model %s version %s (still serving %s): %s", self.registry.name, version, serving, exc)
                if self.metrics:
                    self.metrics.model_loads.labels("error").inc()
                return self.version
            self._failed_version = None
            self.install(backend)
            if self.metrics:
                self.metrics.model_loads.labels("ok").inc()
            log.info(
                "serving cross-encoder %s version %s (was %s; loaded in %.1f s, max_length=%d)",
                self.registry.name,
                backend.version,
                serving,
                time.monotonic() - t0,
                backend.max_length,
            )
            return backend.version

    def install(self, backend: Backend) -> None:
        """Make `backend` the serving model now; the old one is released once no batch uses it."""
        with self._swap_lock:
            old = self._backend
            self._backend = backend
            release = old is not None and old is not self._in_use
        if release:
            old.close()
        if self.metrics:
            self.metrics.set_model_version(backend.version)
        if self.on_swap is not None:
            self.on_swap(backend.version)

    @contextlib.contextmanager
    def use(self) -> Iterator[Backend | None]:
        """The serving backend for one batch; a swap during the batch releases the old model afterwards."""
        with self._swap_lock:
            backend = self._backend
            self._in_use = backend
        try:
            yield backend
        finally:
            with self._swap_lock:
                self._in_use = None
                stale = backend is not None and backend is not self._backend
            if stale:
                backend.close()

    def start_watching(self, poll_s: float) -> None:
        """Poll the registry every `poll_s` seconds in a daemon thread."""
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch_loop, args=(poll_s,), name="rerank-registry-watcher", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the watcher thread (waits up to 5 s)."""
        self._stopping.set()
        t = self._watcher
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)

    def _watch_loop(self, poll_s: float) -> None:
        while not self._stopping.wait(poll_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("registry watcher error")


def registry_loader(
    backend: str, threads: int | None, device: str = "cpu", max_length: int | None = None, variant: str = "auto"
) -> Callable[[str, object], Backend]:
    """`load(version, path) -> Backend` for ModelHolder.

    Args:
        backend: "onnx" (a folder without ONNX files is exported once into the cache first,
            `fashion_rerank.onnx_cache.ensure_onnx`), "torch" or "fake".
        threads: intra-op threads per worker.
        device: "cpu" or "cuda[:n]" (torch device; ONNX Runtime takes the CUDA provider on "cuda").
        max_length: tokens per pair override (None: what the model folder says).
        variant: ONNX variant: "auto" (the quality gate's choice, else fp32) or a name ("fp32", "int8").
    """

    def load(version: str, path) -> Backend:
        kwargs = {"version": version, "threads": threads}
        if max_length:
            kwargs["max_length"] = max_length
        if backend == "torch":
            kwargs["device"] = device
        if backend == "onnx":
            from fashion_rerank.onnx_cache import ensure_onnx

            path = ensure_onnx(path)
            kwargs.update(device=device, variant=variant)
        return load_backend(backend, path, **kwargs)

    return load
