"""The `fashion-rerank` console script: every command group and flag is defined here, in one place.

    fashion-rerank index build | rollback          the indexer (catalog -> bi-encoder -> OpenSearch k-NN)
    fashion-rerank serve                           the reranking sidecar (gRPC + HTTP + /metrics)
    fashion-rerank search QUERY                    one Search call against a running sidecar
    fashion-rerank labels grade | stats | export   the judgments: grade logged queries, inspect, export
    fashion-rerank model train | evaluate | promote | rollback
                                                   the cross-encoder in the model registry
    fashion-rerank refresh                         the labeling job: sample -> grade -> train -> evaluate -> promote
    fashion-rerank judge serve                     the reference judge (a rubric, not an LLM), OpenAI-compatible
    fashion-rerank judge calibrate --human FILE    the judge's agreement with human labels (kappa, Spearman)
    fashion-rerank experiment label-quality        implicit labels vs judge grades on held-out queries (your logs, H&M)
    fashion-rerank opensearch start | stop | status | install-pipeline | uninstall-pipeline
    fashion-rerank demo                            the whole system end to end (what `make demo` runs)
    fashion-rerank status                          what runs, which model serves, the alias and its index, the logs

Each command's handler lives in `cli.<group>` and imports its application lazily, so `--help` and
`opensearch status` never load torch. An import error in a handler is an error, never a missing command.
The spellings of release 0.1 (`index --rollback`, `label`, `grade`, `judgments ...`, `train`, `evaluate`,
`rollback`, `judge-server`) still work for one release, with a deprecation note on stderr (DEPRECATED).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from reranker.pipeline.options import DEFAULT_PIPELINE

#: Old spelling (first word) -> the words that replace it; removed in release 0.3.
DEPRECATED: dict[str, list[str]] = {
    "label": ["labels", "grade"],
    "grade": ["labels", "grade"],
    "judgments": ["labels"],
    "train": ["model", "train"],
    "evaluate": ["model", "evaluate"],
    "rollback": ["model", "rollback"],
    "judge-server": ["judge", "serve"],
}


def _handler(target: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports `module:function` when the command runs (keeps `--help` light).

    An ImportError is not swallowed: a broken module fails its command loudly.
    """

    def run(args: argparse.Namespace) -> int:
        mod, fn = target.split(":")
        return getattr(importlib.import_module(mod), fn)(args)

    run.__qualname__ = target
    return run


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _group(sub: argparse._SubParsersAction, name: str, help_: str) -> argparse._SubParsersAction:
    p = sub.add_parser(name, help=help_, description=help_)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


# ---------------------------------------------------------------------------------------------- index


def _index(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "index", "build the products k-NN index behind an alias, or roll the alias back")
    b = g.add_parser(
        "build",
        help="index a fashion catalog into a new versioned k-NN index and move the alias",
        description="Read a catalog, embed rerank_text with the bi-encoder (cached), bulk-index into a new "
        "versioned index and move the alias atomically; or update the live index in place with "
        "--incremental. Exit codes: 0 indexed, 1 nothing indexed, 2 error, 3 partial (too many rows failed "
        "or the count fell far below the previous index: alias not moved, new index kept; see --allow-partial).",
    )
    b.add_argument("--catalog", help="myntra (bundled), hm (H&M articles, see --hm-path) or a CSV/TSV/JSONL/Parquet path")
    b.add_argument("--limit", type=_positive_int, help="index only the first N valid products")
    b.add_argument(
        "--incremental", action="store_true", help="update changed products and delete removed ones in the index behind the alias"
    )
    b.add_argument(
        "--map",
        dest="mapping",
        metavar="FIELD=COL,...",
        help="column mapping for a generic file, e.g. id=ProductID,title=ProductName,colour=PrimaryColor",
    )
    b.add_argument("--hm-path", help="path of the H&M articles file (or set FR_HM_ARTICLES)")
    b.add_argument("--alias", help="alias to write behind (default OPENSEARCH_INDEX_ALIAS, 'products')")
    b.add_argument(
        "--allow-partial",
        action="store_true",
        help="move the alias even when more than FR_INDEX_MAX_FAILED_SHARE of the rows failed or the new index holds "
        "fewer than FR_INDEX_MIN_COUNT_RATIO of the previous one's documents (reasons still reported)",
    )
    b.add_argument("--json", action="store_true", help="print the summary as JSON (all skipped rows included)")
    b.set_defaults(func=_handler("cli.index:cmd_index"), rollback=False)
    r = g.add_parser("rollback", help="move the alias back to the previous kept index")
    r.add_argument("--alias", help="alias to move (default OPENSEARCH_INDEX_ALIAS, 'products')")
    r.set_defaults(func=_handler("cli.index:cmd_index"), rollback=True, catalog=None, json=False)


