"""Judge calibration: grade human-labelled (query, product) pairs with the configured judge and measure agreement.

Before paying for 10,000 LLM grades, a team grades a few hundred pairs that people have already labelled and
checks how often the judge agrees. `calibrate` does that with the same `Grader` the labeling job uses (same
prompt, retries, budget, resumable store), so the agreement measured is the agreement of the real job.

Human labels:
- a CSV (optionally .gz) in the Amazon Shopping Queries (ESCI) layout: `query`, `product_id`, `esci_label`
  (E/S/C/I or Exact/Substitute/Complement/Irrelevant) and the product columns `product_title`,
  `product_brand`, `product_color`, `product_description` (the bundled sample, `ESCI_SAMPLE`);
- or a CSV / JSONL with `query`, `product_id`, `grade` (0-3) and either `text` (the product text as shown
  to the judge) or `title` [+ `brand`, `colour`, `description`].
The product text is built with `fashion_rerank.product.rerank_text`, the one product text of the project.
A row without a query, a product text or a valid label is reported (line number and why) and skipped.

ESCI labels map to the project's 0-3 grades by `ESCI_GRADES` (also in labeling/data/PROVENANCE.md):
Exact 3 (exact match), Substitute 2 (a close alternative), Complement 1 (goes with what was asked, not it),
Irrelevant 0.

Agreement (`Agreement`), over the pairs the judge labelled:
- a 4x4 confusion matrix (rows: human grade 0-3, columns: judge grade 0-3), plus per human grade how many
  pairs the judge left unlabeled;
- exact agreement, within-one agreement, Cohen's kappa with quadratic weights (scikit-learn), Spearman's rho
  (scipy); a kappa above ~0.6 is usually read as substantial agreement;
- the unlabeled share (unparseable or out-of-range replies, counted by reason and never coerced into a
  grade), pairs not graded at all (errors, budget), tokens and cost from the judge's `usage`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from fashion_rerank.product import Product, rerank_text, text_hash
from fashion_rerank.settings import LabelSettings
from labeling import prompts
from labeling.grading import GradingSummary, PairRequest, grade_pairs
from labeling.sampling import normalise_query
from labeling.store import JudgmentStore

#: The bundled example: 200 human-labelled Amazon Shopping Queries pairs (Apache-2.0; labeling/data/PROVENANCE.md).
ESCI_SAMPLE = Path(__file__).parent / "data" / "esci_sample_200.csv.gz"

#: ESCI label -> grade (0 = not relevant ... 3 = exact match), by full name and by initial.
ESCI_GRADES: dict[str, int] = {
    "exact": 3,
    "substitute": 2,
    "complement": 1,
    "irrelevant": 0,
    "e": 3,
    "s": 2,
    "c": 1,
    "i": 0,
}

GRADES = (0, 1, 2, 3)


@dataclass(frozen=True)
class HumanPair:
    """One human-labelled pair: the query as typed, the product id, the product text, the human grade 0-3."""

    query: str
    product_id: str
    text: str
    grade: int


@dataclass
class HumanLabels:
    """The pairs read from a human-label file, and the rows skipped with their line numbers and reasons."""

    path: str
    pairs: list[HumanPair]
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _row_pair(row: dict[str, Any]) -> HumanPair:
    """A `HumanPair` from one CSV/JSONL row. Raises ValueError saying what is wrong with the row."""
    query = str(row.get("query") or "").strip()
    if not query:
        raise ValueError("no query")
    pid = str(row.get("product_id") or row.get("id") or "").strip()
    if row.get("esci_label") not in (None, ""):
        label = str(row["esci_label"]).strip().lower()
        if label not in ESCI_GRADES:
            raise ValueError(f"unknown esci_label {row['esci_label']!r} (want one of E, S, C, I)")
        grade = ESCI_GRADES[label]
    else:
        raw = row.get("grade")
        try:
            grade = int(raw) if raw is not None and float(raw) == int(float(raw)) else -1
        except (TypeError, ValueError):
            grade = -1
        if grade not in GRADES:
            raise ValueError(f"grade {raw!r} is not an integer 0-3")
    text = str(row.get("text") or "").strip()
    if not text:
        title = str(row.get("product_title") or row.get("title") or "").strip()
        if not title:
            raise ValueError("no product text (text or product_title/title)")
        attrs = {
            "brand": str(row.get("product_brand") or row.get("brand") or "").strip(),
            "colour": str(row.get("product_color") or row.get("colour") or row.get("color") or "").strip(),
        }
        desc = str(row.get("product_description") or row.get("description") or "")
        desc = " ".join(desc.replace("<br/>", " ").replace("<b>", " ").replace("</b>", " ").split())
        text = rerank_text(Product(pid or "?", title, desc, {k: v for k, v in attrs.items() if v}))
    return HumanPair(query, pid or text_hash(text), text, grade)


def read_human_labels(path: str | Path, limit: int | None = None) -> HumanLabels:
    """Read human-labelled pairs from a CSV / CSV.gz / JSONL file (layouts in the module docstring).

    Args:
        path: the file.
        limit: keep at most this many valid pairs (file order).
    Returns:
        HumanLabels; bad rows are in `.skipped` as (line number, reason), never silently dropped.
    Raises:
        FileNotFoundError: no such file. ValueError: no valid pair at all (the first reasons in the message), a
            folder, or a file that cannot be read as text (e.g. a corrupt .gz).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"human labels {p}: no such file")
    if p.is_dir():
        raise ValueError(f"human labels {p}: a folder, not a file")
    out = HumanLabels(str(p), [])
    try:
        _read_rows(p, out, limit)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"human labels {p}: cannot be read ({exc.__class__.__name__}: {exc})") from exc
    if not out.pairs:
        first = "; ".join(f"line {n}: {why}" for n, why in out.skipped[:3])
        raise ValueError(f"human labels {p}: no valid pair ({len(out.skipped)} rows skipped{': ' + first if first else ''})")
    return out


