"""Chaos: faults injected into real running parts, each with its outcome asserted.

1. OpenSearch SIGKILLed mid-traffic (a node of this test's own, HTTP 9230 / transport 9330, own data dir,
   from the shared installation of `fashion_rerank.local_node`): every Search ends OK or UNAVAILABLE within
   its deadline (no hang, no INTERNAL) and Search works again once the node is back, with no sidecar restart.
2. A model promoted while `fashion-rerank serve` (a subprocess) is under Search + Rerank load: 0 failed
   requests, and traffic moves to the new version.
3. That sidecar SIGKILLed under load and started again: it serves the latest promoted version (promoted
   while it was dead).
4. `fashion-rerank labels grade` SIGKILLed at a random moment of grading (no judge-side hold): the store has 0
   malformed lines, the resume finishes it, no stored judgment is asked for again, and the only repeated
   judge calls are the answers that were in flight at the kill (counted at the reference judge).
5. The disk filling up while judgments are written (a 64 KiB tmpfs when this process may mount, else
   RLIMIT_FSIZE in a subprocess): a clear error naming the path and ENOSPC/EFBIG, the grading stops, the store
   stays readable with 0 malformed lines, and a re-run after freeing space completes it.

Nothing is mocked: the shared OpenSearch node (9200) is never touched beyond unique indices, the test node
is ours alone and stopped at the end. Timings go to stdout (`-s`) and docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from fashion_rerank.product import ATTRIBUTE_FIELDS, Product, rerank_text, text_hash
from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import LabelSettings
from labeling.grading import PairRequest, grade_pairs
from labeling.judge_server import ReferenceJudge
from labeling.store import JudgmentStore, StoreWriteError
from reranker.client import RerankerClient

REPO = Path(__file__).resolve().parents[2]
N_PRODUCTS = 120
CHAOS_HTTP_PORT, CHAOS_TRANSPORT_PORT = 9230, 9330


# ------------------------------------------------------------------------------------------ helpers


def wait_until(pred, timeout: float = 30.0, every: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_version(src: ModelRegistry, dst: ModelRegistry, promote: bool = True) -> str:
    """Copy the current version of `src` into `dst` as a new version (same weights, new name); promote it."""
    version, folder = dst.new_version_dir()
    tmp = folder.with_name(folder.name + ".part")
    shutil.copytree(src.path(src.current()), tmp)
    card = json.loads((tmp / "card.json").read_text())
    card["version"] = version
    (tmp / "card.json").write_text(json.dumps(card))
    folder.rmdir()
    tmp.rename(folder)  # complete at once: a watcher never sees a half-copied version
    if promote:
        dst.promote(version, reason="chaos test")
    return version


def create_index(url: str, name: str, docs: list[dict], dim: int) -> None:
    """A k-NN index `name` at `url` holding `docs` (our field interface), refreshed."""
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(url, timeout=60)
    props = {f: {"type": "keyword"} for f in ATTRIBUTE_FIELDS}
    props.update(
        {
            "embedding": {
                "type": "knn_vector",
                "dimension": dim,
                "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
            },
            "product_id": {"type": "keyword"},
            "title": {"type": "text"},
            "description": {"type": "text"},
            "rerank_text": {"type": "text"},
        }
    )
    client.indices.create(
        index=name,
        body={
            "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": props},
        },
    )
    helpers.bulk(client, ({"_index": name, "_id": d["product_id"], "_source": d} for d in docs), refresh=True)
    client.close()


class Sidecar:
    """`fashion-rerank serve` in a subprocess on a fixed gRPC port (so a restart keeps the address)."""

    def __init__(self, tmp: Path, registry: ModelRegistry, os_url: str, index: str, port: int | None = None, **env):
        self.port = port or free_port()
        self.log = tmp / f"serve-{self.port}-{uuid.uuid4().hex[:4]}.log"
        self.env = dict(
            os.environ,
            FR_SERVE_GRPC_PORT=str(self.port),
            FR_SERVE_METRICS_PORT="-1",
            FR_SERVE_HTTP_PORT="0",
            FR_SERVE_THREADS="1",
            FR_SERVE_QUERYLOG_PATH="",
            FR_SERVE_QUERYLOG_INDEX="",
            FR_SERVE_GRACE_S="2",
            FR_SERVE_REGISTRY_POLL_S="0.2",
            FR_SERVE_RERANK_BUDGET_MS="60000",
            FR_SERVE_SCORE_CACHE_ENTRIES="0",  # every request does model work
            FR_MODEL_REGISTRY_DIR=str(registry.root),
            FR_MODEL_NAME=registry.name,
            OPENSEARCH_URL=os_url,
            OPENSEARCH_INDEX_ALIAS=index,
            HF_HUB_OFFLINE="1",
            **env,
        )
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> float:
        """Start and wait for health SERVING; returns the seconds it took."""
        t0 = time.monotonic()
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve"], env=self.env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT
            )
        with RerankerClient(self.target, timeout=5) as c:

            def serving():
                if self.proc.poll() is not None:
                    pytest.fail(f"sidecar exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
                try:
                    return c.health() == "SERVING"
                except grpc.RpcError:
                    return False

            wait_until(serving, timeout=timeout, every=0.25, what="the sidecar to serve")
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class ChaosNode:
    """An OpenSearch node of this test only: the shared 2.19.1 `knn` installation (`local_node.install`,
    reused), its own config folder (OPENSEARCH_PATH_CONF), data and logs in a fresh folder, HTTP 9230 and
    transport 9330. As root it runs as `local_node.SERVICE_USER`, as the project's node does. `kill()`
    SIGKILLs exactly this process; the shared node on 9200 is never touched."""

    def __init__(self, http_port: int = CHAOS_HTTP_PORT, transport_port: int = CHAOS_TRANSPORT_PORT, heap: str = "512m"):
        from fashion_rerank import local_node
        from fashion_rerank.settings import NodeSettings

        self.http_port, self.transport_port = http_port, transport_port
        for port in (http_port, transport_port):
            if local_node._port_open("127.0.0.1", port):
                pytest.fail(f"port {port} is in use: another chaos node still runs? (it must be ours to stop)")
        settings = NodeSettings(version=local_node.OPENSEARCH_VERSION, plugins="knn")
        self.paths = local_node.install(["knn"], settings)  # idempotent: the shared installation
        self.java_home = local_node._java_home(settings)
        self.dir = Path(tempfile.mkdtemp(prefix="fr-chaos-node-"))
        os.chmod(self.dir, 0o755)  # the service user must reach it
        self.conf, self.data, self.logs = self.dir / "config", self.dir / "data", self.dir / "logs"
        shutil.copytree(self.paths.home / "config", self.conf)
        self.data.mkdir()
        self.logs.mkdir()
        cfg = {
            "cluster.name": "fashion-rerank-chaos",
            "node.name": "fashion-rerank-chaos-node",
            "network.host": "127.0.0.1",
            "http.port": http_port,
            "transport.port": transport_port,
            "discovery.type": "single-node",
            "path.data": str(self.data),
            "path.logs": str(self.logs),
            "cluster.routing.allocation.disk.threshold_enabled": False,
        }
        (self.conf / "opensearch.yml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
        self.heap = heap
        self.ids = local_node._service_user()
        if self.ids:
            local_node._chown_tree(self.dir, self.ids)
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{http_port}"

    def start(self, timeout: float = 240) -> float:
        """Start the node and wait until the cluster is yellow; returns the seconds it took."""
        t0 = time.monotonic()
        env = dict(
            os.environ,
            OPENSEARCH_JAVA_HOME=self.java_home,
            OPENSEARCH_PATH_CONF=str(self.conf),
            OPENSEARCH_JAVA_OPTS=f"-Xms{self.heap} -Xmx{self.heap}",
        )
        env.pop("JAVA_TOOL_OPTIONS", None)
        if self.ids:
            env["HOME"] = str(self.dir)
        with open(self.logs / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.paths.home / "bin" / "opensearch")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.dir,
                start_new_session=True,
                user=self.ids[0] if self.ids else None,
                group=self.ids[1] if self.ids else None,
                extra_groups=[] if self.ids else None,
            )

        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"chaos node exited {self.proc.returncode}:\n{(self.logs / 'stdout.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=3) as r:
                    return json.loads(r.read()).get("status") in ("yellow", "green")
            except OSError:
                return False

        wait_until(ready, timeout=timeout, every=0.5, what=f"the chaos node on {self.http_port}")
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL this node's process (the java process: bin/opensearch execs it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def product_docs():
    """Held-out Myntra products (after the 3000 the fixture model trained on) as index documents with vectors."""
    from fashion_rerank.embedding import load_bi_encoder
    from indexer.catalogs import read_myntra

    products: list[Product] = list(read_myntra(limit=3000 + N_PRODUCTS).products)[3000:]
    encoder = load_bi_encoder()
    vectors = encoder.encode([rerank_text(p) for p in products])
    docs = [{**p.to_source(), "embedding": v.tolist()} for p, v in zip(products, vectors)]
    return SimpleNamespace(docs=docs, dim=encoder.dimension, products=products)


@pytest.fixture(scope="module")
def shared_index(os_client, opensearch_url, product_docs):
    """The products in a unique index on the shared node (deleted afterwards)."""
    name = f"t-chaos-{uuid.uuid4().hex[:8]}"
    create_index(opensearch_url, name, product_docs.docs, product_docs.dim)
    yield name
    os_client.indices.delete(index=name, ignore_unavailable=True)


class Traffic:
    """Client threads calling Search (and Rerank) in a loop; every call's outcome, duration and model version."""

    def __init__(self, target: str, threads: int, timeout: float, rerank: bool = True, pause: float = 0.0):
        self.target, self.timeout, self.rerank, self.pause = target, timeout, rerank, pause
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def _run(self, k: int) -> None:
        queries = ["black watch for women", "blue jeans for men", "red dress", "white sports shoes"]
        texts = ["Titan Women Black Leather Watch | Watches | Black | Women", "Puma Men Grey T-shirt | Tshirts | Grey | Men"]
        with RerankerClient(self.target, timeout=self.timeout) as c:
            i = 0
            while not self._stop.is_set():
                method = "Rerank" if self.rerank and (i + k) % 2 else "Search"
                q = queries[(i + k) % len(queries)]
                t0 = time.monotonic()
                rec = {"t0": t0, "method": method, "code": "OK", "version": None, "details": ""}
                try:
                    if method == "Search":
                        resp = c.search(q, top_k=20, top_n=5, timeout=self.timeout)
                        rec["version"] = resp.model_version if resp.reranked else None
                        rec["reranked"] = resp.reranked
                    else:
                        resp = c.rerank(q, texts, timeout=self.timeout)
                        rec["version"] = resp.model_version
                except grpc.RpcError as exc:
                    rec["code"], rec["details"] = exc.code().name, exc.details()
                rec["seconds"] = time.monotonic() - t0
                with self._lock:
                    self.calls.append(rec)
                i += 1
                if self.pause:
                    time.sleep(self.pause)

    def start(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.calls)

    def ok_with(self, prefix: str) -> int:
        return sum(1 for r in self.snapshot() if r["code"] == "OK" and (r["version"] or "").startswith(prefix))


