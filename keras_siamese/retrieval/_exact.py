"""The exact engine: blocked search with `keras.ops` on the backend."""

from __future__ import annotations

import numpy as np

from keras_siamese.retrieval import _search
from keras_siamese.retrieval._engines import BuiltinEngine


class ExactEngine(BuiltinEngine):
    """Exact search on the Keras backend (`engine="keras"`, the default).

    Queries are scored in blocks against tiles of the gallery with
    `keras.ops` (on the GPU when there is one), holding at most one
    `block_bytes` score matrix at a time, never the `(queries, gallery)`
    matrix. The float32 scores select a few more rows than asked for, which
    are measured again with the exact distance, so the candidates are the
    exact `k` nearest unless more than `max(8, k // 8)` rows lie within
    float32 round-off of the `k`-th distance. It uses `block_bytes` only (see
    `BuiltinEngine` for the others).

    Examples:
        >>> import numpy as np
        >>> from keras_siamese import EmbeddingIndex
        >>> index = EmbeddingIndex(engine=ExactEngine(block_bytes=2**20))
        >>> index.add(np.array([[0.0, 0.0], [3.0, 4.0]]))
        >>> index.engine, index.block_bytes
        ('keras', 1048576)
    """

    name = "keras"

    def add(self, embeddings: np.ndarray) -> None:
        """Nothing to do: `candidates` lays out the gallery it is given."""

    def _prepared(self, gallery: np.ndarray) -> _search.PreparedGallery:
        # Kept while the gallery array (replaced, never changed, by the
        # index) and the budget stay the same.
        cached = getattr(self, "_cache", None)
        if cached is None or cached[0] is not gallery or cached[1] != self.block_bytes:
            prepared = _search.PreparedGallery(gallery, self.distance, self.block_bytes)
            cached = (gallery, self.block_bytes, prepared)
            self._cache = cached
        return cached[2]

    def candidates(
        self, queries: np.ndarray, k: int, references: np.ndarray
    ) -> np.ndarray:
        """Rows holding the exact `k` nearest of each query, and a few more.

        The `over_fetch(k, ...)` rows with the best float32 scores, unordered:
        the index measures them exactly (once) and keeps the nearest.
        """
        k = min(k, len(references))
        width = _search.over_fetch(k, len(references))
        indices = np.empty((len(queries), width), dtype=np.int64)
        for rows, _, candidates in _search.search_blocks(
            self._prepared(references), queries, k, candidates_only=True
        ):
            indices[rows] = candidates
        return indices
