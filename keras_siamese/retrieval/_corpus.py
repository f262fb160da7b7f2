"""A corpus to rank against: an `EmbeddingIndex`, given or built from rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese import distances as _distances
from keras_siamese._checks import check_embeddings
from keras_siamese.retrieval.index import EmbeddingIndex


def corpus_index(
    queries: Any, corpus: Any, distance: Any, block_bytes: int, user: str
) -> tuple[EmbeddingIndex, np.ndarray]:
    """The index to search and the checked queries.

    `corpus` is an `EmbeddingIndex`, used as it is (`distance` must then be
    left out or equal its own), or corpus embeddings, put in a new exact
    index with `distance` (Euclidean when left out).

    Raises:
        ValueError: for a `distance` other than the index's, an empty
            corpus, or bad embedding shapes or values.
    """
    if isinstance(corpus, EmbeddingIndex):
        index = corpus
        if distance is not None:
            given = _distances.get(distance, needs=("search",), user=user)
            if given != index.distance_object:
                raise ValueError(
                    f"`distance` {given.name!r} differs from the index's "
                    f"{index.distance!r}; leave it out to use the index's."
                )
    else:
        rows = check_embeddings(corpus, "corpus")
        index = EmbeddingIndex(
            "euclidean" if distance is None else distance, block_bytes=block_bytes
        )
        index.add(rows)
    if len(index) == 0:
        raise ValueError("The corpus is empty.")
    if index.truncate_dim is None:
        queries = check_embeddings(queries, "queries", dim=index.dim)
    else:  # the index keeps a prefix; its `search` cuts the queries alike
        queries = check_embeddings(queries, "queries")
    return index, queries