# ------------------------------------------------------------------- 1. OpenSearch killed mid-traffic


@pytest.mark.slow
def test_opensearch_killed_mid_traffic_gives_unavailable_then_recovers_without_restart(trained_registry, product_docs, tmp_path):
    node = ChaosNode()
    sidecar = None
    traffic = None
    deadline_s = 3.0
    try:
        first_start = node.start()
        index = f"t-chaos-{uuid.uuid4().hex[:8]}"
        create_index(node.url, index, product_docs.docs, product_docs.dim)
        sidecar = Sidecar(tmp_path, trained_registry, node.url, index)
        sidecar.start()
        pid = sidecar.proc.pid
        traffic = Traffic(sidecar.target, threads=2, timeout=deadline_s, rerank=False, pause=0.2).start()
        wait_until(lambda: sum(r["code"] == "OK" for r in traffic.snapshot()) >= 6, timeout=60, what="Search traffic")

        t_kill = time.monotonic()
        node.kill()  # SIGKILL mid-traffic
        wait_until(
            lambda: sum(r["code"] == "UNAVAILABLE" and r["t0"] > t_kill for r in traffic.snapshot()) >= 6,
            timeout=30,
            what="UNAVAILABLE answers while OpenSearch is down",
        )
        t_restart = time.monotonic()
        restart_s = node.start()  # same data folder, same port; the sidecar keeps running
        t_ready = time.monotonic()
        first_ok = wait_until(
            lambda: next((r for r in traffic.snapshot() if r["code"] == "OK" and r["t0"] >= t_ready), None),
            timeout=60,
            what="Search to work again without a sidecar restart",
        )
        recovered_s = first_ok["t0"] + first_ok["seconds"] - t_ready
        time.sleep(0.5)
    finally:
        if traffic is not None:
            traffic.stop()
        if sidecar is not None:
            sidecar.stop()
        node.close()

    calls = traffic.snapshot()
    codes = Counter(r["code"] for r in calls)
    for r in calls:
        r["phase"] = "before" if r["t0"] < t_kill else "down" if r["t0"] < t_restart else "restart" if r["t0"] < t_ready else "up"
        r["at"] = round(r["t0"] - t_kill, 3)
    during = [r for r in calls if t_kill <= r["t0"] < t_ready]
    # no call hangs: every one ends within its deadline (plus the client's own scheduling on a loaded machine)
    slowest = max(r["seconds"] for r in calls)
    assert slowest < deadline_s + 0.5, f"a call took {slowest:.2f} s with a {deadline_s} s deadline"
    # never INTERNAL/UNKNOWN; with the node dead (connection refused) every Search is UNAVAILABLE
    down = [r for r in calls if r["phase"] == "down"]
    assert down and all(r["code"] == "UNAVAILABLE" for r in down), Counter(r["code"] for r in down)
    assert set(codes) <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, codes
    # DEADLINE_EXCEEDED only while the restarted node accepts connections but answers slowly (starting up):
    # the caller's deadline ran out first (see docs/reliability.md, "OpenSearch killed")
    late = [r for r in calls if r["code"] == "DEADLINE_EXCEEDED"]
    assert all(r["phase"] == "restart" for r in late), late
    # back without a sidecar restart: from the first OK on, every Search is OK and reranked
    after = [r for r in calls if r["t0"] >= first_ok["t0"]]
    assert after and all(r["code"] == "OK" and r["reranked"] for r in after), Counter(r["code"] for r in after)
    assert sidecar.proc.pid == pid and sidecar.proc.returncode in (0, -signal.SIGTERM)  # never restarted, exited cleanly
    unavailable = [r["seconds"] for r in during if r["code"] == "UNAVAILABLE"]
    print(
        f"\nchaos/opensearch: node start {first_start:.1f} s, restart {restart_s:.1f} s; {len(calls)} Search calls "
        f"{dict(codes)}; while down or starting: {len(unavailable)} UNAVAILABLE (p50 "
        f"{sorted(unavailable)[len(unavailable) // 2]:.3f} s, slowest {max(unavailable):.3f} s), {len(late)} "
        f"DEADLINE_EXCEEDED while starting ({[r['at'] for r in late]} s after the kill); deadline {deadline_s} s; "
        f"first OK {recovered_s:.2f} s after the node was ready; slowest call {slowest:.3f} s"
    )


