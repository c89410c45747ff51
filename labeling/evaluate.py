"""`fashion-rerank evaluate`: graded ranking metrics on held-out queries for kNN order and cross-encoders.

Metrics (ir-measures, which runs trec_eval through pytrec_eval):
    nDCG@10     graded: the 0-3 grades are the gains (trec_eval's linear gain, log2 discount)
    MRR@10      ir-measures `RR(rel=2)@10`: reciprocal rank of the first product graded >= 2 ("good" or "exact")
    Recall@10   ir-measures `R(rel=2)@10`: share of the query's products graded >= 2 found in the top 10
    Judged@10   share of the top 10 that has a (labeled) judgment: label coverage
"Relevant" for MRR and Recall means grade >= 2. Queries with no product graded above 0 are left out (their
ideal DCG is 0, so nDCG is undefined); the count is reported.

Systems: "knn" (retrieval order of the pool), "serving" (the registry's current version, if any) and
"candidate" (a trained folder). Every model reranks the same kNN candidates of each query, the texts being
`rerank_text` (stored with the pool). Per-query nDCG@10 feeds a paired t-test (scipy `ttest_rel`) and a
Wilcoxon signed-rank test (scipy `wilcoxon`) between two systems, and a percentile bootstrap gives 95%
confidence intervals of a mean (`bootstrap_ci`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from labeling.dataset import EvalQuery

#: Reported name -> ir-measures measure string.
MEASURES: dict[str, str] = {"nDCG@10": "nDCG@10", "MRR@10": "RR(rel=2)@10", "Recall@10": "R(rel=2)@10", "Judged@10": "Judged@10"}
RELEVANT_GRADE = 2

Scorer = Callable[[Sequence[tuple[str, str]]], np.ndarray]


def _measures():
    import ir_measures

    return {name: ir_measures.parse_measure(m) for name, m in MEASURES.items()}


def qrels_of(queries: Sequence[EvalQuery]) -> dict[str, dict[str, int]]:
    """{query: {product_id: grade}} (ir-measures dict-of-dicts qrels)."""
    return {q.query: dict(q.qrels) for q in queries}


def knn_run(queries: Sequence[EvalQuery]) -> dict[str, dict[str, float]]:
    """The retrieval order as a run: the k-th candidate scores n - k (distinct scores, no tie-breaking by id)."""
    return {q.query: {c.product_id: float(len(q.candidates) - i) for i, c in enumerate(q.candidates)} for q in queries}


def model_run(queries: Sequence[EvalQuery], scorer: Scorer) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """Score every (query, candidate text) with `scorer`; returns (run, all scores).

    Equal scores are broken by kNN order (a small decreasing epsilon), so a constant model reproduces kNN
    order instead of trec_eval's tie-break by document id.
    """
    pairs = [(q.query, c.text) for q in queries for c in q.candidates]
    scores = np.asarray(scorer(pairs), dtype=np.float64).ravel() if pairs else np.zeros(0)
    if len(scores) != len(pairs):
        raise ValueError(f"scorer returned {len(scores)} scores for {len(pairs)} pairs")
    run: dict[str, dict[str, float]] = {}
    i = 0
    for q in queries:
        n = len(q.candidates)
        run[q.query] = {c.product_id: float(scores[i + k]) - 1e-9 * k for k, c in enumerate(q.candidates)}
        i += n
    return run, scores


def cross_encoder_scorer(
    model_path: str | Path, batch_size: int = 64, max_length: int | None = None, device: str = "cpu"
) -> Scorer:
    """A scorer backed by a sentence-transformers CrossEncoder folder on torch `device` ("cpu", "cuda").

    Returns served scores: the logits from `predict` with an identity activation, then the activation the folder
    declares as the sidecar applies it (`fashion_rerank.scores.declared_activation`; e.g. sigmoid, in [0, 1],
    or identity, the logit). So the promotion gate's figures (nDCG, the score-spread floor) are measured in the
    space the sidecar serves. Raises ValueError for a declared activation the sidecar cannot apply.
    """
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from fashion_rerank.scores import declared_activation

    activation = declared_activation(model_path)
    model = CrossEncoder(str(model_path), max_length=max_length, device=device, activation_fn=torch.nn.Identity())

    def score(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        logits = model.predict(list(pairs), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(activation(np.asarray(logits, dtype=np.float32)), dtype=np.float64)

    return score


def measure(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean per metric, per-query values per metric) over the queries of `run` that are in `qrels`."""
    import ir_measures

    ms = _measures()
    per: dict[str, dict[str, float]] = {name: {} for name in ms}
    by_measure = {m: name for name, m in ms.items()}
    for r in ir_measures.iter_calc(list(ms.values()), qrels, run):
        per[by_measure[r.measure]][r.query_id] = float(r.value)
    agg = {name: float(np.mean(list(v.values()))) if v else 0.0 for name, v in per.items()}
    return agg, per


