"""Generated gRPC stubs of the fashion-rerank contract (`proto/fashion_rerank/v1/`).

Do not edit: regenerate with `python -m fashion_rerank.protogen` (`make proto`). Modules:
`reranker_pb2` / `reranker_pb2_grpc` (service `fashion_rerank.v1.Reranker`) and `tei_pb2` / `tei_pb2_grpc`
(Hugging Face text-embeddings-inference's `tei.v1.Rerank`, served on the same port).
"""
