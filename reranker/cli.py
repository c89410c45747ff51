"""`fashion-rerank serve` and `fashion-rerank search` (registered by `fashion_rerank.cli`).

Imports nothing heavy at module level, so `fashion-rerank --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys


def _serve(args: argparse.Namespace) -> int:
    from reranker.serve import run_server
    from reranker.settings import ServeSettings

    overrides = {k: v for k, v in {
        "grpc_host": args.grpc_host, "grpc_port": args.grpc_port, "metrics_port": args.metrics_port,
        "http_port": args.http_port, "threads": args.threads,
    }.items() if v is not None}
    registry = None
    if args.registry or args.model_name:
        from reranker.registry import ModelRegistry

        registry = ModelRegistry(args.registry, args.model_name)
    try:
        settings = ServeSettings(**overrides)
    except ValueError as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    return run_server(settings, registry)


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """["gender=Women", "colour=Red,Maroon"] -> {"gender": ["Women"], "colour": ["Red", "Maroon"]}.

    Raises ValueError for an item without "=".
    """
    out: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"filter {item!r} is not attribute=value")
        out.setdefault(name.strip(), []).extend(v.strip() for v in value.split(",") if v.strip())
    return out


def _search(args: argparse.Namespace) -> int:
    import grpc

    from reranker.client import RerankerClient

    try:
        filters = parse_filters(args.filter)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.target
    if target is None:
        from reranker.settings import ServeSettings

        s = ServeSettings()
        target = f"{s.grpc_host}:{s.grpc_port}"
    with RerankerClient(target, timeout=args.timeout) as client:
        try:
            resp = client.search(args.query, top_k=args.top_k, top_n=args.top_n, filters=filters, index=args.index or "")
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
                         indent=2, ensure_ascii=False))
        return 0
    how = f"reranked by {resp.model_version}" if resp.reranked else "kNN order (not reranked)"
    print(f"{len(resp.hits)} of {resp.candidates} candidates, {how}, {resp.timings.total_ms:.0f} ms")
    print(f"{'rank':>4} {'score':>6} {'kNN#':>4}  {'id':<10} title")
    for h in resp.hits:
        score = f"{h.rerank_score:.3f}" if resp.reranked else "-"
        print(f"{h.rank:>4} {score:>6} {h.retrieval_rank:>4}  {h.id:<10} {h.product.title}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `serve` and `search` on the `fashion-rerank` subcommand parser."""
    p = sub.add_parser("serve", help="run the reranking sidecar (gRPC + metrics; settings from FR_SERVE_*)")
    p.add_argument("--grpc-host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default 50051)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (default 9464; <0 = off)")
    p.add_argument("--http-port", type=int, default=None, help="HTTP front port (default 8080; 0 = off)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPU quota)")
    p.add_argument("--registry", default=None, help="model registry folder (default FR_MODEL_REGISTRY_DIR, models/)")
    p.add_argument("--model-name", default=None, help="model name in the registry (default FR_MODEL_NAME)")
    p.set_defaults(func=_serve)

    s = sub.add_parser("search", help="search the running sidecar: kNN + rerank")
    s.add_argument("query")
    s.add_argument("--top-n", type=int, default=10, help="hits to show (default 10)")
    s.add_argument("--top-k", type=int, default=100, help="kNN candidates to rerank (default 100)")
    s.add_argument("--filter", action="append", metavar="ATTR=VALUE[,VALUE]",
                   help="attribute filter, repeatable (e.g. --filter gender=Women --filter colour=Red,Maroon)")
    s.add_argument("--index", default=None, help="index or alias (default: the server's)")
    s.add_argument("--target", default=None, help="host:port of the sidecar (default from FR_SERVE_GRPC_HOST/PORT)")
    s.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (default 10)")
    s.add_argument("--json", action="store_true", help="print the response as JSON")
    s.set_defaults(func=_search)
