"""`fashion-rerank labels grade | stats | export`, `model train | evaluate | promote | rollback` and `refresh`:
the labeling job (`labeling`). Settings come from FR_LABEL_* / OPENAI_* (`fashion_rerank.settings`);
flags override them for one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fashion_rerank.registry import ModelRegistry, RegistryError
from fashion_rerank.settings import LabelSettings
from labeling import prompts
from labeling.dataset import eval_queries
from labeling.evaluate import cross_encoder_scorer, evaluate_queries
from labeling.grading import JudgeConfigError
from labeling.label import run_labeling
from labeling.refresh import refresh
from labeling.store import JudgmentStore, StoreWriteError, to_srw
from labeling.train import train_candidate


def _settings(args: argparse.Namespace):

    over = {}
    for flag, field in (
        ("judgments", "judgments_path"),
        ("judge_model", "judge_model"),
        ("base_url", "base_url"),
        ("budget_usd", "budget_usd"),
        ("concurrency", "concurrency"),
        ("query_log", "query_log"),
        ("epochs", "epochs"),
        ("learning_rate", "learning_rate"),
        ("loss", "loss"),
        ("base_model", "base_model"),
        ("reports_dir", "reports_dir"),
        ("top_k", "top_k"),
    ):
        v = getattr(args, flag, None)
        if v is not None:
            over[field] = v
    return LabelSettings(**over)


def _registry(args: argparse.Namespace):

    return ModelRegistry(getattr(args, "registry", None), getattr(args, "model_name", None))


# ----------------------------------------------------------------------------------------- commands


def cmd_label(args: argparse.Namespace) -> int:
    """`fashion-rerank label`: resume unfinished pools or sample and grade new ones; 4 when the budget stopped it."""

    s = _settings(args)
    try:
        run = run_labeling(s, alias=args.alias, n_queries=args.queries, progress=True)
    except (JudgeConfigError, FileNotFoundError, StoreWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(run.lines()))
    return 4 if run.budget_stopped else 0


def cmd_stats(args: argparse.Namespace) -> int:
    """`fashion-rerank judgments stats`: grade distribution per judge and split."""

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    st = store.stats()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    rep = store.load_report
    print(
        f"{s.judgments_path}: {len(store)} judgments, {len(store.pools())} pools"
        + (f"; skipped {rep.invalid_lines} invalid line(s)" if rep.invalid_lines else "")
        + (" (last line truncated)" if rep.truncated_last_line else "")
    )
    for judge, splits in st.items():
        ref = " — reference rubric judge, not an LLM" if judge.startswith("reference-rubric") else ""
        print(f"\njudge {judge}{ref}")
        print(
            f"  {'split':6} {'queries':>7} {'pairs':>7} {'grade0':>7} {'grade1':>7} {'grade2':>7} {'grade3':>7}  unlabeled  cost"
        )
        for split in sorted(splits):
            d = splits[split]
            g = d["grades"]
            print(
                f"  {split:6} {d['queries']:7d} {d['pairs']:7d} {g['0']:7d} {g['1']:7d} {g['2']:7d} {g['3']:7d}  "
                f"{d['unlabeled'] or '-'}  ${d['cost_usd']:.4f}"
            )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`fashion-rerank judgments export`: SRW IMPORT_JUDGMENT body or JSONL."""

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    js = store.judgments(args.judge_model or s.judge_model, prompts.PROMPT_VERSION, split=args.split)
    if args.format == "srw":
        body = to_srw(
            js,
            args.name or f"fashion-rerank {s.judge_model} {prompts.PROMPT_VERSION}",
            description=f"0-3 grades by {s.judge_model}"
            + (" (reference rubric, not an LLM)" if s.is_reference_judge() else "")
            + f", prompt {prompts.PROMPT_VERSION}; import with PUT _plugins/_search_relevance/judgments",
        )
        text = json.dumps(body, indent=2, ensure_ascii=False)
    else:
        from dataclasses import asdict

        text = "".join(json.dumps(asdict(j), ensure_ascii=False) + "\n" for j in js)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(js)} judgments ({args.format}) to {args.out}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`fashion-rerank train`: a new evaluated registry version (not promoted)."""

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    try:
        res = train_candidate(store, s, _registry(args), progress=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    st = res.stats
    print(
        f"trained {res.version} in {res.path}: {st.pairs} pairs x {st.epochs} epochs in {st.seconds} s = "
        f"{st.pairs_per_s} pairs/s, {st.seconds_per_1k_pairs_epoch} s per 1,000 pairs per epoch"
    )
    print(res.dev.table())
    print(res.test.table())
    print(res.decision.summary())
    print("not promoted (use `fashion-rerank refresh`, or promote with the registry)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`fashion-rerank evaluate`: metrics of kNN order, the serving model and `--model` versions/folders."""

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    reg = _registry(args)
    systems: dict = {"knn": (None, None)}
    if reg.current():
        systems["serving"] = (reg.current(), cross_encoder_scorer(reg.path(reg.current()), device=s.models.device))
    for m in args.model or []:
        path = Path(m) if Path(m).exists() else reg.path(m)
        systems["candidate" if len(args.model) == 1 else path.name] = (
            path.name,
            cross_encoder_scorer(path, device=s.models.device),
        )
    ev = evaluate_queries(eval_queries(store, s.judge_model, prompts.PROMPT_VERSION, args.split), systems, args.split)
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2, default=str))
    else:
        print(ev.table())
        for k, v in ev.significance.items():
            print(f"{k}: nDCG@10 diff {v['mean_diff']}, t-test p={v['p_ttest']}, Wilcoxon p={v['p_wilcoxon']} (n={v['n']})")
        print("MRR@10 and Recall@10 count grade >= 2 as relevant.")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    """`fashion-rerank refresh`: the whole job; returns its exit code (labeling.refresh)."""

    s = _settings(args)
    rep = refresh(s, alias=args.alias, n_queries=args.queries, registry=_registry(args), progress=True)
    print(rep.markdown())
    print(f"reports: {rep.paths.get('json')} {rep.paths.get('markdown')}")
    return rep.exit_code


def cmd_rollback(args: argparse.Namespace) -> int:
    """`fashion-rerank model rollback`: 0 when a previous version was restored, 1 when there is none."""

    reg = ModelRegistry(args.registry, args.model_name)
    before = reg.current()
    try:
        restored = reg.rollback()
    except RegistryError as exc:
        print(f"error: {exc}")
        return 1
    print(f"{reg.name}: rolled back from {before} to {restored}; a running sidecar picks it up at its next registry poll")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """`fashion-rerank model promote VERSION`: point `current` at VERSION; 0 done, 1 unknown version."""

    reg = ModelRegistry(args.registry, args.model_name)
    before = reg.current()
    try:
        reg.promote(args.version, reason=args.reason or "promoted by hand (fashion-rerank model promote)")
    except (RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{reg.name}: current is now {args.version} (was {before}); a running sidecar picks it up at its next registry poll")
    return 0