def _read_rows(p: Path, out: HumanLabels, limit: int | None) -> None:
    """Parse the rows of `p` into `out` (valid pairs and skipped rows), stopping at `limit` pairs."""
    seen: set[tuple[str, str]] = set()
    with _open_text(p) as fh:
        if p.name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
            rows: Iterable[tuple[int, Any]] = ((i, line) for i, line in enumerate(fh, 1) if line.strip())

            def parse(x: Any) -> dict:
                obj = json.loads(x)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                return obj

        else:
            reader = csv.DictReader(fh)
            rows = ((reader.line_num, r) for r in reader)

            def parse(x: Any) -> dict:
                return x

        for line_no, raw in rows:
            if limit is not None and len(out.pairs) >= limit:
                break
            try:
                pair = _row_pair(parse(raw))
            except (ValueError, json.JSONDecodeError) as exc:
                out.skipped.append((line_no, str(exc)))
                continue
            key = (normalise_query(pair.query), pair.text)
            if key in seen:
                out.skipped.append((line_no, "duplicate (query, product text)"))
                continue
            seen.add(key)
            out.pairs.append(pair)


@dataclass
class Agreement:
    """Judge-vs-human agreement over human-labelled pairs (see the module docstring for each figure).

    `confusion[h][j]` counts pairs with human grade h and judge grade j; `unlabeled_by_human[h]` the pairs of
    human grade h the judge answered without a valid grade; `not_graded` the pairs with no judgment stored.
    Kappa and Spearman are None when fewer than 2 pairs were labelled or a side is constant.
    """

    judge_model: str
    reference_judge: bool
    pairs: int
    labeled: int
    confusion: list[list[int]]
    unlabeled_by_human: list[int]
    unlabeled_reasons: dict[str, int]
    not_graded: int
    exact_agreement: float | None
    within_one: float | None
    weighted_kappa: float | None
    spearman: float | None
    unlabeled_share: float
    cost_usd: float
    tokens_in: int
    tokens_out: int
    human_grades: dict[int, int]
    judge_grades: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A human report: the judge, the counts, the agreement figures and the confusion matrix."""
        kind = "reference rubric judge, not an LLM" if self.reference_judge else "LLM judge"

        def f(x: float | None, fmt: str = ".3f") -> str:
            return "n/a" if x is None else format(x, fmt)

        out = [
            f"judge: {self.judge_model} ({kind})",
            f"pairs: {self.pairs} human-labelled; {self.labeled} graded by the judge, "
            f"{sum(self.unlabeled_by_human)} unlabeled ({self.unlabeled_share:.1%}), {self.not_graded} not graded",
        ]
        if self.unlabeled_reasons:
            out.append("unlabeled by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.unlabeled_reasons.items())))
        out += [
            f"exact agreement {f(self.exact_agreement)}, within one grade {f(self.within_one)}, "
            f"weighted kappa (quadratic) {f(self.weighted_kappa)}, Spearman {f(self.spearman)}",
            f"cost ${self.cost_usd:.4f} ({self.tokens_in} tokens in, {self.tokens_out} out)",
            "confusion (rows: human grade, columns: judge grade; last column: unlabeled):",
            "  human\\judge      0      1      2      3   unlab",
        ]
        for h in GRADES:
            row = "".join(f"{n:7d}" for n in self.confusion[h])
            out.append(f"  {h:<11d}{row}{self.unlabeled_by_human[h]:8d}")
        return out


def agreement(
    human: list[HumanPair],
    store: JudgmentStore,
    judge_model: str,
    reference_judge: bool,
    prompt_version: str = prompts.PROMPT_VERSION,
) -> Agreement:
    """Compare the human grades of `human` with the judgments of `judge_model` stored in `store`.

    Pairs are matched by (normalised query, product id, text hash, judge, prompt version), the store's key.
    Cost and tokens sum the judgments of these pairs (copies reused from an identical text cost 0).
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    confusion = [[0] * 4 for _ in GRADES]
    unl_by_h = [0] * 4
    reasons: Counter = Counter()
    not_graded = 0
    hs: list[int] = []
    js: list[int] = []
    cost, tin, tout = 0.0, 0, 0
    for p in human:
        j = store.get((normalise_query(p.query), p.product_id, text_hash(p.text), judge_model, prompt_version))
        if j is None:
            not_graded += 1
            continue
        cost += j.cost_usd
        tin += j.tokens_in
        tout += j.tokens_out
        if j.grade is None or j.grade not in GRADES:
            unl_by_h[p.grade] += 1
            reasons[j.unlabeled or "no grade"] += 1
            continue
        confusion[p.grade][j.grade] += 1
        hs.append(p.grade)
        js.append(j.grade)
    n = len(hs)
    kappa = rho = None
    if n >= 2 and len(set(hs)) > 1 and len(set(js)) > 1:
        kappa = float(cohen_kappa_score(hs, js, labels=list(GRADES), weights="quadratic"))
        r = spearmanr(hs, js).statistic
        rho = None if r is None or math.isnan(r) else float(r)
    answered = n + sum(unl_by_h)
    return Agreement(
        judge_model=judge_model,
        reference_judge=reference_judge,
        pairs=len(human),
        labeled=n,
        confusion=confusion,
        unlabeled_by_human=unl_by_h,
        unlabeled_reasons=dict(reasons),
        not_graded=not_graded,
        exact_agreement=sum(a == b for a, b in zip(hs, js)) / n if n else None,
        within_one=sum(abs(a - b) <= 1 for a, b in zip(hs, js)) / n if n else None,
        weighted_kappa=kappa,
        spearman=rho,
        unlabeled_share=sum(unl_by_h) / answered if answered else 0.0,
        cost_usd=round(cost, 6),
        tokens_in=tin,
        tokens_out=tout,
        human_grades=dict(sorted(Counter(p.grade for p in human).items())),
        judge_grades=dict(sorted(Counter(js).items())),
    )


