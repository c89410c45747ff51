"""`fashion-rerank refresh`: sample -> grade -> train -> evaluate -> promote, as one command a scheduler runs.

Exit codes:
    0  a new version was promoted
    1  error (judge unreachable or misconfigured, OpenSearch down, training failed, ...)
    3  finished, serving model kept (the gate refused the candidate, or too few judgments to train)
    4  stopped at the judging budget (`FR_LABEL_BUDGET_USD`); judgments so far are kept and the next run
       resumes exactly where this one stopped
A JSON and a Markdown summary are written to `FR_LABEL_REPORTS_DIR` (default `reports/`) as
`refresh-<run id>.json|md`, also on error. The report names the judge and says so when the labels come
from the reference rubric judge rather than from an LLM.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import LabelSettings
from labeling import prompts
from labeling.grading import JudgeConfigError
from labeling.label import new_run_id, run_labeling
from labeling.promote import apply
from labeling.store import JudgmentStore, utc_now
from labeling.train import train_candidate

EXIT_PROMOTED = 0
EXIT_ERROR = 1
EXIT_KEPT = 3
EXIT_BUDGET = 4


@dataclass
class RefreshReport:
    """Everything a refresh did; `exit_code` is what the CLI returns."""

    started: str
    status: str = "error"
    exit_code: int = EXIT_ERROR
    finished: str | None = None
    seconds: float = 0.0
    judge: dict[str, Any] = field(default_factory=dict)
    labeling: dict[str, Any] | None = None
    candidate: dict[str, Any] | None = None
    serving_before: str | None = None
    serving_after: str | None = None
    message: str = ""
    error: str | None = None
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    def markdown(self) -> str:
        """The report as Markdown (what `fashion-rerank refresh` prints and writes)."""
        j = self.judge
        lines = [
            f"# Refresh {self.started}",
            "",
            f"**Outcome: {self.status}** (exit code {self.exit_code}) — {self.message}",
            "",
            "## Judge",
            f"- model `{j.get('model')}` at `{j.get('base_url') or 'api.openai.com'}`, prompt `{j.get('prompt_version')}`",
            f"- labels come from: **{j.get('label_source')}**",
            "",
        ]
        lab = self.labeling or {}
        if lab:
            g = lab.get("grading") or {}
            lines += [
                "## Labeling",
                f"- run `{lab.get('run_id')}` on catalog `{lab.get('catalog')}`"
                + (
                    " (resumed unfinished pools)"
                    if lab.get("resumed")
                    else f": {lab.get('log_records')} logged queries, {lab.get('distinct_queries')} distinct, "
                    f"sampled {lab.get('sampled')} {lab.get('by_stratum')} -> {lab.get('by_split')}"
                ),
                f"- pairs to grade {lab.get('pairs_missing')}: {g.get('written')} judgments written "
                f"({g.get('labeled')} labeled, unlabeled {g.get('unlabeled')}, reused {g.get('reused')}), "
                f"not graded {g.get('not_graded')}",
                f"- calls {g.get('calls')} ({g.get('retries')} retries, {g.get('rate_limited_responses')} rate-limited, "
                f"{g.get('deferred')} deferred); structured output: {g.get('structured_output')}"
                + (f" (fell back: {g.get('fallback_reason')})" if g.get("fallback_reason") else ""),
                f"- tokens {g.get('tokens_in')} in / {g.get('tokens_out')} out, cost ${g.get('cost_usd')}"
                + (f" of budget ${g.get('budget_usd')}" if g.get("budget_usd") is not None else "")
                + (" — budget reached" if g.get("budget_stopped") else ""),
                f"- grading speed {g.get('pairs_per_s', 0):.1f} pairs/s",
                "",
            ]
        c = self.candidate or {}
        if c:
            t = c["training"]
            lines += [
                "## Training",
                f"- version `{c['version']}` from `{t['base_model']}` ({t['base_model_kind']})",
                f"- {t['pairs']} pairs from {t['queries']} train queries (grades 0/1/2/3: "
                f"{'/'.join(str(v) for v in t['grades'].values())}), loss {t['loss']}, lr {t['learning_rate']}, "
                f"{t['epochs']} epochs, batch {t['batch_size']}",
                f"- {t['seconds']} s: {t['pairs_per_s']} pairs/s, {t['seconds_per_1k_pairs_epoch']} s per 1,000 pairs per epoch",
                "",
                "## Evaluation",
                "MRR@10 and Recall@10 count grade >= 2 as relevant.",
                "",
            ]
            for split, ev in c["evaluation"].items():
                lines += [
                    f"### {split} ({ev['queries']} queries)",
                    "",
                    "| system | nDCG@10 | MRR@10 | Recall@10 | Judged@10 | nDCG@10 95% CI |",
                    "|---|---|---|---|---|---|",
                ]
                for name, s in ev["systems"].items():
                    m, ci = s["metrics"], s["ndcg_ci95"]
                    lines.append(
                        f"| {name}{' (' + s['model'] + ')' if s.get('model') else ''} | {m['nDCG@10']:.4f} | "
                        f"{m['MRR@10']:.4f} | {m['Recall@10']:.4f} | {m['Judged@10']:.4f} | {ci[0]:.3f}-{ci[1]:.3f} |"
                    )
                for k, v in ev.get("significance", {}).items():
                    lines.append(
                        f"\n- {k}: nDCG@10 diff {v.get('mean_diff')}, paired t-test p={v.get('p_ttest')}, "
                        f"Wilcoxon p={v.get('p_wilcoxon')}, n={v.get('n')}"
                    )
                lines.append("")
            gd = c["gate"]
            lines += ["## Promotion gate", f"- baseline: {gd['baseline']}"]
            lines += [f"- {ch['name']}: {'pass' if ch['passed'] else 'FAIL'} — {ch['detail']}" for ch in gd["checks"]]
            lines.append("")
        lines += [f"Serving before: `{self.serving_before}`, after: `{self.serving_after}`."]
        if self.error:
            lines += ["", "## Error", "```", self.error.strip(), "```"]
        return "\n".join(lines) + "\n"


def write_reports(report: RefreshReport, reports_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` into `reports_dir`; returns their paths."""
    d = Path(reports_dir)
    d.mkdir(parents=True, exist_ok=True)
    jp, mp = d / f"{name}.json", d / f"{name}.md"
    report.paths = {"json": str(jp), "markdown": str(mp)}
    jp.write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
    mp.write_text(report.markdown(), encoding="utf-8")
    return jp, mp


