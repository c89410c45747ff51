"""grpcurl against a running sidecar: what a developer types by hand works.

The sidecar is the real one (`reranker.serve.Sidecar`: gRPC front with reflection, the cross-encoder of the
`trained_registry` fixture, max_length 64, Search on the real OpenSearch node's `product_index` of
test_sidecar.py). grpcurl lists the services by reflection, describes them, and calls health, Rerank,
Search, TEI's Rerank (unary and streaming) and Info, and TEI's truncate flag: an over-long text without
`truncate` is INVALID_ARGUMENT, with it the text is cut. grpcurl comes from PATH, `$(go env GOPATH)/bin` or
`scripts/go-tools.sh` (see test_observability.py); without Go the tests are skipped.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from test_observability import GO_TOOLS_TIMEOUT_S, find_go_tools
from test_sidecar import RELEVANT, UNRELATED, product_index, products  # noqa: F401 - fixtures used below

from fashion_rerank.product import Product, rerank_text
from fashion_rerank.settings import OpenSearchSettings, ServeSettings

#: The first test may build grpcurl and promtool (scripts/go-tools.sh): about 16 minutes cold on 2 busy cores.
pytestmark = pytest.mark.timeout(GO_TOOLS_TIMEOUT_S)

QUERY = "black watch for women"
#: a text far over the fixture model's 64 tokens per (query, text) pair
LONG = " ".join(["black leather watch strap"] * 60)


@pytest.fixture(scope="module")
def grpcurl_bin() -> str:
    return find_go_tools()["grpcurl"]


@pytest.fixture(scope="module")
def sidecar(trained_registry, product_index, opensearch_url):  # noqa: F811 - the imported fixture
    """A sidecar serving the trained fixture model with Search on `product_index` (settings as test_sidecar's
    `make_sidecar`: no query log, a generous rerank budget so a loaded machine does not fail open)."""
    from reranker.serve import Sidecar

    sc = Sidecar(
        ServeSettings(
            grpc_port=0,
            metrics_port=0,
            http_port=0,
            threads=1,
            registry_poll_s=0.1,
            querylog_path=None,
            querylog_index=None,
            rerank_budget_ms=60_000,
        ),
        trained_registry,
        OpenSearchSettings(url=opensearch_url, index_alias=product_index, timeout_s=10),
    )
    sc.start()
    yield sc
    sc.stop(1.0)


def grpcurl(binary: str, target: str, *args: str, data=None) -> subprocess.CompletedProcess:
    """Run `grpcurl -plaintext [-d DATA] TARGET ARGS...`; `data` is JSON text or an object to dump."""
    cmd = [binary, "-plaintext", "-max-time", "60"]
    if data is not None:
        cmd += ["-d", data if isinstance(data, str) else json.dumps(data)]
    return subprocess.run([*cmd, target, *args], capture_output=True, text=True, timeout=120)


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    """grpcurl's answer as JSON (proto field names as written in the .proto; zero values left out)."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def texts() -> list[str]:
    return [rerank_text(Product.from_fields(d, id=d["id"])) for d in [*UNRELATED, RELEVANT]]


def test_list_and_describe_by_reflection(grpcurl_bin, sidecar):
    r = grpcurl(grpcurl_bin, sidecar.target, "list")
    assert r.returncode == 0, r.stderr
    services = set(r.stdout.split())
    assert {"fashion_rerank.v1.Reranker", "tei.v1.Rerank", "tei.v1.Info", "grpc.health.v1.Health"} <= services
    r = grpcurl(grpcurl_bin, sidecar.target, "describe", "fashion_rerank.v1.Reranker")
    assert r.returncode == 0, r.stderr
    assert "rpc Rerank ( .fashion_rerank.v1.RerankRequest ) returns ( .fashion_rerank.v1.RerankResponse )" in r.stdout
    assert "rpc Search ( .fashion_rerank.v1.SearchRequest ) returns ( .fashion_rerank.v1.SearchResponse )" in r.stdout
    r = grpcurl(grpcurl_bin, sidecar.target, "describe", "tei.v1.Rerank")
    assert r.returncode == 0, r.stderr
    assert "rpc RerankStream ( stream .tei.v1.RerankStreamRequest ) returns ( .tei.v1.RerankResponse )" in r.stdout
    r = grpcurl(grpcurl_bin, sidecar.target, "describe", "tei.v1.InfoResponse")
    assert r.returncode == 0, r.stderr
    assert "uint32 max_input_length = 9;" in r.stdout and ".tei.v1.ModelType model_type = 7;" in r.stdout


