"""The dashboard and the alerts against the real tools and a live sidecar.

- `promtool check rules`, `promtool test rules` (deploy/prometheus/alerts.test.yml: each alert fires on a
  synthetic series) and `promtool check config` on deploy/prometheus/;
- every metric name in the alert expressions and in the dashboard's PromQL is a sample name of a live
  /metrics scrape of a sidecar (fake backend, real gRPC server, real metrics endpoint) that served Rerank,
  TEI and Search calls, including a Search that failed open and one that met an OpenSearch error, so every
  metric family has samples; every label a selector matches on is a label of that metric;
- the dashboard JSON parses, is provisionable and has the panels the issue asks for.

promtool comes from PATH or `$(go env GOPATH)/bin`, else `scripts/go-tools.sh` builds it once per session
(the `go_tools` fixture; also used by tests/integration/test_grpcurl.py). Without Go the tests are skipped.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import ServeSettings
from fashion_rerank.v1 import reranker_pb2, reranker_pb2_grpc, tei_pb2, tei_pb2_grpc
from reranker.backends.fake import FAIL_MARKER, FakeBackend
from reranker.core import ScoringCore
from reranker.grpc_front import GrpcServer
from reranker.metrics import Metrics
from reranker.search import SearchService

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fashion-rerank.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
TOOLS = ("promtool", "grpcurl")
#: pytest-timeout for a test that may build the Go tools: a cold `scripts/go-tools.sh` took 16 minutes on
#: 2 busy cores, more than the suite's 900 s per test.
GO_TOOLS_TIMEOUT_S = 3600


# ------------------------------------------------------------------ the Go tools


@functools.lru_cache(maxsize=1)
def _go_tools() -> tuple[dict[str, str] | None, str]:
    """({name: path}, "") or (None, why not): see `find_go_tools` (cached: the build runs at most once)."""
    found = {t: shutil.which(t) for t in TOOLS}
    if all(found.values()):
        return found, ""  # type: ignore[return-value]
    go = shutil.which("go")
    if go is None:
        return None, f"skip:{', '.join(t for t in TOOLS if not found[t])} not found and Go is not installed"
    gobin = Path(subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=True).stdout.strip()) / "bin"
    for t in TOOLS:
        if not found[t] and (gobin / t).is_file() and os.access(gobin / t, os.X_OK):
            found[t] = str(gobin / t)
    if all(found.values()):
        return found, ""  # type: ignore[return-value]
    script = ROOT / "scripts" / "go-tools.sh"
    proc = subprocess.run(["bash", str(script), str(gobin)], capture_output=True, text=True, timeout=GO_TOOLS_TIMEOUT_S)
    if proc.returncode != 0:
        return None, f"fail:{script} {gobin} failed with exit code {proc.returncode}:\n{proc.stderr[-3000:]}"
    for line in proc.stdout.splitlines():  # "NAME PATH VERSION"
        name, path, _version = line.split()
        if not found.get(name):
            found[name] = path
    return found, ""  # type: ignore[return-value]


def find_go_tools() -> dict[str, str]:
    """{"promtool": path, "grpcurl": path}: from PATH, else `$(go env GOPATH)/bin`, else built there by
    `scripts/go-tools.sh` (at most once per process; minutes when cold).

    Skips the calling test when a tool is missing and Go is not installed; fails it (with the script's
    output) when Go is there but the build fails.
    """
    tools, why = _go_tools()
    if tools is None:
        kind, _, reason = why.partition(":")
        (pytest.skip if kind == "skip" else pytest.fail)(reason)
    return tools


@pytest.fixture(scope="session")
def go_tools() -> dict[str, str]:
    """{"promtool": path, "grpcurl": path} (see `find_go_tools`)."""
    return find_go_tools()


def promtool(go_tools, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([go_tools["promtool"], *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


# ------------------------------------------------------------------ PromQL names

#: PromQL words that are not metric names.
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"inf", "nan", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile"}


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of each vector selector in `expr`.

    A small reader, enough for the expressions in deploy/: Grafana variables ($job, ${x}, $__rate_interval)
    are removed, then every identifier that is not a function call, a keyword, a label in a grouping
    clause or inside a `{...}` matcher, or a range/offset duration is a metric name.
    """
    e = re.sub(r"\$\{\w+\}|\$\w+", "", expr)
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges [5m]
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out = []
    ident = r"(?<![\w.:])[A-Za-z_:][\w:]*"
    pattern = rf'({ident})?\s*(\{{(?:[^{{}}"]|"(?:[^"\\]|\\.)*")*\}})|({ident})(?![\w:])(?!\s*\()'
    for m in re.finditer(pattern, e):
        name, matcher, bare = m.group(1), m.group(2), m.group(3)
        if matcher is not None:
            labels = set(re.findall(r'([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*"', matcher))
            if name:
                out.append((name, labels))
        elif bare and bare.lower() not in _KEYWORDS and not re.fullmatch(r"[\d.eE+-]+", bare):
            out.append((bare, set()))
    return out


