"""Indexer: fashion catalogs -> one product schema -> bi-encoder embeddings -> OpenSearch k-NN index.

Modules:
- `product`:   the product schema and `rerank_text`, the one text a product is shown as everywhere
- `catalogs`:  readers for the bundled Myntra catalog, the H&M articles file and generic CSV/JSONL/Parquet
- `embedding`: the bi-encoder with an embedding cache keyed by (model, text hash)
- `index`:     mapping, versioned indices behind an alias, atomic alias swap, retention
- `bulk`:      streaming bulk that reports each item, with 429 retries
- `gate`:      the partial-index gate: whether a built index may go live behind the alias
- `retrieval`: kNN search with filters inside the knn clause
- `run`:       `fashion-rerank index`: the whole job and its summary
"""
