"""faiss engines of an `EmbeddingIndex` (optional): flat and HNSW."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from keras_siamese.distances import Distance
from keras_siamese.retrieval._engines import BuiltinEngine
from keras_siamese.retrieval._search import over_fetch

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


def faiss_metric(faiss: Any, name: str, distance: Distance) -> Any:
    """faiss' `METRIC_<name>` constant, or a ValueError."""
    metric = getattr(faiss, f"METRIC_{name}", None)
    if metric is None:
        raise ValueError(
            f"The distance {distance.name!r} names the faiss metric {name!r}, "
            f"which faiss does not have (no `faiss.METRIC_{name}`)."
        )
    return metric


class FaissEngine(BuiltinEngine):
    """Candidates from faiss' exact flat index (`engine="faiss"`).

    The gallery is laid out by the distance's `FaissForm` (L2 for the
    Euclidean kinds, inner products of unit rows for cosine, L1 for
    Manhattan) in an `IndexFlat` with its metric; the candidates are
    measured again exactly by the index. It uses none of the settings of
    `BuiltinEngine` but `block_bytes` (for queries given too few
    candidates). Needs faiss (`pip install "keras-siamese[faiss]"`).

    Raises:
        ImportError: when it is given to an index and faiss is missing.
        ValueError: when it is given to an index whose distance has no
            `FaissForm`, or names a metric faiss does not have.
    """

    name = "faiss"
    needs = ("faiss",)

    def bind(self, distance: Distance) -> None:
        faiss = import_faiss(self.name)
        self._metric = faiss_metric(faiss, distance.faiss_form.metric, distance)
        super().bind(distance)
        self._faiss = faiss
        self._form = distance.faiss_form
        self._index = None
        # faiss indexes are not safe to add to while searched.
        self._lock = threading.Lock()

    def _build(self, dim: int) -> Any:
        return self._faiss.IndexFlat(dim, self._metric)

    def _layout(self, x: np.ndarray) -> np.ndarray:
        if self._form.rows is not None:
            x = self._form.rows(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def add(self, embeddings: np.ndarray) -> None:
        with self._lock:
            if self._index is None:
                self._index = self._build(embeddings.shape[1])
            self._index.add(self._layout(embeddings))

    def _search(self, queries: np.ndarray, fetch: int) -> np.ndarray:
        _, indices = self._index.search(self._layout(queries), fetch)
        return indices

    def candidates(
        self, queries: np.ndarray, k: int, references: np.ndarray
    ) -> np.ndarray:
        """`over_fetch(k)` rows per query, -1 where faiss found fewer."""
        with self._lock:
            fetch = over_fetch(k, self._index.ntotal)
            return self._search(queries, fetch).astype(np.int64)


class FaissHNSWEngine(FaissEngine):
    """Candidates from faiss' approximate HNSW graph (`engine="faiss-hnsw"`).

    An `IndexHNSWFlat` with the metric of the distance's `FaissForm`: fast
    for large galleries, but it can miss true neighbours (the ones it finds
    are measured exactly). Uses `hnsw_neighbors`, `ef_search` (raised to the
    number of candidates when that is larger) and `ef_construction` (see
    `BuiltinEngine`). Needs faiss.

    Raises:
        ImportError: when it is given to an index and faiss is missing.
        ValueError: as `FaissEngine`.
    """

    name = "faiss-hnsw"

    def _build(self, dim: int) -> Any:
        index = self._faiss.IndexHNSWFlat(dim, self.hnsw_neighbors, self._metric)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _search(self, queries: np.ndarray, fetch: int) -> np.ndarray:
        self._index.hnsw.efSearch = max(self.ef_search, fetch)
        return super()._search(queries, fetch)
