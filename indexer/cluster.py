"""The cluster's state as the indexer reports it after a run: health, nodes present / expected, unassigned shards.

`fashion-rerank index build` prints it as one line (`cluster fr-cluster-9210: yellow, nodes 2/3, 1 shard
unassigned ...`) and puts it under `cluster` in `--json`. "Expected" nodes are the nodes present plus the
members of the cluster's voting configuration that are not present (`_cluster/state` metadata
`cluster_coordination.last_committed_config`): a 3-node cluster that lost one node keeps all three in its
voting configuration (OpenSearch never shrinks it below three), so it reads 2/3. A larger cluster shrinks
its voting configuration after a loss, so there the figure can under-count the missing nodes; a managed
cluster that forbids `_cluster/state` gives the nodes present only (`expected_nodes` None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from opensearchpy.exceptions import TransportError


@dataclass
class ClusterReport:
    """Health of the cluster the indexer wrote to.

    Attributes:
        name: cluster name; status: green / yellow / red (`_cluster/health`).
        nodes, data_nodes: nodes in the cluster now.
        expected_nodes: nodes present + voting-configuration members absent (None: not readable).
        initializing_shards: shard copies being built (a fresh index's replicas copying from their primary:
            yellow for a moment after a build, green once done).
        unassigned_shards: shard copies without a node (a replica whose node left: yellow).
        delayed_unassigned_shards: of those, the ones waiting `index.unassigned.node_left.delayed_timeout`
            (1 minute by default) for their node to come back before being rebuilt elsewhere.
    """

    name: str
    status: str
    nodes: int
    data_nodes: int
    expected_nodes: int | None
    initializing_shards: int
    unassigned_shards: int
    delayed_unassigned_shards: int

    @property
    def missing_nodes(self) -> int | None:
        return None if self.expected_nodes is None else max(0, self.expected_nodes - self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missing_nodes": self.missing_nodes}

    def format(self) -> str:
        """One line, e.g. `cluster c1: yellow, nodes 2/3 (1 missing), 1 shard unassigned (1 waiting for their node)`."""
        nodes = f"nodes {self.nodes}" + (f"/{self.expected_nodes}" if self.expected_nodes is not None else "")
        if self.missing_nodes:
            nodes += f" ({self.missing_nodes} missing)"
        line = f"cluster {self.name}: {self.status}, {nodes}"
        if self.initializing_shards:
            line += f", {self.initializing_shards} shard{'s' if self.initializing_shards != 1 else ''} initializing"
        if self.unassigned_shards:
            line += f", {self.unassigned_shards} shard{'s' if self.unassigned_shards != 1 else ''} unassigned"
            if self.delayed_unassigned_shards:
                line += f" ({self.delayed_unassigned_shards} waiting for their node)"
        if self.status == "yellow":
            line += ": every primary is served, some replicas are not (no redundancy for them)"
        elif self.status == "red":
            line += ": some primaries are not served (searches miss their documents)"
        return line


def cluster_report(client, timeout_s: float = 10.0) -> ClusterReport | None:
    """The `ClusterReport` of the cluster behind `client` (opensearch-py), or None when health is not readable."""
    try:
        h = client.cluster.health(request_timeout=timeout_s)
    except TransportError:
        return None
    expected = None
    try:
        state = client.cluster.state(
            metric="metadata,nodes",
            filter_path="metadata.cluster_coordination.last_committed_config,nodes",
            request_timeout=timeout_s,
        )
        voting = set(((state.get("metadata") or {}).get("cluster_coordination") or {}).get("last_committed_config") or [])
        present = set((state.get("nodes") or {}).keys())
        if voting:
            expected = len(present) + len(voting - present)
    except TransportError:  # e.g. a managed cluster without _cluster/state: the nodes present only
        pass
    return ClusterReport(
        name=str(h.get("cluster_name", "")),
        status=str(h.get("status", "")),
        nodes=int(h.get("number_of_nodes", 0)),
        data_nodes=int(h.get("number_of_data_nodes", 0)),
        expected_nodes=expected,
        initializing_shards=int(h.get("initializing_shards", 0)),
        unassigned_shards=int(h.get("unassigned_shards", 0)),
        delayed_unassigned_shards=int(h.get("delayed_unassigned_shards", 0)),
    )