# --------------------------------------------------------------------------------------- serve, search


def _serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the reranking sidecar (gRPC + metrics + HTTP; settings from FR_SERVE_*)")
    p.add_argument("--grpc-host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default 50051)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (default 9464; <0 = off)")
    p.add_argument("--http-port", type=int, default=None, help="HTTP front port (default 8080; 0 = off)")
    p.add_argument("--threads", type=int, default=None, help="model intra-op threads (default: the CPU quota)")
    p.add_argument("--registry", default=None, help="model registry folder (default FR_MODEL_REGISTRY_DIR, models/)")
    p.add_argument("--model-name", default=None, help="model name in the registry (default FR_MODEL_NAME)")
    p.set_defaults(func=_handler("cli.serve:cmd_serve"))

    s = sub.add_parser("search", help="search the running sidecar: kNN + rerank")
    s.add_argument("query")
    s.add_argument("--top-n", type=int, default=10, help="hits to show (default 10)")
    s.add_argument("--top-k", type=int, default=100, help="kNN candidates to rerank (default 100)")
    s.add_argument(
        "--filter",
        action="append",
        metavar="ATTR=VALUE[,VALUE]",
        help="attribute filter, repeatable (e.g. --filter gender=Women --filter colour=Red,Maroon)",
    )
    s.add_argument("--index", default=None, help="index or alias (default: the server's)")
    s.add_argument("--target", default=None, help="host:port of the sidecar (default from FR_SERVE_GRPC_HOST/PORT)")
    s.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (default 10)")
    s.add_argument("--json", action="store_true", help="print the response as JSON")
    s.set_defaults(func=_handler("cli.serve:cmd_search"))


# ------------------------------------------------------------------------------ labels, model, refresh


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judgments", type=Path, default=None, help="judgments JSONL (FR_LABEL_JUDGMENTS_PATH)")


def _judge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge-model", default=None, help="FR_LABEL_JUDGE_MODEL (default reference-rubric-v2)")
    p.add_argument("--base-url", default=None, help="judge base URL (OPENAI_BASE_URL)")
    p.add_argument("--budget-usd", type=float, default=None, help="stop grading at this spend (FR_LABEL_BUDGET_USD)")
    p.add_argument("--concurrency", type=int, default=None, help="judge requests in flight")
    p.add_argument("--query-log", default=None, help="UBI query log: .jsonl path or index name (FR_LABEL_QUERY_LOG)")
    p.add_argument("--queries", type=int, default=None, help="new queries to sample (FR_LABEL_QUERIES_PER_RUN)")
    p.add_argument("--top-k", type=int, default=None, help="kNN candidates per query (FR_LABEL_TOP_K)")
    p.add_argument("--alias", default=None, help="products alias (OPENSEARCH_INDEX_ALIAS)")


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=None, help="model registry folder (FR_MODEL_REGISTRY_DIR)")
    p.add_argument("--model-name", default=None, help="model name in the registry (FR_MODEL_NAME)")


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--loss", choices=["bce", "lambda"], default=None)
    p.add_argument("--base-model", default=None, help="packaged:all-MiniLM-L6-v2 or cross-encoder/ms-marco-MiniLM-L6-v2")


def _labels(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "labels", "grade logged queries with the judge, and inspect or export the judgments")
    p = g.add_parser("grade", help="sample logged queries, build candidate pools and grade them with the judge (resumable)")
    _store_flags(p)
    _judge_flags(p)
    p.set_defaults(func=_handler("cli.labels:cmd_label"))
    st = g.add_parser("stats", help="grade distribution per judge and split")
    _store_flags(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_handler("cli.labels:cmd_stats"))
    ex = g.add_parser("export", help="export judgments (srw: Search Relevance Workbench IMPORT_JUDGMENT body)")
    _store_flags(ex)
    ex.add_argument("--format", choices=["srw", "jsonl"], default="srw")
    ex.add_argument("--out", default=None, help="file to write (default stdout)")
    ex.add_argument("--name", default=None, help="judgment list name (srw)")
    ex.add_argument("--split", choices=["train", "dev", "test"], default=None)
    ex.add_argument("--judge-model", default=None)
    ex.set_defaults(func=_handler("cli.labels:cmd_export"))


