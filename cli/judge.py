"""`fashion-rerank judge serve`: the reference judge (a rubric, not an LLM) as an OpenAI-compatible server."""

from __future__ import annotations

import argparse

from fashion_rerank.settings import JudgeServerSettings
from labeling.judge_server import ReferenceJudge


def cmd_serve(args: argparse.Namespace) -> int:
    """`fashion-rerank judge serve`: serve until interrupted."""
    s = JudgeServerSettings()
    try:
        server = ReferenceJudge(
            args.host or s.host,
            s.port if args.port is None else args.port,
            args.model or s.model,
            s.faults if args.faults is None else args.faults,
            args.verbose,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    print(
        f"reference judge '{server.model}' (deterministic rubric over catalog attributes, NOT an LLM) "
        f"serving OpenAI Chat Completions at {server.url}",
        flush=True,
    )
    if server.faults:
        print(f"injected faults: {', '.join(f.kind for f in server.faults)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
