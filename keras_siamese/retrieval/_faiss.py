"""faiss as the candidate generator of an `EmbeddingIndex` (optional)."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese.distances import Distance

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


def faiss_form(distance: Distance, engine: str) -> Any:
    """The distance's `FaissForm`, or a ValueError naming what it lacks."""
    if distance.faiss_form is None:
        raise ValueError(
            f'engine="{engine}" cannot search the distance {distance.name!r}: it '
            "has no faiss metric (`Distance.faiss_form` is None). Use the exact "
            'engine="keras", or give the distance a `FaissForm`.'
        )
    return distance.faiss_form


def faiss_metric(faiss: Any, name: str, distance: Distance) -> Any:
    """faiss' `METRIC_<name>` constant, or a ValueError."""
    metric = getattr(faiss, f"METRIC_{name}", None)
    if metric is None:
        raise ValueError(
            f"The distance {distance.name!r} names the faiss metric {name!r}, "
            f"which faiss does not have (no `faiss.METRIC_{name}`)."
        )
    return metric


class FaissCandidates:
    """A faiss index over the gallery, for candidate neighbours.

    `"faiss"` is exact (`IndexFlat` with the distance's `FaissForm` metric:
    L2 for the Euclidean kinds, inner products of unit vectors for cosine,
    L1 for Manhattan); `"faiss-hnsw"` is the approximate `IndexHNSWFlat`
    graph with the same metric. The candidates are re-ranked by the index
    with exact distances.

    Raises:
        ValueError: if the distance has no `FaissForm`, or faiss has no
            metric of that name.
    """

    def __init__(
        self,
        engine: str,
        distance: Distance,
        dim: int,
        hnsw_neighbors: int,
        ef_search: int,
        ef_construction: int,
    ) -> None:
        faiss = import_faiss(engine)
        self.form = faiss_form(distance, engine)
        self.ef_search = ef_search
        metric = faiss_metric(faiss, self.form.metric, distance)
        if engine == "faiss":
            self.index = faiss.IndexFlat(dim, metric)
            self.hnsw = False
        else:
            self.index = faiss.IndexHNSWFlat(dim, hnsw_neighbors, metric)
            self.index.hnsw.efConstruction = ef_construction
            self.hnsw = True

    def _layout(self, x: np.ndarray) -> np.ndarray:
        if self.form.rows is not None:
            x = self.form.rows(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def add(self, embeddings: np.ndarray) -> None:
        self.index.add(self._layout(embeddings))

    def candidates(self, queries: np.ndarray, fetch: int) -> np.ndarray:
        """`(n, fetch)` gallery indices, -1 where faiss found fewer."""
        if self.hnsw:
            self.index.hnsw.efSearch = max(self.ef_search, fetch)
        _, indices = self.index.search(self._layout(queries), fetch)
        return indices.astype(np.int64)
