"""The local OpenSearch node: real process, real plugins."""

from fashion_rerank import local_node


def test_node_runs_with_knn_and_ml_plugins(opensearch_url):
    st = local_node.status()
    assert st["running"] and st["health"] in ("yellow", "green")
    assert st["version"] == local_node.OPENSEARCH_VERSION
    assert {"opensearch-knn", "opensearch-ml", "opensearch-neural-search"} <= set(st["plugins"])


def test_start_when_running_is_a_noop(opensearch_url):
    before = local_node.status()
    after = local_node.start(plugins="knn")
    assert after["pid"] == before["pid"] and after["running"]


def test_unknown_plugin_set_is_refused():
    import pytest

    with pytest.raises(local_node.NodeError, match="unknown plugin set"):
        local_node.plugin_sets("knn,bogus")