@dataclass
class CalibrationResult:
    """What `calibrate` did: the labels read, the grading run's summary and the agreement."""

    labels: HumanLabels
    grading: GradingSummary
    agreement: Agreement

    def to_dict(self) -> dict[str, Any]:
        return {
            "human_labels": self.labels.path,
            "pairs": len(self.labels.pairs),
            "skipped_rows": [{"line": n, "reason": r} for n, r in self.labels.skipped],
            "grading": self.grading.to_dict(),
            "agreement": self.agreement.to_dict(),
            "esci_grades": {k: v for k, v in ESCI_GRADES.items() if len(k) > 1},
        }


def calibrate(
    human_path: str | Path,
    settings: LabelSettings,
    store_path: str | Path,
    limit: int | None = None,
    progress: bool = False,
) -> CalibrationResult:
    """Grade the human-labelled pairs of `human_path` with the judge of `settings` and measure agreement.

    Judgments go to `store_path` (a JSONL judgment store of its own, not the training store): a second run
    with the same store grades only what is missing, so an interrupted calibration resumes without paying
    twice. The split of every pair is "calibration".

    Raises:
        FileNotFoundError / ValueError: see `read_human_labels`.
        labeling.grading.JudgeConfigError: the judge cannot be used (unreachable, bad key, unknown model).
    """
    labels = read_human_labels(human_path, limit)
    store = JudgmentStore(store_path)
    reqs = [
        PairRequest(normalise_query(p.query), p.product_id, p.text, text_hash(p.text), split="calibration", catalog="human")
        for p in labels.pairs
    ]
    summary = grade_pairs(reqs, settings, store, progress=progress)
    store.reload()
    agr = agreement(labels.pairs, store, settings.judge_model, settings.is_reference_judge())
    agr.cost_usd = round(agr.cost_usd, 6)
    return CalibrationResult(labels, summary, agr)