# ------------------------------------------------ 2. + 3. promotion under load, sidecar SIGKILL + restart


@pytest.mark.slow
def test_promotion_under_load_fails_nothing_and_a_killed_sidecar_restarts_on_the_latest_version(
    trained_registry, shared_index, opensearch_url, tmp_path
):
    registry = ModelRegistry(tmp_path / "models", "fashion-ce")
    v1 = copy_version(trained_registry, registry)
    sidecar = Sidecar(tmp_path, registry, opensearch_url, shared_index)
    traffic = None
    try:
        start_s = sidecar.start()
        traffic = Traffic(sidecar.target, threads=4, timeout=120).start()
        wait_until(lambda: traffic.ok_with(v1) >= 8, timeout=120, what="traffic on v1")
        t_promote = time.monotonic()
        v2 = copy_version(trained_registry, registry)
        wait_until(lambda: traffic.ok_with(v2) >= 16, timeout=120, what="traffic on v2")
        swap_s = min(r["t0"] + r["seconds"] for r in traffic.snapshot() if (r["version"] or "").startswith(v2)) - t_promote
        traffic.stop()
        under_load = traffic.snapshot()

        # 2. 0 failed requests across the promotion, and traffic moved to the new version
        failed = [r for r in under_load if r["code"] != "OK"]
        assert failed == [], failed[:5]
        by_version = Counter((r["version"] or "").split("+", 1)[0] for r in under_load)
        assert by_version[v1] > 0 and by_version[v2] >= 16
        assert all(r["reranked"] for r in under_load if r["method"] == "Search")
        last = max(r["t0"] for r in under_load if (r["version"] or "").startswith(v1))
        assert last < t_promote + 30, "v1 still answered long after the promotion"

        # 3. SIGKILL under load, a promotion while it is dead, restart on the same port
        traffic = Traffic(sidecar.target, threads=2, timeout=30).start()
        wait_until(lambda: traffic.ok_with(v2) >= 4, timeout=60, what="traffic before the kill")
        sidecar.kill()
        traffic.stop()
        assert sidecar.proc.returncode == -signal.SIGKILL
        v3 = copy_version(trained_registry, registry)  # the latest promotion happens while no sidecar runs
        assert registry.current() == v3
        restart_s = sidecar.start()
        with RerankerClient(sidecar.target, timeout=60) as c:
            rr = c.rerank("black watch for women", ["Titan Women Black Leather Watch | Watches | Black | Women", "blue jeans"])
            sr = c.search("black watch for women", top_k=20, top_n=5)
        assert rr.model_version.split("+", 1)[0] == v3
        assert sr.reranked and sr.model_version.split("+", 1)[0] == v3
    finally:
        if traffic is not None:
            traffic.stop()
        sidecar.stop()
    print(
        f"\nchaos/promote: sidecar start {start_s:.1f} s; {len(under_load)} calls under load across the promotion, "
        f"0 failed ({dict(by_version)}); first answer on the new version {swap_s:.2f} s after the pointer moved; "
        f"after SIGKILL the restart served {v3} (promoted while dead) in {restart_s:.1f} s"
    )


