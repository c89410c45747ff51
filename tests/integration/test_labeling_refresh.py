"""The whole labeling job on real catalog data (slow: it fine-tunes a cross-encoder on CPU).

Real parts only: the local OpenSearch node with 2,000 bundled Myntra products behind a unique alias, a
UBI-shaped query log of synthetic shopper traffic built from the catalog's vocabulary
(`demo.queries`), the reference judge over HTTP through the `openai` client, sentence-transformers
training from the packaged all-MiniLM-L6-v2 backbone, ir-measures, the model registry, and a running gRPC
sidecar that must pick the promoted model up without a restart.

Sizes (docs/reference/training-calibration.md#results: small or short runs lose to kNN): 160 sampled queries x
(top-20 kNN + 5 random) = 4,000 graded pairs; about 70 train queries give ~1,600 training pairs, trained for
2 epochs at lr 1e-4 (~100 optimizer steps; a trial on this catalog gave +0.046 test nDCG@10 over kNN with
1,386 pairs, +0.039 at lr 5e-5); about 40 dev and 50 test queries decide promotion and measure the lift. On 2 idle cores this takes a few minutes; on a loaded machine much longer.
"""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from test_labeling import drop_catalog, index_catalog, write_query_log

from fashion_rerank.settings import LabelSettings
from labeling.store import JudgmentStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # training on a shared 2-core machine

N_PRODUCTS = 2000
N_QUERIES = 160


