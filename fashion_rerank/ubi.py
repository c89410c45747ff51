"""The User Behavior Insights (UBI) `ubi_queries` format shared by the sidecar's query log (writer) and the
labeling job (reader): the index mapping, index creation, and reading records back from a JSONL file or an
index. Mapping: docs/reference/peer-apis.md#ubi_queries-mapping.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

from opensearchpy import helpers

log = logging.getLogger(__name__)


#: The `ubi_queries` mapping of the UBI plugin (queries-mapping.json @3fee2d8).
UBI_QUERIES_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "timestamp": {"type": "date", "format": "strict_date_time"},
        "query_id": {"type": "keyword", "ignore_above": 100},
        "query": {"type": "text"},
        "query_response_id": {"type": "keyword", "ignore_above": 100},
        "query_response_hit_ids": {"type": "keyword"},
        "user_query": {"type": "keyword"},
        "query_attributes": {"type": "flat_object"},
        "client_id": {"type": "keyword", "ignore_above": 100},
        "application": {"type": "keyword", "ignore_above": 100},
    },
}


def ensure_index(client, index: str) -> None:
    """Create `index` with the UBI `ubi_queries` mapping unless it exists."""
    if not client.indices.exists(index=index):
        try:
            client.indices.create(index=index, body={"mappings": UBI_QUERIES_MAPPING})
        except Exception as exc:  # noqa: BLE001 - a concurrent creator wins the race
            if "resource_already_exists" not in str(exc):
                raise


def read_query_log(path_or_index: str | Path, client=None) -> Iterator[dict]:
    """Records of the query log, oldest first for a file, in index order for an index.

    Args:
        path_or_index: a JSONL file path, or an OpenSearch index name when `client` is given.
        client: opensearch-py client; when None, `path_or_index` is read as a file.

    Malformed JSONL lines are skipped with a warning. Raises FileNotFoundError for a missing file.
    """
    if client is None:
        with open(path_or_index, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    log.warning("query log %s line %d: %s", path_or_index, n, exc.msg)
        return

    for hit in helpers.scan(client, index=str(path_or_index), query={"query": {"match_all": {}}}, preserve_order=False):
        yield hit["_source"]
