"""`fashion-rerank index build | rollback`: the indexer application (`indexer.run`)."""

from __future__ import annotations

import argparse
import json
import sys

from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from fashion_rerank.opensearch import make_client
from fashion_rerank.settings import ModelSettings, OpenSearchSettings, cpu_quota
from indexer.gate import PartialIndexError
from indexer.index import AliasConflictError, IndexLifecycleError, rollback_alias
from indexer.run import run_index


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def cmd_index(args: argparse.Namespace) -> int:
    """`fashion-rerank index build` (and `index rollback`).

    Exit 0 indexed, 1 nothing indexed, 2 error, 3 partial: the partial-index gate refused a full build
    (alias not moved, new index kept) or an incremental run failed above FR_INDEX_MAX_FAILED_SHARE; the
    summary goes to stdout as usual and the reasons (failed ids and why) to stderr.
    """

    os_settings = OpenSearchSettings()
    alias = args.alias or os_settings.index_alias
    try:
        if getattr(args, "rollback", False):
            left, now = rollback_alias(make_client(os_settings), alias)
            print(f"alias {alias!r} moved back from {left} to {now}")
            return 0
        if not args.catalog:
            print("error: --catalog is required (myntra, hm or a file path)", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(ModelSettings().threads or cpu_quota())
        summary = run_index(
            args.catalog,
            limit=args.limit,
            incremental=args.incremental,
            alias=alias,
            mapping=args.mapping,
            hm_path=args.hm_path,
            progress=not args.json,
            allow_partial=getattr(args, "allow_partial", False),
        )
    except PartialIndexError as exc:
        print(json.dumps(exc.summary.to_dict(), indent=2, default=str) if args.json else exc.summary.format())
        print("error: partial index: " + "\n  ".join(exc.reasons), file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, IndexLifecycleError, AliasConflictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSConnectionError as exc:
        print(f"error: cannot reach OpenSearch at {os_settings.url}: {exc}", file=sys.stderr)
        return 2
    except TransportError as exc:
        print(f"error: OpenSearch refused a request: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        print(summary.format())
    return 0 if summary.indexed + summary.unchanged > 0 else 1