def paired_test(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Paired tests of per-query values b vs a over their common queries.

    Returns {"n", "mean_a", "mean_b", "mean_diff" (b - a), "t", "p_ttest" (scipy ttest_rel, two-sided),
    "w", "p_wilcoxon" (scipy wilcoxon signed-rank, two-sided; None when every difference is 0)}.
    """
    from scipy import stats

    keys = sorted(set(a) & set(b))
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    out: dict[str, Any] = {
        "n": len(keys),
        "mean_a": float(x.mean()) if keys else None,
        "mean_b": float(y.mean()) if keys else None,
        "mean_diff": float((y - x).mean()) if keys else None,
        "t": None,
        "p_ttest": None,
        "w": None,
        "p_wilcoxon": None,
    }
    if len(keys) < 2:
        return out
    d = y - x
    if np.allclose(d, 0):
        out.update(t=0.0, p_ttest=1.0)
        return out
    t = stats.ttest_rel(y, x)
    out.update(t=_finite(t.statistic), p_ttest=_finite(t.pvalue))
    try:
        w = stats.wilcoxon(y, x)
        out.update(w=_finite(w.statistic), p_wilcoxon=_finite(w.pvalue))
    except ValueError:
        pass
    return out


def _finite(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of `values` (resampling queries with replacement).

    Returns (low, high); (nan, nan) for no values.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass
class SystemEval:
    """One system on one split: mean metrics, per-query nDCG@10, a 95% bootstrap CI of nDCG@10, score spread."""

    name: str
    model: str | None
    metrics: dict[str, float]
    ndcg_per_query: dict[str, float] = field(repr=False)
    ndcg_ci95: tuple[float, float] = (float("nan"), float("nan"))
    score_std: float | None = None


@dataclass
class Evaluation:
    """Systems compared on one split. `significance[name]` compares that system with "knn" and, for
    "candidate", `significance["candidate_vs_serving"]` with the serving model."""

    split: str
    queries: int
    queries_without_relevant: int
    systems: dict[str, SystemEval]
    significance: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s in d["systems"].values():
            s.pop("ndcg_per_query", None)
        return d

    def table(self) -> str:
        """A Markdown table of the systems' metrics."""
        names = list(MEASURES)
        rows = [
            f"| system ({self.split}, {self.queries} queries) | " + " | ".join(names) + " | nDCG@10 95% CI |",
            "|---|" + "---|" * (len(names) + 1),
        ]
        for s in self.systems.values():
            lo, hi = s.ndcg_ci95
            label = s.name + (f" ({s.model})" if s.model else "")
            rows.append(f"| {label} | " + " | ".join(f"{s.metrics[n]:.4f}" for n in names) + f" | {lo:.3f}-{hi:.3f} |")
        return "\n".join(rows)


def evaluate_queries(
    queries: Sequence[EvalQuery], systems: dict[str, tuple[str | None, Scorer | None]], split: str = "test"
) -> Evaluation:
    """Evaluate systems on `queries`.

    Args:
        queries: held-out queries with kNN candidates and qrels (`labeling.dataset.eval_queries`).
        systems: name -> (model label, scorer); a None scorer means kNN order.
    Returns:
        Evaluation with metrics, bootstrap CIs and paired tests vs "knn" (and candidate vs serving).
    """
    usable = [q for q in queries if any(g > 0 for g in q.qrels.values()) and q.candidates]
    qrels = qrels_of(usable)
    out: dict[str, SystemEval] = {}
    for name, (label, scorer) in systems.items():
        if scorer is None:
            run, std = knn_run(usable), None
        else:
            run, scores = model_run(usable, scorer)
            std = float(np.std(scores)) if scores.size else 0.0
        agg, per = measure(qrels, run)
        nd = per["nDCG@10"]
        out[name] = SystemEval(
            name=name, model=label, metrics=agg, ndcg_per_query=nd, ndcg_ci95=bootstrap_ci(list(nd.values())), score_std=std
        )
    ev = Evaluation(split=split, queries=len(usable), queries_without_relevant=len(queries) - len(usable), systems=out)
    if "knn" in out:
        for name, s in out.items():
            if name != "knn":
                ev.significance[f"{name}_vs_knn"] = paired_test(out["knn"].ndcg_per_query, s.ndcg_per_query)
    if "candidate" in out and "serving" in out:
        ev.significance["candidate_vs_serving"] = paired_test(out["serving"].ndcg_per_query, out["candidate"].ndcg_per_query)
    return ev
