"""The `fashion-rerank` console script. Each subcommand lives with the package that owns it and is
registered here by name, so `fashion-rerank --help` lists everything.

Subcommands register through `add_parser(subparsers)` functions; each sets `func(args) -> int` (exit code).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# module path -> function that adds its subcommands. Modules are imported lazily per command so that
# `fashion-rerank opensearch status` does not import torch.
REGISTRY: list[str] = [
    "fashion_rerank.cli:add_opensearch",
    "indexer.run:add_parser",
    "reranker.cli:add_parser",
    "labeling.cli:add_parser",
    "fashion_rerank.demo:add_parser",
]


def _cmd_opensearch(args: argparse.Namespace) -> int:
    from fashion_rerank import local_node

    try:
        if args.action == "start":
            st = local_node.start(plugins=args.plugins)
            print(f"OpenSearch {st['version']} is {st['health']} at {st['url']} with plugins {', '.join(st['plugins'])}")
        elif args.action == "stop":
            print("stopped" if local_node.stop() else "no node started by fashion-rerank is running")
        else:
            st = local_node.status()
            print(json.dumps(st, indent=2))
            return 0 if st["running"] else 3
    except local_node.NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_opensearch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("opensearch", help="manage the local development OpenSearch node / install the search pipeline")
    osub = p.add_subparsers(dest="action", required=True)
    for action, help_ in (("start", "fetch, install and start the node on 127.0.0.1"), ("stop", "stop the node we started"), ("status", "show node status")):
        a = osub.add_parser(action, help=help_)
        a.set_defaults(func=_cmd_opensearch)
        if action == "start":
            a.add_argument("--plugins", default=None, help="plugin sets: knn (default) or knn,ml (ml-commons, neural-search)")
    try:
        from reranker.pipeline_install import add_pipeline_commands
    except ImportError:
        return
    add_pipeline_commands(osub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-rerank",
        description="Cross-encoder reranking for fashion product search on OpenSearch k-NN: index a catalog, "
        "serve the reranking sidecar, label queries with an LLM judge, train and promote the cross-encoder.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for entry in REGISTRY:
        mod, fn = entry.split(":")
        try:
            module = importlib.import_module(mod)
        except ImportError as exc:
            if exc.name and mod.startswith(exc.name.split(".")[0]):
                continue  # that part of the project is not built yet
            raise
        getattr(module, fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