def _model(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "model", "train, evaluate, promote or roll back the cross-encoder in the model registry")
    t = g.add_parser("train", help="fine-tune a cross-encoder candidate on the train split and write it to the registry")
    _store_flags(t)
    _registry_flags(t)
    _train_flags(t)
    t.set_defaults(func=_handler("cli.labels:cmd_train"))
    e = g.add_parser("evaluate", help="nDCG@10, MRR@10, Recall@10, Judged@10 on held-out queries")
    _store_flags(e)
    _registry_flags(e)
    e.add_argument("--model", action="append", help="registry version or model folder (repeatable)")
    e.add_argument("--split", choices=["dev", "test"], default="test")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_handler("cli.labels:cmd_evaluate"))
    p = g.add_parser("promote", help="make a registry version current (a running sidecar hot-swaps to it)")
    p.add_argument("version", help="registry version to serve")
    p.add_argument("--reason", default=None, help="recorded in the registry history")
    _registry_flags(p)
    p.set_defaults(func=_handler("cli.labels:cmd_promote"))
    r = g.add_parser("rollback", help="restore the previously promoted cross-encoder version")
    _registry_flags(r)
    r.set_defaults(func=_handler("cli.labels:cmd_rollback"))


def _refresh(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refresh",
        help="the labeling job: sample -> grade -> train -> evaluate -> promote; exit 0 promoted, 1 error, 3 kept, 4 budget",
    )
    _store_flags(p)
    _judge_flags(p)
    _registry_flags(p)
    _train_flags(p)
    p.add_argument("--reports-dir", type=Path, default=None)
    p.set_defaults(func=_handler("cli.labels:cmd_refresh"))


