"""The search engines of an `EmbeddingIndex` and the bounds of their settings.

The bounds are checked by the constructor and again when a saved index is
read, so that a tampered `index.json` cannot bring in a value that makes
search crawl or breaks faiss (whose settings are C `int`s).
"""

from __future__ import annotations

from typing import Any

from keras_siamese._checks import check_positive_int

#: Search engines: exact on the Keras backend, exact faiss, approximate HNSW.
ENGINES = ("keras", "faiss", "faiss-hnsw")

ENGINE_LIMITS = {
    # A score block beyond 1 GiB gains no speed (a block then holds
    # thousands of query rows by the widest tile), while choosing the padded
    # block shapes on JAX takes time that grows with it: 0.2 s per search of
    # a one-row gallery at 1 GiB, 0.9 s at 4 GiB.
    "block_bytes": 2**30,
    # faiss' HNSW `M`: links per node; typical graphs use 16-64.
    "hnsw_neighbors": 2**10,
    # HNSW breadths: near these, HNSW is slower than an exact search.
    "ef_search": 2**16,
    "ef_construction": 2**16,
}


def check_engine_setting(value: Any, argument: str) -> int:
    """Return `value` as an int in `[1, ENGINE_LIMITS[argument]]`.

    Raises:
        TypeError: if `value` is not an integer.
        ValueError: if it is below 1 or above its limit.
    """
    value = check_positive_int(value, argument)
    limit = ENGINE_LIMITS[argument]
    if value > limit:
        raise ValueError(f"`{argument}` must be at most {limit}; got {value}.")
    return value
