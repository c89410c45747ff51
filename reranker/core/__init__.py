"""The scoring core shared by every front: request validation, a bounded queue with batches across requests,
and the model holder with hot swap (after text-embeddings-inference's router / queue / backend split).

- `reranker.core.request`: validation of one request, its queue state (`Work`) and its `ScoreResult`;
- `reranker.core.scheduler`: `ScoringCore`, the queue, the batcher and the worker thread;
- `reranker.core.models`: `ModelHolder`, the serving model and hot swap from the registry.
"""

from reranker.core.request import ScoreResult
from reranker.core.scheduler import ScoringCore

__all__ = ["ScoreResult", "ScoringCore"]
