"""The reranking sidecar (an application: it imports the kernel `fashion_rerank`, never `indexer` or `labeling`).

Layout (after Hugging Face text-embeddings-inference: fronts, a batching core, backends kept apart):
- `backends/`: model backends behind one interface (`base.Backend`): `onnx_backend` (ONNX Runtime, serves
  without torch), `torch_backend`, `fake` (deterministic scores for tests)
- `core/`:     the scoring core: `request` (validation), `scheduler` (bounded queue, batches across concurrent
  requests, deadlines), `models` (the serving model and hot swap), `cache` (the score cache)
- `batching`:  how pairs are cut into forward passes
- `search`:    Search = query embedding + OpenSearch kNN (filters in the knn clause) + rerank within a budget
- fronts:      gRPC (`grpc_front`: Reranker, tei.v1.Rerank, health, reflection), HTTP (`http/`: Cohere and TEI
  shapes as pydantic models on FastAPI; `http_front` re-exports it)
- `errors`, `status`: the error taxonomy and the one table mapping it to gRPC and HTTP statuses
- `metrics`, `querylog`: Prometheus metrics; sampled queries in UBI `ubi_queries` shape
- `pipeline/`: `opensearch install-pipeline`: wiring the HTTP front into OpenSearch as a rerank search pipeline
- `serve`, `client`: the sidecar process; a Python gRPC client
"""
