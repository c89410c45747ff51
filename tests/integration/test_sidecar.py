"""The gRPC reranking sidecar against real parts: a real gRPC server on a free port, the real local
OpenSearch node (a unique index of held-out Myntra products), and a cross-encoder trained by the
`trained_registry` fixture from the packaged all-MiniLM-L6-v2 backbone. No scores are hard-coded:
expected values come from the model itself (sentence-transformers `CrossEncoder.predict`) or from
relations between calls.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import grpc
import numpy as np
import pytest

from fashion_rerank.product import ATTRIBUTE_FIELDS, Product, rerank_text
from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import OpenSearchSettings, ServeSettings
from fashion_rerank.v1 import reranker_pb2, tei_pb2
from reranker.client import RerankerClient

N_PRODUCTS = 400


# ------------------------------------------------------------------------------------------ helpers


def wait_until(pred, timeout: float = 30.0, every: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """/metrics -> {(sample name, frozenset(labels)): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def copy_version(src: ModelRegistry, dst: ModelRegistry, promote: bool = True) -> str:
    """Copy the current version of `src` into `dst` as a new version (same weights, new name)."""
    version, folder = dst.new_version_dir()
    shutil.copytree(src.path(src.current()), folder, dirs_exist_ok=True)
    card = json.loads((folder / "card.json").read_text())
    card["version"] = version
    (folder / "card.json").write_text(json.dumps(card))
    if promote:
        dst.promote(version, reason="test")
    return version


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


class TcpProxy:
    """A TCP relay 127.0.0.1:<port> -> upstream that a test can close (connection refused), reopen on the
    same port, or turn into a black hole (accepts, never answers). Stands between the sidecar and the
    shared OpenSearch node, which must never be stopped."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.mode = "forward"
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(client)
            if self.mode == "blackhole":
                continue  # hold it open, never answer
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening and cut every connection: new connections are refused."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def products() -> list[Product]:
    """Held-out Myntra products (after the 3000 the fixture model trained on)."""
    from indexer.catalogs import read_myntra

    return list(read_myntra(limit=3000 + N_PRODUCTS).products)[3000:]


@pytest.fixture(scope="module")
def product_index(os_client, products):
    """A unique k-NN index of `products` with the agreed field interface; deleted afterwards."""
    from opensearchpy import helpers

    from fashion_rerank.embedding import load_bi_encoder

    name = f"t-sidecar-{uuid.uuid4().hex[:8]}"
    encoder = load_bi_encoder()
    props = {f: {"type": "keyword"} for f in ATTRIBUTE_FIELDS}
    props.update(
        {
            "embedding": {
                "type": "knn_vector",
                "dimension": encoder.dimension,
                "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
            },
            "product_id": {"type": "keyword"},
            "title": {"type": "text"},
            "description": {"type": "text"},
            "rerank_text": {"type": "text"},
        }
    )
    os_client.indices.create(
        index=name,
        body={
            "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": props},
        },
    )
    vectors = encoder.encode([rerank_text(p) for p in products])
    helpers.bulk(
        os_client,
        ({"_index": name, "_id": p.id, "_source": {**p.to_source(), "embedding": v.tolist()}} for p, v in zip(products, vectors)),
        refresh=True,
    )
    yield name
    os_client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture
def make_sidecar(opensearch_url, tmp_path):
    """Start sidecars in this process: make_sidecar(registry, os_url=None, index=None, **settings) -> Sidecar."""
    from reranker.serve import Sidecar

    started = []

    def make(registry, os_url: str | None = None, index: str = "products", **overrides):
        # a generous rerank budget: a loaded 2-core machine must not turn these tests into fail-open ones
        base = dict(
            grpc_port=0,
            metrics_port=0,
            http_port=0,
            threads=1,
            registry_poll_s=0.1,
            querylog_path=None,
            querylog_index=None,
            grace_s=2.0,
            rerank_budget_ms=60_000,
            score_cache_entries=0,  # these tests count model work; the cache has tests of its own
        )
        base.update(overrides)
        sc = Sidecar(
            ServeSettings(**base), registry, OpenSearchSettings(url=os_url or opensearch_url, index_alias=index, timeout_s=10)
        )
        sc.start()
        started.append(sc)
        return sc

    yield make
    for sc in started:
        sc.stop(1.0)


@pytest.fixture(scope="module")
def server(trained_registry, product_index, opensearch_url):
    """One sidecar serving the trained fixture model, shared by the read-only tests of this module."""
    from reranker.serve import Sidecar

    sc = Sidecar(
        ServeSettings(
            grpc_port=0,
            metrics_port=0,
            http_port=0,
            threads=1,
            querylog_path=None,
            querylog_index=None,
            rerank_budget_ms=60_000,
            score_cache_entries=0,  # these tests compare the work each front reports (tokens)
        ),
        trained_registry,
        OpenSearchSettings(url=opensearch_url, index_alias=product_index),
    )
    sc.start()
    yield sc
    sc.stop(1.0)


@pytest.fixture
def client(server):
    with RerankerClient(server.target, timeout=60) as c:
        yield c


RELEVANT = {
    "id": "relevant",
    "title": "Titan Women Black Leather Watch",
    "product_type": "Watches",
    "colour": "Black",
    "gender": "Women",
    "usage": "Casual",
    "brand": "Titan",
}
UNRELATED = [
    {"id": "shoes", "title": "Nike Men Blue Running Shoes", "product_type": "Sports Shoes", "colour": "Blue", "gender": "Men"},
    {"id": "tshirt", "title": "Puma Men Grey T-shirt", "product_type": "Tshirts", "colour": "Grey", "gender": "Men"},
    {"id": "jeans", "title": "Peter England Men Party Blue Jeans", "product_type": "Jeans", "colour": "Blue", "gender": "Men"},
]


# ------------------------------------------------------------------------------------------- tests


def test_core_interface_async_score_errors_and_cancel(trained_registry, tmp_path):
    """The ScoringCore interface both fronts code against, without any front."""
    import asyncio

    from reranker.core import ScoringCore
    from reranker.errors import (
        InvalidInputError,
        NoModelError,
        QueueFullError,
        TooLargeError,
    )
    from reranker.metrics import Metrics

    settings = ServeSettings(threads=1, max_documents=1000, max_text_chars=500, score_cache_entries=0)
    empty = ScoringCore(settings, ModelRegistry(tmp_path / "empty", "fashion-ce"))
    with pytest.raises(QueueFullError):
        empty.submit("red dress", ["a"])  # not started
    empty.start()
    try:
        assert empty.model_version is None
        with pytest.raises(NoModelError):
            empty.submit("red dress", ["a"])
        assert empty.submit("red dress", []).result().logits.shape == (0,)
    finally:
        empty.stop(1.0)

    metrics = Metrics()
    core = ScoringCore(settings, trained_registry, metrics)
    core.start()
    try:
        assert core.models.registry_version == trained_registry.current()
        for bad, err in (("", InvalidInputError), ("x" * 501, TooLargeError)):
            with pytest.raises(err):
                core.submit(bad, ["a"])
        with pytest.raises(TooLargeError):
            core.submit("red dress", ["a"] * 1001)
        with pytest.raises(InvalidInputError):
            core.submit("red dress", ["a", 3])

        docs = ["Women Red Dress | Dresses | Red | Women", "Men Black Watch | Watches | Black | Men", "tiny"]

        async def scored():
            return await core.score("red dress for women", docs, deadline=time.monotonic() + 60, front="http")

        res = asyncio.run(scored())
        assert res.logits.shape == res.scores.shape == (3,) and res.logits.dtype == np.float32
        assert np.allclose(res.scores, 1 / (1 + np.exp(-res.logits.astype(np.float64))), atol=1e-6)
        assert res.model_version == core.model_version and res.tokens > 0
        assert set(res.timings) == {"queue", "tokenize", "inference", "total"}
        assert res.timings["total"] >= res.timings["inference"] >= 0
        # the same pairs scored alone give the same logits (batching and padding change nothing)
        alone = [core.submit("red dress for women", [d]).result().logits[0] for d in docs]
        assert np.allclose(alone, res.logits, atol=1e-4)

        # cancelling the awaiting task drops the remaining work
        async def cancel_midway():
            scored = metrics.pairs.labels("scored")._value.get()
            task = asyncio.ensure_future(core.score("red dress", docs * 300))
            while metrics.pairs.labels("scored")._value.get() == scored:  # the worker is on it
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_midway())
        wait_until(lambda: not core.busy, what="the worker to drop the cancelled work")
        assert metrics.pairs.labels("abandoned")._value.get() > 0
        # an already passed deadline fails the future, not the call
        fut = core.submit("red dress", docs, deadline=time.monotonic() - 1)
        from reranker.errors import DeadlineExceededError

        with pytest.raises(DeadlineExceededError):
            fut.result(5)
    finally:
        core.stop(1.0)


def test_committed_stubs_match_the_protos(tmp_path):
    """Regenerating the stubs from proto/ gives byte-identical files: the committed ones are not stale."""
    from fashion_rerank.protogen import ROOT, generate

    generated = generate(tmp_path)
    assert {p.name for p in generated} == {
        "reranker_pb2.py",
        "reranker_pb2.pyi",
        "reranker_pb2_grpc.py",
        "tei_pb2.py",
        "tei_pb2.pyi",
        "tei_pb2_grpc.py",
    }
    for new in generated:
        committed = ROOT / new.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_bytes() == new.read_bytes(), f"{committed} is stale: run `make proto`"


def test_health_and_reflection(server, client):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    assert client.health("") == "SERVING"
    assert client.health("fashion_rerank.v1.Reranker") == "SERVING"
    assert client.health("tei.v1.Rerank") == "SERVING"
    db = ProtoReflectionDescriptorDatabase(client.channel)
    services = set(db.get_services())
    assert {"fashion_rerank.v1.Reranker", "tei.v1.Rerank", "grpc.health.v1.Health"} <= services
    pool = DescriptorPool(db)
    assert {m.name for m in pool.FindServiceByName("fashion_rerank.v1.Reranker").methods} == {"Rerank", "Search"}
    assert {m.name for m in pool.FindServiceByName("tei.v1.Rerank").methods} == {"Rerank", "RerankStream"}
    fields = {f.name for f in pool.FindMessageTypeByName("tei.v1.RerankRequest").fields}
    assert fields == {"query", "texts", "truncate", "raw_scores", "return_text", "truncation_direction"}


def test_rerank_puts_the_relevant_product_first(server, client, trained_registry):
    from sentence_transformers import CrossEncoder

    docs = [*UNRELATED, RELEVANT]
    resp = client.rerank("black watch for women", docs, return_text=True)
    assert resp.model_version.startswith(trained_registry.current())  # "<version>+onnx-<variant>"
    assert [r.rank for r in resp.results] == [1, 2, 3, 4]
    assert resp.results[0].id == "relevant" and resp.results[0].index == 3
    top, rest = resp.results[0], resp.results[1:]
    assert all(top.score > r.score + 0.2 for r in rest), [(r.id, r.score) for r in resp.results]
    texts = [rerank_text(Product.from_fields(d, id=d["id"])) for d in docs]
    for r in resp.results:
        assert 0.0 <= r.score <= 1.0
        assert r.score == pytest.approx(1 / (1 + math.exp(-r.logit)), abs=1e-6)
        assert r.text == texts[r.index]
    assert resp.tokens > 0 and resp.timings.total_ms > 0
    # the same scores as the reference implementation on the same model and texts
    ce = CrossEncoder(str(trained_registry.path(trained_registry.current())))
    expected = ce.predict([("black watch for women", t) for t in texts])
    got = {r.index: r.score for r in resp.results}
    assert np.allclose([got[i] for i in range(4)], expected, atol=1e-4)

    top2 = client.rerank("black watch for women", docs, top_n=2)
    assert [r.index for r in top2.results] == [r.index for r in resp.results[:2]]
    # plain texts and (id, text) pairs score like the product fields they were built from
    as_text = client.rerank("black watch for women", [("a", texts[3]), texts[0]])
    assert as_text.results[0].id == "a"
    assert as_text.results[0].score == pytest.approx(top.score, abs=1e-6)


def test_edge_inputs(server, client):
    assert list(client.rerank("red dress", []).results) == []
    odd = ["👗🔥 dress ✨", "e\u0301\u0301\u0301 combining marks", "فستان أحمر", "红色连衣裙", "nul\x00byte", "", "   "]
    resp = client.rerank("red dress 👠 e\u0301", odd)
    assert len(resp.results) == len(odd)
    assert all(math.isfinite(r.score) and math.isfinite(r.logit) for r in resp.results)
    # documents are truncated to the model's max length: text past that point changes nothing
    long_doc = " ".join(["dress"] * 200)
    resp = client.rerank("red dress", [long_doc, long_doc + " zebra" * 300])
    s = {r.index: r.logit for r in resp.results}
    assert s[0] == pytest.approx(s[1], abs=1e-5)
    assert resp.tokens == 2 * server.core.max_length


def test_tei_protocol_gives_the_native_scores(server, client):
    texts = [rerank_text(Product.from_fields(d, id=d["id"])) for d in [*UNRELATED, RELEVANT]]
    native = client.rerank("black watch for women", texts)
    by_index = {r.index: r for r in native.results}
    tei = client.tei.Rerank(tei_pb2.RerankRequest(query="black watch for women", texts=texts, return_text=True), timeout=60)
    assert [r.index for r in tei.ranks] == [r.index for r in native.results]
    for r in tei.ranks:
        assert r.score == pytest.approx(by_index[r.index].score, abs=1e-6)
        assert r.HasField("text") and r.text == texts[r.index]
    assert tei.metadata.compute_tokens == native.tokens
    assert tei.metadata.compute_chars == sum(len("black watch for women") + len(t) for t in texts)
    assert tei.metadata.total_time_ns > 0
    raw = client.tei.Rerank(tei_pb2.RerankRequest(query="black watch for women", texts=texts, raw_scores=True), timeout=60)
    for r in raw.ranks:
        assert r.score == pytest.approx(by_index[r.index].logit, abs=1e-5)
        assert not r.HasField("text")
    stream = client.tei.RerankStream(
        iter([tei_pb2.RerankStreamRequest(query="black watch for women", text=t) for t in texts]), timeout=60
    )
    assert [r.index for r in stream.ranks] == [r.index for r in native.results]
    for r in stream.ranks:
        assert r.score == pytest.approx(by_index[r.index].score, abs=1e-6)
    left = client.tei.Rerank(
        tei_pb2.RerankRequest(
            query="red dress",
            texts=[" ".join(["dress"] * 200) + " red"],
            truncate=True,  # without it an over-long text is refused, as TEI does
            truncation_direction=tei_pb2.TRUNCATION_DIRECTION_LEFT,
        ),
        timeout=60,
    )
    assert len(left.ranks) == 1 and math.isfinite(left.ranks[0].score)


def test_sixteen_concurrent_clients_get_the_sequential_scores(server, products):
    texts = [rerank_text(p) for p in products[:60]]
    queries = ["black watch for women", "blue jeans for men", "white sports shoes", "red kurta women"]
    with RerankerClient(server.target, timeout=120) as c:
        reference = {q: {r.index: r.logit for r in c.rerank(q, texts[:20]).results} for q in queries}

    def one_client(k: int) -> int:
        ok = 0
        with RerankerClient(server.target, timeout=120) as c:
            for j in range(3):
                q = queries[(k + j) % len(queries)]
                resp = c.rerank(q, texts[:20])
                got = {r.index: r.logit for r in resp.results}
                assert all(abs(got[i] - reference[q][i]) < 1e-4 for i in range(20))
                ok += 1
        return ok

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(one_client, range(16))) == 48


def test_search_reranks_once_a_model_is_promoted(make_sidecar, trained_registry, product_index, tmp_path, capsys):
    from cli.main import main as cli_main
    from fashion_rerank.ubi import read_query_log

    registry = ModelRegistry(tmp_path / "models", "fashion-ce")
    log_path = tmp_path / "ubi_queries.jsonl"
    sc = make_sidecar(registry, index=product_index, querylog_sample_rate=1.0, querylog_path=log_path)
    with RerankerClient(sc.target, timeout=60) as c:
        # no model yet: kNN order, reranked=false; Rerank itself says why it cannot score
        before = c.search("black watch for women", top_k=30, top_n=10, client_id="me@example.com")
        assert not before.reranked and before.model_version == ""
        assert before.candidates == 30 and len(before.hits) == 10
        assert [h.retrieval_rank for h in before.hits] == list(range(1, 11))
        assert [h.rank for h in before.hits] == list(range(1, 11))
        scores = [h.retrieval_score for h in before.hits]
        assert scores == sorted(scores, reverse=True)
        assert code_of(lambda: c.rerank("black watch", ["a watch"])) == grpc.StatusCode.FAILED_PRECONDITION

        version = copy_version(trained_registry, registry)
        wait_until(lambda: sc.core.models.registry_version == version, what="the promoted model to load")
        after = c.search("black watch for women, call +1 (555) 123-4567", top_k=30, top_n=10)
        assert after.reranked and after.model_version == sc.core.model_version and after.model_version.startswith(version)
        assert len(after.hits) == 10 and after.candidates == 30
        rs = [h.rerank_score for h in after.hits]
        assert rs == sorted(rs, reverse=True)
        assert all(1 <= h.retrieval_rank <= 30 for h in after.hits)
        assert len({h.id for h in after.hits}) == 10
        assert after.hits[0].product.product_type == "Watches"
        assert after.hits[0].product.title and after.hits[0].product.product_id == after.hits[0].id
        assert after.timings.embedding_ms > 0 and after.timings.knn_ms > 0 and after.timings.inference_ms > 0

        # filters go inside the knn clause: a full page of matching products
        women = c.search("watch", top_k=20, top_n=20, filters={"gender": "Women"})
        assert len(women.hits) == 20 and {h.product.gender for h in women.hits} == {"Women"}
        two = c.search("shoes", top_k=20, top_n=5, filters={"gender": ["Men"], "colour": ["Black", "White"]})
        assert all(h.product.gender == "Men" and h.product.colour in ("Black", "White") for h in two.hits)

    assert (
        cli_main(["search", "black watch for women", "--target", sc.target, "--top-n", "3", "--top-k", "30", "--timeout", "60"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"reranked by {version}" in out and len(out.strip().splitlines()) == 2 + 3

    sc.stop(1.0)  # flushes the query log
    records = list(read_query_log(log_path))
    assert len(records) >= 4
    first = next(r for r in records if r["query_id"] == before.query_id)
    assert first["user_query"] == "black watch for women" and first["client_id"] == "[email]"
    assert first["query_response_hit_ids"] == [h.id for h in before.hits]
    assert first["query_attributes"]["top_k"] == 30 and first["query_attributes"]["reranked"] is False
    assert first["application"] == "fashion-rerank"
    datetime.fromisoformat(first["timestamp"])
    second = next(r for r in records if r["query_id"] == after.query_id)
    assert second["user_query"] == "black watch for women, call [phone]"
    assert second["query_attributes"]["model_version"].startswith(version)


def test_query_log_to_an_opensearch_index(make_sidecar, trained_registry, product_index, os_client, unique_name):
    from fashion_rerank.ubi import read_query_log

    sc = make_sidecar(trained_registry, index=product_index, querylog_sample_rate=1.0, querylog_index=unique_name)
    try:
        with RerankerClient(sc.target, timeout=60) as c:
            resp = c.search("blue jeans for men", top_k=10, top_n=3, client_id="web-1")
        sc.stop(1.0)
        os_client.indices.refresh(index=unique_name)
        records = list(read_query_log(unique_name, client=os_client))
        assert [r["query_id"] for r in records] == [resp.query_id]
        assert records[0]["query_response_hit_ids"] == [h.id for h in resp.hits]
        mapping = os_client.indices.get_mapping(index=unique_name)[unique_name]["mappings"]
        assert mapping["dynamic"] in ("false", False)
        assert mapping["properties"]["query_attributes"]["type"] == "flat_object"
    finally:
        os_client.indices.delete(index=unique_name, ignore_unavailable=True)


def test_limits_and_bad_input_get_their_status(make_sidecar, trained_registry, product_index):
    sc = make_sidecar(trained_registry, index=product_index, max_documents=5, max_text_chars=300, max_message_bytes=64 * 1024)
    ia, re_ = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    with RerankerClient(sc.target, timeout=30) as c:
        assert code_of(lambda: c.rerank("", ["a"])) == ia
        assert code_of(lambda: c.rerank("   ", ["a"])) == ia
        assert code_of(lambda: c.rerank("dress", ["a"] * 6)) == ia
        assert code_of(lambda: c.rerank("x" * 301, ["a"])) == ia
        assert code_of(lambda: c.rerank("dress", ["a", "b" * 301])) == ia
        # the query is never truncated: one too long for the model's pair length is refused, with a reason
        with pytest.raises(grpc.RpcError) as info:
            c.rerank(" ".join(["a"] * 70), ["a"])  # 139 characters, 70 tokens > 64 - 3 - 8
        assert info.value.code() == ia and "tokens" in info.value.details()
        assert (
            code_of(lambda: c.stub.Rerank(reranker_pb2.RerankRequest(query="dress", documents=[reranker_pb2.Document(id="x")])))
            == ia
        )
        assert code_of(lambda: c.rerank("dress", [{"id": "p", "colour": "Red"}])) == ia
        assert code_of(lambda: c.tei.Rerank(tei_pb2.RerankRequest(query="dress", texts=["a"] * 6))) == ia
        # message size limits: the server's (64 KiB) and the client's own
        assert code_of(lambda: c.rerank("dress", ["a" * 40_000, "b" * 40_000])) == re_
        with RerankerClient(sc.target, timeout=30, max_message_bytes=1024) as small:
            assert code_of(lambda: small.rerank("dress", ["a" * 250] * 5)) == re_
        # Search arguments
        assert code_of(lambda: c.search("", top_k=5)) == ia
        assert code_of(lambda: c.search("dress", top_k=5, top_n=6)) == ia
        assert code_of(lambda: c.search("dress", top_k=6)) == ia
        assert code_of(lambda: c.search("dress", top_k=5, filters={"price": "10"})) == ia
        assert code_of(lambda: c.search("dress", top_k=5, filters={"gender": []})) == ia
        assert code_of(lambda: c.search("dress", top_k=5, index="*")) == ia
        # names outside the allow-list (default: the configured index) are refused, existing or not
        assert (
            code_of(lambda: c.search("dress", top_k=5, index=f"missing-{uuid.uuid4().hex}")) == grpc.StatusCode.PERMISSION_DENIED
        )
        # and the server still answers normally
        assert len(c.rerank("dress", ["a red dress"]).results) == 1


def test_full_queue_is_refused_at_once(make_sidecar, trained_registry, products):
    sc = make_sidecar(trained_registry, max_documents=200, queue_pairs=200, max_batch_pairs=200)
    long_texts = [rerank_text(p) + " | " + " ".join(p.title.split() * 6) for p in products[:200]]
    with RerankerClient(sc.target, timeout=300) as c:
        first = c.stub.Rerank.future(
            reranker_pb2.RerankRequest(query="black watch", documents=[reranker_pb2.Document(text=t) for t in long_texts]),
            timeout=300,
        )
        wait_until(lambda: sc.core.busy and sc.core.queue_depth() == (0, 0), what="the worker to take request 1")
        second = c.stub.Rerank.future(
            reranker_pb2.RerankRequest(query="blue jeans", documents=[reranker_pb2.Document(text=t) for t in long_texts]),
            timeout=300,
        )
        wait_until(lambda: sc.core.queue_depth() == (1, 200), what="request 2 to be queued")
        assert sc.core.busy, "request 1 finished too early for this test; make the texts longer"
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            c.rerank("red dress", long_texts[:10])
        refused_after = time.monotonic() - t0
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in info.value.details()
        assert not first.done(), "the refusal must come before the running batch ends (no waiting in line)"
        assert len(first.result().results) == 200 and len(second.result().results) == 200
        assert refused_after < 2.0


def test_passed_deadline_and_cancelled_call_free_the_worker(make_sidecar, trained_registry, products):
    sc = make_sidecar(trained_registry, max_documents=1000)
    texts = [rerank_text(p) for p in products] * 3  # 1200 -> 1000 below
    texts = texts[:1000]
    with RerankerClient(sc.target, timeout=120) as c:
        before = scrape(sc.metrics_port)
        with pytest.raises(grpc.RpcError) as info:
            c.rerank("black watch for women", texts, timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: not sc.core.busy and sc.core.queue_depth() == (0, 0), what="the worker to drop the work")
        after = scrape(sc.metrics_port)
        scored = metric(after, "fashion_rerank_pairs_total", outcome="scored") - metric(
            before, "fashion_rerank_pairs_total", outcome="scored"
        )
        abandoned = metric(after, "fashion_rerank_pairs_total", outcome="abandoned") - metric(
            before, "fashion_rerank_pairs_total", outcome="abandoned"
        )
        assert abandoned > 0 and scored + abandoned == 1000 and scored < 1000
        # a client that goes away: its work is dropped too
        fut = c.stub.Rerank.future(
            reranker_pb2.RerankRequest(query="blue jeans", documents=[reranker_pb2.Document(text=t) for t in texts]), timeout=120
        )
        wait_until(lambda: sc.core.busy, what="the worker to start")
        fut.cancel()
        wait_until(lambda: not sc.core.busy, what="the worker to drop the cancelled call")
        final = scrape(sc.metrics_port)
        assert metric(final, "fashion_rerank_pairs_total", outcome="abandoned") > metric(
            after, "fashion_rerank_pairs_total", outcome="abandoned"
        )
        # and the worker serves the next request right away
        assert len(c.rerank("black watch", texts[:5], timeout=30).results) == 5


def test_promoting_a_model_under_load_fails_no_request(make_sidecar, trained_registry, tmp_path):
    registry = ModelRegistry(tmp_path / "models", "fashion-ce")
    old = copy_version(trained_registry, registry)
    sc = make_sidecar(registry)
    assert sc.core.models.registry_version == old
    served_old = sc.core.model_version  # "<old>+onnx-<variant>": what responses and /metrics report
    texts = [rerank_text(Product.from_fields(d, id=d["id"])) for d in [*UNRELATED, RELEVANT]] * 5
    stop = threading.Event()
    seen: dict[str, int] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def load(k: int) -> None:
        with RerankerClient(sc.target, timeout=120) as c:
            while not stop.is_set():
                try:
                    resp = c.rerank("black watch for women", texts)
                    assert len(resp.results) == len(texts)
                    with lock:
                        key = resp.model_version.split("+", 1)[0]  # the registry version
                        seen[key] = seen.get(key, 0) + 1
                except BaseException as exc:  # noqa: BLE001 - every failure is a test failure
                    with lock:
                        failures.append(exc)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: seen.get(old, 0) >= 8, timeout=60, what="traffic on the old model")
        new = copy_version(trained_registry, registry)
        wait_until(lambda: seen.get(new, 0) >= 16, timeout=90, what="traffic on the new model")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert seen[old] > 0 and seen[new] > 0
    samples = scrape(sc.metrics_port)
    assert sc.core.models.registry_version == new
    assert metric(samples, "fashion_rerank_model_info", version=sc.core.model_version) == 1
    assert metric(samples, "fashion_rerank_model_info", version=served_old) == 0
    assert metric(samples, "fashion_rerank_model_loads_total", outcome="ok") == 2


def test_metrics_count_exactly_the_requests_made(make_sidecar, trained_registry, product_index):
    sc = make_sidecar(trained_registry, index=product_index)
    n = 7
    with RerankerClient(sc.target, timeout=60) as c:
        for i in range(n):
            c.rerank("black watch", ["a black watch", "blue jeans", "red dress"][: 1 + i % 3])
        code_of(lambda: c.rerank("", ["a"]))
        c.search("black watch", top_k=15, top_n=5)
    s = scrape(sc.metrics_port)
    assert metric(s, "fashion_rerank_requests_total", method="Rerank", front="grpc", code="OK") == n
    assert metric(s, "fashion_rerank_requests_total", method="Rerank", front="grpc", code="INVALID_ARGUMENT") == 1
    assert metric(s, "fashion_rerank_requests_total", method="Search", front="grpc", code="OK") == 1
    assert metric(s, "fashion_rerank_request_duration_seconds_count", method="Rerank", front="grpc") == n + 1
    assert metric(s, "fashion_rerank_candidates_per_request_count", method="Rerank") == n
    assert metric(s, "fashion_rerank_candidates_per_request_sum", method="Search") == 15
    # this test index has no source_hash: the 15 candidates came with the kNN answer's own _source
    assert metric(s, "fashion_rerank_search_documents_total", source="source") == 15
    assert metric(s, "fashion_rerank_stage_duration_seconds_count", stage="inference") == n + 1
    for stage in ("queue", "tokenization", "embedding", "knn"):
        assert metric(s, "fashion_rerank_stage_duration_seconds_count", stage=stage) >= 1
    assert metric(s, "fashion_rerank_pairs_total", outcome="scored") == sum(1 + i % 3 for i in range(n)) + 15
    assert metric(s, "fashion_rerank_model_info", version=sc.core.model_version) == 1
    assert ("fashion_rerank_queue_depth", frozenset({("unit", "pairs")})) in s
    labels = {k for (_, lab) in s for k, _ in lab}
    assert labels <= {"method", "front", "code", "stage", "unit", "outcome", "reason", "kind", "version", "source", "le"}


def test_opensearch_outage_gives_unavailable_and_recovers(make_sidecar, trained_registry, product_index, opensearch_url):
    from urllib.parse import urlparse

    up = urlparse(opensearch_url)
    proxy = TcpProxy((up.hostname, up.port or 9200))
    sc = make_sidecar(trained_registry, os_url=f"http://127.0.0.1:{proxy.port}", index=product_index)
    try:
        with RerankerClient(sc.target, timeout=30) as c:
            assert len(c.search("blue jeans for men", top_k=10, top_n=3).hits) == 3
            proxy.close()  # OpenSearch "stops"
            t0 = time.monotonic()
            assert code_of(lambda: c.search("blue jeans for men", top_k=10, top_n=3, timeout=5)) == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - t0 < 5
            assert len(c.rerank("blue jeans", ["blue jeans", "red dress"]).results) == 2  # Rerank unaffected
            proxy.mode = "blackhole"  # accepts connections, never answers
            proxy.open()
            t0 = time.monotonic()
            assert code_of(lambda: c.search("blue jeans for men", top_k=10, top_n=3, timeout=2)) == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - t0 < 2
            proxy.close()
            proxy.mode = "forward"
            proxy.open()  # OpenSearch is back, same address
            assert len(c.search("blue jeans for men", top_k=10, top_n=3).hits) == 3
        s = scrape(sc.metrics_port)
        assert metric(s, "fashion_rerank_opensearch_errors_total", kind="unavailable") >= 1
        assert metric(s, "fashion_rerank_opensearch_errors_total", kind="timeout") >= 1
        assert metric(s, "fashion_rerank_requests_total", method="Search", code="UNAVAILABLE") == 2
    finally:
        proxy.close()


def test_rerank_budget_fails_open_or_closed(make_sidecar, trained_registry, product_index):
    sc = make_sidecar(trained_registry, index=product_index, rerank_budget_ms=1)
    with RerankerClient(sc.target, timeout=60) as c:
        resp = c.search("black watch for women", top_k=50, top_n=10)
    assert not resp.reranked and [h.retrieval_rank for h in resp.hits] == list(range(1, 11))
    assert metric(scrape(sc.metrics_port), "fashion_rerank_fail_open_total", reason="budget") == 1
    closed = make_sidecar(trained_registry, index=product_index, rerank_budget_ms=1, fail_open=False)
    with RerankerClient(closed.target, timeout=60) as c:
        assert code_of(lambda: c.search("black watch for women", top_k=50, top_n=10)) == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.slow
def test_serve_command_drains_on_sigterm(trained_registry, product_index, opensearch_url, tmp_path, products):
    """`fashion-rerank serve` as a process: logs, serves, and on SIGTERM finishes the call in flight and exits 0."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        FR_SERVE_GRPC_PORT=str(port),
        FR_SERVE_METRICS_PORT="-1",
        FR_SERVE_HTTP_PORT="0",
        FR_SERVE_THREADS="1",
        FR_SERVE_QUERYLOG_PATH="",
        FR_SERVE_QUERYLOG_INDEX="",
        FR_SERVE_GRACE_S="60",
        FR_SERVE_DRAIN_S="2",
        FR_MODEL_REGISTRY_DIR=str(trained_registry.root),
        FR_MODEL_NAME=trained_registry.name,
        OPENSEARCH_URL=opensearch_url,
        OPENSEARCH_INDEX_ALIAS=product_index,
        HF_HUB_OFFLINE="1",
    )
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        with RerankerClient(f"127.0.0.1:{port}", timeout=120) as c:

            def serving():
                try:
                    return c.health() == "SERVING"
                except grpc.RpcError:
                    return proc.poll() is not None and pytest.fail(log.read_text())

            wait_until(serving, timeout=180, every=0.5, what="the server to start")
            texts = [rerank_text(p) for p in products[:300]]
            call = c.stub.Rerank.future(
                reranker_pb2.RerankRequest(query="black watch", documents=[reranker_pb2.Document(text=t) for t in texts]),
                timeout=120,
            )
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            with RerankerClient(f"127.0.0.1:{port}", timeout=5) as probe:  # a new channel, as a load balancer's
                wait_until(lambda: probe.health() == "NOT_SERVING", timeout=2, what="health NOT_SERVING")
            assert len(call.result().results) == 300  # the call in flight finished
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"127.0.0.1:{port}" in text and trained_registry.current() in text and "threads 1" in text
    assert "SIGTERM" in text
