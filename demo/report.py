"""The demo's report: `report.md`, `summary.json` and `demo.png` from one summary dict.

The summary dict (written as `summary.json`, shape below) is built by `demo.run`; this
module only renders it, so a report can be re-rendered from a saved `summary.json`
(`write_report(json.load(open(p)), out_dir)`).

summary.json (fields the report reads; numbers are floats unless noted):

    systems:      {"knn" | "reranked": {"ndcg@10" | "mrr@10" | "recall@10": {"value", "ci95": [lo, hi]},
                                        "latency_ms": {"p50", "p95", "n" (int), "samples": [ms, ...]}}}
    significance: {"ndcg@10" | ...: {"test", "p_value", "delta", "delta_ci95": [lo, hi]}}
    ideal:        {"ndcg@10": value of the ideal order of the judged candidates}  (optional)
    judge:        {"name", "model", "reference_rubric" (bool), "base_url"}
    model:        {"base_model", "version", "training_time_s", "train_pairs", "epochs", "learning_rate", ...}
    judged_pairs: {"train", "held_out", "total"} (ints)
    queries:      generator summary (seed, distinct, train, test, ...) + replay figures
    evaluation:   {"queries", "candidates_per_query", "top_k", "top_n", "concurrency"}
    handwritten:  the hand-written held-out set (demo.shopper_queries), {} when none: {"file", "queries" (int),
                  "evaluated" (int), "queries_without_relevant", "systems" and "significance" as above, "ideal",
                  "gap_closed", "by_kind": {kind: {"queries", "knn", "reranked", "delta", "wins", "losses"}},
                  "latency_ms": {"p50", "p95"}, "per_query": {query: {"knn", "reranked"}}}
    examples:     [{"query", "knn": [{"title", "grade"}], "reranked": [{"title", "grade"}]}]
    steps:        [{"name", "seconds", "note"}]; total_seconds
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

METRICS: tuple[tuple[str, str], ...] = (("ndcg@10", "nDCG@10"), ("mrr@10", "MRR@10"), ("recall@10", "Recall@10"))
SYSTEM_LABELS = {"knn": "kNN order (bi-encoder only)", "reranked": "kNN + promoted cross-encoder"}


def _fmt_metric(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = m.get("ci95") or (None, None)
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    return f"{m['value']:.3f}{ci}"


def _fmt_ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def _p(v: float | None) -> str:
    if v is None:
        return "= n/a"
    return "< 0.001" if v < 0.001 else f"= {v:.3f}"


def _latency_sentence(systems: dict) -> str:
    """ " At a cost in latency: Search p50 X ms -> Y ms (Zx)." from the systems' latency_ms, or ""."""
    before = systems.get("knn", {}).get("latency_ms", {}).get("p50")
    after = systems.get("reranked", {}).get("latency_ms", {}).get("p50")
    if not before or not after:
        return ""
    return f" The cost is latency: Search p50 goes from {before:.0f} ms to {after:.0f} ms ({after / before:.1f}x)."