# ------------------------------------------------------------- 4. labeling job SIGKILLed mid-grading


def write_query_log(path: Path, products: list[Product], n_distinct: int, seed: int = 7) -> None:
    """A UBI `ubi_queries`-shaped JSONL log of synthetic shopper traffic built from catalog vocabulary."""
    from demo.queries import generate_queries
    from reranker.querylog import ubi_record

    qs = generate_queries(products, n_distinct=n_distinct, seed=seed)
    with open(path, "w", encoding="utf-8") as fh:
        for q in qs.stream("all"):
            fh.write(json.dumps(ubi_record(q, [], client_id="chaos")) + "\n")


@pytest.fixture(scope="module")
def label_catalog(os_client, tmp_path_factory):
    """200 Myntra products indexed behind a unique alias by the project's indexer, and a query log over them."""
    from indexer.catalogs import read_myntra
    from indexer.index import managed_indices
    from indexer.run import run_index

    alias = f"t-chaos-lab-{uuid.uuid4().hex[:8]}"
    limit = 200
    try:
        assert run_index("myntra", limit=limit, alias=alias, client=os_client, progress=False).indexed == limit
        log = tmp_path_factory.mktemp("chaos-log") / "ubi_queries.jsonl"
        write_query_log(log, list(read_myntra(limit=limit).products), n_distinct=60)
        yield SimpleNamespace(alias=alias, log=log)
    finally:
        for name in managed_indices(os_client, alias):
            os_client.indices.delete(index=name, ignore=[404])


