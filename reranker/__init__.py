"""The reranking sidecar.

Layout (after Hugging Face text-embeddings-inference: fronts, a batching core, backends kept apart):
- `registry`:  trained cross-encoder versions on disk and the atomically written `current` pointer
- `backends/`: model backends behind one interface (torch / sentence-transformers)
- `core`:      the scoring core: bounded queue, batches across concurrent requests, deadlines
- fronts:      gRPC (`grpc_front`), HTTP (`http_front`)
"""
