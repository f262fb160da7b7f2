"""`EmbeddingIndex`: a gallery of embeddings with labels, searched exactly."""

from __future__ import annotations

import os
import threading
from typing import Any

import keras
import numpy as np

from keras_siamese import distances as _distances
from keras_siamese._checks import (
    check_embeddings,
    check_labels,
    check_positive_int,
    truncate_embeddings,
)
from keras_siamese.layers.trunk_head import trunk_of
from keras_siamese.retrieval import _engines, _labels, _storage
from keras_siamese.retrieval._engines import ENGINES, Engine
from keras_siamese.retrieval._exact import ExactEngine
from keras_siamese.retrieval._quantized import MappedRows, Quantizer
from keras_siamese.retrieval._rerank import rerank
from keras_siamese.retrieval.engines import get as get_engine


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


def no_inputs(x: Any) -> bool:
    """Whether `x` holds no inputs: every array in it has 0 rows, or it has none.

    Only arrays and tensors (anything with a `shape`) are measured: a
    dataset or a generator is never read here.
    """
    leaves = keras.tree.flatten(x)
    return all(tuple(getattr(leaf, "shape", ()) or ())[:1] == (0,) for leaf in leaves)


class EmbeddingIndex:
    """A gallery of embeddings, with optional labels, for nearest-neighbour search.

    Rows are numbered in the order they are added. A search asks the
    engine for candidate rows, measures every candidate with the distance's
    exact form (in float64, returned as float32, so even near-zero
    distances are exact) and returns the nearest, ties broken by the lower
    row number, identically on every backend and with every engine.

    The default `engine="keras"` (`ExactEngine`) is exact: queries are
    scored in blocks against tiles of the gallery with `keras.ops` on the
    active backend (so on the GPU when there is one), holding at most one
    `block_bytes` score matrix at a time, never the `(queries, gallery)`
    matrix; a true neighbour could only be missed if more than
    `max(8, k // 8)` rows were within float32 round-off of the `k`-th
    distance. With faiss installed (`pip install "keras-siamese[faiss]"`),
    `engine="faiss"` finds the candidates with faiss' exact flat index and
    `engine="faiss-hnsw"` with its approximate HNSW graph (fast for large
    galleries, but it can miss true neighbours). Any `Engine` object works
    too (see `keras_siamese.retrieval.engines`), as do the names given to
    `keras_siamese.retrieval.engines.register`.

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
        engine: `"keras"` (default), `"faiss"`, `"faiss-hnsw"`, a name given
            to `engines.register`, or an `Engine` object (one that serves
            no other index).
        truncate_dim: keep only the first `truncate_dim` dimensions of every
            embedding added and every query (Matryoshka embeddings, trained
            with `MatryoshkaLoss`); `None` (default) keeps them all. The
            prefix is not re-normalised: use `distance="cosine"` (which
            measures directions) for embeddings trained on normalised
            prefixes. Saved with the index. It composes with `quantization`:
            rows, queries and `calibration` are truncated first, and the
            truncated rows are quantized.
        quantization: `None` (default): search the float32 rows. `"int8"`:
            keep each row as int8 codes, 4x smaller: every dimension's
            range `[min, max]` (of `calibration`, else of the first rows
            added) is cut into 256 buckets, and later values outside the
            range are clipped to it; queries (not quantized) are compared
            with the decoded codes, with `"euclidean"`,
            `"squared_euclidean"` or `"cosine"`. `"binary"`: keep the sign
            of every dimension (`value > 0`), packed into bits, 32x smaller,
            compared by Hamming distance (differing bits), for `"cosine"`
            only (signs keep directions, not lengths). Either way the codes
            propose `k * rescore` candidates per query, measured again
            exactly on the float32 rows where they are kept (see
            `keep_float`): the result equals exact search whenever the
            exact `k` nearest are among the candidates. The engine must be
            `"keras"` (the codes replace its search).
        rescore: candidates per neighbour wanted, an integer in
            `[1, 65536]` (default 4); larger finds more true neighbours,
            slower.
        calibration: `"int8"` only: `(n, dim)` embeddings whose
            per-dimension min and max set the ranges (say a sample of the
            gallery); `None` (default) takes them from the first `add`.
        keep_float: where a quantized index keeps the float32 rows it
            rescores with: `"memory"` (default); `"disk"`: in memory until
            the index is saved, then memory-mapped read-only from the
            saved `embeddings.npy` (also on `load`), with rows added since
            held in memory until the next save; `None`: not kept, so the
            distances returned are those measured on the codes
            (approximate: the decoded int8 rows' distance, or the Hamming
            distance for binary codes), ties broken by the lower row, and
            `embeddings` is unavailable.
        **options: the options of an engine given by name. The built-in
            engines take (see `BuiltinEngine`) `block_bytes`, the memory
            budget of one block of scores on the device, at most 2**30
            (1 GiB); `hnsw_neighbors`, links per node of the HNSW graph
            (faiss' `M`), at most 1024; `ef_search`, the HNSW search
            breadth, at most 65536 (larger is slower and more accurate);
            `ef_construction`, the HNSW construction breadth, at most 65536.

    Raises:
        ImportError: for a faiss engine without faiss installed.
        TypeError: for non-integer sizes (`truncate_dim` included), a
            `distance` that is neither a
            name nor a `Distance`, an `engine` that is neither a name nor an
            `Engine` object, an option the engine does not take, or options
            given with an `Engine` object.
        ValueError: for an unknown distance or engine, a distance lacking a
            form the engine needs, sizes below 1 or above their bounds, an
            engine that already serves another index, an unknown
            `quantization` or `keep_float`, a distance the quantization
            cannot search (binary with a Euclidean distance, a Manhattan
            or user-defined distance), another engine than `"keras"` with
            a quantization, `rescore` below 1 or above 65536, a
            `calibration` with binary codes or of another width than the
            embeddings (raised by the first `add`), or `rescore`,
            `calibration` or `keep_float` set without `quantization`.

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

        A quantized index: int8 codes (4x smaller than float32) propose
        `k * rescore` candidates, rescored exactly on the float32 rows:

        >>> rng = np.random.default_rng(0)
        >>> gallery = rng.normal(size=(1000, 16)).astype("float32")
        >>> small = EmbeddingIndex(quantization="int8", rescore=4)
        >>> small.add(gallery)
        >>> small.codes.dtype, small.codes.nbytes * 4 == gallery.nbytes
        (dtype('int8'), True)
        >>> exact = EmbeddingIndex()
        >>> exact.add(gallery)
        >>> bool((small.search(gallery[:5], k=3)[1] == exact.search(gallery[:5], k=3)[1]).all())
        True
    """

    def __init__(
        self,
        distance: str | _distances.Distance = "euclidean",
        *,
        engine: str | Engine = "keras",
        truncate_dim: int | None = None,
        quantization: str | None = None,
        rescore: int = 4,
        calibration: Any | None = None,
        keep_float: str | None = "memory",
        **options: Any,
    ) -> None:
        self._truncate_dim = (
            None
            if truncate_dim is None
            else check_positive_int(truncate_dim, "truncate_dim")
        )
        if quantization is not None and not (
            isinstance(engine, str) and engine == "keras"
        ):
            raise ValueError(
                "A quantized index finds its candidates with its codes: leave "
                f"`engine` as 'keras' with quantization={quantization!r}; got "
                f"engine={engine!r}."
            )
        engine = get_engine(engine, **options)
        self._distance = _distances.get(
            distance,
            needs=("search", *engine.needs),
            user=f"EmbeddingIndex(engine={engine.name!r})",
        )
        self._quantizer: Quantizer | None = None
        if quantization is not None:
            if calibration is not None:
                calibration = self._truncate(
                    check_embeddings(calibration, "calibration"), "calibration"
                )
            self._quantizer = Quantizer(
                quantization, self._distance.name, rescore, keep_float, calibration
            )
        elif calibration is not None or keep_float != "memory" or rescore != 4:
            raise ValueError(
                "`rescore`, `calibration` and `keep_float` set a quantized index: "
                "give `quantization` ('int8' or 'binary') too."
            )
        engine.bind(self._distance)
        self._engine = engine
        # Queries an engine gives too few candidates are searched exactly.
        self._fallback: ExactEngine | None = None
        # Rows are appended to `_chunks` under `_lock`; `_consolidate` joins
        # them into new `_embeddings` / `_labels` arrays, which are replaced,
        # never modified, so a search can keep using the pair it took.
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._label_chunks: list[np.ndarray] = []
        self._embeddings = np.zeros((0, 0), dtype=np.float32)
        # A quantized index's codes, joined as the embeddings are.
        self._code_chunks: list[np.ndarray] = []
        self._codes = np.zeros((0, 0), dtype=np.uint8)
        self._labels: np.ndarray | None = None
        self._dim: int | None = None
        self._labelled: bool | None = None
        self._count = 0
        # Rows given to the engine's `add` so far, under `_engine_lock`.
        self._engine_lock = threading.Lock()
        self._engine_count = 0

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
    def truncate_dim(self) -> int | None:
        """Dimensions kept of each embedding and query, or `None` (all)."""
        return self._truncate_dim

    def _truncate(self, embeddings: np.ndarray, what: str) -> np.ndarray:
        """The first `truncate_dim` columns of checked `(n, dim)` embeddings."""
        if not len(embeddings):
            return embeddings
        return truncate_embeddings(
            embeddings,
            self._truncate_dim,
            f"`{what}` have {{dim}} dimensions, fewer than the index's "
            "truncate_dim={keep}.",
        )

    @property
    def engine(self) -> str:
        """The name of the search engine: `"keras"`, `"faiss"`, `"faiss-hnsw"`, ..."""
        return self._engine.name

    @property
    def engine_object(self) -> Engine:
        """The `Engine` the index searches with."""
        return self._engine

    # The built-in engines' settings, read and set on the engine.

    @property
    def block_bytes(self) -> int:
        """Memory budget of one block of scores of the exact search."""
        return self._engine.block_bytes

    @block_bytes.setter
    def block_bytes(self, value: int) -> None:
        self._engine.block_bytes = value

    @property
    def hnsw_neighbors(self) -> int:
        """Links per node of a built-in engine's HNSW graph."""
        return self._engine.hnsw_neighbors

    @hnsw_neighbors.setter
    def hnsw_neighbors(self, value: int) -> None:
        self._engine.hnsw_neighbors = value

    @property
    def ef_search(self) -> int:
        """A built-in engine's HNSW search breadth."""
        return self._engine.ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._engine.ef_search = value

    @property
    def ef_construction(self) -> int:
        """A built-in engine's HNSW construction breadth."""
        return self._engine.ef_construction

    @ef_construction.setter
    def ef_construction(self, value: int) -> None:
        self._engine.ef_construction = value

    @property
    def dim(self) -> int | None:
        """The embedding size, or `None` while the index is empty."""
        return self._dim

    @property
    def quantization(self) -> str | None:
        """`"int8"`, `"binary"`, or `None` for an unquantized index."""
        return None if self._quantizer is None else self._quantizer.kind

    @property
    def rescore(self) -> int | None:
        """Candidates per neighbour a quantized index rescores, or `None`."""
        return None if self._quantizer is None else self._quantizer.rescore

    @property
    def keep_float(self) -> str | None:
        """Where a quantized index keeps its float32 rows: `"memory"`, `"disk"`, `None`."""
        return None if self._quantizer is None else self._quantizer.keep_float

    @property
    def codes(self) -> np.ndarray | None:
        """A quantized index's codes (read-only), or `None` for an unquantized one.

        int8 `(len(index), dim)`, or the packed sign bits, uint8
        `(len(index), ceil(dim / 8))`.
        """
        if self._quantizer is None:
            return None
        codes = self._snapshot()[2].view()
        codes.flags.writeable = False
        return codes

    @property
    def int8_ranges(self) -> np.ndarray | None:
        """The per-dimension `[min, max]` of int8 codes, float32 `(2, dim)`, or `None`."""
        if self._quantizer is None or self._quantizer.ranges is None:
            return None
        ranges = self._quantizer.ranges.view()
        ranges.flags.writeable = False
        return ranges

    @property
    def memory_bytes(self) -> int:
        """Bytes of gallery data held in memory: float32 rows, codes, int8 ranges.

        Float32 rows mapped from disk (`keep_float="disk"`, once saved or
        loaded) or not kept (`keep_float=None`) count nothing; labels are
        not counted.
        """
        embeddings, _, codes = self._snapshot()
        total = codes.nbytes
        if self._quantizer is not None and self._quantizer.ranges is not None:
            total += self._quantizer.ranges.nbytes
        if not isinstance(embeddings, np.memmap):
            total += embeddings.nbytes
        return total

    @property
    def embeddings(self) -> np.ndarray:
        """The gallery, a read-only float32 `(len(index), dim)` array.

        Raises:
            ValueError: for a quantized index with `keep_float=None`.
        """
        if self._quantizer is not None and self._quantizer.keep_float is None:
            raise ValueError(
                "This quantized index keeps no float32 embeddings "
                "(keep_float=None); its `codes` hold the rows."
            )
        embeddings, _ = self._consolidate()
        view = np.asarray(embeddings).view()
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
            f"distance={self._distance.name!r}, engine={self._engine.name!r})"
        )

    def _consolidate(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Join the rows added so far; returns the `(embeddings, labels)` snapshot."""
        return self._snapshot()[:2]

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Join the rows added so far: `(embeddings, labels, codes)`."""
        with self._lock:
            if self._chunks and isinstance(self._embeddings, (np.memmap, MappedRows)):
                # Rows mapped from a save stay there; rows added join in memory.
                self._embeddings = MappedRows(
                    self._embeddings, np.concatenate(self._chunks)
                )
                self._chunks = []
            if self._code_chunks:
                existing = [self._codes] if len(self._codes) else []
                self._codes = np.concatenate([*existing, *self._code_chunks])
                self._code_chunks = []
            if self._chunks:
                existing = [self._embeddings] if len(self._embeddings) else []
                self._embeddings = np.concatenate([*existing, *self._chunks])
                self._chunks = []
            if self._label_chunks:
                existing = [] if self._labels is None else [self._labels]
                self._labels = _labels.combine(*existing, *self._label_chunks)
                self._label_chunks = []
            return self._embeddings, self._labels, self._codes

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

        Adding no rows (`n = 0`, with no labels or zero labels) changes
        nothing.

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
        rows = check_embeddings(
            embeddings,
            "embeddings",
            dim=self._dim if self._truncate_dim is None else None,
            allow_empty=True,
        )
        rows = self._truncate(rows, "embeddings")
        if not len(rows):
            if labels is not None:
                check_labels(labels, 0)
            return
        if isinstance(embeddings, np.ndarray) and np.shares_memory(rows, embeddings):
            rows = rows.copy()  # the caller's array may change later
        if labels is not None:
            labels = check_labels(labels, len(rows))
        if self._quantizer is not None:
            self._quantizer.check_width(rows.shape[1])
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
            if self._quantizer is not None:
                self._code_chunks.append(self._quantizer.encode(rows))
            self._labelled = labels is not None
            self._dim = rows.shape[1]
            if self._quantizer is None or self._quantizer.keep_float is not None:
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
        if self._truncate_dim is None:
            return check_embeddings(queries, "queries", dim=self._dim), k
        return self._truncate(check_embeddings(queries, "queries"), "queries"), k

    @staticmethod
    def _check_exclude(exclude: Any, queries: int, count: int) -> np.ndarray:
        if hasattr(exclude, "numpy") and not isinstance(exclude, np.ndarray):
            exclude = keras.ops.convert_to_numpy(exclude)
        rows = np.asarray(exclude)
        if rows.dtype.kind not in "iu" or rows.dtype == bool:
            raise TypeError(
                "`exclude` must hold integer row numbers (-1 for none); got "
                f"dtype {rows.dtype}."
            )
        if rows.shape != (queries,):
            raise ValueError(
                "`exclude` must hold one row number per query (-1 for none), "
                f"shape ({queries},); got shape {rows.shape}."
            )
        if rows.size and (rows.min() < -1 or rows.max() >= count):
            raise ValueError(
                f"`exclude` must hold row numbers in [0, {count}) or -1 for none; "
                f"got values from {rows.min()} to {rows.max()}."
            )
        return rows.astype(np.int64)

    def search(
        self, queries: Any, k: int = 1, *, exclude: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest gallery rows of each query.

        Args:
            queries: `(n, dim)` embeddings.
            k: neighbours per query, `1 <= k <= len(index)`, or
                `len(index) - 1` when a row is excluded.
            exclude: optionally, an `(n,)` integer array: for each query, a
                gallery row it must not find, or -1 for none. With
                `exclude=np.arange(len(index))` and the gallery as queries,
                each row's neighbours leave the row itself out
                (leave-one-out), also where other rows equal it.

        Returns:
            `(distances, indices)`: NumPy arrays of shape `(n, k)`, float32
            distances and int64 row numbers, nearest first, ties broken by
            the lower row number.

        Raises:
            TypeError: if `k` is not an integer, the queries not numbers, or
                `exclude` not integers.
            ValueError: for an empty index, `k` out of range, queries of
                another embedding size, NaN or infinite values, or an
                `exclude` of another length than the queries or holding a
                value that is neither -1 nor a row number.

        Examples:
            >>> import numpy as np
            >>> index = EmbeddingIndex()
            >>> points = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
            >>> index.add(points)
            >>> index.search(points, k=1, exclude=np.arange(3))[1].tolist()
            [[1], [0], [1]]
        """
        gallery, _, codes = self._snapshot()
        count = len(gallery) if self._quantizer is None else len(codes)
        queries, k = self._check_queries(queries, k, count)
        if exclude is not None:
            exclude = self._check_exclude(exclude, len(queries), count)
            if not np.any(exclude >= 0):
                exclude = None
            elif k > count - 1:
                raise ValueError(
                    "`k` must be at most the number of indexed rows less the "
                    f"excluded one ({count - 1}); got {k}."
                )
        # One more candidate where a row may be left out: the `k + 1`
        # nearest hold the `k` nearest of the others.
        wanted = k + (exclude is not None)
        if self._quantizer is not None:
            return self._search_codes(queries, k, wanted, exclude, gallery, codes)
        with self._engine_lock:
            if self._engine_count < len(gallery):
                self._engine.add(gallery[self._engine_count :])
                self._engine_count = len(gallery)
        candidates = self._candidates(self._engine, queries, wanted, gallery)
        distances, indices, short = rerank(
            queries, gallery, candidates, k, self._distance, exclude
        )
        if short.size:
            fallback = self._exact_engine()
            part = None if exclude is None else exclude[short]
            more = self._candidates(fallback, queries[short], wanted, gallery)
            distances[short], indices[short], _ = rerank(
                queries[short], gallery, more, k, self._distance, part
            )
        return distances.astype(np.float32), indices

    def _search_codes(
        self,
        queries: np.ndarray,
        k: int,
        wanted: int,
        exclude: np.ndarray | None,
        gallery: np.ndarray,
        codes: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates by the codes, rescored exactly where the floats are kept."""
        quantizer = self._quantizer
        width = min(len(codes), wanted * quantizer.rescore)
        rows = quantizer.candidates(queries, codes, width, self._engine.block_bytes)
        if quantizer.keep_float is not None:
            # `width >= wanted`: every query has `k` usable candidates.
            distances, indices, _ = rerank(
                queries, gallery, rows, k, self._distance, exclude
            )
            return distances.astype(np.float32), indices
        approximate = quantizer.approximate(queries, codes, rows)
        if exclude is not None:
            left_out = rows == exclude[:, None]
            approximate = np.where(left_out, np.inf, approximate)
            rows = np.where(left_out, len(codes), rows)
        order = np.lexsort((rows, approximate), axis=-1)[:, :k]
        return (
            np.take_along_axis(approximate, order, axis=1).astype(np.float32),
            np.take_along_axis(rows, order, axis=1),
        )

    def _exact_engine(self) -> ExactEngine:
        if isinstance(self._engine, ExactEngine):
            return self._engine
        if self._fallback is None:
            fallback = ExactEngine(block_bytes=self._engine.block_bytes)
            fallback.bind(self._distance)
            self._fallback = fallback
        return self._fallback

    @staticmethod
    def _candidates(
        engine: Engine, queries: np.ndarray, k: int, gallery: np.ndarray
    ) -> np.ndarray:
        """The engine's candidates, checked to be `(n, c)` integers."""
        found = np.asarray(engine.candidates(queries, k, gallery))
        if found.ndim != 2 or found.shape[0] != len(queries):
            raise ValueError(
                f"The engine {engine.name!r} returned candidates of shape "
                f"{found.shape}; `Engine.candidates` must return one row per "
                f"query, shape ({len(queries)}, c)."
            )
        if found.dtype.kind not in "iu" or found.dtype == bool:
            raise TypeError(
                f"The engine {engine.name!r} returned candidates of dtype "
                f"{found.dtype}; `Engine.candidates` must return row numbers."
            )
        return found

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
            A new index holding the embeddings of `x` (empty where `x`
            holds no inputs: the encoder is then not called).

        Examples:
            >>> import keras, numpy as np
            >>> encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            >>> x = np.random.default_rng(0).random((10, 3)).astype("float32")
            >>> index = EmbeddingIndex.from_encoder(encoder, x, np.arange(10), verbose=0)
            >>> len(index), index.dim
            (10, 2)
        """
        index = cls(distance, **options)
        if no_inputs(x):  # Keras' `predict` fails on no inputs
            if labels is not None:
                check_labels(labels, 0)
            return index
        index.add(encode(encoder, x, batch_size, verbose), labels)
        return index

    # -- persistence ---------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The settings that rebuild this index, without its rows: JSON.

        Returns:
            `{"distance": name, "engine": {"name": name, **options}}`, plus
            `"truncate_dim"` where it is set: what `save` writes to
            `index.json` and `from_config` takes.

        Raises:
            ValueError: if the distance or the engine is not registered
                under its name (see `keras_siamese.distances.register` and
                `keras_siamese.retrieval.engines.register`), or the engine's
                options are not JSON scalars.

        Examples:
            >>> config = EmbeddingIndex("cosine", engine="keras", block_bytes=2**20).get_config()
            >>> config["distance"], config["engine"]["name"], config["engine"]["block_bytes"]
            ('cosine', 'keras', 1048576)
            >>> EmbeddingIndex.from_config(config).block_bytes
            1048576
        """
        config = {
            "distance": _distances.serialize(self._distance, "This index"),
            "engine": _engines.config_of(self._engine),
        }
        if self._truncate_dim is not None:
            config["truncate_dim"] = self._truncate_dim
        if self._quantizer is not None:
            config["quantization"] = self._quantizer.get_config()
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], engine: str | Engine | None = None
    ) -> EmbeddingIndex:
        """A new, empty index from the settings of `get_config`.

        Args:
            config: `{"distance": name, "engine": {"name": name, **options}}`,
                optionally with `"truncate_dim"`.
            engine: build this engine instead of the configured one: an
                `Engine` object, or a name (it gets the configured options
                where both engines are built-in or it is the same name).

        Raises:
            TypeError: for a config that is not of that shape, or options
                the engine does not take.
            ValueError: for an unknown distance or engine, or options out of
                range (as the constructor).
            ImportError: for a faiss engine without faiss.
        """
        if not (
            isinstance(config, dict)
            and {"distance", "engine"}
            <= set(config)
            <= {"distance", "engine", "truncate_dim", "quantization"}
            and isinstance(config["engine"], dict)
            and isinstance(config["engine"].get("name"), str)
        ):
            raise TypeError(
                "`config` must be a dict {'distance': name, 'engine': {'name': "
                f"name, **options}} as `get_config` returns; got {config!r}."
            )
        options = dict(config["engine"])
        name = options.pop("name")
        if engine is None:
            engine = name
        elif isinstance(engine, str):
            if engine != name and not {engine, name} <= set(ENGINES):
                options = {}  # another engine's options mean nothing to it
        else:
            options = {}
        quantization = config.get("quantization")
        if quantization is not None:
            if not (
                isinstance(quantization, dict)
                and set(quantization) == {"kind", "rescore", "keep_float"}
            ):
                raise TypeError(
                    "`config['quantization']` must be a dict {'kind', 'rescore', "
                    f"'keep_float'}} as `get_config` returns; got {quantization!r}."
                )
            options.update(
                quantization=quantization["kind"],
                rescore=quantization["rescore"],
                keep_float=quantization["keep_float"],
            )
        return cls(
            config["distance"],
            engine=engine,
            truncate_dim=config.get("truncate_dim"),
            **options,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Save the index as a directory: JSON metadata and `.npy` arrays.

        The directory holds `index.json` (format marker and version,
        distance, sizes, label kind, the engine's name and options as one
        object, as `get_config` gives them, and the SHA-256 and byte size
        of every file), `embeddings.npy` and `labels.npy`. No pickle:
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
                distance or the engine is not registered under its name (see
                `keras_siamese.distances.register` and
                `keras_siamese.retrieval.engines.register`), the engine's
                options are not JSON scalars, or `path` is a symbolic
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
        embeddings, labels, codes = self._snapshot()
        quantizer = self._quantizer
        if quantizer is None:
            _storage.write(path, self.get_config(), embeddings, labels)
            return
        # An empty index records the width its calibration ranges have.
        dim = self._dim if quantizer.ranges is None else quantizer.ranges.shape[1]
        if not len(codes):
            codes = np.zeros((0, quantizer.width(dim or 0)), quantizer.dtype)
        directory = _storage.write(
            path,
            self.get_config(),
            embeddings,
            labels,
            codes=codes,
            ranges=quantizer.ranges,
            dim=dim,
        )
        if quantizer.keep_float == "disk" and len(embeddings):
            mapped = _storage.read(directory)["embeddings"]
            with self._lock:
                if self._embeddings is embeddings and not self._chunks:
                    self._embeddings = mapped

    @classmethod
    def load(
        cls, path: str | os.PathLike, engine: str | Engine | None = None
    ) -> EmbeddingIndex:
        """Load an index written by `save` (or by `Verifier.save`).

        A user-defined engine or distance loads by its name: register it
        first.

        Args:
            path: the saved directory.
            engine: search with this engine instead of the saved one (say
                `"keras"` where faiss is not installed): a name, or an
                `Engine` object (as `from_config`).

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
        record = _storage.read(path)
        config = {"distance": record["distance"], "engine": record["engine"]}
        for key in ("truncate_dim", "quantization"):
            if record.get(key) is not None:
                config[key] = record[key]
        try:
            index = cls.from_config(config, engine)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Cannot load the index saved at {os.fspath(path)}: its settings "
                f"are invalid ({error})"
            ) from None
        if index._quantizer is None:
            index.add(record["embeddings"], record["labels"])
        else:
            index._restore(record)
        return index

    def _restore(self, record: dict[str, Any]) -> None:
        """Take a quantized index's checked rows, codes and ranges as saved."""
        self._quantizer.ranges = record["ranges"]
        if not record["count"]:
            return
        if record["embeddings"] is not None:
            self._embeddings = record["embeddings"]
        self._codes = record["codes"]
        self._labels = record["labels"]
        self._labelled = record["labels"] is not None
        self._dim = record["dim"]
        self._count = record["count"]
