"""The demo: the shopper-query generator (fast) and the whole pipeline on a small catalog slice (slow)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from demo.queries import (
    COLOUR_WORDS,
    TYPE_WORDS,
    generate_queries,
    group_key,
    matching_products,
)
from indexer.catalogs import read_myntra


@pytest.fixture(scope="module")
def catalog():
    """The first 5,000 products of the bundled Myntra catalog."""
    return list(read_myntra(limit=5000).products)


def test_generator_is_seeded_and_deterministic(catalog):
    a = generate_queries(catalog, n_distinct=300, seed=7)
    b = generate_queries(list(reversed(catalog)), n_distinct=300, seed=7)  # catalog order does not matter
    c = generate_queries(catalog, n_distinct=300, seed=8)
    assert [q.text for q in a.train] == [q.text for q in b.train]
    assert [q.text for q in a.test] == [q.text for q in b.test]
    assert a.stream("train") == b.stream("train")
    assert [q.text for q in a.train] != [q.text for q in c.train]


def test_sizes_split_and_no_shared_query_string(catalog):
    qs = generate_queries(catalog, n_distinct=300, test_share=1 / 3, seed=42)
    train = {q.text for q in qs.train}
    test = {q.text for q in qs.test}
    assert len(train) + len(test) == 300 == len(qs.train) + len(qs.test)  # distinct strings
    assert not train & test
    # stricter: not even a reordering of a training query is held out
    assert not {group_key(t) for t in train} & {group_key(t) for t in test}
    assert 90 <= len(test) <= 110
    # the traffic stream only replays training queries, each at least once
    stream = Counter(qs.stream("train"))
    assert set(stream) == train
    assert all(stream[q.text] == q.count >= 1 for q in qs.train)


def test_every_query_has_a_matching_product(catalog):
    qs = generate_queries(catalog, n_distinct=300, seed=42)
    for q in qs.train + qs.test:
        assert q.intent.product_type in TYPE_WORDS
        matches = matching_products(q.intent, catalog)
        assert matches, f"no catalog product matches {q.text!r} ({q.intent})"
        assert any(p.attributes["product_type"] == q.intent.product_type for p in matches)


def test_queries_look_like_shopper_queries(catalog):
    qs = generate_queries(catalog, n_distinct=400, seed=42)
    allq = qs.train + qs.test
    texts = [q.text for q in allq]
    # head/tail: a few queries repeat a lot, most of the tail is sent once
    counts = sorted((q.count for q in allq), reverse=True)
    assert counts[0] >= 20 * counts[len(counts) // 2]
    assert sum(c == 1 for c in counts) > len(counts) / 2
    # a small share of typos
    typos = sum(q.typo for q in allq)
    assert 0 < typos <= 0.1 * len(allq)
    # everyday words: colour synonyms and gender phrases appear
    words = " ".join(texts)
    assert any(syn in words for syn in ("navy", "dark blue", "burgundy", "off white", "gray"))
    assert any(g in words for g in ("for her", "for him", "ladies", "kids"))
    # queries name what their intent asks for: a query with a colour contains one of its words (typos aside)
    for q in allq:
        if q.intent.colour and not q.typo:
            assert any(w in q.text for w in COLOUR_WORDS[q.intent.colour]), q.text
    # shopper text: lowercase, short, nothing like the catalog's "Men"/"Women" title case
    assert all(t == t.lower() and 1 <= len(t.split()) <= 9 for t in texts)


def test_bad_arguments_are_refused(catalog):
    with pytest.raises(ValueError):
        generate_queries(catalog, n_distinct=0)
    with pytest.raises(ValueError):
        generate_queries([], n_distinct=10)


# ------------------------------------------------------------------------------------- failing clearly


def test_busy_port_stops_the_demo_with_what_to_do():
    import socket

    from demo.run import DemoError, claim_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DemoError, match=rf"port {port} .*already in use.*--grpc-port"):
            claim_port(port, "sidecar's gRPC server", "--grpc-port")
    assert claim_port(0, "x", "--x") > 0  # 0 picks a free port


def test_full_disk_stops_the_demo_with_what_to_do(tmp_path):
    import shutil

    from demo.run import DemoError, check_disk

    free = shutil.disk_usage(tmp_path).free
    check_disk([tmp_path], need=1)
    with pytest.raises(DemoError, match="free some space"):
        check_disk([tmp_path], need=free * 2)


def test_report_renders_from_a_summary(tmp_path):
    from demo.report import write_report

    m = lambda v: {"value": v, "ci95": [v - 0.02, v + 0.02]}  # noqa: E731
    summary = {
        "systems": {
            "knn": {
                "ndcg@10": m(0.70),
                "mrr@10": m(0.75),
                "recall@10": m(0.20),
                "latency_ms": {"p50": 20.0, "p95": 40.0, "n": 3, "samples": [15.0, 20.0, 40.0]},
            },
            "reranked": {
                "ndcg@10": m(0.80),
                "mrr@10": m(0.85),
                "recall@10": m(0.25),
                "latency_ms": {"p50": 200.0, "p95": 400.0, "n": 3, "samples": [150.0, 200.0, 400.0]},
            },
        },
        "significance": {"ndcg@10": {"test": "paired t-test", "p_value": 0.0001, "delta": 0.1, "delta_ci95": [0.05, 0.15]}},
        "judge": {"name": "fashion-rerank judge serve", "model": "reference-rubric-v2", "reference_rubric": True},
        "model": {"base_model": "packaged:all-MiniLM-L6-v2", "training_time_s": 12.0},
        "judged_pairs": {"train": 100, "held_out": 50, "total": 150},
        "examples": [
            {"query": "black tee men", "knn": [{"title": "A | B", "grade": 1}], "reranked": [{"title": "C", "grade": 3}]}
        ],
        "handwritten": {
            "file": "demo/data/shopper_queries.tsv",
            "queries": 80,
            "evaluated": 78,
            "systems": {"knn": {"ndcg@10": m(0.55), "mrr@10": m(0.6)}, "reranked": {"ndcg@10": m(0.71), "mrr@10": m(0.8)}},
            "significance": {"ndcg@10": {"p_value": 0.002, "delta": 0.16, "delta_ci95": [0.08, 0.24]}},
            "by_kind": {"gift": {"queries": 12, "knn": 0.5, "reranked": 0.75, "delta": 0.25, "wins": 9, "losses": 2}},
        },
        "caveats": ["the rubric reads the same attributes as the generator"],
        "steps": [{"name": "index", "seconds": 1.5, "note": ""}],
        "total_seconds": 2.0,
    }
    paths = write_report(summary, tmp_path)
    md = paths["report"].read_text()
    assert "| kNN order (bi-encoder only) | 0.700 [0.680, 0.720]" in md
    assert "reference rubric judge" in md and "not from an LLM" in md
    assert "A / B" in md  # a "|" inside a title cannot break the table
    assert "| generated | ? | 0.700 | 0.800 | +0.100 [+0.050, +0.150] | < 0.001 | 0.750 -> 0.850 |" in md
    assert "| hand-written | 78 | 0.550 | 0.710 | +0.160 [+0.080, +0.240] | 0.002 | 0.600 -> 0.800 |" in md
    assert "| gift | 12 | 0.500 | 0.750 | +0.250 | 9 / 2 |" in md
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["summary"].read_text())["systems"]["reranked"]["ndcg@10"]["value"] == 0.80


# ------------------------------------------------------------------------------------- the whole demo


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~4 min on 2 idle cores; the fine-tune slows ~8x when the cores are shared
def test_demo_pipeline_end_to_end_on_a_catalog_slice(opensearch_url, os_client, unique_name, tmp_path):
    """Every step on 2,000 real products and 180 generated queries, against the real OpenSearch node, a real
    sidecar, the reference judge and a real (small) fine-tune: the promoted model beats kNN order on the
    held-out queries. About 4 minutes on 2 idle cores."""
    from demo.run import Demo, DemoConfig, run_demo

    cfg = DemoConfig(
        limit=2000,
        queries=180,
        out=tmp_path / "report",
        work=tmp_path / "work",
        alias=unique_name,
        grpc_port=0,
        metrics_port=0,
        judge_port=0,
        top_k=30,
        epochs=3,
    )
    try:
        summary = run_demo(cfg)
    finally:
        for index in os_client.indices.get(index=f"{unique_name}-*"):
            os_client.indices.delete(index=index)

    # every step ran, in order
    assert [s["name"] for s in summary["steps"]] == Demo.STEPS
    # the sidecar logged the replayed traffic and served the promoted model afterwards
    assert summary["queries"]["logged"] == summary["queries"]["replayed_requests"] > 0
    assert summary["model"]["promoted"] and summary["model"]["version"]
    assert (cfg.work / "models" / "fashion-ce" / summary["model"]["version"] / "card.json").exists()
    # files
    report = (cfg.out / "report.md").read_text()
    assert "| system | nDCG@10 [95% CI] | MRR@10 [95% CI] | Recall@10 [95% CI] |" in report
    assert "reference rubric judge" in report and "not from an LLM" in report
    assert (cfg.out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((cfg.out / "summary.json").read_text())
    for system in ("knn", "reranked"):
        for metric in ("ndcg@10", "mrr@10", "recall@10"):
            m = on_disk["systems"][system][metric]
            assert 0 <= m["ci95"][0] <= m["value"] <= m["ci95"][1] <= 1
        lat = on_disk["systems"][system]["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"]
    assert on_disk["judge"]["reference_rubric"] is True
    assert on_disk["judged_pairs"]["train"] > 1000 and on_disk["judged_pairs"]["held_out"] > 0
    assert on_disk["model"]["base_model"] and on_disk["model"]["training_time_s"] > 0
    assert on_disk["significance"]["ndcg@10"]["p_value"] is not None
    assert len(on_disk["examples"]) == 3
    # the hand-written set was searched, graded and reported beside the generated one
    hw = on_disk["handwritten"]
    assert hw["queries"] >= 60 and 0 < hw["evaluated"] <= hw["queries"] and hw["by_kind"]
    assert "## Hand-written shopper queries beside the generated ones" in report and "| hand-written |" in report
    # the point of it all: the promoted cross-encoder beats kNN order on held-out queries
    assert on_disk["systems"]["reranked"]["ndcg@10"]["value"] > on_disk["systems"]["knn"]["ndcg@10"]["value"]


def test_missing_jdk_stops_the_demo_before_any_download(monkeypatch, tmp_path):
    """No OpenSearch answers at a local URL and no Java is found: the demo says what to install instead of
    downloading OpenSearch first."""
    from demo.run import Demo, DemoConfig, DemoError, free_port

    for var in ("JAVA_HOME", "OPENSEARCH_JAVA_HOME", "FR_NODE_JAVA_HOME", "FASHION_RERANK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `java` on it
    monkeypatch.setenv("OPENSEARCH_URL", f"http://127.0.0.1:{free_port()}")
    demo = Demo(DemoConfig(work=tmp_path / "work", out=tmp_path / "out"))
    with pytest.raises(DemoError, match="(?s)could not start.*no Java found.*openjdk"):
        demo.step_opensearch()
    assert not demo.started_node
