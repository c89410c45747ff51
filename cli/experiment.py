"""`fashion-rerank experiment label-quality`: implicit labels vs judge grades on held-out queries."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.judge import in_process_judge
from fashion_rerank.settings import LabelSettings

#: Sizes of `--quick` (minutes on 2 cores) and of a full run. Full H&M: every purchase of the week makes a search
#: and its implicit pairs, and the implicit arm trains on a seeded 10,000 of them (3 epochs, like the judged arm's
#: 1,000), which is what fits the hour on 2 cores (training runs at ~20-40 pairs/s there); --implicit-pairs raises it.
QUICK = {
    "products": 400,
    "n_distinct": 150,
    "purchases": 1_000,
    "eval_queries": 30,
    "eval_top_k": 20,
    "epochs": 1.0,
    "implicit_pairs": None,
}
FULL = {
    "products": None,
    "n_distinct": 1_500,
    "purchases": None,
    "eval_queries": 200,
    "eval_top_k": 50,
    "epochs": None,
    "implicit_pairs": 10_000,
}


def cmd_label_quality(args: argparse.Namespace) -> int:
    """Build the inputs for `--data` (module `demo.label_quality`), run `labeling.experiment.run_label_quality`
    and print the outcome. Returns 0, or 1 with a message (missing files, no usable log, judge unusable)."""
    from demo.label_quality import fill_shown, own_log, simulated_log, texts_from_index
    from fashion_rerank.embedding import load_bi_encoder
    from fashion_rerank.opensearch import make_client
    from labeling.experiment import run_label_quality
    from labeling.grading import JudgeConfigError

    size = dict(QUICK if args.quick else FULL)
    over = {
        k: v
        for k, v in (
            ("judge_model", args.judge_model),
            ("base_url", args.base_url),
            ("budget_usd", args.budget_usd),
            ("base_model", args.base_model),
            ("epochs", args.epochs if args.epochs is not None else size["epochs"]),
        )
        if v is not None
    }
    settings = LabelSettings(**over)
    out = args.out or Path("reports") / f"label-quality-{args.data}{'-quick' if args.quick else ''}"
    alias = args.alias or (f"lq-{args.data}" if args.data != "ubi" else None)
    client = make_client()
    encoder = load_bi_encoder()
    try:
        if args.data == "ubi":
            if not alias:
                print("error: --data ubi needs --alias (the products alias your searches ran on)")
                return 1
            searches, events, facts = own_log(client, args.ubi_queries, args.ubi_events)
        elif args.data == "simulated":
            from indexer.catalogs import read_myntra

            limit = args.products or size["products"] or 5_000
            _index("myntra", alias, client, encoder, limit=limit)
            products = list(read_myntra(limit=limit).products)
            searches, events, facts = simulated_log(products, n_distinct=size["n_distinct"], seed=args.seed + 7)
        else:
            from demo.label_quality import hm_log

            articles = args.hm_articles or os.environ.get("FR_HM_ARTICLES")
            transactions = args.hm_transactions or os.environ.get("FR_HM_TRANSACTIONS")
            if not articles or not transactions:
                print("error: --data hm needs --hm-articles and --hm-transactions (or FR_HM_ARTICLES / FR_HM_TRANSACTIONS)")
                return 1
            purchases = args.purchases or size["purchases"]
            subset = None
            if purchases is not None or args.products is not None:
                # a slice: index the purchased articles (plus --products others) from a JSONL written under --out
                Path(out).mkdir(parents=True, exist_ok=True)
                subset = str(Path(out) / "hm_articles_slice.jsonl")
            searches, events, facts = hm_log(
                articles, transactions, purchases=purchases, seed=args.seed, subset_path=subset, extra_articles=args.products or 0
            )
            _index("hm", alias, client, encoder, limit=None, hm_path=subset or articles)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    searches = fill_shown(searches, client, alias, encoder, depth=10)
    ids = {e.object_id for e in events} | {h for s in searches for h in s.hit_ids}
    texts = texts_from_index(client, alias, ids)
    settings, server = in_process_judge(settings)
    try:
        res = run_label_quality(
            searches,
            events,
            texts,
            client,
            alias,
            encoder,
            settings,
            out,
            judge_ratio=args.judge_ratio,
            implicit_limit=args.implicit_pairs or size["implicit_pairs"],
            implicit_grades=args.grades,
            eval_queries=args.eval_queries or size["eval_queries"],
            eval_top_k=args.eval_top_k or size["eval_top_k"],
            judge_top_k=args.judge_top_k,
            seed=args.seed,
            catalog=alias,
            data={"data": args.data, "alias": alias, **facts},
        )
    except (ValueError, JudgeConfigError) as exc:
        print(f"error: {exc}")
        return 1
    finally:
        if server is not None:
            server.stop()
    for line in res.outcome:
        print(line)
    print(f"wrote {out / 'report.md'}, {out / 'summary.json'}, {out / 'ndcg.png'}")
    return 0


def _index(catalog: str, alias: str, client, encoder, limit: int | None, hm_path: str | None = None) -> None:
    """Index `catalog` behind `alias` (incrementally when the alias exists: unchanged products cost nothing)."""
    from indexer.run import run_index

    exists = client.indices.exists_alias(name=alias)
    summary = run_index(
        catalog, limit=limit, incremental=bool(exists), alias=alias, client=client, encoder=encoder, hm_path=hm_path
    )
    print(summary.format().splitlines()[0] if summary.format() else f"indexed {summary.indexed}", flush=True)
