"""`fashion-rerank serve` and `fashion-rerank search`: the reranking sidecar and a client for it."""

from __future__ import annotations

import argparse
import json
import sys

import grpc

from fashion_rerank.settings import ServeSettings
from reranker.client import RerankerClient
from reranker.serve import run_server


def cmd_serve(args: argparse.Namespace) -> int:

    overrides = {
        k: v
        for k, v in {
            "grpc_host": args.grpc_host,
            "grpc_port": args.grpc_port,
            "metrics_port": args.metrics_port,
            "http_port": args.http_port,
            "threads": args.threads,
        }.items()
        if v is not None
    }
    registry = None
    if args.registry or args.model_name:
        from fashion_rerank.registry import ModelRegistry

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


def cmd_search(args: argparse.Namespace) -> int:

    try:
        filters = parse_filters(args.filter)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the sidecar's own settings give its port, TLS (FR_SERVE_GRPC_TLS_CERT, trusting FR_SERVE_GRPC_TLS_CA) and token
    with RerankerClient.from_settings(ServeSettings(), target=args.target, timeout=args.timeout) as client:
        try:
            resp = client.search(args.query, top_k=args.top_k, top_n=args.top_n, filters=filters, index=args.index or "")
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(
            json.dumps(
                MessageToDict(resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    how = f"reranked by {resp.model_version}" if resp.reranked else "kNN order (not reranked)"
    print(f"{len(resp.hits)} of {resp.candidates} candidates, {how}, {resp.timings.total_ms:.0f} ms")
    print(f"{'rank':>4} {'score':>6} {'kNN#':>4}  {'id':<10} title")
    for h in resp.hits:
        score = f"{h.rerank_score:.3f}" if resp.reranked else "-"
        print(f"{h.rank:>4} {score:>6} {h.retrieval_rank:>4}  {h.id:<10} {h.product.title}")
    return 0
