"""The node list of OPENSEARCH_URL and the indexer's one-line cluster report (no OpenSearch needed)."""

from __future__ import annotations

import pytest

from fashion_rerank.opensearch import hosts, make_client
from fashion_rerank.settings import OpenSearchSettings
from indexer.cluster import ClusterReport


def test_opensearch_url_may_list_several_nodes():
    assert hosts("http://a:9200") == ["http://a:9200"]
    assert hosts(" http://a:9200, http://b:9200 ,,http://c:9200") == ["http://a:9200", "http://b:9200", "http://c:9200"]
    with pytest.raises(ValueError):
        hosts(" , ")
    client = make_client(OpenSearchSettings(url="http://a:9200,http://b:9201"))
    assert sorted(c.host for c in client.transport.connection_pool.connections) == ["http://a:9200", "http://b:9201"]


def report(**kw) -> ClusterReport:
    base = dict(
        name="c1",
        status="green",
        nodes=3,
        data_nodes=3,
        expected_nodes=3,
        initializing_shards=0,
        unassigned_shards=0,
        delayed_unassigned_shards=0,
    )
    return ClusterReport(**{**base, **kw})


def test_cluster_report_line():
    assert report().format() == "cluster c1: green, nodes 3/3"
    degraded = report(status="yellow", nodes=2, data_nodes=2, unassigned_shards=1, delayed_unassigned_shards=1)
    assert degraded.missing_nodes == 1 and degraded.to_dict()["missing_nodes"] == 1
    line = degraded.format()
    assert line.startswith("cluster c1: yellow, nodes 2/3 (1 missing), 1 shard unassigned (1 waiting for their node)")
    assert "some replicas are not" in line
    assert report(expected_nodes=None).format() == "cluster c1: green, nodes 3"
    assert "primaries are not served" in report(status="red").format()
    assert (
        report(status="yellow", initializing_shards=2).format().startswith("cluster c1: yellow, nodes 3/3, 2 shards initializing")
    )