def _judge(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "judge", "the reference judge (a rubric over catalog attributes, not an LLM)")
    p = g.add_parser("serve", help="run the reference judge as an OpenAI-compatible Chat Completions server")
    p.add_argument("--host", default=None, help="default FR_JUDGE_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default FR_JUDGE_PORT or 8088; 0 picks a free port")
    p.add_argument("--model", default=None, help="model name to answer to (default reference-rubric-v2)")
    p.add_argument("--faults", default=None, help="failure injection, e.g. '429x2,slow=0.5' (see labeling.judge_server)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=_handler("cli.judge:cmd_serve"))
    c = g.add_parser(
        "calibrate",
        help="grade human-labelled pairs with the configured judge and report agreement (kappa, Spearman, confusion)",
    )
    c.add_argument(
        "--human",
        default=None,
        help="human labels: ESCI-style CSV(.gz) or CSV/JSONL with query, product_id, grade, text (default: the bundled "
        "200-pair Amazon ESCI sample)",
    )
    c.add_argument("--out", type=Path, default=Path("reports/judge-calibration"), help="report folder (and its judgment store)")
    c.add_argument("--limit", type=int, default=None, help="grade at most this many pairs")
    c.add_argument(
        "--faults",
        default=None,
        help="with the in-process reference judge only: failure injection, e.g. 'free-text' or 'grade=7' (labeling.judge_server)",
    )
    c.add_argument("--judge-model", default=None, help="FR_LABEL_JUDGE_MODEL (default reference-rubric-v2)")
    c.add_argument(
        "--base-url", default=None, help="judge base URL (OPENAI_BASE_URL); unset with the reference judge: run it in-process"
    )
    c.add_argument("--budget-usd", type=float, default=None, help="stop grading at this spend (FR_LABEL_BUDGET_USD)")
    c.add_argument("--concurrency", type=int, default=None, help="judge requests in flight")
    c.set_defaults(func=_handler("cli.judge:cmd_calibrate"))


def _experiment(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "experiment", "experiments that answer questions about your own data")
    p = g.add_parser(
        "label-quality",
        help="implicit labels (clicks, add-to-carts, purchases) vs judge grades vs the base model vs kNN order, "
        "on held-out queries, against implicit and judge qrels",
    )
    p.add_argument(
        "--data",
        choices=["ubi", "hm", "simulated"],
        default="ubi",
        help="ubi: your index + ubi_queries/ubi_events; hm: the H&M reproduction (Kaggle files from a path); "
        "simulated: the bundled Myntra catalog with a simulated log (tests, a quick look)",
    )
    p.add_argument("--alias", default=None, help="products alias (ubi: yours; hm/simulated: the one built, default lq-<data>)")
    p.add_argument("--ubi-queries", default="ubi_queries", help="ubi_queries index or JSONL (--data ubi)")
    p.add_argument("--ubi-events", default="ubi_events", help="ubi_events index or JSONL (--data ubi)")
    p.add_argument("--hm-articles", default=None, help="H&M articles.csv/.parquet (--data hm; default $FR_HM_ARTICLES)")
    p.add_argument(
        "--hm-transactions", default=None, help="H&M transactions parquet/csv (--data hm; default $FR_HM_TRANSACTIONS)"
    )
    p.add_argument("--quick", action="store_true", help="a small slice: minutes, for tests and a first look")
    p.add_argument("--products", type=int, default=None, help="index at most this many products (hm/simulated)")
    p.add_argument("--purchases", type=int, default=None, help="use at most this many purchases (hm)")
    p.add_argument(
        "--implicit-pairs", type=int, default=None, help="implicit training pairs, a seeded sample (default 10,000; --quick: all)"
    )
    p.add_argument(
        "--judge-ratio", type=float, default=10.0, help="implicit pairs per judged pair (default 10, the study's design; >= 1)"
    )
    p.add_argument("--grades", choices=["graded", "binary"], default="graded", help="implicit grades (docs/implicit-labels.md)")
    p.add_argument("--eval-queries", type=int, default=None, help="held-out queries (default 200; --quick 30)")
    p.add_argument("--eval-top-k", type=int, default=None, help="kNN candidates reranked per held-out query (default 50)")
    p.add_argument("--judge-top-k", type=int, default=10, help="kNN pool per judged train query")
    p.add_argument("--out", type=Path, default=None, help="report folder (default reports/label-quality-<data>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-model", default=None, help="FR_LABEL_JUDGE_MODEL (default reference-rubric-v2)")
    p.add_argument("--base-url", default=None, help="judge base URL; unset with the reference judge: run it in-process")
    p.add_argument("--budget-usd", type=float, default=None, help="stop grading at this spend")
    p.add_argument("--base-model", default=None, help="packaged:all-MiniLM-L6-v2 or cross-encoder/ms-marco-MiniLM-L6-v2")
    p.add_argument("--epochs", type=float, default=None, help="training epochs of both arms (default FR_LABEL_EPOCHS)")
    p.set_defaults(func=_handler("cli.experiment:cmd_label_quality"))


# ------------------------------------------------------------------------------------------ opensearch


def _opensearch(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "opensearch", "the local development OpenSearch node, and the search pipeline that calls the sidecar")
    for action, help_ in (
        ("start", "fetch, install and start the node on 127.0.0.1"),
        ("stop", "stop the node we started"),
        ("status", "show node status (exit 3 when not running)"),
    ):
        a = g.add_parser(action, help=help_)
        a.set_defaults(func=_handler("cli.opensearch:cmd_node"))
        if action == "start":
            a.add_argument("--plugins", default=None, help="plugin sets: knn (default) or knn,ml (ml-commons, neural-search)")
            a.add_argument(
                "--version",
                default=None,
                help="OpenSearch version: 2.19.1 (default, $FR_NODE_VERSION) or a 3.x such as 3.5.0 (needs Java 21+, found "
                "under /usr/lib/jvm or given by FR_NODE_JAVA_HOME)",
            )

    p = g.add_parser(
        "install-pipeline",
        help="install a search pipeline that reranks hits with the sidecar's HTTP front (idempotent)",
        description=(
            "Configure a running OpenSearch cluster (OPENSEARCH_URL) so a search pipeline reranks hits with the "
            "sidecar's HTTP front: the ml-commons cluster settings the connector needs (extended, never replaced), an "
            "HTTP connector to <reranker-url>/v1/rerank, a deployed remote model, a smoke _predict, and a search "
            "pipeline with the rerank processor (ignore_failure: true, so searches fail open to kNN order). "
            "Idempotent; uninstall-pipeline removes it all. --dry-run prints the JSON it sends."
        ),
    )
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="search pipeline name (default %(default)s)")
    p.add_argument(
        "--reranker-url",
        default=None,
        help="base URL of the sidecar's HTTP front as OpenSearch reaches it (default http://127.0.0.1:$FR_SERVE_HTTP_PORT)",
    )
    p.add_argument("--index", default=None, help="index or alias for --set-default (e.g. products)")
    p.add_argument("--set-default", action="store_true", help="make it the index's default search pipeline")
    p.add_argument("--api-key", default=None, help="bearer token of the HTTP front (default $FR_SERVE_HTTP_API_KEY)")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke _predict (e.g. sidecar not started yet)")
    p.add_argument("--dry-run", action="store_true", help="print the requests and JSON bodies; contact nothing")
    p.set_defaults(func=_handler("cli.opensearch:cmd_install_pipeline"))
    u = g.add_parser("uninstall-pipeline", help="remove the search pipeline, model, connector and restore settings")
    u.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="search pipeline name (default %(default)s)")
    u.set_defaults(func=_handler("cli.opensearch:cmd_uninstall_pipeline"))


