"""`fashion-rerank demo` (what `make demo` runs): the whole system end to end on the bundled catalog.

Steps (each prints progress and its elapsed time; re-running the demo re-runs every step, reusing the
caches: OpenSearch download, packaged models, embeddings):

1. opensearch  use the OpenSearch at OPENSEARCH_URL; when it is the local default and nothing answers,
               start the local node (`fashion_rerank.local_node`, k-NN plugin)
2. index       index the bundled Myntra catalog (all 44,446 products by default) behind the alias
               (`OpenSearchSettings().index_alias`, default `products`); when the alias already holds the
               same catalog slice embedded with the same model, only an in-place check runs
               (`run_index(incremental=True)`: unchanged products are neither re-embedded nor re-written)
3. sidecar     start `fashion-rerank serve` with the demo's own model registry (`var/demo/models`, empty
               at the start of a run) and query log (`var/demo/ubi_queries.jsonl`); wait for gRPC
               health SERVING
4. replay      send the generated training query stream (demo.queries) through `Search`
               at a small concurrency, so the sidecar logs them as live traffic; no model is current yet,
               so these calls are the *before* latency (kNN order)
5. refresh     start the reference judge server (or use OPENAI_BASE_URL/OPENAI_API_KEY when both are
               set: a real LLM) and run `fashion-rerank refresh`: sample the logged queries, grade the
               candidate pools, train, evaluate, promote
6. measure     wait until the sidecar serves the promoted model; send every held-out query, generated and
               hand-written (`demo/data/shopper_queries.tsv`), through `Search` (the *after* latency; each
               hit carries its kNN rank, so one call gives both orders), grade the held-out candidates with
               the same judge, and compute nDCG@10 / MRR@10 / Recall@10 with bootstrap 95% CIs and paired
               tests (labeling.evaluate) for each set, and per kind of wording for the hand-written one
7. report      write report.md, summary.json and demo.png (demo.report) and stop what the
               demo started (sidecar, judge, and the OpenSearch node if the demo started it) unless
               --keep-running or KEEP_RUNNING=1

Defaults are sized with docs/reference/training-calibration.md#defaults-that-follow for <= 30 minutes on 2 cores once the
downloads are cached: 900 distinct queries (600 train / 300 held out) plus the 80 hand-written held-out
queries (demo.shopper_queries), candidate pools of top-20 kNN + 10 of kNN ranks 21-50 + 5 random products per
logged query (21,000 judged pairs, of which the refresh's train split is ~12,000), learning rate 5e-5, 3 epochs
(~70 pairs/s per epoch on 2 idle cores: ~9 minutes), 50 kNN candidates reranked per Search. Measured on this
2-core machine: 16.4 minutes for a run on idle cores with the catalog already indexed
(docs/shopper-queries.md#results for why the sizes grew).

Modules: this one (config, steps, report assembly, CLI), `demo_support` (child processes, ports, disk
check, Search traffic), `demo_eval` (held-out metrics, refresh report), `queries` (the shopper-query
generator) and `report` (report.md, summary.json, demo.png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from demo.evaluation import (  # noqa: F401
    METRIC_NAMES,
    evaluate_heldout,
    load_refresh_summary,
    metrics_by_kind,
)
from demo.queries import generate_queries
from demo.report import render_markdown, write_report
from demo.shopper_queries import DEFAULT_PATH as HAND_QUERIES_PATH
from demo.shopper_queries import HandQueries, read_hand_queries
from demo.support import (  # noqa: F401 - re-exported for tests and callers
    MIN_FREE_BYTES,
    Background,
    DemoError,
    check_disk,
    claim_port,
    cli_cmd,
    external_judge,
    free_port,
    percentile,
    port_free,
    run_streaming,
    search_many,
    wait_http,
    wait_log_lines,
    wait_model,
    wait_serving,
)
from fashion_rerank import local_node
from fashion_rerank.opensearch import make_client
from fashion_rerank.product import Product, rerank_text, text_hash
from fashion_rerank.settings import (
    REFERENCE_JUDGE_MODEL,
    LabelSettings,
    ModelSettings,
    NodeSettings,
    OpenSearchSettings,
    cache_root,
    cpu_quota,
    resolve_model_path,
)
from indexer.catalogs import open_catalog
from indexer.index import IndexLifecycleError, current_index, index_meta
from indexer.run import run_index
from labeling.grading import PairRequest, grade_pairs
from labeling.sampling import normalise_query
from labeling.store import JudgmentStore


@dataclass
class DemoConfig:
    """Everything a demo run needs. CLI flags map 1:1 (see `add_parser`).

    Sizes: `limit` products of the catalog (None = all), `queries` distinct generated queries of which
    `test_share` are held out; `top_k` kNN candidates reranked per Search and `top_n` hits returned;
    `concurrency` client threads for the replay and the measurement; `train_top_k` kNN candidates +
    `train_deep` sampled from the kNN ranks below them down to `top_k` + `train_random` random products per
    sampled training query; `epochs`, `learning_rate` of the fine-tune.
    Ports: 0 = pick a free port; a fixed port that is busy stops the demo with a message.
    """

    limit: int | None = None
    queries: int = 900
    test_share: float = 1 / 3
    seed: int = 42
    out: Path = Path("reports/demo")
    work: Path = Path("var/demo")
    alias: str | None = None
    catalog: str = "myntra"
    top_k: int = 50
    top_n: int = 10
    concurrency: int = 3
    train_top_k: int = 20
    train_random: int = 5
    train_deep: int = 10
    max_train_queries: int | None = None
    epochs: int = 3
    learning_rate: float = 5e-5
    grpc_port: int = 50051
    metrics_port: int = 9464
    judge_port: int = 8088
    keep_running: bool = False
    examples: int = 3
    shopper_queries: Path | None = HAND_QUERIES_PATH
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class StepTime:
    name: str
    seconds: float
    note: str = ""


class Steps:
    """Runs named steps in order, printing `[i/n] name ...` and each step's elapsed time."""

    def __init__(self, names: list[str]):
        self.names = names
        self.times: list[StepTime] = []
        self.t0 = time.monotonic()

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        i = self.names.index(name) + 1
        print(f"\n[{i}/{len(self.names)}] {name} ...", flush=True)
        t = time.monotonic()
        result = fn()
        note = result.get("note", "") if isinstance(result, dict) else ""
        dt = time.monotonic() - t
        self.times.append(StepTime(name, dt, note))
        print(f"[{i}/{len(self.names)}] {name} done in {dt:.1f} s{' (' + note + ')' if note else ''}", flush=True)
        return result

    @property
    def total(self) -> float:
        return time.monotonic() - self.t0

    def table(self) -> str:
        rows = [f"  {st.name:<11} {st.seconds:8.1f} s  {st.note}" for st in self.times]
        rows.append(f"  {'total':<11} {self.total:8.1f} s")
        return "\n".join(rows)