def test_promql_reader_finds_metric_names_and_matched_labels():
    got = promql_selectors(
        'histogram_quantile(0.95, sum by (le, method) (rate(a_bucket{job=~"$job", code!~"OK|[23].."}[$__rate_interval])))'
        " / on (method) group_left b_total > bool 0.5 or max(c) unless d offset 5m"
    )
    assert got == [("a_bucket", {"job", "code"}), ("b_total", set()), ("c", set()), ("d", set())]


def rule_exprs() -> list[str]:
    yaml = pytest.importorskip("yaml")
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs(dash: dict) -> list[str]:
    """PromQL of every panel target and every query variable."""
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append(re.fullmatch(r"label_values\((.*),\s*\w+\)", q).group(1))
    return out


# ------------------------------------------------------------------ a live sidecar


class _FixedEncoder:
    """A stand-in bi-encoder (like the fake cross-encoder: no model): every query is the same unit vector."""

    def encode_query(self, query: str) -> np.ndarray:
        return np.full(8, 8**-0.5, dtype=np.float32)


def _small_index(os_client, name: str, texts: list[str]) -> None:
    """A real k-NN index of 8-dimensional vectors holding `texts` as `rerank_text`."""
    from opensearchpy import helpers

    os_client.indices.create(
        index=name,
        body={
            "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {
                "properties": {
                    "rerank_text": {"type": "text"},
                    "embedding": {
                        "type": "knn_vector",
                        "dimension": 8,
                        "method": {"name": "hnsw", "engine": "lucene", "space_type": "innerproduct"},
                    },
                }
            },
        },
    )
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(texts), 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    helpers.bulk(
        os_client,
        (
            {"_index": name, "_id": f"p{i}", "_source": {"rerank_text": t, "embedding": v.tolist()}}
            for i, (t, v) in enumerate(zip(texts, vecs))
        ),
        refresh=True,
    )