def answered_pairs(judge: ReferenceJudge) -> Counter:
    """(query, product text) -> replies the judge delivered (what a provider bills)."""
    return Counter({(q, t): a for q, t, _, a in judge.stats.snapshot()["pairs"] if a})


def stored_pairs(path: Path) -> set[tuple[str, str]]:
    """(query, product text) of the judgments in the file that the judge answered (not reused copies)."""
    return {(j.query, j.text) for j in JudgmentStore(path).judgments() if j.reused_from is None}


def label_cmd(judgments: Path, cat, judge: ReferenceJudge) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli.main",
        "labels",
        "grade",
        "--judgments",
        str(judgments),
        "--query-log",
        str(cat.log),
        "--queries",
        "10",
        "--top-k",
        "10",
        "--alias",
        cat.alias,
        "--base-url",
        judge.url,
    ]


@pytest.mark.slow
def test_labeling_sigkilled_at_a_random_moment_resumes_without_paying_twice(label_catalog, tmp_path):
    """No judge-side hold: the kill lands wherever grading is. Counted at the judge: a pair answered twice must be
    one whose answer was in flight (answered, not stored) at the kill; at most `concurrency` of them."""
    judgments = tmp_path / "judgments.jsonl"
    concurrency = 4
    env = {**os.environ, "FR_LABEL_CONCURRENCY": str(concurrency), "HF_HUB_OFFLINE": "1", "FR_LABEL_BACKOFF_INITIAL_S": "0.01"}
    rng = random.Random()
    kill_after = rng.randint(15, 45)  # answered judgments stored before the SIGKILL (random, printed)
    with ReferenceJudge(faults="slow=0.01") as judge:  # ~10 ms per answer: grading lasts a few seconds
        cmd = label_cmd(judgments, label_catalog, judge)
        log = open(tmp_path / "first-run.log", "wb")
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:

            def stored() -> int:
                try:
                    return judgments.read_bytes().count(b'"reused_from":null')
                except FileNotFoundError:
                    return 0

            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and stored() < kill_after:
                assert proc.poll() is None, (tmp_path / "first-run.log").read_text()[-3000:]
                time.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        time.sleep(0.5)  # requests the killed client left behind end at the judge (abandoned or answered)
        after_kill = JudgmentStore(judgments)
        before = answered_pairs(judge)
        kept = stored_pairs(judgments)
        lost = set(before) - kept  # answered (paid) but never stored: in flight at the kill
        pools = after_kill.pools()
        total = sum(len(p.candidates) for p in pools)
        assert len(pools) == 10 and 0 < len(after_kill) < total, "the kill must land mid-grading"
        torn = after_kill.load_report.truncated_last_line
        assert after_kill.load_report.invalid_lines == int(torn)  # nothing malformed but at most a torn tail
        assert max(before.values()) == 1 and kept <= set(before)
        assert len(lost) <= concurrency

        t0 = time.monotonic()
        rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        resume_s = time.monotonic() - t0
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert "resumed" in rerun.stdout
        after = answered_pairs(judge)

    final = JudgmentStore(judgments)
    assert final.load_report.invalid_lines == 0 and not final.load_report.truncated_last_line
    assert len(final) == total and not any(final.missing(p) for p in final.pools())
    repeated = {pair for pair, n in after.items() if n > 1}
    assert not repeated & kept, "a stored judgment was paid for again"
    assert repeated == lost  # the only repeats: answers in flight at the kill
    assert max(after.values()) <= 2
    print(
        f"\nchaos/labeling: SIGKILL after {len(kept)} stored answers ({kill_after} asked), {len(before)} answered by the "
        f"judge, {len(lost)} answered-but-not-stored (repeated on resume), torn tail {torn}; resume {resume_s:.1f} s, "
        f"{sum(after.values()) - sum(before.values())} calls, {len(final)} judgments, 0 malformed"
    )


