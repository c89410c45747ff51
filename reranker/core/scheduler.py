"""The scoring core shared by every front (gRPC, HTTP): a bounded queue, batches across requests, hot swap.

Design (after Hugging Face text-embeddings-inference's router/core/backend split):
- `submit` validates a request (limits, query length in tokens), puts it on a bounded queue counted in
  (query, document) pairs, and returns a `concurrent.futures.Future` at once. A full queue raises
  `QueueFullError` immediately (back-pressure, never an unbounded wait).
- The queue is fair between clients (`client`: the caller's `client_id`, else its connection): each client
  has its own FIFO, and batches take requests from the clients in round-robin order, a client that had
  nothing queued going first (FQ-CoDel's "new flow" rule, RFC 8290 section 4.1), so a light client waits
  for at most the batch in progress, never behind a heavy client's backlog. When the queue is full, a
  client holding less than its fair share (`queue_pairs` / clients with queued work) still gets in: the
  newest requests of the client holding the most pairs are pushed out (they fail with QueueFullError)
  until the new one fits. A client at or above its share is refused as before.
- A worker thread takes the next request plus as many queued ones as fit in `max_batch_pairs`,
  tokenizes all their pairs in one call, sorts the pairs by token length (longest first; in a batch of
  several clients, the request taken first goes before the others, so it resolves first) and runs
  sub-batches of `sub_batch` pairs (more for short pairs, up to `sub_batch_tokens` padded tokens; never
  above `max_batch_tokens`). Between sub-batches it
  drops the remaining pairs of any request whose deadline passed or whose future was cancelled (client
  went away), so such work stops within one sub-batch. A request's future resolves as soon as its last
  pair is scored.
- The model comes from a `ModelHolder` (`reranker.core.models`): hot swap between batches.
- Request validation lives in `reranker.core.request`, the sub-batch rule in `reranker.batching`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import ServeSettings
from reranker.backends import Backend, default_workers, prepare_backend, worker_threads
from reranker.batching import length_order, sub_batch_pairs
from reranker.core.cache import ScoreCache
from reranker.core.models import ModelHolder, registry_loader
from reranker.core.request import ScoreResult, Work, fail, validate_request
from reranker.errors import (
    BackendError,
    DeadlineExceededError,
    NoModelError,
    QueueFullError,
    TooLargeError,
)

if TYPE_CHECKING:
    from reranker.metrics import Metrics

log = logging.getLogger(__name__)


class ScoringCore:
    """The queue, batcher and model holder both fronts call.

    Args:
        settings: limits and batching (`ServeSettings`).
        registry: where the served model comes from (`current` pointer).
        metrics: optional `reranker.metrics.Metrics` to record queue depth, stages, batches, swaps.
        loader: `load(version, path) -> Backend` for new registry versions (default: `settings.backend`
            with `settings.threads`; tests pass a fake backend's loader).
        device: torch device for the torch backend ("cpu", "cuda").
    """

    def __init__(
        self, settings: ServeSettings, registry: ModelRegistry, metrics: "Metrics | None" = None, loader=None, device: str = "cpu"
    ):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.cache = ScoreCache(settings.score_cache_entries, settings.score_cache_bytes)
        self.models = ModelHolder(
            registry,
            loader or registry_loader(settings.backend, self.threads_per_worker, device, variant=settings.onnx_variant),
            metrics,
            on_swap=self._on_swap,
        )
        self._prepare = loader is None
        # per-client FIFOs; the dict's order is the round-robin ring (the first client is served next)
        self._queues: dict[str, deque[Work]] = {}
        self._client_pairs: dict[str, int] = {}
        self._queued_pairs = 0
        self._cond = threading.Condition()
        self._busy = 0  # workers scoring a batch now
        self._accepting = False
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the registry's `current` version (if any), start the worker and the registry watcher.

        Call it from the main thread: it also sets up the backend's runtime there (see
        `reranker.backends.torch_backend.prepare`: a worker-first OpenMP start made inference ~3x slower).
        """

        if self._prepare:
            prepare_backend(self.settings.backend, self.threads_per_worker)
        self.check_registry()
        self._stopping.clear()
        self._abort.clear()
        self._accepting = True
        self._workers = [
            threading.Thread(target=self._work_loop, name=f"rerank-worker-{i}", daemon=True) for i in range(self.workers)
        ]
        for t in self._workers:
            t.start()
        self.models.start_watching(self.settings.registry_poll_s)

    def stop(self, grace_s: float) -> None:
        """Refuse new work, let queued and running requests finish for up to `grace_s` seconds, then stop.

        Requests still unfinished after the grace period fail with DeadlineExceededError.
        """
        self._accepting = False
        end = time.monotonic() + max(0.0, grace_s)
        with self._cond:
            while (self._queues or self._busy) and time.monotonic() < end:
                self._cond.wait(min(0.05, max(0.0, end - time.monotonic())))
            if self._queues or self._busy:
                self._abort.set()
            self._stopping.set()
            self._cond.notify_all()
        self.models.stop_watching()
        for t in self._workers:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        with self._cond:
            for q in self._queues.values():
                for w in q:
                    fail(w.future, DeadlineExceededError("the scoring core stopped before this request was scored"))
            self._queues.clear()
            self._client_pairs.clear()
            self._queued_pairs = 0
            self._update_queue_metrics()

    @property
    def model_version(self) -> str | None:
        """Version of the serving model, or None when none is loaded."""
        return self.models.version

    @property
    def max_length(self) -> int | None:
        """Tokens per (query, document) pair of the serving model, or None when none is loaded."""
        b = self.models.backend
        return b.max_length if b is not None else None

    def queue_depth(self) -> tuple[int, int]:
        """(requests, pairs) waiting in the queue (not counting the batch being scored)."""
        with self._cond:
            return sum(len(q) for q in self._queues.values()), self._queued_pairs

    def client_queue_depth(self, client: str) -> tuple[int, int]:
        """(requests, pairs) of `client` waiting in the queue."""
        with self._cond:
            q = self._queues.get(client)
            return (len(q), self._client_pairs.get(client, 0)) if q else (0, 0)

    @property
    def busy(self) -> bool:
        """True while the worker is scoring a batch."""
        return self._busy > 0

    @property
    def workers(self) -> int:
        """Scoring worker threads: `settings.workers`, or when 0 the backend's default
        (`reranker.backends.default_workers`)."""
        return self.settings.workers or default_workers(self.settings.backend, self.settings.threads)

    @property
    def threads_per_worker(self) -> int:
        """Threads each worker's backend is loaded with (`reranker.backends.worker_threads`): all of them for a
        backend that shares its threads among concurrent calls (onnx), else `threads // workers`, at least 1."""
        return worker_threads(self.settings.backend, self.settings.threads, self.workers)

    def _on_swap(self, version: str) -> None:
        """A new model serves: scores of the old one must never be returned again."""
        self.cache.reset(version)
        if self.metrics:
            self.metrics.cache_entries.set(0)

    # ------------------------------------------------------------------ model registry
    def check_registry(self) -> str | None:
        """Load the registry's `current` version if it differs from the serving one; returns the serving version.

        A version that fails to load is logged, counted (`model_loads_total{outcome="error"}`) and not
        retried until the pointer changes; the old model keeps serving (`reranker.core.models`).
        """
        return self.models.check()

    # ------------------------------------------------------------------ requests
    def submit(
        self,
        query: str,
        documents: Sequence[str],
        deadline: float | None = None,
        front: str = "grpc",
        truncate_left: bool = False,
        client: str = "",
    ) -> "Future[ScoreResult]":
        """Queue one request; returns a Future resolving to a ScoreResult (input order).

        Args:
            query: the search query (never truncated).
            documents: texts to score; an empty list resolves at once to an empty result.
            deadline: `time.monotonic()` value after which the work is dropped (DeadlineExceededError).
            front: which front calls ("grpc", "http"); for logs.
            truncate_left: cut over-long documents at their start instead of their end.
            client: who asks (a `client_id` or a connection), for the fair queue; "" is one shared client.

        Raises (at once, nothing queued):
            InvalidInputError: empty query, a non-string document.
            TooLargeError: more than `max_documents` documents, a text over `max_text_chars`, or a query
                too long to leave room for the document in the model's `max_length` tokens.
            NoModelError: no model is loaded (nothing promoted).
            QueueFullError: the queue holds `queue_pairs` pairs already and this client holds its fair share
                of them (or more), or the core is not running.

        The future fails with DeadlineExceededError (deadline passed), BackendError (model failure) or
        QueueFullError (pushed out of a full queue to make room for a client below its fair share),
        and is cancelled by `future.cancel()` when the caller goes away (its remaining work is dropped).
        """
        s = self.settings
        docs = validate_request(query, documents, s)
        if not self._accepting:
            raise QueueFullError("the scoring core is not running (starting or shutting down)")
        fut: Future = Future()
        now = time.monotonic()
        backend = self.models.backend
        if not docs:
            fut.set_result(
                ScoreResult(
                    np.zeros(0, np.float32),
                    np.zeros(0, np.float32),
                    backend.version if backend else "",
                    {"queue": 0.0, "tokenize": 0.0, "inference": 0.0, "total": 0.0},
                    0,
                )
            )
            return fut
        if backend is None:
            raise NoModelError(f"no cross-encoder is promoted in {self.registry.dir} yet")
        qt = backend.query_tokens(query)
        if qt > backend.max_query_tokens():
            raise TooLargeError(
                f"query is {qt} tokens; the model reads {backend.max_length} tokens per (query, document) pair "
                f"and the query may use at most {backend.max_query_tokens()} of them (the query is never truncated)"
            )
        cached = self.cache.get(backend.version, query, docs, truncate_left)
        if self.metrics and self.cache.enabled:
            self.metrics.cache_requests.labels("miss" if cached is None else "hit").inc()
        if cached is not None:
            total = time.monotonic() - now
            fut.set_result(
                ScoreResult(
                    cached,
                    backend.scores(cached),
                    backend.version,
                    {"queue": 0.0, "tokenize": 0.0, "inference": 0.0, "total": total},
                    0,
                )
            )
            return fut
        work = Work(
            query=query,
            documents=docs,
            deadline=deadline,
            front=front,
            future=fut,
            enqueued=now,
            truncate_left=truncate_left,
            client=client,
        )
        if deadline is not None and now >= deadline:
            fail(fut, DeadlineExceededError("the deadline passed before the request was queued"))
            return fut
        with self._cond:
            if self._queued_pairs + work.n > s.queue_pairs:
                self._make_room(work)  # raises QueueFullError when this client may not push others out
            q = self._queues.get(client)
            if q is None:
                # a client with nothing queued goes first (new-flow rule); it rejoins at the end once served
                q = self._queues[client] = deque()
                self._queues = {client: q, **{c: v for c, v in self._queues.items() if c != client}}
            q.append(work)
            self._client_pairs[client] = self._client_pairs.get(client, 0) + work.n
            self._queued_pairs += work.n
            self._update_queue_metrics()
            self._cond.notify()
        return fut

    def _make_room(self, work: Work) -> None:
        """Called with the lock held when `work` does not fit: push out the newest requests of the client
        holding the most pairs while `work`'s client stays within its fair share, else raise QueueFullError.

        Fair share: `queue_pairs` // (clients with queued work, this one included). Nothing is pushed out
        unless all of it together makes room (a refusal changes nothing).
        """
        s = self.settings
        clients = set(self._queues) | {work.client}
        share = s.queue_pairs // len(clients)
        mine = self._client_pairs.get(work.client, 0)
        need = self._queued_pairs + work.n - s.queue_pairs
        victims: list[Work] = []
        if mine + work.n <= share:
            held = dict(self._client_pairs)
            freed = 0
            while freed < need:
                top = max((c for c in held if c != work.client), key=lambda c: held[c], default=None)
                if top is None or held[top] <= share:
                    break
                q = self._queues[top]
                w = q[-1 - sum(v.client == top for v in victims)]
                victims.append(w)
                held[top] -= w.n
                freed += w.n
            if freed < need:
                victims = []
        if not victims:
            if self.metrics:
                self.metrics.queue_rejected.labels("full").inc()
            fair = f"; this client holds {mine}, its fair share is {share}" if len(clients) > 1 else ""
            raise QueueFullError(
                f"scoring queue is full ({self._queued_pairs} pairs waiting, limit {s.queue_pairs}{fair}); retry later"
            )
        for w in victims:
            self._remove(w)
            if self.metrics:
                self.metrics.queue_rejected.labels("pushed_out").inc()
            fail(
                w.future,
                QueueFullError(
                    "scoring queue is full: this request was pushed out to make room for another client's fair share; retry later"
                ),
            )

    def _remove(self, w: Work) -> None:
        """Take queued `w` off its client's FIFO (lock held)."""
        q = self._queues[w.client]
        q.remove(w)
        self._client_pairs[w.client] -= w.n
        self._queued_pairs -= w.n
        if not q:
            del self._queues[w.client]
            del self._client_pairs[w.client]

    async def score(
        self,
        query: str,
        documents: Sequence[str],
        deadline: float | None = None,
        front: str = "grpc",
        truncate_left: bool = False,
        client: str = "",
    ) -> ScoreResult:
        """asyncio wrapper of `submit`: awaits the result; cancelling the awaiting task drops the work.

        Raises what `submit` raises, and DeadlineExceededError / BackendError from the worker.
        """
        fut = self.submit(query, documents, deadline, front, truncate_left, client)
        return await asyncio.wrap_future(fut)

    # ------------------------------------------------------------------ worker
    def _update_queue_metrics(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels("requests").set(sum(len(q) for q in self._queues.values()))
            self.metrics.queue_depth.labels("pairs").set(self._queued_pairs)

    def _pop_next(self) -> Work:
        """The head request of the first client in the ring; that client moves to the ring's end (lock held)."""
        client, q = next(iter(self._queues.items()))
        w = q.popleft()
        del self._queues[client]
        self._client_pairs[client] -= w.n
        if q:
            self._queues[client] = q  # back of the ring
        else:
            del self._client_pairs[client]
        self._queued_pairs -= w.n
        return w

    def _take(self) -> list[Work] | None:
        """Block until work is queued; a batch in round-robin order over the clients, up to `max_batch_pairs`
        pairs (the first request always, however large). None when the core stops."""
        with self._cond:
            while not self._queues:
                if self._stopping.is_set():
                    return None
                self._cond.wait(0.25)
            batch = [self._pop_next()]
            pairs = batch[0].n
            while self._queues:
                head = next(iter(self._queues.values()))[0]
                if pairs + head.n > self.settings.max_batch_pairs:
                    break
                batch.append(self._pop_next())
                pairs += head.n
            self._busy += 1
            self._update_queue_metrics()
            return batch

    def _work_loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._process(batch)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not kill the worker
                log.exception("scoring batch failed")
                for w in batch:
                    fail(w.future, BackendError(f"the model failed on this batch: {exc}"))
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _abandon(self, w: Work, exc: BaseException) -> None:
        w.alive = False
        if self.metrics and w.remaining:
            self.metrics.pairs.labels("abandoned").inc(w.remaining)
        fail(w.future, exc)

    def _check_alive(self, works: list[Work]) -> None:
        now = time.monotonic()
        for w in works:
            if not w.alive or w.remaining == 0:
                continue
            if self._abort.is_set():
                self._abandon(w, DeadlineExceededError("the server shut down before this request was scored"))
            elif w.future.done():  # cancelled: the client went away
                self._abandon(w, DeadlineExceededError("cancelled"))
            elif w.expired(now):
                self._abandon(
                    w, DeadlineExceededError(f"deadline passed after {w.n - w.remaining} of {w.n} documents were scored")
                )

    def _encode(self, backend: Backend, works: list[Work]):
        queries: list[str] = []
        docs: list[str] = []
        left: list[bool] = []
        for w in works:
            queries += [w.query] * w.n
            docs += w.documents
            left += [w.truncate_left] * w.n
        return backend.encode(queries, docs, left if any(left) else None)

    def _process(self, batch: list[Work]) -> None:
        s, m = self.settings, self.metrics
        for w in batch:
            w.remaining = w.n
        self._check_alive(batch)
        live = [w for w in batch if w.alive]
        if not live:
            return
        with self.models.use() as backend:
            if backend is None:  # cannot happen once a model was loaded; keep the contract anyway
                for w in live:
                    self._abandon(w, NoModelError("no cross-encoder is loaded"))
                return
            t0 = time.monotonic()
            for w in live:
                w.started = t0
            try:
                enc = self._encode(backend, live)
            except ValueError:
                # A query that does not fit this model (e.g. a swap shortened max_length): fail only it.
                ok = []
                for w in live:
                    try:
                        self._encode(backend, [w])
                        ok.append(w)
                    except ValueError as exc:
                        self._abandon(w, TooLargeError(str(exc)))
                live = ok
                if not live:
                    return
                enc = self._encode(backend, live)
            t1 = time.monotonic()
            tok_s = t1 - t0
            if m:
                m.batch_pairs.observe(sum(w.n for w in live))
                m.batch_requests.observe(len(live))
            owner = np.concatenate([np.full(w.n, k, dtype=np.int64) for k, w in enumerate(live)])
            local = np.concatenate([np.arange(w.n, dtype=np.int64) for w in live])
            lengths = enc.lengths
            start = 0
            for w in live:
                w.logits = np.empty(w.n, dtype=np.float32)
                w.tokens = int(lengths[start : start + w.n].sum())
                w.tokenize_s = tok_s
                w.inference_started = t1
                start += w.n
            # longest first. A batch of several clients scores the request taken first (a light client's, by
            # the new-client rule) before the rest, so it resolves after its own pairs, not after the whole
            # batch: measured on Myntra texts, 2-7% more padded tokens in such batches, none in the others
            first = live[0].n
            if first < len(lengths) and len({w.client for w in live}) > 1:
                order = np.concatenate([length_order(lengths[:first]), first + length_order(lengths[first:])])
            else:
                order = length_order(lengths)
            pos, total = 0, len(order)
            while pos < total:
                self._check_alive(live)
                idx: list[int] = []
                width = 0
                while pos < total:
                    i = int(order[pos])
                    if not live[owner[i]].alive:
                        pos += 1
                        continue
                    w_ = max(width, int(lengths[i]))
                    if idx and (
                        len(idx) + 1 > sub_batch_pairs(w_, s.sub_batch, s.sub_batch_tokens)
                        or w_ * (len(idx) + 1) > s.max_batch_tokens
                    ):
                        break
                    idx.append(i)
                    width = w_
                    pos += 1
                if not idx:
                    break
                logits = backend.run(enc, np.asarray(idx, dtype=np.int64))
                if m:
                    m.pairs.labels("scored").inc(len(idx))
                touched = []
                for i, logit in zip(idx, logits.tolist()):
                    w = live[owner[i]]
                    w.logits[local[i]] = logit
                    w.remaining -= 1
                    if w.remaining == 0:
                        touched.append(w)
                for w in touched:
                    self._complete(w, backend.version, backend)

    def _complete(self, w: Work, version: str, backend) -> None:
        now = time.monotonic()
        if not np.all(np.isfinite(w.logits)):
            self._abandon(w, BackendError("the model returned non-finite scores"))
            return
        timings = {
            "queue": w.started - w.enqueued,
            "tokenize": w.tokenize_s,
            "inference": now - w.inference_started,
            "total": now - w.enqueued,
        }
        if self.metrics:
            self.metrics.stage.labels("queue").observe(timings["queue"])
            self.metrics.stage.labels("tokenization").observe(timings["tokenize"])
            self.metrics.stage.labels("inference").observe(timings["inference"])
        self.cache.put(version, w.query, w.documents, w.logits, w.truncate_left)
        if self.metrics and self.cache.enabled:
            self.metrics.cache_entries.set(len(self.cache))
        result = ScoreResult(
            logits=w.logits, scores=backend.scores(w.logits), model_version=version, timings=timings, tokens=w.tokens
        )
        w.alive = False
        if not w.future.done():
            try:
                w.future.set_result(result)
            except InvalidStateError:
                pass