@pytest.mark.parametrize("service", ["", "fashion_rerank.v1.Reranker", "tei.v1.Rerank", "tei.v1.Info"])
def test_health_check(grpcurl_bin, sidecar, service):
    out = ok_json(grpcurl(grpcurl_bin, sidecar.target, "grpc.health.v1.Health/Check", data={"service": service}))
    assert out == {"status": "SERVING"}


def test_rerank(grpcurl_bin, sidecar, trained_registry):
    docs = [{"id": d["id"], "product": {k: v for k, v in d.items() if k != "id"}} for d in [*UNRELATED, RELEVANT]]
    docs.append({"id": "text", "text": "Nike Men Blue Running Shoes | Sports Shoes | Blue | Men"})
    out = ok_json(
        grpcurl(
            grpcurl_bin, sidecar.target, "fashion_rerank.v1.Reranker/Rerank", data={"query": QUERY, "documents": docs, "top_n": 3}
        )
    )
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    assert out["results"][0]["id"] == "relevant"
    assert out["model_version"].startswith(trained_registry.current()) and int(out["tokens"]) > 0


def test_search(grpcurl_bin, sidecar, trained_registry):
    req = {"query": QUERY, "top_k": 20, "top_n": 5, "filters": [{"field": "gender", "values": ["Women"]}]}
    out = ok_json(grpcurl(grpcurl_bin, sidecar.target, "fashion_rerank.v1.Reranker/Search", data=req))
    assert out["reranked"] is True and out["model_version"].startswith(trained_registry.current())
    assert len(out["hits"]) == 5 and [h["rank"] for h in out["hits"]] == [1, 2, 3, 4, 5]
    assert all(h["product"]["gender"] == "Women" for h in out["hits"])
    scores = [h.get("rerank_score", 0.0) for h in out["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_tei_rerank_and_stream(grpcurl_bin, sidecar):
    t = texts()
    out = ok_json(
        grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Rerank/Rerank", data={"query": QUERY, "texts": t, "return_text": True})
    )
    assert len(out["ranks"]) == len(t)
    best = out["ranks"][0]
    assert best["index"] == len(t) - 1 and best["text"] == t[-1]  # RELEVANT, sent last
    assert int(out["metadata"]["total_time_ns"]) > 0  # uint64: a JSON string
    stream = " ".join(json.dumps({"query": QUERY, "text": x}) for x in t)  # grpcurl sends each object as a message
    streamed = ok_json(grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Rerank/RerankStream", data=stream))
    assert [r.get("index", 0) for r in streamed["ranks"]] == [r.get("index", 0) for r in out["ranks"]]


def test_tei_info(grpcurl_bin, sidecar, trained_registry):
    out = ok_json(grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Info/Info", data={}))
    assert out["model_type"] == "MODEL_TYPE_RERANKER"
    assert out["max_input_length"] == sidecar.core.max_length == 64
    assert out["model_sha"] == sidecar.core.model_version and out["model_sha"].startswith(trained_registry.current())
    assert out["model_id"] == trained_registry.name
    s = sidecar.settings
    assert out["max_batch_tokens"] == s.max_batch_tokens and out["max_batch_requests"] == s.max_batch_pairs
    assert out["max_client_batch_size"] == s.max_documents and out["max_concurrent_requests"] == s.max_concurrent_rpcs


def test_tei_truncate(grpcurl_bin, sidecar):
    """TEI's rule: without `truncate` an over-long (query, text) pair is an error, with it the text is cut."""
    req = {"query": QUERY, "texts": ["black watch", LONG]}
    refused = grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Rerank/Rerank", data=req)
    assert refused.returncode != 0
    assert "Code: InvalidArgument" in refused.stderr + refused.stdout
    assert "text 1" in refused.stderr + refused.stdout and "at most 64 tokens" in refused.stderr + refused.stdout
    cut = ok_json(grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Rerank/Rerank", data={**req, "truncate": True}))
    assert sorted(r.get("index", 0) for r in cut["ranks"]) == [0, 1]
    stream = " ".join(
        json.dumps({"query": QUERY, "text": x, "truncate": tr}) for x, tr in [("black watch", False), (LONG, False)]
    )
    refused = grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Rerank/RerankStream", data=stream)
    assert refused.returncode != 0 and "Code: InvalidArgument" in refused.stderr + refused.stdout
    stream = " ".join(json.dumps({"query": QUERY, "text": x, "truncate": True}) for x in ["black watch", LONG])
    assert len(ok_json(grpcurl(grpcurl_bin, sidecar.target, "tei.v1.Rerank/RerankStream", data=stream))["ranks"]) == 2
