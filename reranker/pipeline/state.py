"""The hidden record index `fashion-rerank-installs`: what install changed, so uninstall can restore it."""

from __future__ import annotations

from reranker.pipeline.cluster import _req
from reranker.pipeline.options import STATE_INDEX


def _state_get(client, doc_id: str) -> dict | None:
    resp = _req(client, "GET", f"/{STATE_INDEX}/_doc/{doc_id}", ok404=True)
    return resp.get("_source") if resp and resp.get("found") else None


def _state_put(client, doc_id: str, doc: dict) -> None:
    if not client.indices.exists(index=STATE_INDEX):
        from opensearchpy.exceptions import RequestError

        try:
            client.indices.create(
                index=STATE_INDEX,
                body={
                    "settings": {"index": {"hidden": True, "number_of_shards": 1, "number_of_replicas": 0}},
                    "mappings": {"dynamic": False, "properties": {"kind": {"type": "keyword"}}},
                },
            )
        except RequestError as exc:  # created concurrently
            if "resource_already_exists" not in str(exc):
                raise
    _req(client, "PUT", f"/{STATE_INDEX}/_doc/{doc_id}", body=doc, params={"refresh": "true"})


def _state_delete(client, doc_id: str) -> None:
    _req(client, "DELETE", f"/{STATE_INDEX}/_doc/{doc_id}", params={"refresh": "true"}, ok404=True)


def _state_installs(client) -> list[dict]:
    if not client.indices.exists(index=STATE_INDEX):
        return []
    resp = _req(client, "POST", f"/{STATE_INDEX}/_search", body={"query": {"term": {"kind": "pipeline"}}, "size": 1000})
    return [h["_source"] for h in resp["hits"]["hits"]]


def _drop_state_index_if_empty(client) -> bool:
    if not client.indices.exists(index=STATE_INDEX):
        return False
    count = _req(client, "GET", f"/{STATE_INDEX}/_count")["count"]
    if count == 0:
        _req(client, "DELETE", f"/{STATE_INDEX}", ok404=True)
        return True
    return False
