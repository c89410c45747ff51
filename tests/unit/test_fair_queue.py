"""The scoring core's fair queue on the fake backend: round robin between clients, a new client goes first,
a full queue makes room for a client below its fair share, and Search's texts are cut to what the model reads.

The worker is held on a gate (a backend whose forward pass waits) so the queue's order is set up exactly;
each test also runs the same traffic as one client, where the old FIFO order shows, so it can fail.
"""

from __future__ import annotations

import threading
import time

import pytest

from fashion_rerank.settings import ServeSettings
from reranker.backends.fake import FakeBackend
from reranker.core import ScoringCore
from reranker.core.request import CHARS_PER_TOKEN, fit_document, fit_query
from reranker.errors import QueueFullError
from reranker.metrics import Metrics


class GatedBackend(FakeBackend):
    """A fake model whose forward passes wait for `gate`; records the first document of each pass it runs."""

    def __init__(self, version: str, gate: threading.Event):
        super().__init__(version)
        self.gate = gate
        self.order: list[str] = []

    def run(self, encoded, indices):
        self.gate.wait(10)
        self.order.append(encoded.data[int(indices[0])][1])
        return super().run(encoded, indices)


@pytest.fixture
def gated(registry):
    """`gated(**settings) -> (core, backend, gate, metrics)`: a started core whose worker waits for `gate`."""
    made = []

    def make(**settings):
        gate = threading.Event()
        holder: dict[str, GatedBackend] = {}

        def load(version, path):
            holder["b"] = GatedBackend(version, gate)
            return holder["b"]

        metrics = Metrics()
        core = ScoringCore(ServeSettings(**{"threads": 1, "registry_poll_s": 60, **settings}), registry, metrics, loader=load)
        core.start()
        made.append((core, gate))
        return core, holder["b"], gate, metrics

    yield make
    for core, gate in made:
        gate.set()
        core.stop(2.0)


def _wait_busy(core: ScoringCore) -> None:
    end = time.monotonic() + 5
    while not (core.busy and core.queue_depth() == (0, 0)):
        assert time.monotonic() < end, "the worker did not take the first request"
        time.sleep(0.002)


def _docs(tag: str, n: int) -> list[str]:
    return [f"{tag} doc {i}" for i in range(n)]


@pytest.mark.parametrize("fair", [True, False])
def test_a_light_client_is_served_before_a_heavy_clients_backlog(gated, fair):
    core, backend, gate, _ = gated(max_batch_pairs=10, max_documents=10)
    heavy = "heavy" if fair else ""
    light = "light" if fair else ""
    first = core.submit("q", _docs("h0", 10), client=heavy)
    _wait_busy(core)  # the worker holds h0; the rest queues
    backlog = [core.submit("q", _docs(f"h{i}", 10), client=heavy) for i in range(1, 6)]
    mine = core.submit("q", _docs("light", 5), client=light)
    assert core.client_queue_depth(heavy) == ((5, 50) if fair else (6, 55))
    gate.set()
    mine.result(5)
    first.result(5)
    for f in backlog:
        f.result(5)
    order = [d.split()[0] for d in backend.order]
    if fair:  # the light request right after the batch in progress (new-client rule), then the backlog in order
        assert order == ["h0", "light", "h1", "h2", "h3", "h4", "h5"]
    else:  # one client: first in, first out
        assert order == ["h0", "h1", "h2", "h3", "h4", "h5", "light"]


def test_the_request_taken_first_is_scored_first_within_a_shared_batch(gated):
    # one batch holds the light request (taken first: new client) and a heavy one with LONGER texts; a global
    # longest-first order would score all heavy pairs first, the per-request order scores the light ones first
    core, backend, gate, _ = gated(max_batch_pairs=64, max_documents=40, sub_batch=5, sub_batch_tokens=1)
    first = core.submit("q", _docs("h0", 5), client="heavy")
    _wait_busy(core)
    heavy = core.submit("q", [f"h1 doc {i} with many more words in it" for i in range(40)], client="heavy")
    light = core.submit("q", _docs("light", 5), client="light")
    gate.set()
    for f in (light, heavy, first):
        f.result(5)
    order = [d.split()[0] for d in backend.order]
    assert order == ["h0", "light"] + ["h1"] * 8  # the light request's one pass comes before every heavy one