def render_markdown(summary: dict, chart_name: str | None = "demo.png") -> str:
    """The Markdown report for `summary` (see the module docstring for its shape)."""
    systems = summary.get("systems", {})
    judge = summary.get("judge", {})
    model = summary.get("model", {})
    pairs = summary.get("judged_pairs", {})
    q = summary.get("queries", {})
    ev = summary.get("evaluation", {})
    lines: list[str] = ["# fashion-rerank demo report", ""]
    if summary.get("generated_at"):
        lines += [f"Generated {summary['generated_at']} on {summary.get('machine', 'this machine')}.", ""]

    knn = systems.get("knn", {}).get("ndcg@10", {}).get("value")
    rr = systems.get("reranked", {}).get("ndcg@10", {}).get("value")
    if knn is not None and rr is not None:
        lift = (rr - knn) / knn * 100 if knn else float("nan")
        left_out = ev.get("queries_without_relevant")
        lines += [
            f"On {ev.get('queries', '?')} held-out generated queries, reranking the top {ev.get('top_k', '?')} kNN "
            f"candidates with the promoted cross-encoder moves nDCG@10 from **{knn:.3f}** to **{rr:.3f}** "
            f"({lift:+.1f} %)."
            + _latency_sentence(systems)
            + (
                f" {left_out} further held-out quer{'y' if left_out == 1 else 'ies'} had no candidate graded above 0 "
                f"and {'is' if left_out == 1 else 'are'} left out (nDCG is undefined there)."
                if left_out
                else ""
            ),
            "",
        ]
    lines += ["## Held-out queries: kNN order vs the promoted cross-encoder", ""]
    lines += [
        "| system | nDCG@10 [95% CI] | MRR@10 [95% CI] | Recall@10 [95% CI] | Search p50 ms | Search p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("knn", "reranked"):
        s = systems.get(key, {})
        lat = s.get("latency_ms", {})
        lines.append(
            f"| {SYSTEM_LABELS[key]} | "
            + " | ".join(_fmt_metric(s.get(m)) for m, _ in METRICS)
            + f" | {_fmt_ms(lat.get('p50'))} | {_fmt_ms(lat.get('p95'))} |"
        )
    lines.append("")
    sig = summary.get("significance", {})
    if sig:
        lines.append("Paired comparison per query (reranked minus kNN):")
        lines.append("")
        for m, label in METRICS:
            s = sig.get(m)
            if not s:
                continue
            dci = s.get("delta_ci95")
            dci_s = f", 95% CI of the difference [{dci[0]:+.3f}, {dci[1]:+.3f}]" if dci else ""
            lines.append(
                f"- {label}: difference {s.get('delta', float('nan')):+.3f}{dci_s}, "
                f"{s.get('test', 'paired test')} p {_p(s.get('p_value'))}"
            )
        lines.append("")
    lines += _handwritten_section(
        summary.get("handwritten") or {}, summary.get("evaluation", {}), systems, summary.get("significance", {})
    )
    gap = summary.get("gap_closed")
    ideal = summary.get("ideal", {}).get("ndcg@10")
    if gap is not None and ideal is not None:
        lines += [
            f"Share of the gap between kNN order and the ideal order of the same judged candidates "
            f"(nDCG@10 {ideal:.3f}) that reranking closed: {gap * 100:.0f} %.",
            "",
        ]
    lines += [
        f"Metrics: ir-measures over the judge's 0-3 grades (nDCG gains = grades; MRR and Recall count grade >= "
        f"{ev.get('relevant_grade', 2)} as relevant), 95% intervals by bootstrap over queries. "
        f"Latency: client-side wall time of the sidecar's `Search` RPC (embed the query, kNN top "
        f"{ev.get('top_k', '?')} in OpenSearch, rerank when a model is current) at concurrency "
        f"{ev.get('concurrency', '?')}; *before* = the replayed traffic with no model yet (kNN order), "
        f"*after* = the held-out queries once the trained model is served.",
        "",
    ]
    if chart_name:
        lines += [f"![metrics before and after, Search latency]({chart_name})", ""]

    examples = summary.get("examples", [])
    if examples:
        lines += ["## Examples: top 5 before and after", ""]
        for ex in examples:
            lines += [
                f"**{ex['query']}**",
                "",
                "| # | kNN order (product id) | grade | reranked (product id) | grade |",
                "|---|---|---|---|---|",
            ]
            before, after = ex.get("knn", []), ex.get("reranked", [])
            for i in range(max(len(before), len(after))):
                b = before[i] if i < len(before) else {}
                a = after[i] if i < len(after) else {}

                def cell(x: dict) -> tuple[str, str]:
                    g = x.get("grade")
                    title = x.get("title", "").replace("|", "/")
                    if x.get("id"):  # the catalog has distinct products with identical titles
                        title += f" `{x['id']}`"
                    return (title, "" if g is None else str(g))

                bt, bg = cell(b)
                at, ag = cell(a)
                lines.append(f"| {i + 1} | {bt} | {bg} | {at} | {ag} |")
            lines.append("")

    lines += ["## How these numbers were made", ""]
    if judge.get("reference_rubric", True):
        lines.append(
            f"- **Labels come from the reference rubric judge (`{judge.get('name', 'fashion-rerank judge serve')}`), "
            "not from an LLM.** It speaks the OpenAI Chat Completions protocol and the labeling job calls it "
            "through the `openai` client exactly as it would call an LLM, but its 0-3 grades are a deterministic "
            "rubric over the catalog's structured attributes (product type, colour with synonyms, gender, usage, season)."
        )
    else:
        lines.append(
            f"- Labels come from the LLM `{judge.get('model')}` at `{judge.get('base_url')}` "
            "(OPENAI_BASE_URL), graded with the project's versioned rubric prompt."
        )
    lines += [
        f"- Judged pairs: {pairs.get('total', '?')} in all: {pairs.get('train', '?')} graded by the refresh job "
        f"(candidate pools of the logged queries) and {pairs.get('held_out', '?')} for the held-out evaluation.",
        f"- Base model: `{model.get('base_model', '?')}`; trained version `{model.get('version', '?')}` on "
        f"{model.get('train_pairs', '?')} pairs, {model.get('epochs', '?')} epoch(s), learning rate "
        f"{model.get('learning_rate', '?')}; training took {model.get('training_time_s', float('nan')):.0f} s.",
        *_onnx_line(model.get("onnx") or {}),
        f"- Queries: {q.get('distinct', '?')} distinct generated shopper queries (seed {q.get('seed', '?')}), "
        f"{q.get('train', '?')} replayed as live traffic ({q.get('replayed_requests', q.get('train_stream', '?'))} "
        f"Search requests with Zipf repeats and {q.get('typos', '?')} typo queries) and {q.get('test', '?')} held out; "
        "no held-out query string (nor a reordering of one) was ever sent before the evaluation.",
        f"- Catalog: {summary.get('catalog', {}).get('name', '?')}, "
        f"{summary.get('catalog', {}).get('products', '?')} products behind alias "
        f"`{summary.get('catalog', {}).get('alias', '?')}`.",
        "",
        "## Caveats",
        "",
    ]
    for c in summary.get("caveats", []):
        lines.append(f"- {c}")
    lines.append("")
    steps = summary.get("steps", [])
    if steps:
        lines += ["## Step timings", "", "| step | seconds | note |", "|---|---|---|"]
        for st in steps:
            lines.append(f"| {st['name']} | {st['seconds']:.1f} | {st.get('note', '')} |")
        if summary.get("total_seconds") is not None:
            lines.append(f"| **total** | **{summary['total_seconds']:.1f}** | |")
        lines.append("")
    return "\n".join(lines)


def _handwritten_section(hw: dict, ev: dict, generated: dict, generated_sig: dict) -> list[str]:
    """The report section on the hand-written held-out queries, beside the generated set ([] without one)."""
    if not hw or not hw.get("systems"):
        return []
    sysm = hw["systems"]
    lines = [
        "## Hand-written shopper queries beside the generated ones",
        "",
        f"{hw.get('queries', '?')} queries written by hand the way shoppers type (`{Path(hw.get('file', '')).name}`: "
        "occasions and activities, gift phrasing, British and American names, beauty words, brands, slang), none "
        "produced by the query generator and none in the training traffic; searched, graded and measured like the "
        f"generated held-out set. {hw.get('evaluated', '?')} had a candidate graded above 0"
        + (f"; {len(hw['skipped_lines'])} bad lines in the file were skipped" if hw.get("skipped_lines") else "")
        + ".",
        "",
        "| held-out set | queries | kNN nDCG@10 | reranked nDCG@10 | difference [95% CI] | paired t-test p | MRR@10 kNN -> reranked |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, s, n, sig in (
        ("generated", generated, ev.get("queries", "?"), generated_sig),
        ("hand-written", sysm, hw.get("evaluated", "?"), hw.get("significance", {})),
    ):
        k = (s.get("knn", {}).get("ndcg@10") or {}).get("value")
        r = (s.get("reranked", {}).get("ndcg@10") or {}).get("value")
        mk = (s.get("knn", {}).get("mrr@10") or {}).get("value")
        mr = (s.get("reranked", {}).get("mrr@10") or {}).get("value")
        if k is None or r is None:
            continue
        d = (sig or {}).get("ndcg@10", {})
        ci = d.get("delta_ci95")
        lines.append(
            f"| {label} | {n} | {k:.3f} | {r:.3f} | {r - k:+.3f}"
            + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            + f" | {_p(d.get('p_value')).removeprefix('= ') if d else 'n/a'} | "
            + (f"{mk:.3f} -> {mr:.3f}" if mk is not None and mr is not None else "n/a")
            + " |"
        )
    kinds = hw.get("by_kind") or {}
    if kinds:
        lines += [
            "",
            "By kind of wording (mean nDCG@10 per query; wins and losses: queries where reranking is above or below kNN order):",
            "",
            "| kind | queries | kNN | reranked | difference | wins / losses |",
            "|---|---|---|---|---|---|",
        ]
        for kind, v in kinds.items():
            lines.append(
                f"| {kind} | {v['queries']} | {v['knn']:.3f} | {v['reranked']:.3f} | {v['delta']:+.3f} | "
                f"{v['wins']} / {v['losses']} |"
            )
    lines.append("")
    return lines


def render_chart(summary: dict, path: Path) -> Path:
    """PNG with two panels: the three metrics per system with 95% CI error bars, and Search latency histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = summary.get("systems", {})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.38
    x = np.arange(len(METRICS))
    colours = {"knn": "#8c9bab", "reranked": "#d1495b"}
    for i, key in enumerate(("knn", "reranked")):
        s = systems.get(key, {})
        vals, errs = [], [[], []]
        for m, _ in METRICS:
            mm = s.get(m) or {}
            v = mm.get("value") or 0.0
            lo, hi = mm.get("ci95") or (v, v)
            vals.append(v)
            errs[0].append(max(0.0, v - lo))
            errs[1].append(max(0.0, hi - v))
        bars = ax1.bar(x + (i - 0.5) * width, vals, width, yerr=errs, capsize=4, label=SYSTEM_LABELS[key], color=colours[key])
        for b, v in zip(bars, vals):
            ax1.text(b.get_x() + b.get_width() / 2, v / 2, f"{v:.3f}", ha="center", va="center", fontsize=8, color="white")
    ax1.set_xticks(x, [label for _, label in METRICS])
    ax1.set_ylim(0, 1.05)
    ax1.set_title(f"Held-out queries (n={summary.get('evaluation', {}).get('queries', '?')}), 95% bootstrap CI")
    ax1.legend(loc="upper right", fontsize=8)

    samples = {k: systems.get(k, {}).get("latency_ms", {}).get("samples") or [] for k in ("knn", "reranked")}
    allv = [v for s in samples.values() for v in s if v > 0]
    if allv:
        bins = np.logspace(np.log10(max(0.5, min(allv))), np.log10(max(allv) * 1.05), 40)
        for key in ("knn", "reranked"):
            if samples[key]:
                lat = systems[key]["latency_ms"]
                ax2.hist(
                    samples[key],
                    bins=bins,
                    alpha=0.65,
                    color=colours[key],
                    label=f"{'before: kNN only' if key == 'knn' else 'after: kNN + rerank'}, n={len(samples[key])} "
                    f"(p50 {lat.get('p50', 0):.0f}, p95 {lat.get('p95', 0):.0f} ms)",
                )
        ax2.set_xscale("log")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("Search latency, ms (log scale)")
    ax2.set_ylabel("requests")
    ax2.set_title("Sidecar Search latency")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(summary: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write `report.md`, `summary.json` and `demo.png` into `out_dir`; returns {kind: path}.

    Latency samples are kept in summary.json (for re-rendering the histogram).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"chart": out / "demo.png", "report": out / "report.md", "summary": out / "summary.json"}
    render_chart(summary, paths["chart"])
    paths["report"].write_text(render_markdown(summary, paths["chart"].name))
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return paths


def _onnx_line(onnx: dict) -> list[str]:
    """The report line on how the trained version is served (ONNX variant and its quality gate), if known."""
    if not onnx.get("serve"):
        return []
    ndcg = ", ".join(f"{k} {v:.4f}" for k, v in sorted(onnx.get("heldout_ndcg10", {}).items()))
    refused = "; ".join(f"{k} refused: {v}" for k, v in (onnx.get("refused") or {}).items())
    return [
        f"- Served by ONNX Runtime as `{onnx['serve']}` (the quality gate on the version's held-out judgments, "
        f"{onnx.get('judged_pairs', '?')} pairs: nDCG@10 {ndcg or 'n/a'}; a quantized variant serves only within "
        f"0.005 of fp32){'; ' + refused if refused else ''}."
    ]
