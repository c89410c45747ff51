"""`fashion-rerank opensearch install-pipeline | uninstall-pipeline` (see `reranker.pipeline`)."""

from __future__ import annotations

import argparse
import json
import sys

from fashion_rerank import local_node
from fashion_rerank.opensearch import explain_error, make_client
from fashion_rerank.settings import NodeSettings, OpenSearchSettings
from reranker.pipeline.bodies import example_search_body, request_plan
from reranker.pipeline.cluster import InstallReport
from reranker.pipeline.install import install_pipeline
from reranker.pipeline.options import InstallError, InstallOptions
from reranker.pipeline.uninstall import uninstall_pipeline


def _access_hint(exc: InstallError) -> str | None:
    """The kernel's one-line explanation when `exc` came from bad credentials or an untrusted certificate."""
    return explain_error(exc.__cause__) if exc.__cause__ is not None else None


def _how_to_call(opts: InstallOptions, report: InstallReport) -> str:
    index = opts.index or "products"
    body = json.dumps(example_search_body(), indent=2)
    lines = [
        "",
        f"Search pipeline '{opts.pipeline}' reranks with the sidecar at {opts.rerank_url} (model {report.model_id}).",
        "Call it with a kNN query and the query text for the reranker:",
        f"  POST /{index}/_search?search_pipeline={opts.pipeline}",
        "  " + body.replace("\n", "\n  "),
    ]
    if opts.set_default:
        lines.append(
            f"It is also the default search pipeline of '{index}', so plain /{index}/_search is reranked "
            "(still pass ext.rerank.query_context)."
        )
    lines.append("If the sidecar is down or slow, searches still answer in kNN order (ignore_failure: true).")
    lines.append(f"Remove everything with: fashion-rerank opensearch uninstall-pipeline --pipeline {opts.pipeline}")
    return "\n".join(lines)


def cmd_install_pipeline(args: argparse.Namespace) -> int:
    try:
        opts = InstallOptions.from_settings(
            pipeline=args.pipeline,
            reranker_url=args.reranker_url,
            index=args.index,
            set_default=args.set_default,
            api_key=args.api_key,
            smoke=not args.no_smoke,
        )
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for method, path, body in request_plan(opts):
            shown = json.loads(json.dumps(body)) if body is not None else None
            if shown and "credential" in shown and opts.api_key:
                shown["credential"]["api_key"] = "<FR_SERVE_HTTP_API_KEY>"
            print(f"{method} {path}")
            if shown is not None:
                print(json.dumps(shown, indent=2))
            print()
        return 0

    client = make_client()
    print(f"installing search pipeline '{opts.pipeline}' into {OpenSearchSettings().url}:")
    try:
        report = install_pipeline(client, opts, out=print)
    except InstallError as exc:
        print(f"error: {_access_hint(exc) or exc}", file=sys.stderr)
        return 1
    print("nothing changed (already installed)" if not report.changed else "done")
    print(_how_to_call(opts, report))
    return 0


def cmd_uninstall_pipeline(args: argparse.Namespace) -> int:

    print(f"removing search pipeline '{args.pipeline}' from {OpenSearchSettings().url}:")
    try:
        uninstall_pipeline(make_client(), args.pipeline, out=print)
    except InstallError as exc:
        print(f"error: {_access_hint(exc) or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    """`fashion-rerank opensearch start | stop | status`: the local development node (`fashion_rerank.local_node`).

    Exit codes: 0 done (status: running), 2 error, 3 status: not running.
    """

    try:
        if args.action == "start":
            version = getattr(args, "version", None)
            settings = NodeSettings(version=version) if version else None  # None: FR_NODE_VERSION or the default
            st = local_node.start(plugins=args.plugins, settings=settings)
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
