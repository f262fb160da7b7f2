"""`EmbeddingIndex`: a gallery of embeddings with labels, searched exactly."""

from __future__ import annotations

import os
import threading
from typing import Any

import keras
import numpy as np

from keras_siamese import distances as _distances
from keras_siamese._checks import (
    check_choice,
    check_embeddings,
    check_labels,
    check_positive_int,
)
from keras_siamese.layers.trunk_head import trunk_of
from keras_siamese.retrieval import _labels, _search, _storage
from keras_siamese.retrieval._engines import ENGINES, check_engine_setting
from keras_siamese.retrieval._faiss import FaissCandidates, faiss_metric, import_faiss


def encode(encoder: Any, x: Any, batch_size: int, verbose: Any = "auto") -> np.ndarray:
    """Embeddings of `x` by `encoder.predict`, as a float32 `(n, dim)` array.

    A `TrunkHead` embeds with its trunk (`trunk_of`).

    Raises:
        TypeError: if `encoder` has no `predict` method or does not return
            one array.
        ValueError: if the embeddings are not 2-D or not finite.
    """
    if not callable(getattr(encoder, "predict", None)):
        raise TypeError(
            "`encoder` must be a Keras model with a `predict` method; got "
            f"{type(encoder).__name__}."
        )
    batch_size = check_positive_int(batch_size, "batch_size")
    output = trunk_of(encoder).predict(x, batch_size=batch_size, verbose=verbose)
    leaves = keras.tree.flatten(output)
    if len(leaves) != 1:
        raise TypeError(
            f"`encoder` must return one embedding array; it returned {len(leaves)}."
        )
    return check_embeddings(leaves[0], "the encoder's embeddings", allow_empty=True)