def refresh(
    settings: LabelSettings | None = None,
    *,
    store=None,
    client=None,
    encoder=None,
    alias: str | None = None,
    log_source: str | None = None,
    n_queries: int | None = None,
    registry=None,
    judge_client=None,
    progress: bool = False,
    write: bool = True,
) -> RefreshReport:
    """Run one refresh; never raises for job failures (they become status "error", exit code 1).

    Args: as `labeling.label.run_labeling`, plus `registry` (default `ModelRegistry()`) and `write`
    (write the JSON/Markdown reports).
    """

    s = settings or LabelSettings()
    t0 = time.perf_counter()
    rep = RefreshReport(started=utc_now())
    rep.judge = {
        "model": s.judge_model,
        "base_url": s.base_url,
        "prompt_version": prompts.PROMPT_VERSION,
        "reference_judge": s.is_reference_judge(),
        "label_source": (
            "reference rubric judge — deterministic rules over catalog attributes, NOT an LLM"
            if s.is_reference_judge()
            else f"LLM judge {s.judge_model}"
        ),
    }
    name = "refresh-" + new_run_id()
    try:
        store = store if store is not None else JudgmentStore(s.judgments_path)
        registry = registry or ModelRegistry()
        rep.serving_before = rep.serving_after = registry.current()
        run = run_labeling(
            s,
            store=store,
            client=client,
            encoder=encoder,
            alias=alias,
            log_source=log_source,
            n_queries=n_queries,
            judge_client=judge_client,
            progress=progress,
        )
        rep.labeling = run.to_dict()
        name = "refresh-" + run.run_id
        if run.budget_stopped:
            rep.status, rep.exit_code = "budget_stopped", EXIT_BUDGET
            rep.message = (
                f"judging budget ${s.budget_usd} reached after ${run.grading.cost_usd:.4f}; "
                "judgments so far are stored, the next run resumes the same pools"
            )
            return rep
        try:
            cand = train_candidate(store, s, registry, progress=progress)
        except ValueError as exc:
            rep.status, rep.exit_code, rep.message = "kept", EXIT_KEPT, f"not trained: {exc}"
            return rep
        rep.candidate = cand.to_dict()
        if apply(registry, cand.version, cand.decision):
            rep.status, rep.exit_code = "promoted", EXIT_PROMOTED
            rep.message = f"promoted {cand.version}: {cand.decision.summary()}"
        else:
            rep.status, rep.exit_code = "kept", EXIT_KEPT
            rep.message = f"candidate {cand.version} not promoted: {'; '.join(cand.decision.reasons)}"
        rep.serving_after = registry.current()
    except JudgeConfigError as exc:
        rep.status, rep.exit_code, rep.message, rep.error = "error", EXIT_ERROR, f"judge error: {exc}", traceback.format_exc()
    except Exception as exc:  # noqa: BLE001 - a scheduler needs an exit code and a report, not a traceback
        rep.status, rep.exit_code, rep.message, rep.error = (
            "error",
            EXIT_ERROR,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
        )
    finally:
        rep.finished = utc_now()
        rep.seconds = round(time.perf_counter() - t0, 2)
        if write:
            write_reports(rep, s.reports_dir, name)
    return rep