def log(msg: str) -> None:
    print(f"      {msg}", flush=True)


# ------------------------------------------------------------------------------------------ the run


class Demo:
    """State of one demo run: config, what it started (to stop it), and each step's results."""

    STEPS = ["opensearch", "index", "sidecar", "replay", "refresh", "measure", "report"]

    def __init__(self, cfg: DemoConfig):

        self.cfg = cfg
        self.os_settings = OpenSearchSettings()
        self.alias = cfg.alias or self.os_settings.index_alias
        self.work = cfg.work
        self.registry_dir = self.work / "models"
        self.query_log = self.work / "ubi_queries.jsonl"
        self.logs = self.work / "logs"
        self.started_node = False
        self.procs: list[Background] = []
        self.sidecar: Background | None = None
        self.judge: Background | None = None
        self.target = ""
        self.products: list = []
        self.queryset = None
        self.hand: HandQueries | None = None
        self.results: dict[str, Any] = {}

    # -- helpers
    def env(self, **extra: Any) -> dict[str, str]:
        """Environment of the demo's child processes: this one plus the demo's settings."""
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.update(
            {
                "OPENSEARCH_URL": self.os_settings.url,
                "OPENSEARCH_INDEX_ALIAS": self.alias,
                "FR_MODEL_REGISTRY_DIR": str(self.registry_dir.resolve()),
            }
        )
        env.update(self.cfg.extra_env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def onnx_gate(self, version: str | None) -> dict:
        """What the trained version's model card says about its ONNX variants: which serves and the held-out
        nDCG@10 of each (the quality gate, `labeling.export`); {} when unknown."""
        if not version:
            return {}
        for card in self.registry_dir.glob(f"*/{version}/card.json"):
            onnx = json.loads(card.read_text()).get("onnx") or {}
            ndcg = {n: a.get("ndcg10") for n, a in (onnx.get("agreement") or {}).items() if a.get("ndcg10") is not None}
            fp32 = next((a.get("ndcg10_fp32") for a in (onnx.get("agreement") or {}).values() if a.get("ndcg10_fp32")), None)
            if fp32 is not None:
                ndcg.setdefault("fp32", fp32)
            return {
                "serve": onnx.get("serve"),
                "refused": onnx.get("refused", {}),
                "heldout_ndcg10": ndcg,
                "judged_pairs": onnx.get("judged_pairs"),
            }
        return {}

    def write_serve_env(self) -> Path:
        """Write `<work>/serve.env`: the settings that make `fashion-rerank serve` (and `search`, `status`) use
        what the demo built (its OpenSearch, alias and model registry). Returns its path."""
        path = self.work / "serve.env"
        lines = [
            "# Written by `fashion-rerank demo`: serve the model it trained with",
            f"#   FASHION_RERANK_CONFIG={path} fashion-rerank serve",
            f"OPENSEARCH_URL={self.os_settings.url}",
            f"OPENSEARCH_INDEX_ALIAS={self.alias}",
            f"FR_MODEL_REGISTRY_DIR={self.registry_dir.resolve()}",
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def stop_all(self) -> None:
        """Stop what this run started (children first, then the OpenSearch node if the demo started it)."""
        for bg in reversed(self.procs):
            if bg.alive():
                log(f"stopping {bg.name} (pid {bg.proc.pid})")
            bg.stop()
        self.procs.clear()
        if self.started_node:
            from fashion_rerank import local_node

            log("stopping the local OpenSearch node the demo started")
            local_node.stop()
            self.started_node = False

    # -- preflight
    def preflight(self) -> None:

        cfg = self.cfg
        check_disk([self.work, cfg.out, cache_root()])
        cfg.grpc_port = claim_port(cfg.grpc_port, "sidecar's gRPC server", "--grpc-port")
        cfg.metrics_port = claim_port(cfg.metrics_port, "sidecar's Prometheus metrics", "--metrics-port")
        if not external_judge():
            cfg.judge_port = claim_port(cfg.judge_port, "reference judge server", "--judge-port")
        if cfg.shopper_queries:
            try:
                self.hand = read_hand_queries(cfg.shopper_queries)
            except (OSError, ValueError) as exc:
                raise DemoError(f"cannot read the hand-written shopper queries: {exc} (--shopper-queries)") from exc
            for why in self.hand.skipped:
                log(f"hand-written queries: skipped {why}")
        # state of the previous run: the registry must start empty so that "before" is the kNN order
        for sub in ("models", "judgments", "refresh", "logs"):
            shutil.rmtree(self.work / sub, ignore_errors=True)
        self.query_log.unlink(missing_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- 1. OpenSearch
    def step_opensearch(self) -> dict:

        url = self.os_settings.url
        client = make_client(self.os_settings, max_retries=0)
        try:
            info = client.info(request_timeout=5)
        except Exception:  # noqa: BLE001 - any failure means: nothing usable answers there
            info = None
        if info:
            plugins = {p.get("component") for p in client.cat.plugins(format="json")}
            if "opensearch-knn" not in plugins:
                raise DemoError(
                    f"the OpenSearch at {url} has no k-NN plugin (plugins: {sorted(plugins)}); install "
                    "opensearch-knn there, or unset OPENSEARCH_URL to use the local development node"
                )
            log(f"using OpenSearch {info['version']['number']} at {url}")
            return {"note": f"already running at {url}"}
        parsed = urlparse(url)
        if parsed.hostname not in ("localhost", "127.0.0.1") or parsed.scheme != "http":
            raise DemoError(
                f"OpenSearch at {url} (OPENSEARCH_URL) does not answer: check the URL, "
                "OPENSEARCH_USER/OPENSEARCH_PASSWORD and OPENSEARCH_VERIFY_CERTS/OPENSEARCH_CA_CERTS, "
                "or unset OPENSEARCH_URL to let the demo start a local node"
            )
        settings = NodeSettings()
        if parsed.port and parsed.port != settings.port:
            settings = NodeSettings(port=parsed.port)
        try:
            local_node._java_home(settings)  # fail before any download when no JDK is there
            log("no OpenSearch answers; starting the local node (first run downloads ~430 MB from Maven Central)")
            st = local_node.start(plugins="knn", settings=settings)
        except local_node.NodeError as exc:
            raise DemoError(
                f"the local OpenSearch node could not start:\n{exc}\n"
                "See `fashion-rerank opensearch status`, or point OPENSEARCH_URL at a running cluster"
            ) from exc
        self.started_node = True
        log(f"OpenSearch {st['version']} is {st['health']} at {st['url']}")
        return {"note": "started the local node"}

    # -- 2. index
    def step_index(self) -> dict:
        import torch

        torch.set_num_threads(ModelSettings().threads or cpu_quota())
        cfg = self.cfg
        self.products = list(open_catalog(cfg.catalog, limit=cfg.limit).products)
        client = make_client(self.os_settings)
        try:
            live = current_index(client, self.alias)
        except IndexLifecycleError as exc:
            raise DemoError(str(exc)) from exc
        meta = index_meta(client, live) if live else {}
        model_prefix = resolve_model_path(ModelSettings().bi_encoder) + "#"
        same = (
            bool(meta.get("complete"))
            and meta.get("catalog") == cfg.catalog
            and meta.get("documents") == len(self.products)
            and str(meta.get("model", "")).startswith(model_prefix)
        )
        try:
            if same:
                log(
                    f"alias {self.alias!r} already holds {len(self.products)} products of {cfg.catalog!r} embedded "
                    f"with this model ({live}); checking them in place (--incremental)"
                )
            else:
                log(f"indexing {len(self.products)} products of {cfg.catalog!r} into a new index behind alias {self.alias!r}")
            summary = run_index(cfg.catalog, limit=cfg.limit, incremental=same, alias=self.alias, client=client)
        except (IndexLifecycleError, FileNotFoundError, ValueError) as exc:
            raise DemoError(f"indexing failed: {exc}") from exc
        for line in summary.format().splitlines():
            log(line)
        if summary.indexed + summary.unchanged == 0:
            raise DemoError("nothing was indexed; see the summary above")
        self.results["index"] = summary.to_dict()
        note = (
            f"{summary.unchanged} unchanged, {summary.indexed} updated"
            if summary.mode == "incremental"
            else f"{summary.indexed} products, {summary.products_per_s:.0f}/s"
        )
        return {"note": note}

    # -- 3. sidecar
    def step_sidecar(self) -> dict:
        cfg = self.cfg
        self.target = f"127.0.0.1:{cfg.grpc_port}"
        env = self.env(
            FR_SERVE_GRPC_HOST="127.0.0.1",
            FR_SERVE_GRPC_PORT=cfg.grpc_port,
            FR_SERVE_METRICS_PORT=cfg.metrics_port,
            FR_SERVE_HTTP_PORT=-1,
            FR_SERVE_QUERYLOG_SAMPLE_RATE=1.0,
            FR_SERVE_QUERYLOG_PATH=self.query_log.resolve(),
            FR_SERVE_QUERYLOG_INDEX="",
            FR_SERVE_REGISTRY_POLL_S=1.0,
            # the demo measures reranking, so give it time on a busy 2-core machine instead of failing open
            FR_SERVE_RERANK_BUDGET_MS=60000,
            FR_SERVE_KNN_TIMEOUT_S=30,
        )
        self.sidecar = Background("sidecar", cli_cmd("serve"), self.logs / "sidecar.log", env)
        self.procs.append(self.sidecar)
        log(
            f"started `fashion-rerank serve` (pid {self.sidecar.proc.pid}) on {self.target}, metrics on "
            f"http://127.0.0.1:{cfg.metrics_port}/metrics, log {self.sidecar.log_path}"
        )
        wait_serving(self.target, self.sidecar, timeout_s=240)
        log("gRPC health: SERVING")
        return {"note": f"serving on {self.target}"}

    # -- 4. replay
    def step_replay(self) -> dict:

        cfg = self.cfg
        self.queryset = generate_queries(
            self.products,
            n_distinct=cfg.queries,
            test_share=cfg.test_share,
            seed=cfg.seed,
            exclude=self.hand.texts() if self.hand else (),
        )
        qs = self.queryset
        stream = qs.stream("train")
        s = qs.summary()
        log(
            f"generated {s['distinct']} distinct shopper queries (seed {qs.seed}): {s['train']} train, {s['test']} held out, "
            f"{s['typos']} with typos; head query {s['head_query']['text']!r} x{s['head_query']['count']}"
        )
        log(f"replaying {len(stream)} Search requests (top_k {cfg.top_k}, top_n {cfg.top_n}) at concurrency {cfg.concurrency}")
        calls = search_many(self.target, stream, cfg.top_k, cfg.top_n, cfg.concurrency, label="replay")
        reranked = sum(c["reranked"] for c in calls if c["ok"])
        errors = [c for c in calls if not c["ok"]]
        if len(errors) > len(calls) * 0.05:
            raise DemoError(
                f"{len(errors)} of {len(calls)} Search calls failed, e.g. {errors[0]['error']}; "
                f"sidecar log: {self.sidecar.log_path}"
            )
        lat = [c["ms"] for c in calls if c["ok"]]
        logged = wait_log_lines(self.query_log, len(calls) - len(errors), timeout_s=30)
        self.results["replay"] = {
            "requests": len(calls),
            "errors": len(errors),
            "reranked": reranked,
            "latency_ms": lat,
            "logged": logged,
        }
        log(
            f"{len(calls) - len(errors)} ok ({len(errors)} failed, {reranked} reranked: no model yet), "
            f"p50 {percentile(lat, 50):.0f} ms, p95 {percentile(lat, 95):.0f} ms; {logged} queries in {self.query_log}"
        )
        return {"note": f"{len(calls)} requests, {logged} logged"}

    # -- 5. refresh
    def judge_settings(self, judgments_path: Path):
        """LabelSettings for grading through the demo's judge (the reference judge unless external_judge())."""

        kw: dict[str, Any] = {"judgments_path": judgments_path}
        if not external_judge():
            kw.update(base_url=self.judge_url, api_key="reference-judge-needs-no-key", judge_model=REFERENCE_JUDGE_MODEL)
        return LabelSettings(**kw)

    def start_judge(self) -> None:
        """Start the reference judge server (unless OPENAI_BASE_URL/OPENAI_API_KEY name a real LLM)."""
        if external_judge():
            from fashion_rerank.settings import LabelSettings

            s = LabelSettings()
            if s.is_reference_judge():
                raise DemoError(
                    "OPENAI_BASE_URL and OPENAI_API_KEY are set, so the demo grades with that LLM: set "
                    "FR_LABEL_JUDGE_MODEL to its model name (e.g. gpt-4o-mini)"
                )
            self.judge_url = os.environ["OPENAI_BASE_URL"]
            log(f"grading with the LLM {s.judge_model!r} at {self.judge_url} (OPENAI_BASE_URL), not the reference judge")
            return
        port = self.cfg.judge_port
        self.judge_url = f"http://127.0.0.1:{port}/v1"
        self.judge = Background(
            "reference judge",
            cli_cmd("judge", "serve", "--host", "127.0.0.1", "--port", str(port)),
            self.logs / "judge.log",
            self.env(FR_JUDGE_PORT=port, FR_JUDGE_HOST="127.0.0.1"),
        )
        self.procs.append(self.judge)
        wait_http(f"http://127.0.0.1:{port}/health", self.judge, timeout_s=60)
        log(f"reference rubric judge (deterministic rules, NOT an LLM) at {self.judge_url} (pid {self.judge.proc.pid})")

    def step_refresh(self) -> dict:
        cfg = self.cfg
        self.start_judge()
        refresh_dir = self.work / "refresh"
        judgments = self.work / "judgments" / "judgments.jsonl"
        n_queries = len(self.queryset.train) if cfg.max_train_queries is None else cfg.max_train_queries
        env = self.env(
            FR_LABEL_QUERY_LOG=self.query_log.resolve(),
            FR_LABEL_JUDGMENTS_PATH=judgments.resolve(),
            FR_LABEL_REPORTS_DIR=refresh_dir.resolve(),
            FR_LABEL_QUERIES_PER_RUN=n_queries,
            FR_LABEL_TOP_K=cfg.train_top_k,
            FR_LABEL_RANDOM_EXTRAS=cfg.train_random,
            FR_LABEL_DEEP_EXTRAS=cfg.train_deep,
            FR_LABEL_DEEP_DEPTH=cfg.top_k,
            FR_LABEL_EPOCHS=cfg.epochs,
            FR_LABEL_LEARNING_RATE=cfg.learning_rate,
            FR_LABEL_SEED=cfg.seed,
            FR_LABEL_SAMPLE_SEED=cfg.seed,
        )
        if not external_judge():
            env.update(
                FR_LABEL_BASE_URL=self.judge_url,
                FR_LABEL_API_KEY="reference-judge-needs-no-key",
                FR_LABEL_JUDGE_MODEL=REFERENCE_JUDGE_MODEL,
            )
        cmd = cli_cmd(
            "refresh",
            "--registry",
            str(self.registry_dir.resolve()),
            "--queries",
            str(n_queries),
            "--query-log",
            str(self.query_log.resolve()),
            "--judgments",
            str(judgments.resolve()),
            "--reports-dir",
            str(refresh_dir.resolve()),
            "--alias",
            self.alias,
        )
        log(
            f"running `fashion-rerank refresh` on the {n_queries} distinct logged queries (pools: kNN top "
            f"{cfg.train_top_k} + {cfg.train_deep} of ranks {cfg.train_top_k + 1}-{cfg.top_k} + {cfg.train_random} random; "
            f"{cfg.epochs} epochs, lr {cfg.learning_rate}); "
            f"output also in {self.logs / 'refresh.log'}"
        )
        t = time.monotonic()
        rc = run_streaming(cmd, env, self.logs / "refresh.log")
        refresh = load_refresh_summary(refresh_dir)
        refresh["exit_code"] = rc
        refresh["seconds"] = time.monotonic() - t
        self.results["refresh"] = refresh
        if rc not in (0, 3) or refresh.get("status") == "error":
            raise DemoError(
                f"`fashion-rerank refresh` failed (exit {rc}): {refresh.get('error') or refresh.get('reason')}; "
                f"see {self.logs / 'refresh.log'}"
            )
        promoted = refresh.get("promoted_version")
        if promoted:
            log(f"promoted {promoted}")
        else:
            log(f"the promotion gate kept the serving model: {refresh.get('reason', 'see the refresh log')}")
        return {"note": f"promoted {promoted}" if promoted else "not promoted"}

    # -- 6. measure
    def step_measure(self) -> dict:

        cfg = self.cfg
        promoted = self.results["refresh"].get("promoted_version")
        if promoted:
            wait_model(self.target, promoted, self.sidecar, timeout_s=180)
            log(f"the sidecar serves {promoted}")
        test = [q.text for q in self.queryset.test]
        log(
            f"searching {len(test)} held-out queries (top_k {cfg.top_k}, all candidates returned) at concurrency {cfg.concurrency}"
        )
        calls = self._search_heldout(test, "held-out")
        hand_calls: list[dict] = []
        if self.hand:
            log(f"searching {len(self.hand.queries)} hand-written shopper queries ({self.hand.path})")
            hand_calls = self._search_heldout(self.hand.texts(), "hand-written")
        not_reranked = sum(not c["reranked"] for c in calls + hand_calls)
        if promoted and not_reranked:
            log(f"warning: {not_reranked} held-out searches came back in kNN order (fail-open)")

        # grade every candidate of every held-out query with the same judge, in a store of its own
        store_path = self.work / "judgments" / "heldout.jsonl"
        store = JudgmentStore(store_path)
        settings = self.judge_settings(store_path)
        requests, seen = [], set()
        for c in calls + hand_calls:
            nq = normalise_query(c["query"])
            for h in c["hits"]:
                text = rerank_text(Product.from_fields(h["product"], id=h["id"]))
                h["text"] = text
                key = (nq, h["id"])
                if key not in seen:
                    seen.add(key)
                    requests.append(
                        PairRequest(
                            query=nq,
                            product_id=h["id"],
                            text=text,
                            text_hash=text_hash(text),
                            split="heldout",
                            catalog=self.alias,
                            run_id="demo-heldout",
                        )
                    )
        log(f"grading {len(requests)} held-out (query, product) pairs with {settings.judge_model}")
        gs = grade_pairs(requests, settings=settings, store=store)
        for line in gs.lines():
            log(line)
        grades = {(j.query, j.product_id): j.grade for j in store.judgments(settings.judge_model) if j.labeled}
        self.results["measure"] = {
            "calls": calls,
            "hand_calls": hand_calls,
            "grades": grades,
            "grading": gs.to_dict(),
            "not_reranked": not_reranked,
            "judge_model": settings.judge_model,
            "reference_judge": settings.is_reference_judge(),
            "base_url": settings.base_url,
        }
        self.results["metrics"] = evaluate_heldout(calls, grades, seed=cfg.seed)
        self._log_metrics("generated", self.results["metrics"])
        if self.hand:
            hand = evaluate_heldout(hand_calls, grades, seed=cfg.seed)
            hand["by_kind"] = metrics_by_kind(hand["per_query"], self.hand.kind_of())
            hand["latency_ms"] = {
                "p50": percentile([c["ms"] for c in hand_calls], 50),
                "p95": percentile([c["ms"] for c in hand_calls], 95),
            }
            self.results["hand_metrics"] = hand
            self._log_metrics("hand-written", hand)
        return {"note": f"{len(test)} + {len(hand_calls)} queries, {len(requests)} pairs graded"}

    def _search_heldout(self, queries: list[str], label: str) -> list[dict]:
        """Search `queries` with every candidate returned (both orders); DemoError when any call fails."""
        cfg = self.cfg
        calls = search_many(self.target, queries, cfg.top_k, cfg.top_k, cfg.concurrency, label=label, keep_hits=True)
        bad = [c for c in calls if not c["ok"]]
        if bad:
            raise DemoError(
                f"{len(bad)} {label} Search calls failed, e.g. {bad[0]['error']}; sidecar log {self.sidecar.log_path}"
            )
        return calls

    @staticmethod
    def _log_metrics(name: str, m: dict) -> None:
        for sysname in ("knn", "reranked"):
            log(
                f"{name} {sysname:>8}: "
                + ", ".join(
                    f"{k} {m['systems'][sysname][k]['value']:.3f} [{m['systems'][sysname][k]['ci95'][0]:.3f}, "
                    f"{m['systems'][sysname][k]['ci95'][1]:.3f}]"
                    for k in METRIC_NAMES
                )
            )

    # -- 7. report
    def build_summary(self, steps: Steps) -> dict:
        """The summary.json dict (shape: demo.report)."""

        cfg = self.cfg
        m = self.results.get("metrics", {})
        meas = self.results.get("measure", {})
        refresh = self.results.get("refresh", {})
        replay = self.results.get("replay", {})
        calls = meas.get("calls", [])
        before_ms = replay.get("latency_ms", [])
        after_ms = [c["ms"] for c in calls if c["ok"]]
        systems = m.get("systems", {"knn": {}, "reranked": {}})
        for key, lat in (("knn", before_ms), ("reranked", after_ms)):
            systems.setdefault(key, {})["latency_ms"] = {
                "p50": percentile(lat, 50),
                "p95": percentile(lat, 95),
                "n": len(lat),
                "samples": [round(v, 2) for v in lat],
                "measured_on": "replayed training traffic, no model current"
                if key == "knn"
                else "held-out queries, promoted model current",
            }
        qsum = self.queryset.summary() if self.queryset else {}
        qsum.update(replayed_requests=replay.get("requests"), replay_errors=replay.get("errors"), logged=replay.get("logged"))
        model = dict(refresh.get("model", {}))
        model.setdefault("version", refresh.get("promoted_version"))
        model["promoted"] = bool(refresh.get("promoted_version"))
        model["onnx"] = self.onnx_gate(model.get("version"))
        model.setdefault("promotion_reason", refresh.get("reason", ""))
        judged_train = refresh.get("judged_pairs")
        judged_held = len(meas.get("grades", {}))
        grading = meas.get("grading", {})
        reference = meas.get("reference_judge", not external_judge())
        caveats = [
            "The reference judge's rubric reads the same structured attributes (product type, colour, gender, usage, "
            "season) that the query generator builds its queries from, so the task is easier and the labels cleaner "
            "than with real shoppers and an LLM judge: read the lift as a demonstration that the pipeline works, not "
            "as a forecast for production traffic."
            if reference
            else "Labels come from an LLM judge; its agreement with human relevance judgments was not measured here.",
            "The queries are generated from catalog vocabulary (seeded), not real shopper traffic.",
            f"Recall@10 is relative to the judged pool: only the top {cfg.top_k} kNN candidates of each held-out query "
            "were graded, so relevant products retrieval missed are not counted.",
            f"Latency is client-side wall time on this machine ({cpu_quota()} CPUs, shared with whatever else runs), "
            "including gRPC; before and after are different query sets (the replayed training traffic vs the held-out "
            f"queries) sent at the same concurrency ({cfg.concurrency}) with the same top_k ({cfg.top_k}).",
        ]
        if not model["promoted"]:
            caveats.insert(
                0,
                "The promotion gate did NOT promote the trained model, so the 'reranked' figures are the "
                "sidecar's kNN order: " + str(model.get("promotion_reason") or refresh.get("reason", "")),
            )
        if meas.get("not_reranked"):
            caveats.append(f"{meas['not_reranked']} held-out searches came back in kNN order (fail-open) and count as such.")
        index = self.results.get("index", {})
        return {
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} ({cpu_quota()} CPUs, Python {platform.python_version()})",
            "catalog": {
                "name": f"{cfg.catalog} (bundled Myntra Fashion Product Images)" if cfg.catalog == "myntra" else cfg.catalog,
                "products": len(self.products),
                "alias": self.alias,
                "index": index.get("index"),
                "index_mode": index.get("mode"),
                "opensearch_url": self.os_settings.url,
            },
            "queries": qsum,
            "judge": {
                "name": "fashion-rerank judge serve" if reference else "LLM judge (OPENAI_BASE_URL)",
                "model": meas.get("judge_model"),
                "reference_rubric": reference,
                "base_url": meas.get("base_url"),
                "prompt_version": refresh.get("prompt_version"),
            },
            "judged_pairs": {"train": judged_train, "held_out": judged_held, "total": (judged_train or 0) + judged_held},
            "model": model,
            "refresh": {k: v for k, v in refresh.items() if k not in ("model",)},
            "evaluation": {
                "queries": m.get("queries", len(calls)),
                "searched": len(calls),
                "queries_without_relevant": m.get("queries_without_relevant"),
                "candidates_per_query": cfg.top_k,
                "top_k": cfg.top_k,
                "top_n": cfg.top_n,
                "concurrency": cfg.concurrency,
                "relevant_grade": m.get("relevant_grade", 2),
                "bootstrap": m.get("bootstrap"),
                "grading": grading,
            },
            "systems": systems,
            "significance": m.get("significance", {}),
            "ideal": m.get("ideal", {}),
            "gap_closed": m.get("gap_closed"),
            "handwritten": self.hand_summary(),
            "examples": self.examples(),
            "steps": [asdict(st) for st in steps.times],
            "total_seconds": steps.total,
            "caveats": caveats,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "extra_env"},
        }

    def hand_summary(self) -> dict:
        """The hand-written held-out set's figures for summary.json ({} when the demo ran without one)."""
        h = self.results.get("hand_metrics")
        if not self.hand or not h:
            return {}
        return {
            "file": str(self.hand.path),
            "queries": len(self.hand.queries),
            "skipped_lines": self.hand.skipped,
            "evaluated": h["queries"],
            "queries_without_relevant": h["queries_without_relevant"],
            "systems": h["systems"],
            "significance": h["significance"],
            "ideal": h["ideal"],
            "gap_closed": h["gap_closed"],
            "by_kind": h["by_kind"],
            "latency_ms": h["latency_ms"],
            "per_query": h["per_query"],
        }

    def examples(self) -> list[dict]:
        """Top 5 before/after for the held-out queries at the 90th, 50th and 10th percentile of the nDCG@10 change
        (a fixed rule, so the examples show a gain, a typical query and the weakest case, not a hand-picked set)."""
        m = self.results.get("metrics", {})
        per_q = m.get("per_query", {})
        calls = {c["query"]: c for c in self.results.get("measure", {}).get("calls", [])}
        grades = self.results.get("measure", {}).get("grades", {})
        if not per_q:
            return []

        ranked = sorted(per_q, key=lambda q: (per_q[q]["reranked"] - per_q[q]["knn"], q), reverse=True)
        picks: list[str] = []
        for frac in (0.1, 0.5, 0.9):
            q = ranked[min(len(ranked) - 1, int(frac * (len(ranked) - 1)))]
            if q not in picks:
                picks.append(q)
        out = []
        for q in picks[: self.cfg.examples]:
            hits = calls[q]["hits"]
            nq = normalise_query(q)

            def row(h: dict, nq: str = nq) -> dict:
                p = h["product"]
                return {
                    "id": h["id"],
                    "title": p.get("title", ""),
                    "grade": grades.get((nq, h["id"])),
                    "knn_rank": h["retrieval_rank"],
                    "rerank_score": round(h["rerank_score"], 4),
                }

            knn = sorted(hits, key=lambda h: h["retrieval_rank"])[:5]
            rr = sorted(hits, key=lambda h: h["rank"])[:5]
            out.append({"query": q, "ndcg@10": per_q[q], "knn": [row(h) for h in knn], "reranked": [row(h) for h in rr]})
        return out

    def step_report(self, steps: Steps) -> dict:

        self.summary = self.build_summary(steps)
        self.paths = write_report(self.summary, self.cfg.out)
        return {"note": str(self.cfg.out)}


def run_demo(cfg: DemoConfig) -> dict:
    """Run every step (see the module docstring) and return the summary dict written to summary.json.

    Raises DemoError with a message that says what to do; stops what it started unless `cfg.keep_running`.
    """

    demo = Demo(cfg)
    steps = Steps(Demo.STEPS)
    print(
        f"fashion-rerank demo: catalog {cfg.catalog} ({'all products' if cfg.limit is None else f'first {cfg.limit} products'}), "
        f"{cfg.queries} generated queries, alias {demo.alias!r}, OpenSearch {demo.os_settings.url}",
        flush=True,
    )
    ok = False
    try:
        demo.preflight()
        steps.run("opensearch", demo.step_opensearch)
        steps.run("index", demo.step_index)
        steps.run("sidecar", demo.step_sidecar)
        steps.run("replay", demo.step_replay)
        steps.run("refresh", demo.step_refresh)
        steps.run("measure", demo.step_measure)
        steps.run("report", lambda: demo.step_report(steps))
        # the report step's own time and the final total go into the written files too
        demo.summary["steps"] = [asdict(st) for st in steps.times]
        demo.summary["total_seconds"] = steps.total
        demo.paths["report"].write_text(render_markdown(demo.summary, demo.paths["chart"].name))
        demo.paths["summary"].write_text(json.dumps(demo.summary, indent=2, default=str) + "\n")
        ok = True
    finally:
        if cfg.keep_running:
            left = [f"{bg.name} (pid {bg.proc.pid})" for bg in demo.procs if bg.alive()]
            if demo.started_node:
                left.append("local OpenSearch node (`fashion-rerank opensearch stop`)")
            if left:
                print(f"\nKEEP_RUNNING: left running: {', '.join(left)}; sidecar at {demo.target}", flush=True)
        else:
            demo.stop_all()
        print("\nstep times:\n" + steps.table(), flush=True)
    if ok:
        s = demo.summary
        sysm = s["systems"]
        print("\nheld-out queries        nDCG@10  MRR@10  Recall@10  Search p50/p95 ms")
        for key, label in (("knn", "kNN order"), ("reranked", "reranked")):
            x = sysm[key]
            print(
                f"  {label:<21} {x['ndcg@10']['value']:.3f}   {x['mrr@10']['value']:.3f}   {x['recall@10']['value']:.3f}"
                f"      {x['latency_ms']['p50'] or 0:.0f} / {x['latency_ms']['p95'] or 0:.0f}"
            )
        hw = s.get("handwritten") or {}
        if hw:
            print(f"hand-written queries ({hw['evaluated']} of {hw['queries']} with a relevant candidate)")
            for key, label in (("knn", "kNN order"), ("reranked", "reranked")):
                x = hw["systems"][key]
                print(f"  {label:<21} {x['ndcg@10']['value']:.3f}   {x['mrr@10']['value']:.3f}   {x['recall@10']['value']:.3f}")
        judge = "reference rubric judge (not an LLM)" if s["judge"]["reference_rubric"] else f"LLM {s['judge']['model']}"
        print(f"labels: {judge}; {s['judged_pairs']['total']} judged pairs; base model {s['model'].get('base_model')}")
        print(f"\nreport:  {demo.paths['report']}\nsummary: {demo.paths['summary']}\nchart:   {demo.paths['chart']}")
        env = demo.write_serve_env()
        print(f"\nserve the model the demo trained:  FASHION_RERANK_CONFIG={env} fashion-rerank serve")
        print("what runs, which model, which index:  fashion-rerank status")
    return demo.summary


# ---------------------------------------------------------------------------------------------- CLI


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    keep = bool(args.keep_running) or os.environ.get("KEEP_RUNNING", "") not in ("", "0", "false", "no")
    return DemoConfig(
        limit=args.limit,
        queries=args.queries,
        out=Path(args.out),
        keep_running=keep,
        alias=args.alias,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        judge_port=args.judge_port,
        epochs=args.epochs,
        seed=args.seed,
        work=Path(args.work),
        shopper_queries=_hand_path(getattr(args, "shopper_queries", None)),
    )


def _hand_path(value: str | None) -> Path | None:
    """--shopper-queries: None -> the bundled file, "none" -> no hand-written set, else that path."""
    if value is None:
        return HAND_QUERIES_PATH
    return None if value.strip().lower() == "none" else Path(value)
