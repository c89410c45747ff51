"""Indexing benchmark: the full bundled Myntra catalog (44,446 products), end to end, cold then warm.

Run: `.venv/bin/python bench/index_bench.py` (or `make bench`) with OpenSearch at OPENSEARCH_URL.

1. Cold: empty embedding cache (a temp file), model not yet loaded: read, rerank_text, embed (bf16
   autocast where the CPU has it, see IndexSettings.embed_bf16), bulk, refresh, smoke query, alias swap.
2. Warm: the same catalog again, unchanged: every vector comes from the cache; a new index is still
   written and the alias moved (the model stays loaded, as in a long-running process).

Prints products/s for both, peak RSS of this process (ru_maxrss) and the index size (`_cat/indices`
store.size). Targets from issue 2: >= 300 products/s cold, >= 3,000 products/s warm, peak <= 2 GB on the
2-core machine. The load average is printed too: on a shared machine the figures drop with it.
The bench alias and its indices are deleted at the end.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _store_bytes(client, index: str) -> int:
    rows = client.cat.indices(index=index, format="json", bytes="b", h="store.size")
    return int(rows[0]["store.size"])


def main() -> int:
    import torch

    from fashion_rerank.embedding import EmbeddingCache
    from fashion_rerank.opensearch import make_client
    from fashion_rerank.settings import ModelSettings, cpu_quota
    from indexer.index import managed_indices
    from indexer.run import run_index

    torch.set_num_threads(ModelSettings().threads or cpu_quota())
    client = make_client()
    alias = f"bench-products-{uuid.uuid4().hex[:8]}"
    print(f"threads={torch.get_num_threads()} cpus={cpu_quota()} load average at start={os.getloadavg()}")
    try:
        with tempfile.TemporaryDirectory(prefix="fr-bench-") as tmp:
            cache = EmbeddingCache(Path(tmp) / "embeddings.sqlite")
            results = []
            for label in ("cold", "warm"):
                t0 = time.perf_counter()
                summary = run_index("myntra", alias=alias, client=client, cache=cache, progress=True)
                wall = time.perf_counter() - t0
                size = _store_bytes(client, summary.index)
                results.append((label, summary, size))
                print(
                    f"{label}: {summary.indexed} products indexed in {wall:.1f} s = {summary.indexed / wall:.0f} products/s "
                    f"(embeddings {summary.embedded_computed} computed, {summary.embedded_cached} cached; "
                    f"skipped {len(summary.skipped)}); index {summary.index} {size / 2**20:.1f} MiB; "
                    f"load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS of the indexer process: {peak_mib:.0f} MiB")
            (_, cold, _), (_, warm, size) = results
            print(
                f"SUMMARY cold={cold.products_per_s:.0f} products/s (target 300) "
                f"warm={warm.products_per_s:.0f} products/s (target 3000) "
                f"peak_rss={peak_mib:.0f} MiB (target 2048) index_size={size / 2**20:.1f} MiB"
            )
    finally:
        for name in managed_indices(client, alias):
            client.indices.delete(index=name, ignore_unavailable=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
