"""Subcommands of the labeling job, registered into `fashion-rerank` by `add_parser(sub)`:

    judge-server                  the reference judge (rubric, not an LLM), OpenAI-compatible
    label (alias grade)           sample logged queries, build candidate pools, grade the missing pairs
    judgments stats | export      grade distribution per judge and split; export (SRW import format, JSONL)
    train                         fine-tune a candidate on the train split, evaluate it, write it to the registry
    evaluate                      nDCG@10 / MRR@10 / Recall@10 / Judged@10 for kNN, serving and given models
    refresh                       sample -> grade -> train -> evaluate -> promote (exit codes: see labeling.refresh)
    rollback                      restore the previously promoted model version

Settings come from FR_LABEL_* / OPENAI_* (labeling.settings); flags override them for one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _settings(args: argparse.Namespace):
    from labeling.settings import LabelSettings

    over = {}
    for flag, field in (("judgments", "judgments_path"), ("judge_model", "judge_model"), ("base_url", "base_url"),
                        ("budget_usd", "budget_usd"), ("concurrency", "concurrency"), ("query_log", "query_log"),
                        ("epochs", "epochs"), ("learning_rate", "learning_rate"), ("loss", "loss"),
                        ("base_model", "base_model"), ("reports_dir", "reports_dir"), ("top_k", "top_k")):
        v = getattr(args, flag, None)
        if v is not None:
            over[field] = v
    return LabelSettings(**over)


def _registry(args: argparse.Namespace):
    from reranker.registry import ModelRegistry

    return ModelRegistry(getattr(args, "registry", None), getattr(args, "model_name", None))


def _common(p: argparse.ArgumentParser, judge: bool = False, registry: bool = False) -> None:
    p.add_argument("--judgments", type=Path, default=None, help="judgments JSONL (FR_LABEL_JUDGMENTS_PATH)")
    if judge:
        p.add_argument("--judge-model", default=None, help="FR_LABEL_JUDGE_MODEL (default reference-rubric-v1)")
        p.add_argument("--base-url", default=None, help="judge base URL (OPENAI_BASE_URL)")
        p.add_argument("--budget-usd", type=float, default=None, help="stop grading at this spend (FR_LABEL_BUDGET_USD)")
        p.add_argument("--concurrency", type=int, default=None, help="judge requests in flight")
        p.add_argument("--query-log", default=None, help="UBI query log: .jsonl path or index name (FR_LABEL_QUERY_LOG)")
        p.add_argument("--queries", type=int, default=None, help="new queries to sample (FR_LABEL_QUERIES_PER_RUN)")
        p.add_argument("--top-k", type=int, default=None, help="kNN candidates per query (FR_LABEL_TOP_K)")
        p.add_argument("--alias", default=None, help="products alias (OPENSEARCH_INDEX_ALIAS)")
    if registry:
        p.add_argument("--registry", type=Path, default=None, help="model registry folder (FR_MODEL_REGISTRY_DIR)")
        p.add_argument("--model-name", default=None, help="model name in the registry (FR_MODEL_NAME)")


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--loss", choices=["bce", "lambda"], default=None)
    p.add_argument("--base-model", default=None, help="packaged:all-MiniLM-L6-v2 or cross-encoder/ms-marco-MiniLM-L-6-v2")


# ----------------------------------------------------------------------------------------- commands

def cmd_label(args: argparse.Namespace) -> int:
    """`fashion-rerank label`: resume unfinished pools or sample and grade new ones; 4 when the budget stopped it."""
    from labeling.grading import JudgeConfigError
    from labeling.label import run_labeling

    s = _settings(args)
    try:
        run = run_labeling(s, alias=args.alias, n_queries=args.queries, progress=True)
    except (JudgeConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(run.lines()))
    return 4 if run.budget_stopped else 0


def cmd_stats(args: argparse.Namespace) -> int:
    """`fashion-rerank judgments stats`: grade distribution per judge and split."""
    from labeling.store import JudgmentStore

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    st = store.stats()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    rep = store.load_report
    print(f"{s.judgments_path}: {len(store)} judgments, {len(store.pools())} pools"
          + (f"; skipped {rep.invalid_lines} invalid line(s)" if rep.invalid_lines else "")
          + (" (last line truncated)" if rep.truncated_last_line else ""))
    for judge, splits in st.items():
        ref = " — reference rubric judge, not an LLM" if judge.startswith("reference-rubric") else ""
        print(f"\njudge {judge}{ref}")
        print(f"  {'split':6} {'queries':>7} {'pairs':>7} {'grade0':>7} {'grade1':>7} {'grade2':>7} {'grade3':>7}  unlabeled  cost")
        for split in sorted(splits):
            d = splits[split]
            g = d["grades"]
            print(f"  {split:6} {d['queries']:7d} {d['pairs']:7d} {g['0']:7d} {g['1']:7d} {g['2']:7d} {g['3']:7d}  "
                  f"{d['unlabeled'] or '-'}  ${d['cost_usd']:.4f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`fashion-rerank judgments export`: SRW IMPORT_JUDGMENT body or JSONL."""
    from labeling import prompts
    from labeling.store import JudgmentStore, to_srw

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    js = store.judgments(args.judge_model or s.judge_model, prompts.PROMPT_VERSION, split=args.split)
    if args.format == "srw":
        body = to_srw(js, args.name or f"fashion-rerank {s.judge_model} {prompts.PROMPT_VERSION}",
                      description=f"0-3 grades by {s.judge_model}"
                      + (" (reference rubric, not an LLM)" if s.is_reference_judge() else "")
                      + f", prompt {prompts.PROMPT_VERSION}; import with PUT _plugins/_search_relevance/judgments")
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
    from labeling.store import JudgmentStore
    from labeling.train import train_candidate

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    try:
        res = train_candidate(store, s, _registry(args), progress=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    st = res.stats
    print(f"trained {res.version} in {res.path}: {st.pairs} pairs x {st.epochs} epochs in {st.seconds} s = "
          f"{st.pairs_per_s} pairs/s, {st.seconds_per_1k_pairs_epoch} s per 1,000 pairs per epoch")
    print(res.dev.table())
    print(res.test.table())
    print(res.decision.summary())
    print("not promoted (use `fashion-rerank refresh`, or promote with the registry)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`fashion-rerank evaluate`: metrics of kNN order, the serving model and `--model` versions/folders."""
    from labeling import prompts
    from labeling.dataset import eval_queries
    from labeling.evaluate import cross_encoder_scorer, evaluate_queries
    from labeling.store import JudgmentStore

    s = _settings(args)
    store = JudgmentStore(s.judgments_path)
    reg = _registry(args)
    systems: dict = {"knn": (None, None)}
    if reg.current():
        systems["serving"] = (reg.current(), cross_encoder_scorer(reg.path(reg.current())))
    for m in args.model or []:
        path = Path(m) if Path(m).exists() else reg.path(m)
        systems["candidate" if len(args.model) == 1 else path.name] = (path.name, cross_encoder_scorer(path))
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
    from labeling.refresh import refresh

    s = _settings(args)
    rep = refresh(s, alias=args.alias, n_queries=args.queries, registry=_registry(args), progress=True)
    print(rep.markdown())
    print(f"reports: {rep.paths.get('json')} {rep.paths.get('markdown')}")
    return rep.exit_code


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the labeling subcommands (skipping any name another package already registered)."""
    from labeling import judge_server, promote

    def add(name: str, **kw) -> argparse.ArgumentParser | None:
        if name in sub.choices:
            return None
        return sub.add_parser(name, **kw)

    if "judge-server" not in sub.choices:
        judge_server.add_parser(sub)

    p = add("label", aliases=[] if "grade" in sub.choices else ["grade"],
            help="sample logged queries, build candidate pools and grade them with the judge (resumable)")
    if p:
        _common(p, judge=True)
        p.set_defaults(func=cmd_label)

    p = add("judgments", help="inspect or export the judgments store")
    if p:
        jsub = p.add_subparsers(dest="action", required=True)
        st = jsub.add_parser("stats", help="grade distribution per judge and split")
        _common(st)
        st.add_argument("--json", action="store_true")
        st.set_defaults(func=cmd_stats)
        ex = jsub.add_parser("export", help="export judgments (srw: Search Relevance Workbench IMPORT_JUDGMENT body)")
        _common(ex)
        ex.add_argument("--format", choices=["srw", "jsonl"], default="srw")
        ex.add_argument("--out", default=None, help="file to write (default stdout)")
        ex.add_argument("--name", default=None, help="judgment list name (srw)")
        ex.add_argument("--split", choices=["train", "dev", "test"], default=None)
        ex.add_argument("--judge-model", default=None)
        ex.set_defaults(func=cmd_export)

    p = add("train", help="fine-tune a cross-encoder candidate on the train split and write it to the registry")
    if p:
        _common(p, registry=True)
        _train_flags(p)
        p.set_defaults(func=cmd_train)

    p = add("evaluate", help="nDCG@10, MRR@10, Recall@10, Judged@10 on held-out queries")
    if p:
        _common(p, registry=True)
        p.add_argument("--model", action="append", help="registry version or model folder (repeatable)")
        p.add_argument("--split", choices=["dev", "test"], default="test")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_evaluate)

    p = add("refresh", help="sample -> grade -> train -> evaluate -> promote; exit 0 promoted, 1 error, 3 kept, 4 budget")
    if p:
        _common(p, judge=True, registry=True)
        _train_flags(p)
        p.add_argument("--reports-dir", type=Path, default=None)
        p.set_defaults(func=cmd_refresh)

    p = add("rollback", help="restore the previously promoted cross-encoder version")
    if p:
        p.add_argument("--registry", type=Path, default=None)
        p.add_argument("--model-name", default=None)
        p.set_defaults(func=promote.cmd_rollback)