@pytest.fixture(scope="module")
def scrape(tmp_path_factory, os_client, opensearch_url) -> dict[str, set[str]]:
    """{sample name: label names} of one /metrics scrape of a sidecar (fake backend, real OpenSearch) that served
    Rerank (OK, INVALID_ARGUMENT, a cache hit), TEI Rerank and Info, Search (reranked, failed open, a missing
    index, OpenSearch unreachable)."""
    import uuid

    from fashion_rerank.opensearch import make_client
    from fashion_rerank.settings import OpenSearchSettings

    ok_index, failing_index = f"t-obs-{uuid.uuid4().hex[:8]}", f"t-obs-fail-{uuid.uuid4().hex[:8]}"
    _small_index(os_client, ok_index, [f"red summer dress {i}" for i in range(5)])
    _small_index(os_client, failing_index, [FAIL_MARKER, *[f"red summer dress {i}" for i in range(4)]])
    from prometheus_client.parser import text_string_to_metric_families

    registry = ModelRegistry(tmp_path_factory.mktemp("models"), "fake-ce")
    version, path = registry.new_version_dir()
    path.mkdir(parents=True, exist_ok=True)
    (path / "card.json").write_text("{}")
    registry.promote(version, reason="test")
    settings = ServeSettings(
        grpc_port=0,
        threads=1,
        registry_poll_s=0.05,
        max_documents=50,
        search_indices=f"{ok_index},{failing_index},t-obs-no-such-index",  # the allow-list: a missing name is NOT_FOUND
    )
    metrics = Metrics()
    port = metrics.start_http("127.0.0.1", 0)
    core = ScoringCore(settings, registry, metrics, loader=lambda v, p: FakeBackend(v, max_length=64))
    core.start()
    search = SearchService(settings, core, make_client(max_retries=0), _FixedEncoder(), index=ok_index, metrics=metrics)
    server = GrpcServer(settings, core, metrics, search)
    server.start()
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub, tei = reranker_pb2_grpc.RerankerStub(ch), tei_pb2_grpc.RerankStub(ch)
            docs = [reranker_pb2.Document(id=str(i), text=f"red dress {i}") for i in range(4)]
            for _ in range(3):  # the 2nd and 3rd are score-cache hits
                stub.Rerank(reranker_pb2.RerankRequest(query="red dress", documents=docs), timeout=10)
            with pytest.raises(grpc.RpcError):
                stub.Rerank(reranker_pb2.RerankRequest(query="", documents=docs), timeout=10)
            tei.Rerank(tei_pb2.RerankRequest(query="blue jeans", texts=["blue jeans", "red dress"]), timeout=10)
            tei_pb2_grpc.InfoStub(ch).Info(tei_pb2.InfoRequest(), timeout=10)
            stub.Search(reranker_pb2.SearchRequest(query="red dress", top_k=5, top_n=3), timeout=10)
            failed_open = stub.Search(reranker_pb2.SearchRequest(query="red dress", top_k=5, index=failing_index), timeout=10)
            assert not failed_open.reranked
            with pytest.raises(grpc.RpcError) as err:
                stub.Search(reranker_pb2.SearchRequest(query="red dress", top_k=5, index="t-obs-no-such-index"), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            # OpenSearch unreachable: a real client to a port nothing listens on
            search.client = make_client(OpenSearchSettings(url="http://127.0.0.1:9"), max_retries=0)
            with pytest.raises(grpc.RpcError) as err:
                stub.Search(reranker_pb2.SearchRequest(query="red dress", top_k=5), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.stop(0.5)
        core.stop(1.0)
        metrics.stop_http()
        os_client.indices.delete(index=f"{ok_index},{failing_index}", ignore_unavailable=True)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


# ------------------------------------------------------------------ tests


@pytest.mark.timeout(GO_TOOLS_TIMEOUT_S)
def test_promtool_checks_the_rules_and_the_config(go_tools):
    r = promtool(go_tools, "check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 rules found" in r.stdout
    r = promtool(go_tools, "check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(GO_TOOLS_TIMEOUT_S)
def test_each_alert_fires_on_its_synthetic_series(go_tools):
    """alerts.test.yml: each of the four alerts fires on a series over its threshold and not on one under."""
    r = promtool(go_tools, "test", "rules", "alerts.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    yaml = pytest.importorskip("yaml")
    tested = {
        t["alertname"]
        for case in yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    assert tested == {r["alert"] for r in rules}


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_and_label_used_is_in_a_live_scrape(scrape, source):
    exprs = rule_exprs() if source == "alerts" else dashboard_exprs(dashboard())
    assert exprs
    prometheus_labels = {"job", "instance"}  # added by the scrape, not the exporter
    for expr in exprs:
        selectors = promql_selectors(expr)
        assert selectors, f"no metric in {expr!r}"
        for name, labels in selectors:
            assert name in scrape, f"{name} (in {expr!r}) is not in the /metrics scrape"
            missing = labels - scrape[name] - prometheus_labels
            assert not missing, f"{name} has no label {missing} (in {expr!r})"


def test_metric_names_follow_prometheus_conventions(scrape):
    """One prefix; counters exposed as _total and nothing else named so; times in seconds (base unit) with a
    _seconds suffix; no other time unit in a name; every scraped sample belongs to a family of Metrics."""
    from reranker.metrics import Metrics as M

    families = list(M().registry.collect())
    exposed = set()
    for f in families:
        assert f.name.startswith("fashion_rerank_"), f.name
        assert not re.search(r"_(ms|millis|milliseconds|minutes|hours|bytes_total)(_|$)", f.name), f.name
        if f.type == "counter":
            exposed |= {f"{f.name}_total", f"{f.name}_created"}
        else:
            assert not f.name.endswith("_total"), f"{f.name}: only counters end in _total"
            if f.type == "histogram":
                exposed |= {f"{f.name}_{s}" for s in ("bucket", "sum", "count", "created")}
            else:
                exposed.add(f.name)
        if re.search(r"duration|latency|time", f.name):
            assert f.name.endswith("_seconds") and f.type == "histogram", f.name
    assert set(scrape) <= exposed


#: What the issue asks the dashboard to show: panel title -> metric its queries must read.
REQUIRED_PANELS = {
    "Requests by method and code": "fashion_rerank_requests_total",
    "Errors by method and code": "fashion_rerank_requests_total",
    "Latency per stage (p95)": "fashion_rerank_stage_duration_seconds_bucket",
    "Queue depth": "fashion_rerank_queue_depth",
    "Batch sizes": "fashion_rerank_batch_pairs_bucket",
    "Fail-open share of Search": "fashion_rerank_fail_open_total",
    "Fail-open by reason": "fashion_rerank_fail_open_total",
    "Score cache hit rate": "fashion_rerank_score_cache_requests_total",
    "Score cache entries": "fashion_rerank_score_cache_entries",
    "Model version served": "fashion_rerank_model_info",
    "OpenSearch errors by kind": "fashion_rerank_opensearch_errors_total",
}


def test_dashboard_is_provisionable_and_has_the_panels_asked_for():
    dash = dashboard()
    assert dash["uid"] == "fashion-rerank" and dash["id"] is None and dash["schemaVersion"] >= 36
    panels = {p["title"]: p for p in dash["panels"] if p["type"] != "row"}
    for title, metric in REQUIRED_PANELS.items():
        assert title in panels, f"no panel {title!r}"
        names = {n for t in panels[title]["targets"] for n, _ in promql_selectors(t["expr"])}
        assert metric in names, f"panel {title!r} does not read {metric}"
    assert 'code!~"OK|[23].."' in panels["Errors by method and code"]["targets"][0]["expr"]
    assert "by (method, code)" in panels["Requests by method and code"]["targets"][0]["expr"]
    assert "by (le, stage)" in panels["Latency per stage (p95)"]["targets"][0]["expr"]
    assert "by (reason)" in panels["Fail-open by reason"]["targets"][0]["expr"]
    assert "{{version}}" in panels["Model version served"]["targets"][0]["legendFormat"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels.values():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["refId"] and t["expr"] for t in p["targets"])
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)


def test_grafana_provisioning_points_at_the_dashboard_and_a_prometheus_datasource():
    yaml = pytest.importorskip("yaml")
    ds = yaml.safe_load((PROVISIONING / "datasources" / "fashion-rerank.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    uid = ds["datasources"][0]["uid"]
    assert next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")["current"]["value"] == uid
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "fashion-rerank.yml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file" and prov["providers"][0]["options"]["path"]
