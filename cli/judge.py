"""`fashion-rerank judge serve`: the reference judge (a rubric, not an LLM) as an OpenAI-compatible server."""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_rerank.settings import JudgeServerSettings, LabelSettings
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


def in_process_judge(settings: LabelSettings, faults: str = "") -> tuple[LabelSettings, ReferenceJudge | None]:
    """With the reference judge and no base URL, start it in-process on a free port and return settings that
    point at it plus the server (the caller stops it); otherwise (settings, None) unchanged."""
    if settings.base_url is not None or not settings.is_reference_judge():
        return settings, None
    server = ReferenceJudge("127.0.0.1", 0, settings.judge_model, faults)
    server.start()
    print(f"reference judge (a rubric, NOT an LLM) in-process at {server.url}", flush=True)
    return settings.model_copy(update={"base_url": server.url}), server


def cmd_calibrate(args: argparse.Namespace) -> int:
    """`fashion-rerank judge calibrate`: grade human-labelled pairs with the judge and report agreement.

    With the reference judge and no base URL, the judge runs in-process on a free port (with `--faults`, if
    given). Writes `<out>/judgments.jsonl` (resumable), `<out>/calibration.json` and `<out>/report.md`.
    Returns 0, or 1 with a message when the labels cannot be read or the judge cannot be used.
    """
    import json

    from labeling.calibration import ESCI_SAMPLE, calibrate
    from labeling.grading import JudgeConfigError

    over = {
        k: v
        for k, v in (
            ("judge_model", args.judge_model),
            ("base_url", args.base_url),
            ("budget_usd", args.budget_usd),
            ("concurrency", args.concurrency),
        )
        if v is not None
    }
    settings = LabelSettings(**over)
    if args.faults and not (settings.base_url is None and settings.is_reference_judge()):
        print("error: --faults applies to the in-process reference judge only")
        return 1
    settings, server = in_process_judge(settings, args.faults or "")
    human = args.human or str(ESCI_SAMPLE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = calibrate(human, settings, out / "judgments.jsonl", limit=args.limit, progress=True)
    except (FileNotFoundError, ValueError, JudgeConfigError) as exc:
        print(f"error: {exc}")
        return 1
    finally:
        if server is not None:
            server.stop()
    lines = [f"human labels: {human} ({len(result.labels.pairs)} pairs, {len(result.labels.skipped)} rows skipped)"]
    lines += [f"skipped line {n}: {why}" for n, why in result.labels.skipped[:10]]
    if len(result.labels.skipped) > 10:
        lines.append(f"... and {len(result.labels.skipped) - 10} more skipped rows (calibration.json lists them all)")
    lines += result.agreement.lines()
    (out / "calibration.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(
        "# Judge calibration\n\n"
        + "\n".join(f"    {x}" for x in lines)
        + "\n\nGrading run:\n\n"
        + "\n".join(f"    {x}" for x in result.grading.lines())
        + "\n",
        encoding="utf-8",
    )
    print("\n".join(lines))
    print(f"wrote {out / 'report.md'}, {out / 'calibration.json'}")
    return 0
