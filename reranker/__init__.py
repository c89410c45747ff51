"""The reranking sidecar.

Layout (after Hugging Face text-embeddings-inference: fronts, a batching core, backends kept apart):
- `registry`:  trained cross-encoder versions on disk and the atomically written `current` pointer
- `backends/`: model backends behind one interface (`base.Backend`; `torch_backend` now)
- `core`:      the scoring core: bounded queue, batches across concurrent requests, deadlines, hot swap
- `search`:    Search = query embedding + OpenSearch kNN (filters in the knn clause) + rerank within a budget
- fronts:      gRPC (`grpc_front`: Reranker, tei.v1.Rerank, health, reflection), HTTP (`http_front`)
- `metrics`, `querylog`: Prometheus metrics; sampled queries in UBI `ubi_queries` shape
- `serve`, `cli`, `client`, `settings`, `protogen`: process, commands, Python client, FR_SERVE_*, stub generation
"""