def wait_until(pred, timeout: float, what: str, every: float = 0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            value = pred()
            if value:
                return value
        except grpc.RpcError as exc:  # no model loaded yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


@pytest.fixture(scope="module")
def refreshed(os_client, opensearch_url, tmp_path_factory):
    """Index, start a sidecar with an empty registry, then run one `refresh` against the reference judge."""
    from fashion_rerank.embedding import load_bi_encoder
    from fashion_rerank.registry import ModelRegistry
    from fashion_rerank.settings import OpenSearchSettings, ServeSettings
    from labeling.judge_server import ReferenceJudge
    from labeling.refresh import refresh
    from reranker.serve import Sidecar

    tmp = tmp_path_factory.mktemp("refresh")
    alias = f"t-labref-{uuid.uuid4().hex[:8]}"
    judge = ReferenceJudge().start()
    sidecar = None
    try:
        products = index_catalog(os_client, alias, N_PRODUCTS)
        log = tmp / "ubi_queries.jsonl"
        write_query_log(log, products, n_distinct=400, seed=11)
        registry = ModelRegistry(tmp / "models", "fashion-ce")
        sidecar = Sidecar(
            ServeSettings(
                grpc_port=0,
                metrics_port=-1,
                http_port=0,
                threads=1,
                registry_poll_s=0.2,
                querylog_path=None,
                querylog_index=None,
                grace_s=1.0,
                onnx_variant="fp32",  # compared with CrossEncoder.predict below: fp32 agrees within 1e-4
            ),
            registry,
            OpenSearchSettings(url=opensearch_url, index_alias=alias),
            encoder=load_bi_encoder(),
        )
        sidecar.start()
        assert sidecar.core.model_version is None  # nothing promoted yet
        settings = LabelSettings(
            base_url=judge.url,
            api_key="test",
            judgments_path=tmp / "judgments" / "judgments.jsonl",
            reports_dir=tmp / "reports",
            query_log=str(log),
            top_k=20,
            random_extras=5,
            deep_extras=0,  # pools of 25 (the deep sample is tested in test_labeling.py)
            dev_fraction=0.25,
            test_fraction=0.3,
            epochs=2,
            learning_rate=1e-4,
            promotion_margin=0.0,
            train_threads=1,  # 1 thread trains faster than 2 on a machine shared with other jobs
        )
        t0 = time.perf_counter()
        report = refresh(settings, client=os_client, alias=alias, n_queries=N_QUERIES, registry=registry)
        print(f"\nrefresh took {time.perf_counter() - t0:.0f} s\n" + report.markdown())
        yield SimpleNamespace(
            report=report,
            registry=registry,
            settings=settings,
            sidecar=sidecar,
            judge=judge,
            alias=alias,
            store=JudgmentStore(settings.judgments_path),
        )
    finally:
        if sidecar is not None:
            sidecar.stop(1.0)
        judge.stop()
        drop_catalog(os_client, alias)


def test_refresh_labels_trains_and_the_candidate_beats_knn_on_held_out_queries(refreshed):
    rep = refreshed.report
    assert rep.exit_code == 0 and rep.status == "promoted", rep.message
    lab = rep.labeling
    g = lab["grading"]
    assert lab["sampled"] == N_QUERIES and g["written"] == N_QUERIES * 25 and not g["not_graded"]
    print(f"grading: {g['pairs_per_s']:.1f} pairs/s (concurrency {refreshed.settings.concurrency})")
    store = refreshed.store
    splits = {}
    for j in store.judgments():  # a query lives in exactly one split
        assert splits.setdefault(j.query, j.split) == j.split
    cand = rep.candidate
    t = cand["training"]
    print(
        f"training: {t['pairs']} pairs x {t['epochs']} epochs in {t['seconds']} s = "
        f"{t['seconds_per_1k_pairs_epoch']} s per 1,000 pairs per epoch"
    )
    assert t["pairs"] >= 1200
    test = cand["evaluation"]["test"]["systems"]
    knn, new = test["knn"]["metrics"], test["candidate"]["metrics"]
    print(
        f"held-out test: kNN nDCG@10 {knn['nDCG@10']:.4f} MRR@10 {knn['MRR@10']:.4f} Recall@10 {knn['Recall@10']:.4f}"
        f" | trained {new['nDCG@10']:.4f} / {new['MRR@10']:.4f} / {new['Recall@10']:.4f}"
    )
    assert new["nDCG@10"] > knn["nDCG@10"]
    assert cand["evaluation"]["test"]["queries"] >= 30
    # the version is in the registry with its model card
    version = cand["version"]
    assert refreshed.registry.current() == version
    card = refreshed.registry.card(version)
    assert card["base_model"]["id"] == "packaged:all-MiniLM-L6-v2" and "fresh 1-label head" in card["base_model"]["kind"]
    assert card["judgments"]["count"] == t["pairs"] and card["judgments"]["judge_model"] == "reference-rubric-v2"
    assert card["judgments"]["prompt_version"] == "fashion-relevance-v1" and "NOT an LLM" in card["judgments"]["label_source"]
    assert card["training"]["learning_rate"] == 1e-4 and card["training"]["epochs"] == 2
    assert card["evaluation"]["test"]["systems"]["candidate"]["metrics"]["nDCG@10"] == new["nDCG@10"]
    md = (refreshed.registry.path(version) / "model_card.md").read_text()
    assert "reference rubric" in md and "nDCG@10" in md
    report_md = open(rep.paths["markdown"]).read()
    assert "reference rubric judge" in report_md and "NOT an LLM" in report_md
    assert json.loads(open(rep.paths["json"]).read())["status"] == "promoted"


def test_the_running_sidecar_serves_the_promoted_model_without_restart(refreshed):
    from sentence_transformers.cross_encoder import CrossEncoder

    from reranker.client import RerankerClient

    version = refreshed.report.candidate["version"]
    pool = refreshed.store.pools()[0]
    texts = [c.text for c in pool.candidates[:10]]
    with RerankerClient(refreshed.sidecar.target, timeout=60) as client:
        resp = wait_until(
            lambda: (r := client.rerank(pool.query, texts)) and r.model_version.startswith(version) and r,
            timeout=60,
            what=f"the sidecar to serve {version}",
        )
    expected = CrossEncoder(str(refreshed.registry.path(version))).predict([(pool.query, t) for t in texts])
    got = np.zeros(len(texts))
    for r in resp.results:
        got[r.index] = r.score
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_the_gate_refuses_a_worse_and_a_collapsed_real_model(refreshed, tmp_path):
    import transformers
    from sentence_transformers.cross_encoder import CrossEncoder

    from fashion_rerank.settings import resolve_model_path
    from labeling.promote import gate
    from labeling.train import evaluate_version

    s, reg = refreshed.settings, refreshed.registry
    serving = reg.current()
    # worse: the packaged backbone with an untrained head (the calibration puts it ~8% below kNN order)
    transformers.set_seed(0)
    fresh = CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1)
    fresh.save_pretrained(str(tmp_path / "fresh"))
    dev, test = evaluate_version(refreshed.store, s, tmp_path / "fresh", reg)
    worse = gate(dev, test, s)
    assert not worse.promote and worse.baseline == f"serving {serving}"
    assert any("dev nDCG@10" in r for r in worse.reasons), worse.summary()
    # collapsed: the trained model with its classifier zeroed gives every pair the same score
    collapsed = CrossEncoder(str(reg.path(serving)))
    collapsed.model.classifier.weight.data.zero_()
    collapsed.save_pretrained(str(tmp_path / "collapsed"))
    dev, test = evaluate_version(refreshed.store, s, tmp_path / "collapsed", reg)
    flat = gate(dev, test, s)
    assert not flat.promote and any("score std" in r for r in flat.reasons), flat.summary()
    assert reg.current() == serving  # nothing was promoted


def test_train_and_evaluate_commands(refreshed, capsys):
    from cli.main import main

    s, reg = refreshed.settings, refreshed.registry
    serving = reg.current()
    before = set(reg.versions())
    common = ["--judgments", str(s.judgments_path), "--registry", str(reg.root), "--model-name", reg.name]
    # a very short run (a tenth of an epoch): a complete new version with a model card, never promoted by `train`
    assert main(["train", *common, "--epochs", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "s per 1,000 pairs per epoch" in out and "not promoted" in out
    (new,) = set(reg.versions()) - before
    assert reg.current() == serving and reg.card(new)["training"]["epochs"] == 0.1
    assert main(["evaluate", *common, "--model", new]) == 0
    out = capsys.readouterr().out
    assert f"serving ({serving})" in out and f"candidate ({new})" in out and "knn" in out and "grade >= 2" in out
