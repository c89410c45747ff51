"""What `fashion-rerank demo` measures: held-out metrics of kNN order vs the reranked order (labeling.evaluate),
and the condensed `fashion-rerank refresh` report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from demo.support import DemoError
from labeling.evaluate import RELEVANT_GRADE, bootstrap_ci, measure, paired_test
from labeling.sampling import normalise_query


def load_refresh_summary(refresh_dir: Path) -> dict:
    """The newest `refresh-*.json` report of `fashion-rerank refresh` (labeling.refresh.RefreshReport) in
    `refresh_dir`, condensed for the demo summary; {"error": ...} when there is none."""
    reports = sorted(refresh_dir.glob("refresh-*.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return {"status": "error", "error": f"no refresh report was written to {refresh_dir}"}
    rep = json.loads(reports[-1].read_text())
    lab = rep.get("labeling") or {}
    grading = lab.get("grading") or {}
    cand = rep.get("candidate") or {}
    train = cand.get("training") or {}
    out: dict[str, Any] = {
        "status": rep.get("status"),
        "reason": rep.get("message"),
        "report": rep.get("paths", {}).get("markdown"),
        "error": rep.get("message") if rep.get("status") == "error" else None,
        "promoted_version": rep.get("serving_after") if rep.get("status") == "promoted" else None,
        "prompt_version": (rep.get("judge") or {}).get("prompt_version"),
        "label_source": (rep.get("judge") or {}).get("label_source"),
        "logged_queries": lab.get("log_records"),
        "distinct_queries": lab.get("distinct_queries"),
        "sampled_queries": lab.get("sampled"),
        "sampled_by_split": lab.get("by_split"),
        "judged_pairs": grading.get("written"),
        "grading_pairs_per_s": grading.get("pairs_per_s"),
        "refresh_seconds": rep.get("seconds"),
    }
    if cand:
        out["model"] = {
            "version": cand.get("version"),
            "base_model": train.get("base_model"),
            "base_model_kind": train.get("base_model_kind"),
            "train_pairs": train.get("pairs"),
            "train_queries": train.get("queries"),
            "grades": train.get("grades"),
            "epochs": train.get("epochs"),
            "learning_rate": train.get("learning_rate"),
            "batch_size": train.get("batch_size"),
            "loss": train.get("loss"),
            "max_length": train.get("max_length"),
            "training_time_s": train.get("seconds"),
            "pairs_per_s": train.get("pairs_per_s"),
            "seconds_per_1k_pairs_epoch": train.get("seconds_per_1k_pairs_epoch"),
            "threads": train.get("threads"),
        }
        out["gate"] = cand.get("gate")
        out["refresh_evaluation"] = {
            split: {
                name: {"model": sysd.get("model"), **{k: v for k, v in (sysd.get("metrics") or {}).items()}}
                for name, sysd in (ev.get("systems") or {}).items()
            }
            | {"queries": ev.get("queries")}
            for split, ev in (cand.get("evaluation") or {}).items()
        }
    return out


#: metric key in summary.json -> name in labeling.evaluate.MEASURES
METRIC_NAMES = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@10": "Recall@10"}


def evaluate_heldout(calls: list[dict], grades: dict[tuple[str, str], int], seed: int = 0) -> dict:
    """kNN order vs reranked order of the held-out Search calls, with labeling.evaluate's metrics.

    Args:
        calls: `search_many(..., keep_hits=True)` results; each hit carries its kNN rank (`retrieval_rank`)
            and its rank after reranking (`rank`), so one call gives both orders of the same candidates.
        grades: {(normalised query, product id): grade 0-3} from the judge.
    Returns:
        {"systems": {"knn"|"reranked": {metric: {"value", "ci95": [lo, hi]}}}, "significance": {metric: {...}},
         "ideal": {"ndcg@10": v}, "gap_closed": share, "per_query": {query: {"knn", "reranked"}} (nDCG@10),
         "queries", "queries_without_relevant", "relevant_grade", "bootstrap"}.
        Queries without any product graded above 0 are left out (nDCG undefined), as in labeling.evaluate.
    """

    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, dict[str, dict[str, float]]] = {"knn": {}, "reranked": {}}
    for c in calls:
        q, nq = c["query"], normalise_query(c["query"])
        rel = {h["id"]: grades[(nq, h["id"])] for h in c["hits"] if (nq, h["id"]) in grades}
        if not any(g > 0 for g in rel.values()):
            continue
        qrels[q] = rel
        n = len(c["hits"]) + 1
        runs["knn"][q] = {h["id"]: float(n - h["retrieval_rank"]) for h in c["hits"]}
        runs["reranked"][q] = {h["id"]: float(n - h["rank"]) for h in c["hits"]}
    ideal_run = {
        q: {pid: g - 1e-6 * i for i, (pid, g) in enumerate(sorted(r.items(), key=lambda x: -x[1]))} for q, r in qrels.items()
    }
    out: dict[str, Any] = {
        "systems": {},
        "significance": {},
        "queries": len(qrels),
        "queries_without_relevant": len(calls) - len(qrels),
        "relevant_grade": RELEVANT_GRADE,
        "bootstrap": "percentile bootstrap over queries, 2000 resamples (labeling.evaluate.bootstrap_ci)",
    }
    if not qrels:
        raise DemoError("no held-out query has a product graded above 0: nothing to measure")
    per: dict[str, dict[str, dict[str, float]]] = {}
    for name, run in runs.items():
        agg, per[name] = measure(qrels, run)
        out["systems"][name] = {
            key: {"value": agg[m], "ci95": list(bootstrap_ci(list(per[name][m].values()), seed=seed))}
            for key, m in METRIC_NAMES.items()
        }
        out["systems"][name]["judged@10"] = {"value": agg["Judged@10"]}
    for key, m in METRIC_NAMES.items():
        a, b = per["knn"][m], per["reranked"][m]
        t = paired_test(a, b)
        diffs = [b[q] - a[q] for q in sorted(set(a) & set(b))]
        out["significance"][key] = {
            "test": "paired t-test (scipy ttest_rel)",
            "p_value": t["p_ttest"],
            "p_wilcoxon": t["p_wilcoxon"],
            "delta": t["mean_diff"],
            "delta_ci95": list(bootstrap_ci(diffs, seed=seed)),
            "n": t["n"],
        }
    ideal_agg, _ = measure(qrels, ideal_run)
    out["ideal"] = {"ndcg@10": ideal_agg["nDCG@10"]}
    k, r, i = (out["systems"]["knn"]["ndcg@10"]["value"], out["systems"]["reranked"]["ndcg@10"]["value"], ideal_agg["nDCG@10"])
    out["gap_closed"] = (r - k) / (i - k) if i - k > 1e-9 else None
    out["per_query"] = {
        q: {"knn": per["knn"]["nDCG@10"][q], "reranked": per["reranked"]["nDCG@10"][q]}
        for q in qrels
        if q in per["knn"]["nDCG@10"]
    }
    return out


def metrics_by_kind(per_query: dict[str, dict[str, float]], kind_of: dict[str, str]) -> dict[str, dict]:
    """Mean nDCG@10 of kNN order and of the reranked order per kind of query (e.g. the hand-written set's
    occasion / gift / brand ... kinds).

    Args:
        per_query: `evaluate_heldout(...)["per_query"]`: {query: {"knn": nDCG@10, "reranked": nDCG@10}}.
        kind_of: {query: kind}; queries without a kind count as "other".
    Returns:
        {kind: {"queries": n, "knn": mean, "reranked": mean, "delta": reranked - knn, "wins": n reranked > kNN,
        "losses": n reranked < kNN}}, kinds in first-seen order of `kind_of`.
    """
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in dict.fromkeys(kind_of.values())}
    for q, v in per_query.items():
        rows.setdefault(kind_of.get(q, "other"), []).append(v)
    out: dict[str, dict] = {}
    for kind, vs in rows.items():
        if not vs:
            continue
        knn = sum(v["knn"] for v in vs) / len(vs)
        rr = sum(v["reranked"] for v in vs) / len(vs)
        out[kind] = {
            "queries": len(vs),
            "knn": knn,
            "reranked": rr,
            "delta": rr - knn,
            "wins": sum(v["reranked"] > v["knn"] + 1e-9 for v in vs),
            "losses": sum(v["reranked"] < v["knn"] - 1e-9 for v in vs),
        }
    return out
