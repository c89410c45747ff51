"""fashion-rerank: cross-encoder reranking for fashion product search on OpenSearch k-NN.

Shared pieces live here: settings (`fashion_rerank.settings`), the OpenSearch client
(`fashion_rerank.opensearch`), the local development node (`fashion_rerank.local_node`),
the generated gRPC stubs (`fashion_rerank.v1`) and the console script (`fashion_rerank.cli`).
"""

__version__ = "0.1.0"