# ------------------------------------------------------------------------------------------------ demo


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole system end to end on the bundled catalog (what `make demo` runs)",
        description="Index the bundled catalog, serve, replay shopper searches, run the labeling job "
        "and measure held-out queries before and after reranking; writes reports/demo/.",
    )
    p.add_argument("--limit", type=int, default=None, help="index only the first N catalog products (default: all)")
    p.add_argument("--queries", type=int, default=900, help="distinct generated shopper queries (1/3 held out; default 900)")
    p.add_argument("--out", default="reports/demo", help="report folder (default reports/demo)")
    p.add_argument("--work", default="var/demo", help="demo state: model registry, query log, judgments, logs (default var/demo)")
    p.add_argument("--alias", default=None, help="index alias (default OPENSEARCH_INDEX_ALIAS or 'products')")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--seed", type=int, default=42, help="seed of the query generator and training (default 42)")
    p.add_argument(
        "--shopper-queries",
        default=None,
        help="hand-written held-out queries, query<TAB>kind per line (default: the bundled "
        "demo/data/shopper_queries.tsv; 'none' to skip)",
    )
    p.add_argument("--grpc-port", type=int, default=50051, help="sidecar gRPC port (0 = any free port)")
    p.add_argument("--metrics-port", type=int, default=9464, help="sidecar Prometheus port (0 = any free port)")
    p.add_argument("--judge-port", type=int, default=8088, help="reference judge port (0 = any free port)")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the sidecar, judge and OpenSearch running at the end (also KEEP_RUNNING=1)",
    )
    p.set_defaults(func=_handler("cli.demo:cmd_demo"))


def _status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="what is running, which model version serves, the alias and its index, where the logs are (exit 3: not ready)",
    )
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=_handler("cli.status:cmd_status"))


def build_parser() -> argparse.ArgumentParser:
    """The whole `fashion-rerank` parser (every group, every flag)."""
    parser = argparse.ArgumentParser(
        prog="fashion-rerank",
        description="Cross-encoder reranking for fashion product search on OpenSearch k-NN: index a catalog, "
        "serve the reranking sidecar, label queries with an LLM judge, train and promote the cross-encoder.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_index, _serve, _labels, _model, _refresh, _judge, _experiment, _opensearch, _demo, _status):
        add(sub)
    return parser


def modernize(argv: list[str], warn: Callable[[str], None] | None = None) -> list[str]:
    """Rewrite a 0.1 spelling of `argv` into the current one (see DEPRECATED), calling `warn` with a note.

    `index --catalog X` -> `index build --catalog X`; `index --rollback` -> `index rollback`.
    """
    if not argv:
        return argv
    head, rest = argv[0], list(argv[1:])
    new: list[str] | None = None
    if head == "index" and (not rest or rest[0] not in ("build", "rollback", "-h", "--help")):
        new = (
            ["index", "rollback", *[a for a in rest if a != "--rollback"]] if "--rollback" in rest else ["index", "build", *rest]
        )
    elif head in DEPRECATED:
        new = [*DEPRECATED[head], *rest]
    if new is None:
        return argv
    if warn is not None:
        shown = " ".join(new[:2])  # every current command is `group action` or a single word plus flags
        warn(f"note: `fashion-rerank {head}` is deprecated and goes away in release 0.3; use `fashion-rerank {shown}`")
    return new


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]) and run the command; returns its exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = modernize(list(sys.argv[1:] if argv is None else argv), lambda m: print(m, file=sys.stderr))
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