# ------------------------------------------------------------------ 5. disk full while writing judgments


def _pairs(n: int, products: list[Product]) -> list[PairRequest]:
    out, seen = [], set()
    for p in products:
        t = rerank_text(p)
        if t not in seen:
            seen.add(t)
            out.append(PairRequest("navy tee for men", p.id, t, text_hash(t), split="train", catalog="chaos", run_id="r1"))
        if len(out) == n:
            break
    return out


@contextlib.contextmanager
def small_disk(size_kib: int):
    """A `size_kib` tmpfs mounted on a fresh folder (root only); yields the folder or None when mounting fails."""
    folder = Path(tempfile.mkdtemp(prefix="fr-chaos-disk-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)], capture_output=True)
    try:
        yield folder if proc.returncode == 0 else None
    finally:
        if proc.returncode == 0:
            gc.collect()  # stores that were not closed give their descriptors back
            # lazy: detached at once even if a descriptor is still open somewhere; freed when it closes
            done = subprocess.run(["umount", "-l", str(folder)], capture_output=True, text=True)
            assert done.returncode == 0, f"cannot unmount {folder}: {done.stderr}"
        shutil.rmtree(folder, ignore_errors=True)


_FSIZE_CHILD = r"""
import json, resource, signal, sys
from labeling.grading import PairRequest, grade_pairs
from labeling.store import StoreWriteError
from fashion_rerank.settings import LabelSettings
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
args = json.loads(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (args["limit"], args["limit"]))
pairs = [PairRequest(*p) for p in args["pairs"]]
try:
    grade_pairs(pairs, LabelSettings(base_url=args["url"], api_key="k", judgments_path=args["path"], concurrency=4))
except StoreWriteError as exc:
    print(json.dumps({"errno": exc.errno, "message": str(exc)}))
    sys.exit(3)
"""


def test_disk_full_while_writing_judgments_gives_a_clear_error_and_a_readable_store(judge_products):
    """The store on a 64 KiB tmpfs (40 KiB taken by a filler file): grading stops with ENOSPC, the store stays
    readable, and once the filler is gone a re-run completes it. Without mount rights the RLIMIT_FSIZE test
    below is the disk-full case."""
    pairs = _pairs(100, judge_products)  # ~480 bytes a judgment: ~48 KiB in all
    with ReferenceJudge() as judge, small_disk(64) as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root): test_rlimit_fsize_variant_of_the_disk_full_case covers it")
        settings = dict(base_url=judge.url, api_key="k", concurrency=4, backoff_initial_s=0.01, backoff_max_s=0.1)
        path = disk / "judgments.jsonl"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 40 * 1024)  # leaves ~24 KiB: room for about half of the judgments
        t0 = time.monotonic()
        with pytest.raises(StoreWriteError) as info:
            grade_pairs(pairs, LabelSettings(judgments_path=path, **settings))
        stop_s = time.monotonic() - t0
        message = str(info.value)
        assert info.value.errno == 28 and "No space left on device" in message and "ENOSPC" in message
        assert str(path) in message and "re-run" in message

        # the store is readable, holds whole lines only, and everything it says was written is there
        store = JudgmentStore(path)
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and store.load_report.invalid_lines == 0 and not store.load_report.truncated_last_line
        assert 0 < len(store) < len(pairs) and len(store) == raw.count(b"\n")
        answered = answered_pairs(judge)
        stored = {(j.query, j.text) for j in store.judgments()}
        assert stored <= set(answered)
        lost = len(answered) - len(stored)  # answered, not storable: in flight when the disk filled up
        assert 1 <= lost <= 4, "the run must stop at once, not keep paying for answers it cannot store"

        # free space, re-run: it grades only what is missing and completes the store
        filler.unlink()
        summary = grade_pairs(pairs, LabelSettings(judgments_path=path, **settings))
        assert summary.already_stored == len(stored) and not summary.not_graded
        final = JudgmentStore(path)
        assert len(final) == len(pairs) and final.load_report.invalid_lines == 0
        again = answered_pairs(judge)
        assert {p for p, n in again.items() if n > 1} == set(answered) - stored
    print(
        f"\nchaos/disk-full (tmpfs 64 KiB): stopped {stop_s:.2f} s into the run with ENOSPC after {len(stored)} of "
        f"{len(pairs)} judgments; {lost} answers in flight lost (re-asked on the re-run); store readable, 0 malformed"
    )


