"""The label-quality experiment: does a small set of judge grades beat a large set of implicit labels?

The study behind fashion-rerank (MODA, on the H&M catalog) found that a MiniLM-L6 cross-encoder fine-tuned on
~10,000 LLM-graded pairs beat the same model fine-tuned on 1.5 million purchase labels. `run_label_quality`
lets a team ask the same question of its own catalog and logs. From one base model it builds three arms:

- **implicit**: fine-tuned on implicit labels from the team's UBI log (`labeling.implicit`: interacted
  products are positives, shown-and-not-interacted ones negatives), every train-split pair (or the first
  `implicit_limit` of them in a seeded shuffle);
- **judged**: fine-tuned on judge grades (0-3) of kNN candidate pools of train-split queries, at most
  1/`judge_ratio` as many pairs as the implicit arm (default 10x smaller);
- **base**: the base model as it is, not fine-tuned;

and compares them with kNN order on held-out (test-split) queries that had interactions. Every system reranks
the same kNN top-`eval_top_k` candidates of each query, against two sets of qrels:

- **implicit qrels**: the products shoppers interacted with after searching that query (as MODA scored);
- **judge qrels**: the judge's grades of every candidate of the query (graded by the same judge as the
  judged arm; their cost is reported apart, as evaluation cost).

Metrics (`labeling.evaluate`, ir-measures): nDCG@10, MRR@10 and Recall@10 (relevant = grade >= 2), each with
a 95% percentile bootstrap CI over queries, and paired tests (t-test and Wilcoxon) of every arm against kNN
order and of judged against implicit. Everything goes to `<out>/report.md`, `<out>/summary.json` and
`<out>/ndcg.png`; the outcome is reported as it falls.

Resumable: judgments go to `<out>/judgments.jsonl` (a rerun grades only what is missing, paying nothing
twice), and a trained arm whose `<out>/models/<arm>/train_stats.json` exists is reused, not retrained.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fashion_rerank.settings import LabelSettings, resolve_model_path
from labeling import prompts
from labeling.candidates import build_pool
from labeling.dataset import EvalQuery, TrainPair, grade_counts
from labeling.evaluate import bootstrap_ci, measure, paired_test
from labeling.grading import GradingSummary, PairRequest, grade_pairs
from labeling.implicit import ImplicitLabels, UbiEvent, build_implicit_pairs
from labeling.querylog_reader import LoggedQuery
from labeling.sampling import assign_split, normalise_query
from labeling.store import Candidate, JudgmentStore

#: Reported metric names (keys of `labeling.evaluate.MEASURES`) in report order.
METRICS = ("nDCG@10", "MRR@10", "Recall@10")
ARMS = ("base", "implicit", "judged")


@dataclass
class ArmResult:
    """One trained (or base) arm: its label source, pairs, label cost and training time."""

    name: str
    label_source: str
    pairs: int
    queries: int
    grades: dict[str, int]
    label_cost_usd: float
    label_tokens: int
    train_seconds: float
    model_path: str


@dataclass
class QrelsResult:
    """All systems against one set of qrels: per system the mean and 95% CI of each metric, and paired tests
    of nDCG@10 / MRR@10 / Recall@10 (every arm vs kNN, judged vs implicit)."""

    qrels: str
    queries: int
    queries_without_relevant: int
    systems: dict[str, dict[str, dict[str, float]]]
    tests: dict[str, dict[str, dict[str, Any]]]


@dataclass
class ExperimentResult:
    """What `run_label_quality` measured; `to_dict` is the JSON summary."""

    judge_model: str
    reference_judge: bool
    base_model: str
    data: dict[str, Any]
    arms: dict[str, ArmResult]
    results: dict[str, QrelsResult]
    eval_label_cost_usd: float
    eval_label_tokens: int
    seconds: float
    outcome: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_rule(settings: LabelSettings):
    def split_of(q: str) -> str:
        return assign_split(q, settings.dev_fraction, settings.test_fraction, settings.split_salt)

    return split_of


def _grade(store: JudgmentStore, reqs: list[PairRequest], settings: LabelSettings, progress: bool) -> GradingSummary:
    summary = grade_pairs(reqs, settings, store, progress=progress)
    store.reload()
    return summary


def _cost(store: JudgmentStore, settings: LabelSettings, reqs: Sequence[PairRequest]) -> tuple[float, int]:
    cost, tokens = 0.0, 0
    for r in reqs:
        j = store.get((r.query, r.product_id, r.text_hash, settings.judge_model, prompts.PROMPT_VERSION))
        if j is not None:
            cost += j.cost_usd
            tokens += j.tokens_in + j.tokens_out
    return round(cost, 6), tokens


def _train_arm(name: str, pairs: list[TrainPair], out: Path, settings: LabelSettings, progress: bool) -> tuple[float, str]:
    """Train (or reuse) one arm under `out/models/<name>`; returns (training seconds, model path)."""
    from labeling.train import train_cross_encoder

    folder = out / "models" / name
    stats_file = folder / "train_stats.json"
    if stats_file.exists():
        return float(json.loads(stats_file.read_text())["seconds"]), str(folder)
    stats = train_cross_encoder(pairs, folder, settings, progress=progress)
    stats_file.write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    return stats.seconds, str(folder)


def _base_arm(out: Path, settings: LabelSettings) -> str:
    """The base model saved as a cross-encoder folder (a bi-encoder backbone gets a seeded fresh 1-label head)."""
    folder = out / "models" / "base"
    if (folder / "config.json").exists():
        return str(folder)
    import transformers
    from sentence_transformers.cross_encoder import CrossEncoder

    transformers.set_seed(settings.seed)
    base = settings.base_model or settings.models.cross_encoder_base
    CrossEncoder(str(resolve_model_path(base)), num_labels=1, max_length=settings.max_length).save_pretrained(str(folder))
    return str(folder)


def _summ(values: Mapping[str, float]) -> dict[str, float]:
    v = list(values.values())
    lo, hi = bootstrap_ci(v)
    return {"mean": float(np.mean(v)) if v else float("nan"), "ci_low": lo, "ci_high": hi}


def _evaluate(name: str, queries: list[EvalQuery], runs: dict[str, dict[str, dict[str, float]]]) -> QrelsResult:
    usable = [q for q in queries if any(g > 0 for g in q.qrels.values())]
    qrels = {q.query: dict(q.qrels) for q in usable}
    per: dict[str, dict[str, dict[str, float]]] = {}
    systems: dict[str, dict[str, dict[str, float]]] = {}
    for sys_name, run in runs.items():
        _, per_q = measure(qrels, {q: r for q, r in run.items() if q in qrels})
        per[sys_name] = per_q
        systems[sys_name] = {m: _summ(per_q[m]) for m in METRICS}
    tests: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in ARMS:
        if arm in per:
            tests[f"{arm}_vs_knn"] = {m: paired_test(per["knn"][m], per[arm][m]) for m in METRICS}
    if "implicit" in per and "judged" in per:
        tests["judged_vs_implicit"] = {m: paired_test(per["implicit"][m], per["judged"][m]) for m in METRICS}
    return QrelsResult(name, len(usable), len(queries) - len(usable), systems, tests)


def run_label_quality(
    searches: Sequence[LoggedQuery],
    events: Sequence[UbiEvent],
    product_text: Mapping[str, str],
    client,
    index: str,
    encoder,
    settings: LabelSettings,
    out_dir: str | Path,
    judge_ratio: float = 10.0,
    implicit_limit: int | None = None,
    implicit_grades: str = "graded",
    eval_queries: int = 200,
    eval_top_k: int = 50,
    judge_top_k: int = 10,
    shown_depth: int = 10,
    seed: int = 0,
    catalog: str = "",
    data: dict[str, Any] | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Run the three arms and evaluate them (module docstring); write report.md, summary.json and ndcg.png.

    Args:
        searches, events: the UBI log (`ubi_queries` as LoggedQuery, `ubi_events` as UbiEvent).
        product_text: product id -> rerank_text of every catalog product (for implicit pairs).
        client, index, encoder: OpenSearch client, the products alias, the bi-encoder (kNN candidates).
        settings: the judge (base_url, judge_model, prices, budget) and training hyperparameters
            (base_model, epochs, learning rate, ...) and the split rule; the same for both trained arms.
        judge_ratio: the judged arm gets at most len(implicit pairs) / judge_ratio pairs (>= 10 by the study's design).
        implicit_limit: cap on implicit training pairs (seeded shuffle); None = all of the train split.
        implicit_grades: "graded" (purchase 3 > add_to_cart 2 > click 1) or "binary".
        eval_queries: held-out queries evaluated (seeded sample of the test-split queries with interactions).
        eval_top_k: kNN candidates reranked per held-out query; judge_top_k: pool size per judged train query.
        shown_depth: hits per search counted as shown (implicit negatives).
        seed: sampling seed; catalog: a catalog label stored with the judgments; data: facts for the report.
    Returns:
        ExperimentResult (also written to `<out_dir>/summary.json`).
    Raises:
        ValueError: no implicit training pair, no held-out query with interactions, judge_ratio < 1.
        labeling.grading.JudgeConfigError: the judge cannot be used.
    """
    t_start = time.perf_counter()
    if judge_ratio < 1:
        raise ValueError("judge_ratio must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    split_of = _split_rule(settings)
    implicit: ImplicitLabels = build_implicit_pairs(
        searches, events, product_text, grades=implicit_grades, shown_depth=shown_depth, split_of=split_of
    )
    train_implicit = implicit.by_split("train")
    rng.shuffle(train_implicit)
    if implicit_limit is not None:
        train_implicit = train_implicit[:implicit_limit]
    if not train_implicit:
        raise ValueError("no implicit training pair: the log has no interaction on a train-split query")
    a_pairs = [TrainPair(p.query, p.text, p.grade) for p in train_implicit]

    # -- held-out queries: test split, with at least one interaction; kNN candidates; implicit qrels
    test_qrels = implicit.qrels("test")
    test_queries = sorted(test_qrels)
    rng.shuffle(test_queries)
    test_queries = sorted(test_queries[:eval_queries])
    if not test_queries:
        raise ValueError("no held-out (test-split) query with an interaction")
    store = JudgmentStore(out / "judgments.jsonl")
    pools: dict[str, list[Candidate]] = {}
    it = test_queries
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(test_queries, desc="held-out kNN candidates", unit="query")
    for q in it:
        pools[q] = build_pool(client, index, encoder, q, eval_top_k, 0)
    eval_reqs = [
        PairRequest(q, c.product_id, c.text, c.text_hash, split="test", catalog=catalog, run_id="experiment")
        for q in test_queries
        for c in pools[q]
    ]

    # -- the judged arm's pairs: pools of train-split queries until the pair budget is reached
    budget = max(1, int(len(a_pairs) // judge_ratio))
    train_queries = sorted(
        {p.query for p in implicit.pairs if p.split == "train"}
        | {q for q in (normalise_query(s.user_query) for s in searches) if q and split_of(q) == "train"}
    )
    rng.shuffle(train_queries)
    judge_reqs: list[PairRequest] = []
    it2 = iter(train_queries)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=budget, desc="judged-arm pools", unit="pair")
    for q in it2:
        if len(judge_reqs) >= budget:
            break
        for c in build_pool(client, index, encoder, q, judge_top_k, 0)[: budget - len(judge_reqs)]:
            judge_reqs.append(
                PairRequest(q, c.product_id, c.text, c.text_hash, split="train", catalog=catalog, run_id="experiment")
            )
        if bar is not None:
            bar.n = len(judge_reqs)
            bar.refresh()
    if bar is not None:
        bar.close()

    _grade(store, judge_reqs + eval_reqs, settings, progress)
    b_pairs: list[TrainPair] = []
    for r in judge_reqs:
        j = store.get((r.query, r.product_id, r.text_hash, settings.judge_model, prompts.PROMPT_VERSION))
        if j is not None and j.labeled:
            b_pairs.append(TrainPair(r.query, r.text, int(j.grade)))
    if not b_pairs:
        raise ValueError("the judge labelled none of the judged arm's pairs (see the grading summary)")
    b_cost, b_tokens = _cost(store, settings, judge_reqs)
    e_cost, e_tokens = _cost(store, settings, eval_reqs)

    # -- train the arms (same base model, same hyperparameters)
    a_secs, a_path = _train_arm("implicit", a_pairs, out, settings, progress)
    b_secs, b_path = _train_arm("judged", b_pairs, out, settings, progress)
    base_path = _base_arm(out, settings)
    arms = {
        "base": ArmResult("base", "none (the base model)", 0, 0, {}, 0.0, 0, 0.0, base_path),
        "implicit": ArmResult(
            "implicit",
            f"UBI log ({implicit_grades}: interacted = positive, shown and not interacted = 0)",
            len(a_pairs),
            len({p.query for p in a_pairs}),
            grade_counts(a_pairs),
            0.0,
            0,
            a_secs,
            a_path,
        ),
        "judged": ArmResult(
            "judged",
            f"judge {settings.judge_model} grades 0-3 of kNN top-{judge_top_k} pools",
            len(b_pairs),
            len({p.query for p in b_pairs}),
            grade_counts(b_pairs),
            b_cost,
            b_tokens,
            b_secs,
            b_path,
        ),
    }

    # -- score every held-out candidate with every arm; runs per system
    from labeling.evaluate import cross_encoder_scorer

    pairs = [(q, c.text) for q in test_queries for c in pools[q]]
    runs: dict[str, dict[str, dict[str, float]]] = {
        "knn": {q: {c.product_id: float(len(pools[q]) - i) for i, c in enumerate(pools[q])} for q in test_queries}
    }
    for name in ARMS:
        scores = np.asarray(cross_encoder_scorer(arms[name].model_path)(pairs), dtype=np.float64)
        run: dict[str, dict[str, float]] = {}
        i = 0
        for q in test_queries:
            run[q] = {c.product_id: float(scores[i + k]) - 1e-9 * k for k, c in enumerate(pools[q])}
            i += len(pools[q])
        runs[name] = run

    judge_q: list[EvalQuery] = []
    for q in test_queries:
        qrels = {}
        for c in pools[q]:
            j = store.get((q, c.product_id, c.text_hash, settings.judge_model, prompts.PROMPT_VERSION))
            if j is not None and j.labeled:
                qrels[c.product_id] = int(j.grade)
        judge_q.append(EvalQuery(q, "test", pools[q], qrels))
    implicit_q = [EvalQuery(q, "test", pools[q], dict(test_qrels[q])) for q in test_queries]
    results = {
        "implicit": _evaluate("implicit (interacted products)", implicit_q, runs),
        "judge": _evaluate(f"judge ({settings.judge_model}) grades", judge_q, runs),
    }
    in_pool = sum(1 for q in test_queries for pid in test_qrels[q] if any(c.product_id == pid for c in pools[q]))
    facts = dict(data or {})
    facts.update(
        {
            "searches": len(searches),
            "events": len(events),
            "implicit_counts": dict(implicit.counts),
            "implicit_train_pairs_available": len(implicit.by_split("train")),
            "implicit_limit": implicit_limit,
            "judge_ratio": judge_ratio,
            "held_out_queries": len(test_queries),
            "eval_top_k": eval_top_k,
            "interacted_products_in_candidates": f"{in_pool} of {sum(len(v) for v in test_qrels.values() if v)}",
        }
    )
    res = ExperimentResult(
        judge_model=settings.judge_model,
        reference_judge=settings.is_reference_judge(),
        base_model=settings.base_model or settings.models.cross_encoder_base,
        data=facts,
        arms=arms,
        results=results,
        eval_label_cost_usd=e_cost,
        eval_label_tokens=e_tokens,
        seconds=round(time.perf_counter() - t_start, 1),
    )
    res.outcome = outcome_lines(res)
    write_report(res, out)
    return res


def outcome_lines(res: ExperimentResult) -> list[str]:
    """The result in words, one line per qrels set: judged vs implicit and vs kNN on nDCG@10, with p-values."""
    out = []
    for r in res.results.values():
        t = r.tests.get("judged_vs_implicit", {}).get("nDCG@10", {})
        s = r.systems
        d = t.get("mean_diff")
        p = t.get("p_ttest")
        if d is None:
            continue
        verdict = "beat" if d > 0 else "lost to" if d < 0 else "tied with"
        sig = f"p = {p:.3g} (paired t-test)" if p is not None else "no test"
        out.append(
            f"On {r.qrels} ({r.queries} queries), the judged arm ({res.arms['judged'].pairs} pairs) {verdict} the "
            f"implicit arm ({res.arms['implicit'].pairs} pairs) on nDCG@10 by {d:+.4f} ({sig}); "
            f"kNN {s['knn']['nDCG@10']['mean']:.4f}, base {s['base']['nDCG@10']['mean']:.4f}, "
            f"implicit {s['implicit']['nDCG@10']['mean']:.4f}, judged {s['judged']['nDCG@10']['mean']:.4f}."
        )
    return out


def write_report(res: ExperimentResult, out: Path) -> None:
    """`summary.json`, `report.md` and `ndcg.png` (nDCG@10 with 95% CIs per system, one panel per qrels set)."""
    (out / "summary.json").write_text(json.dumps(res.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    kind = "the reference rubric judge, NOT an LLM" if res.reference_judge else "an LLM judge"
    lines = [
        "# Label quality: implicit labels vs judge grades",
        "",
        f"Judge: **{res.judge_model}** ({kind}). Base model: {res.base_model}. Run time {res.seconds:.0f} s.",
        "",
        "## Outcome",
        "",
        *[f"- {x}" for x in res.outcome],
        "",
        "## Arms",
        "",
        "| arm | labels | pairs | queries | grades 0/1/2/3 | label cost | label tokens | training s |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for a in res.arms.values():
        g = "/".join(str(a.grades.get(k, 0)) for k in ("0", "1", "2", "3")) if a.grades else "-"
        lines.append(
            f"| {a.name} | {a.label_source} | {a.pairs} | {a.queries} | {g} | ${a.label_cost_usd:.4f} | {a.label_tokens} | {a.train_seconds:.0f} |"
        )
    lines += [
        "",
        f"Evaluation labels (judge grades of the held-out candidates): ${res.eval_label_cost_usd:.4f}, {res.eval_label_tokens} tokens.",
        "",
    ]
    for r in res.results.values():
        lines += [
            f"## Against {r.qrels}",
            "",
            f"{r.queries} held-out queries ({r.queries_without_relevant} left out: no relevant product among the qrels).",
            "",
            "| system | " + " | ".join(f"{m} [95% CI]" for m in METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for name, s in r.systems.items():
            cells = [f"{s[m]['mean']:.4f} [{s[m]['ci_low']:.3f}, {s[m]['ci_high']:.3f}]" for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| comparison | metric | mean difference | p (t-test) | p (Wilcoxon) |", "|---|---|---:|---:|---:|"]
        for cmp_name, per_m in r.tests.items():
            for m, t in per_m.items():
                d = t.get("mean_diff")
                pt, pw = t.get("p_ttest"), t.get("p_wilcoxon")
                lines.append(
                    f"| {cmp_name} | {m} | {'' if d is None else f'{d:+.4f}'} | {'' if pt is None else f'{pt:.3g}'} | "
                    f"{'' if pw is None else f'{pw:.3g}'} |"
                )
        lines.append("")
    lines += ["## Data", ""] + [f"- {k}: {v}" for k, v in res.data.items()] + ["", "![nDCG@10](ndcg.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    _plot(res, out / "ndcg.png")


def _plot(res: ExperimentResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res.results), figsize=(5 * len(res.results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], res.results.values()):
        names = list(r.systems)
        means = [r.systems[n]["nDCG@10"]["mean"] for n in names]
        err = [
            [m - r.systems[n]["nDCG@10"]["ci_low"] for n, m in zip(names, means)],
            [r.systems[n]["nDCG@10"]["ci_high"] - m for n, m in zip(names, means)],
        ]
        ax.bar(names, means, yerr=err, capsize=4, color=["#999999", "#c0c0ff", "#e0a060", "#50a050"][: len(names)])
        ax.set_title(f"{r.qrels}\n({r.queries} queries)", fontsize=9)
        ax.set_ylabel("nDCG@10 (95% CI)")
        ax.set_ylim(0, 1)
    fig.suptitle(f"judge: {res.judge_model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