class EmbeddingIndex:
    """A gallery of embeddings, with optional labels, for nearest-neighbour search.

    Rows are numbered in the order they are added. `search` is exact by
    default: queries are scored in blocks against tiles of the gallery with
    `keras.ops` on the active backend (so on the GPU when there is one),
    holding at most one `block_bytes` score matrix at a time, never the
    `(queries, gallery)` matrix. The scores (float32 matrix products) select
    a few more candidates than asked for, whose distances are then computed
    directly from the coordinates (in float64, returned as float32), so even
    near-zero distances are exact; a true neighbour could only be missed if
    more than `max(8, k // 8)` rows were within float32 round-off of the
    `k`-th distance. Ties are broken by the lower row number, identically on
    every backend.

    With faiss installed (`pip install "keras-siamese[faiss]"`),
    `engine="faiss"` finds the candidates with faiss' exact flat index and
    `engine="faiss-hnsw"` with its approximate HNSW graph (fast for large
    galleries, but it can miss true neighbours); in both, the candidates are
    re-ranked with the exact distances as above.

    Labels keep their values exactly (see `add`): integers as int64 (uint64
    where a value is at least `2**63`), strings as strings; labels of one
    kind only.

    Thread safety: any number of threads may `search` (and read `labels`,
    `embeddings`, `len`) while one or more threads `add`. Each search works
    on one consistent snapshot of the gallery, taken when it starts: rows
    added meanwhile are found by later searches, no row is lost, and a row
    number always names the same embedding and label. `len(index)` counts
    every row added so far, all of which the next search sees. Saving while
    another thread adds is not supported.

    Args:
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`
            or `"manhattan"`, as in the losses, or a `Distance` (registered
            or not; the index keeps the object). It needs an exact form and
            a matrix-product or pairwise form; the faiss engines also need
            its `faiss_form`.
        engine: `"keras"` (default), `"faiss"` or `"faiss-hnsw"`.
        block_bytes: memory budget of one block of scores on the device,
            at most 2**30 (1 GiB).
        hnsw_neighbors: links per node of the HNSW graph (faiss' `M`), at
            most 1024.
        ef_search: HNSW search breadth, at most 65536; larger is slower and
            more accurate.
        ef_construction: HNSW construction breadth, at most 65536.

    Raises:
        ImportError: for a faiss engine without faiss installed.
        TypeError: for non-integer sizes, or a `distance` that is neither a
            name nor a `Distance`.
        ValueError: for an unknown distance or engine, a distance lacking a
            form the engine needs, or sizes below 1 or above their bounds.

    Examples:
        >>> import numpy as np
        >>> index = EmbeddingIndex(distance="euclidean")
        >>> index.add(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]), ["a", "b", "a"])
        >>> distances, indices = index.search(np.array([[0.9, 0.1]]), k=2)
        >>> indices.tolist(), [round(float(d), 4) for d in distances[0]]
        ([[2, 0]], [0.1414, 0.9055])
        >>> index.labels_of(indices).tolist()
        [['a', 'a']]
        >>> len(index)
        3
    """

    def __init__(
        self,
        distance: str | _distances.Distance = "euclidean",
        *,
        engine: str = "keras",
        block_bytes: int = _search.DEFAULT_BLOCK_BYTES,
        hnsw_neighbors: int = 32,
        ef_search: int = 64,
        ef_construction: int = 64,
    ) -> None:
        self._engine = check_choice(engine, ENGINES, "engine")
        needs = ("search",) if self._engine == "keras" else ("search", "faiss")
        self._distance = _distances.get(
            distance, needs=needs, user=f"EmbeddingIndex(engine={self._engine!r})"
        )
        self.block_bytes = check_engine_setting(block_bytes, "block_bytes")
        self.hnsw_neighbors = check_engine_setting(hnsw_neighbors, "hnsw_neighbors")
        self.ef_search = check_engine_setting(ef_search, "ef_search")
        self.ef_construction = check_engine_setting(ef_construction, "ef_construction")
        if self._engine != "keras":
            faiss_metric(
                import_faiss(self._engine),
                self._distance.faiss_form.metric,
                self._distance,
            )
        # Rows are appended to `_chunks` under `_lock`; `_consolidate` joins
        # them into new `_embeddings` / `_labels` arrays, which are replaced,
        # never modified, so a search can keep using the pair it took.
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._label_chunks: list[np.ndarray] = []
        self._embeddings = np.zeros((0, 0), dtype=np.float32)
        self._labels: np.ndarray | None = None
        self._dim: int | None = None
        self._labelled: bool | None = None
        self._count = 0
        self._prepared: _search.PreparedGallery | None = None
        # faiss indexes are not safe to add to while searched.
        self._faiss_lock = threading.Lock()
        self._faiss: FaissCandidates | None = None
        self._faiss_count = 0

    # -- contents ---------------------------------------------------------

    @property
    def distance(self) -> str:
        """The name of the distance the index searches with."""
        return self._distance.name

    @property
    def distance_object(self) -> _distances.Distance:
        """The `Distance` the index searches with."""
        return self._distance

    @property
    def engine(self) -> str:
        """The search engine: `"keras"`, `"faiss"` or `"faiss-hnsw"`."""
        return self._engine

    @property
    def dim(self) -> int | None:
        """The embedding size, or `None` while the index is empty."""
        return self._dim

    @property
    def embeddings(self) -> np.ndarray:
        """The gallery, a read-only float32 `(len(index), dim)` array."""
        embeddings, _ = self._consolidate()
        view = embeddings.view()
        view.flags.writeable = False
        return view

    @property
    def labels(self) -> np.ndarray | None:
        """The labels of the rows (read-only), or `None` for an unlabelled index."""
        _, labels = self._consolidate()
        if labels is None:
            return None
        view = labels.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        labelled = "labelled" if self._labelled else "unlabelled"
        return (
            f"EmbeddingIndex({self._count} x {self._dim} {labelled} embeddings, "
            f"distance={self._distance.name!r}, engine={self._engine!r})"
        )

    def _consolidate(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Join the rows added so far; returns the `(embeddings, labels)` snapshot."""
        with self._lock:
            if self._chunks:
                existing = [self._embeddings] if len(self._embeddings) else []
                self._embeddings = np.concatenate([*existing, *self._chunks])
                self._chunks = []
            if self._label_chunks:
                existing = [] if self._labels is None else [self._labels]
                self._labels = _labels.combine(*existing, *self._label_chunks)
                self._label_chunks = []
            return self._embeddings, self._labels

    def add(self, embeddings: Any, labels: Any | None = None) -> None:
        """Append rows to the gallery; they are numbered after the existing ones.

        Args:
            embeddings: `(n, dim)` embeddings (converted to float32).
            labels: `(n,)` labels, any hashable values (integers or strings to
                be saved), or `None`. An index is either labelled or not: once
                rows have labels, every later `add` must give them, of the
                same kind. Labels keep their values: integers within the
                int64 or uint64 range as int64 (uint64 where one is at least
                `2**63`), strings as strings.

        Raises:
            TypeError: for non-numeric embeddings, unhashable labels, or
                labels that mix kinds (integers and strings, say), within
                one call or with the labels already held.
            ValueError: for a shape other than `(n, dim)`, a `dim` other than
                the index's, NaN or infinite values, labels of the wrong
                length, integer labels outside the int64 and uint64 ranges
                (or spanning both), or labels given to an unlabelled index
                (or missing for a labelled one).
        """
        rows = check_embeddings(embeddings, "embeddings", dim=self._dim)
        if isinstance(embeddings, np.ndarray) and np.shares_memory(rows, embeddings):
            rows = rows.copy()  # the caller's array may change later
        if labels is not None:
            labels = check_labels(labels, len(rows))
        with self._lock:
            if self._dim is not None and rows.shape[1] != self._dim:
                check_embeddings(rows, "embeddings", dim=self._dim)  # raises
            if self._labelled is not None and self._labelled != (labels is not None):
                if self._labelled:
                    raise ValueError(
                        "This index holds labels: pass `labels` for the new rows too."
                    )
                raise ValueError(
                    "This index holds no labels: rows added without labels cannot "
                    "be mixed with labelled ones."
                )
            if labels is not None:
                for held in (self._labels, *self._label_chunks):
                    _labels.check_join(held, labels)
            self._labelled = labels is not None
            self._dim = rows.shape[1]
            self._chunks.append(rows)
            if labels is not None:
                self._label_chunks.append(labels)
            self._count += len(rows)

    # -- search -----------------------------------------------------------

    def _check_queries(
        self, queries: Any, k: int, count: int
    ) -> tuple[np.ndarray, int]:
        if count == 0:
            raise ValueError("The index is empty: add embeddings before searching.")
        k = check_positive_int(k, "k")
        if k > count:
            raise ValueError(
                f"`k` must be at most the number of indexed rows ({count}); got {k}."
            )
        return check_embeddings(queries, "queries", dim=self._dim), k

    def search(self, queries: Any, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest gallery rows of each query.

        Args:
            queries: `(n, dim)` embeddings.
            k: neighbours per query, `1 <= k <= len(index)`.

        Returns:
            `(distances, indices)`: NumPy arrays of shape `(n, k)`, float32
            distances and int64 row numbers, nearest first, ties broken by
            the lower row number.

        Raises:
            TypeError: if `k` is not an integer or the queries not numbers.
            ValueError: for an empty index, `k < 1` or `k > len(index)`,
                queries of another embedding size, or NaN or infinite values.
        """
        gallery, _ = self._consolidate()
        queries, k = self._check_queries(queries, k, len(gallery))
        if self._engine == "keras":
            return self._search_exact(gallery, queries, k)
        return self._search_faiss(gallery, queries, k)

    def _gallery(self, embeddings: np.ndarray) -> _search.PreparedGallery:
        prepared = self._prepared
        if prepared is None or prepared.embeddings is not embeddings:
            prepared = _search.PreparedGallery(
                embeddings, self._distance, self.block_bytes
            )
            self._prepared = prepared
        return prepared

    def _search_exact(
        self, gallery: np.ndarray, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        distances = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for rows, block_distances, block_indices in _search.search_blocks(
            self._gallery(gallery), queries, k
        ):
            distances[rows] = block_distances
            indices[rows] = block_indices
        return distances, indices

    def _search_faiss(
        self, gallery: np.ndarray, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        count = len(gallery)
        fetch = _search.over_fetch(k, count)
        with self._faiss_lock:
            if self._faiss is None:
                self._faiss = FaissCandidates(
                    self._engine,
                    self._distance,
                    self._dim,
                    self.hnsw_neighbors,
                    self.ef_search,
                    self.ef_construction,
                )
                self._faiss_count = 0
            if self._faiss_count < count:
                self._faiss.add(gallery[self._faiss_count :])
                self._faiss_count = count
            candidates = self._faiss.candidates(queries, fetch)
        # Rows another search added to faiss after this one's snapshot.
        missing = (candidates < 0) | (candidates >= count)
        safe = np.where(missing, 0, candidates)
        distances = _search.exact_distances(queries, gallery, safe, self._distance)
        distances[missing] = np.inf
        order = np.lexsort((np.where(missing, count, safe), distances), axis=-1)
        order = order[:, :k]
        distances = np.take_along_axis(distances, order, axis=1)
        indices = np.take_along_axis(safe, order, axis=1)
        short = np.flatnonzero(~np.isfinite(distances).all(axis=1))
        if short.size:  # faiss returned fewer than k results for these rows
            distances[short], indices[short] = self._search_exact(
                gallery, queries[short], k
            )
        return distances.astype(np.float32), indices

    def labels_of(self, indices: Any) -> np.ndarray:
        """The labels of gallery rows, in the shape of `indices`.

        Args:
            indices: row numbers of any shape, e.g. the `indices` of `search`.

        Returns:
            A NumPy array of labels.

        Raises:
            ValueError: if the index has no labels, or a row number is out of
                range.
            TypeError: if `indices` are not integers.
        """
        if not self._labelled:
            raise ValueError("This index holds no labels; add rows with `labels`.")
        _, labels = self._consolidate()
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"`indices` must be integers; got dtype {indices.dtype}.")
        if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
            raise ValueError(
                f"`indices` must be row numbers in [0, {len(labels)}); got values "
                f"from {indices.min()} to {indices.max()}."
            )
        return labels[indices]

    # -- building from an encoder -------------------------------------------

    @classmethod
    def from_encoder(
        cls,
        encoder: keras.Model,
        x: Any,
        labels: Any | None = None,
        *,
        batch_size: int = 256,
        verbose: Any = "auto",
        distance: str | _distances.Distance = "euclidean",
        **options: Any,
    ) -> EmbeddingIndex:
        """Encode a gallery with a Keras model in batches and index it.

        Args:
            encoder: the trained embedding network (anything with `predict`).
            x: the gallery's inputs, as `encoder.predict` takes them.
            labels: their labels, or `None`.
            batch_size: batch size of `predict`.
            verbose: `predict`'s progress bar setting.
            distance: the index's distance.
            **options: other `EmbeddingIndex` arguments (`engine`, ...).

        Returns:
            A new index holding the embeddings of `x`.

        Examples:
            >>> import keras, numpy as np
            >>> encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            >>> x = np.random.default_rng(0).random((10, 3)).astype("float32")
            >>> index = EmbeddingIndex.from_encoder(encoder, x, np.arange(10), verbose=0)
            >>> len(index), index.dim
            (10, 2)
        """
        index = cls(distance, **options)
        index.add(encode(encoder, x, batch_size, verbose), labels)
        return index

    # -- persistence ---------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        self._consolidate()
        kind = None
        if self._labels is not None:
            kind = _storage.label_kind(self._labels.dtype)
            if kind is None:
                raise ValueError(
                    "Only integer or string labels can be saved; this index holds "
                    f"labels of dtype {self._labels.dtype}. Convert them, e.g. "
                    "with `labels.astype(str)`, before adding."
                )
        return {
            "distance": _distances.serialize(self._distance, "This index"),
            "count": self._count,
            "dim": self._dim,
            "labels": kind,
            "engine": {
                "name": self._engine,
                "block_bytes": self.block_bytes,
                "hnsw_neighbors": self.hnsw_neighbors,
                "ef_search": self.ef_search,
                "ef_construction": self.ef_construction,
            },
        }

    def save(self, path: str | os.PathLike) -> None:
        """Save the index as a directory: JSON metadata and `.npy` arrays.

        The directory holds `index.json` (format marker and version,
        distance, sizes, label kind, engine settings, the SHA-256 and byte
        size of every file), `embeddings.npy` and `labels.npy`. No pickle:
        `load` reads it back without running anything from it, on any
        backend.

        The save is atomic: the files are written into a new sibling
        directory `.NAME.saving-XXXXXXXX`, flushed to disk, and renamed to
        `path`; an earlier save at `path` is renamed aside to
        `.NAME.old-XXXXXXXX` first and removed after. If saving fails or is
        interrupted, the earlier save is left as it was, byte for byte; only
        a crash between those two renames leaves `path` missing, with both
        complete saves in the siblings (rename one back). Symbolic links are
        never followed.

        Args:
            path: the directory to write (its parents are created if
                needed). An existing save of this format there is replaced;
                anything else is refused.

        Raises:
            ValueError: if the labels are neither integers nor strings, the
                distance is not registered under its name (see
                `keras_siamese.distances.register`), or `path` is a symbolic
                link, a file, a directory holding a symbolic link, or a
                non-empty directory that is not a save of this format (judged
                by the format marker in its `index.json`).
            OSError: if writing fails (a full disk, say); the earlier save
                is kept.

        Examples:
            >>> import tempfile, numpy as np
            >>> index = EmbeddingIndex()
            >>> index.add(np.array([[0.0, 1.0], [2.0, 3.0]]), [7, 8])
            >>> with tempfile.TemporaryDirectory() as folder:
            ...     index.save(folder + "/gallery")
            ...     index.save(folder + "/gallery")  # replaces it atomically
            ...     EmbeddingIndex.load(folder + "/gallery").labels.tolist()
            [7, 8]
        """
        _storage.write(path, self._metadata(), self._embeddings, self._labels)

    @classmethod
    def _from_record(cls, record: dict[str, Any], engine: str | None) -> EmbeddingIndex:
        settings = dict(record["engine"])
        name = settings.pop("name")
        try:
            index = cls(record["distance"], engine=engine or name, **settings)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Cannot load the index: its settings are invalid ({error})"
            ) from None
        if record["count"]:
            index.add(record["embeddings"], record["labels"])
        return index

    @classmethod
    def load(cls, path: str | os.PathLike, engine: str | None = None) -> EmbeddingIndex:
        """Load an index written by `save` (or by `Verifier.save`).

        Args:
            path: the saved directory.
            engine: search with this engine instead of the saved one (say
                `"keras"` where faiss is not installed).

        Returns:
            The index, with the same rows, labels and distance.

        Raises:
            ValueError: if the directory is missing, malformed (any field of
                `index.json` of the wrong type or out of range, engine
                settings above their bounds included), of an unsupported
                version, truncated, oversized or tampered with, or if it or
                a file in it is a symbolic link. File sizes are checked
                before any file is hashed or read.
            ImportError: if the (saved) engine needs faiss and it is missing.
        """
        return cls._from_record(_storage.read(path), engine)