def test_cli_reports_a_full_disk_as_an_error_and_exit_1(label_catalog, tmp_path, capsys):
    """`fashion-rerank labels grade` with the store on a full disk: exit 1 and an `error:` line naming the path."""
    from cli.main import main

    with ReferenceJudge() as judge, small_disk(64) as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root); the RLIMIT_FSIZE case covers the grader")
        path = disk / "judgments.jsonl"
        (disk / "filler").write_bytes(b"\0" * 8 * 1024)  # the pools fit, the judgments do not
        code = main(label_cmd(path, label_catalog, judge)[3:])  # in this process: `labels grade ...`
        err = capsys.readouterr().err
        assert code == 1 and "error: cannot write" in err and str(path) in err and "No space left on device" in err
        store = JudgmentStore(path)
        assert len(store.pools()) == 10 and 0 < len(store) < sum(len(p.candidates) for p in store.pools())
        assert store.load_report.invalid_lines == 0 and store.pools_report.invalid_lines == 0


@pytest.fixture(scope="module")
def judge_products() -> list[Product]:
    from indexer.catalogs import read_myntra

    return list(read_myntra(limit=600).products)


def test_rlimit_fsize_variant_of_the_disk_full_case(tmp_path, judge_products):
    """The same fault through RLIMIT_FSIZE (EFBIG) in a child process, which needs no mount."""
    pairs = _pairs(100, judge_products)
    path = tmp_path / "judgments.jsonl"
    with ReferenceJudge() as judge:
        args = {"limit": 24 * 1024, "url": judge.url, "path": str(path), "pairs": [list(p.__dict__.values()) for p in pairs]}
        proc = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, json.dumps(args)], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["errno"] == 27 and "File too large" in out["message"] and str(path) in out["message"]
        store = JudgmentStore(path)
        assert path.stat().st_size <= 24 * 1024 and path.read_bytes().endswith(b"\n")
        assert 0 < len(store) < len(pairs) and store.load_report.invalid_lines == 0
        lost = len(answered_pairs(judge)) - len(store)
        assert 1 <= lost <= 4
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY  # the limit stayed in the child