def test_clients_with_backlogs_take_turns(gated):
    core, backend, gate, _ = gated(max_batch_pairs=4, max_documents=4)
    first = core.submit("q", _docs("x0", 4), client="x")
    _wait_busy(core)
    futures = [core.submit("q", _docs(f"a{i}", 4), client="a") for i in range(3)]
    futures += [core.submit("q", _docs(f"b{i}", 4), client="b") for i in range(3)]
    gate.set()
    for f in [first, *futures]:
        f.result(5)
    order = [d.split()[0] for d in backend.order]
    # b arrived last with nothing queued, so it goes first once; then the two alternate
    assert order == ["x0", "b0", "a0", "b1", "a1", "b2", "a2"]


def test_a_full_queue_makes_room_for_a_client_below_its_fair_share(gated):
    core, _, gate, metrics = gated(max_batch_pairs=10, max_documents=10, queue_pairs=40)
    running = core.submit("q", _docs("h", 10), client="heavy")
    _wait_busy(core)
    queued = [core.submit("q", _docs(f"h{i}", 10), client="heavy") for i in range(4)]  # 40 pairs: full
    with pytest.raises(QueueFullError):  # the same client cannot push its own work out
        core.submit("q", _docs("h5", 10), client="heavy")
    light = core.submit("q", _docs("light", 10), client="light")  # fair share 40 // 2 = 20: it gets in
    assert core.queue_depth() == (4, 40)
    assert queued[-1].done() and isinstance(queued[-1].exception(), QueueFullError)  # the newest heavy one left
    assert "pushed out" in str(queued[-1].exception())
    assert not any(f.done() for f in queued[:-1])
    with pytest.raises(QueueFullError, match="fair share is 20"):  # heavy holds 30 > 20: refused, nothing moves
        core.submit("q", _docs("h6", 10), client="heavy")
    light2 = core.submit("q", _docs("light2", 10), client="light")  # light holds 10, +10 = 20: still its share
    assert core.client_queue_depth("light") == (2, 20) and core.client_queue_depth("heavy") == (2, 20)
    with pytest.raises(QueueFullError):  # now both hold their share: nobody is pushed out
        core.submit("q", _docs("light3", 10), client="light")
    gate.set()
    for f in [running, *queued[:2], light, light2]:
        assert len(f.result(5).logits) == 10
    assert isinstance(queued[2].exception(5), QueueFullError)
    assert metrics.queue_rejected.labels("pushed_out")._value.get() == 2
    assert metrics.queue_rejected.labels("full")._value.get() == 3


def test_without_a_second_client_a_full_queue_refuses_as_before(gated):
    core, _, gate, metrics = gated(max_batch_pairs=10, max_documents=10, queue_pairs=20)
    running = core.submit("q", _docs("a", 10))
    _wait_busy(core)
    queued = [core.submit("q", _docs("b", 10)), core.submit("q", _docs("c", 10))]
    with pytest.raises(QueueFullError, match=r"^scoring queue is full \(20 pairs waiting, limit 20\); retry later$"):
        core.submit("q", _docs("d", 1))
    gate.set()
    for f in [running, *queued]:
        f.result(5)
    assert metrics.queue_rejected.labels("pushed_out")._value.get() == 0


# ------------------------------------------------------------------ texts cut to what the model reads


def test_fit_query_keeps_the_longest_prefix_the_model_accepts():
    b = FakeBackend(max_length=20)  # queries of at most 20 - 3 - 8 = 9 words
    short = "red summer dress"
    assert fit_query(b, short) == short
    long = " ".join(f"w{i}" for i in range(40))
    cut = fit_query(b, long)
    assert cut == " ".join(f"w{i}" for i in range(9)) and b.query_tokens(cut) == b.max_query_tokens()
    assert long.startswith(cut)
    b.encode([cut], ["a document"])  # the cut query fits a pair; the whole one does not
    with pytest.raises(ValueError):
        b.encode([long], ["a document"])


def test_fit_document_keeps_every_token_the_model_reads():
    words = [f"word{i}" for i in range(5000)]
    text = "   ".join(words)  # whitespace runs are collapsed before the cut
    cut = fit_document(text, max_length=64, max_chars=20_000)
    assert len(cut) <= 64 * CHARS_PER_TOKEN < len(text)
    assert cut.split()[:64] == words[:64]  # the model reads at most 64 tokens: all of them are kept
    assert fit_document("a short text", 64, 20_000) == "a short text"
    big = "x" * 1_000_000  # one stored text of 1 MB
    assert len(fit_document(big, 512, 20_000)) == 20_000  # never above the core's max_text_chars
