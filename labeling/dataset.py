"""Training and evaluation data out of the judgments store.

- `training_pairs`: labeled judgments of the train split as (query, product text, grade), one per distinct
  (query, text) — the text is the `rerank_text` the judge saw, so training sees exactly what serving scores.
- `eval_queries`: per query of a split, the candidates retrieval returned (kNN order, from the query's
  latest pool) and the qrels (every labeled judgment of that query's pooled products, random extras
  included) — what `labeling.evaluate` needs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from labeling.store import Candidate, JudgmentStore


@dataclass(frozen=True)
class TrainPair:
    """One training example: normalised query, product text, grade 0-3."""

    query: str
    text: str
    grade: int


@dataclass
class EvalQuery:
    """One held-out query: kNN-ordered candidates and graded judgments {product_id: grade}."""

    query: str
    split: str
    candidates: list[Candidate]
    qrels: dict[str, int] = field(default_factory=dict)


def training_pairs(store: JudgmentStore, judge_model: str, prompt_version: str, split: str = "train") -> list[TrainPair]:
    """Labeled (query, text, grade) of `split`, first judgment per distinct (query, text), in store order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for j in store.judgments(judge_model, prompt_version, split=split, labeled_only=True):
        key = (j.query, j.text_hash)
        if key in seen or not j.text:
            continue
        seen.add(key)
        out.append(TrainPair(j.query, j.text, int(j.grade)))
    return out


def grade_counts(pairs: list[TrainPair]) -> dict[str, int]:
    """{"0": n, "1": n, "2": n, "3": n}."""
    c = Counter(str(p.grade) for p in pairs)
    return {g: c.get(g, 0) for g in ("0", "1", "2", "3")}


def eval_queries(
    store: JudgmentStore, judge_model: str, prompt_version: str, split: str, catalog: str | None = None
) -> list[EvalQuery]:
    """Queries of `split` with their latest pool (for `catalog` if given) and qrels from labeled judgments.

    Queries whose pool has no labeled judgment are left out (nothing to measure).
    """
    latest: dict[str, object] = {}
    for p in store.pools(judge_model, prompt_version, catalog):
        if p.split == split:
            latest[p.query] = p
    out = []
    for query, pool in latest.items():
        qrels: dict[str, int] = {}
        for c in pool.candidates:
            j = store.get((query, c.product_id, c.text_hash, judge_model, prompt_version))
            if j is not None and j.labeled:
                qrels[c.product_id] = int(j.grade)
        if qrels:
            out.append(EvalQuery(query=query, split=split, candidates=pool.knn_candidates(), qrels=qrels))
    return out
