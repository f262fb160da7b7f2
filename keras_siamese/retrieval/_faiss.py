"""faiss as the candidate generator of an `EmbeddingIndex` (optional)."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese.retrieval._search import unit_rows

_INSTALL_HINT = (
    'engine="{engine}" needs faiss: `pip install "keras-siamese[faiss]"` (or '
    '`pip install faiss-cpu`), or use the exact engine="keras".'
)


def import_faiss(engine: str) -> Any:
    """The `faiss` module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(_INSTALL_HINT.format(engine=engine)) from error
    return faiss


class FaissCandidates:
    """A faiss index over the gallery, for candidate neighbours.

    `"faiss"` is exact (`IndexFlatL2`, `IndexFlatIP` on unit vectors for the
    cosine distance, `IndexFlat` with `METRIC_L1` for Manhattan); `"faiss-hnsw"`
    is the approximate `IndexHNSWFlat` graph with the same metrics. The
    candidates are re-ranked by the index with exact distances.
    """

    def __init__(
        self,
        engine: str,
        distance: str,
        dim: int,
        hnsw_neighbors: int,
        ef_search: int,
        ef_construction: int,
    ) -> None:
        faiss = import_faiss(engine)
        self.distance = distance
        self.ef_search = ef_search
        metric = {
            "cosine": faiss.METRIC_INNER_PRODUCT,
            "manhattan": faiss.METRIC_L1,
        }.get(distance, faiss.METRIC_L2)
        if engine == "faiss":
            self.index = faiss.IndexFlat(dim, metric)
            self.hnsw = False
        else:
            self.index = faiss.IndexHNSWFlat(dim, hnsw_neighbors, metric)
            self.index.hnsw.efConstruction = ef_construction
            self.hnsw = True

    def _layout(self, x: np.ndarray) -> np.ndarray:
        if self.distance == "cosine":
            x = unit_rows(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def add(self, embeddings: np.ndarray) -> None:
        self.index.add(self._layout(embeddings))

    def candidates(self, queries: np.ndarray, fetch: int) -> np.ndarray:
        """`(n, fetch)` gallery indices, -1 where faiss found fewer."""
        if self.hnsw:
            self.index.hnsw.efSearch = max(self.ef_search, fetch)
        _, indices = self.index.search(self._layout(queries), fetch)
        return indices.astype(np.int64)
