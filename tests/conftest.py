"""Shared fixtures: a real OpenSearch node (started here when none answers), the packaged models."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """URL of a running OpenSearch with k-NN, ml-commons and neural-search.

    Uses OPENSEARCH_URL when it answers; otherwise starts the local node (fashion_rerank.local_node)
    and stops it at the end of the session if this session started it.
    """
    from fashion_rerank import local_node

    url = os.environ.get("OPENSEARCH_URL", "http://localhost:9200")
    st = local_node.status()
    started = False
    if not st["running"] or not {"opensearch-knn", "opensearch-ml"} <= set(st["plugins"]):
        local_node.start(plugins="knn,ml")
        started = not st["running"]
        url = "http://127.0.0.1:9200"
    os.environ["OPENSEARCH_URL"] = url
    yield url
    if started and not os.environ.get("KEEP_OPENSEARCH"):
        local_node.stop()


@pytest.fixture(scope="session")
def os_client(opensearch_url):
    """An opensearch-py client for the test node."""
    from fashion_rerank.opensearch import make_client

    return make_client()


@pytest.fixture
def unique_name() -> str:
    """A unique lowercase name for indices/aliases/pipelines created by one test."""
    return f"t-{uuid.uuid4().hex[:10]}"
