"""Quantized codes of an `EmbeddingIndex`: int8 (4x smaller) or sign bits (32x).

`int8`: each dimension's range `[low, high]` (from calibration embeddings)
is cut into 255 equal steps; a value is clipped to its range and stored as
the nearest step, `-128..127`. A query is compared, unquantized, with the
decoded codes `low + step * (code + 128)`.

`binary`: the sign of each dimension (`value > 0`), packed eight to a byte;
two codes are compared by their Hamming distance (differing bits), which
orders directions: it is for cosine-style embeddings.

The codes propose `k * rescore` candidates per query; the index measures
them with the exact distance on the float32 embeddings where it keeps them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese._checks import check_embeddings, check_positive_int
from keras_siamese.distances import get as get_distance
from keras_siamese.retrieval import _search

#: The quantizations an index takes.
QUANTIZATIONS = ("int8", "binary")
#: Where a quantized index keeps its float32 embeddings for rescoring.
KEEP_FLOAT = ("memory", "disk", None)
#: The distances each quantization searches with.
SUPPORTED = {
    "int8": ("euclidean", "squared_euclidean", "cosine"),
    "binary": ("cosine",),
}
#: Bound of `rescore`, also checked when a saved index is read.
MAX_RESCORE = 2**16
_CODE_DTYPES = {"int8": np.dtype(np.int8), "binary": np.dtype(np.uint8)}
_NORM_FLOOR = 1e-6
# Rows quantized at once (bounds the float32 temporary).
_ENCODE_ROWS = 2**15
# Binary search: gallery rows per tile, and Hamming distances per block.
_BINARY_TILE_ROWS = 2**16
_BINARY_BLOCK = 2**20
# Below this fraction of a block's distances beating the rows' worst kept,
# only those are merged; above it, each row's nearest are selected first.
_HITS_FRACTION = 0.25
# int8 search: codes decoded to float32 at once (64 MiB).
_DECODED_CHUNK_ELEMENTS = 2**24

# Set bits of every byte: the popcount where `np.bitwise_count` is missing.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(
    axis=1, dtype=np.uint8
)


def int8_ranges(embeddings: np.ndarray) -> np.ndarray:
    """Per-dimension `[min, max]` of float32 `(n, dim)` embeddings: `(2, dim)`."""
    return np.stack([embeddings.min(axis=0), embeddings.max(axis=0)]).astype(np.float32)


def _steps(ranges: np.ndarray) -> np.ndarray:
    width = ranges[1].astype(np.float64) - ranges[0]
    # A constant dimension has one value: any step encodes it as code -128.
    return np.where(width > 0, width / 255.0, 1.0)


def int8_codes(embeddings: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The int8 codes of `(n, dim)` embeddings, values clipped to `ranges`."""
    low, high = ranges[0], ranges[1]
    scale = (1.0 / _steps(ranges)).astype(np.float32)
    codes = np.empty(embeddings.shape, dtype=np.int8)
    for start in range(0, len(embeddings), _ENCODE_ROWS):
        part = np.clip(embeddings[start : start + _ENCODE_ROWS], low, high)
        part -= low
        part *= scale
        np.rint(part, out=part)
        # Round-off may carry the top of a range a hair past bucket 255.
        np.clip(part, 0.0, 255.0, out=part)
        part -= 128.0
        codes[start : start + _ENCODE_ROWS] = part
    return codes


def int8_decode(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The float32 values the int8 codes stand for: `low + step * (code + 128)`.

    Computed as `code * step + (low + 128 step)` in float32 (the offset in
    float64 first), in place: one float32 array, no float64 temporaries.
    """
    steps = _steps(ranges)
    offset = (ranges[0] + 128.0 * steps).astype(np.float32)
    values = codes.astype(np.float32)
    values *= steps.astype(np.float32)
    values += offset
    return values


def binary_codes(embeddings: np.ndarray) -> np.ndarray:
    """Sign bits (`value > 0`) of `(n, dim)` embeddings packed into `(n, ceil(dim / 8))` uint8."""
    return np.packbits(embeddings > 0, axis=1)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each element of an unsigned integer array."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _POPCOUNT[words.view(np.uint8)].reshape(*words.shape, -1).sum(axis=-1)


def _words(codes: np.ndarray) -> np.ndarray:
    """Packed bits as uint64 words where the width allows (fewer popcounts)."""
    if codes.shape[1] % 8 == 0 and codes.flags.c_contiguous:
        return codes.view(np.uint64)
    return codes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(n, m)` int32 Hamming distances between packed bit codes `(n, w)`, `(m, w)`."""
    a, b = _words(np.ascontiguousarray(a)), _words(np.ascontiguousarray(b))
    out = np.zeros((len(a), len(b)), dtype=np.int32)
    # One word column at a time: no `(n, m, w)` temporary, no reduction.
    for column in range(a.shape[1]):
        out += popcount(a[:, column, None] ^ b[None, :, column])
    return out


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), _NORM_FLOOR)
    return rows / norms


class Quantizer:
    """The quantization of one index: its kind, rescoring and int8 ranges.

    Args:
        kind: `"int8"` or `"binary"`.
        distance: the index's distance name.
        rescore: candidates per neighbour wanted, an integer >= 1.
        keep_float: `"memory"`, `"disk"` or `None`.
        calibration: int8 only: `(n, dim)` embeddings whose per-dimension
            min and max are the ranges, or `None` (the first added batch's).

    Raises:
        TypeError: for a non-integer `rescore`.
        ValueError: for an unknown kind or `keep_float`, a distance the
            kind cannot search, `rescore` out of `[1, 65536]`, a calibration
            for binary codes or an empty or non-finite one.
    """

    def __init__(
        self,
        kind: Any,
        distance: str,
        rescore: Any = 4,
        keep_float: Any = "memory",
        calibration: Any = None,
    ) -> None:
        if kind not in QUANTIZATIONS:
            raise ValueError(
                f"`quantization` must be one of {QUANTIZATIONS} or None; got {kind!r}."
            )
        if distance not in SUPPORTED[kind]:
            why = (
                "sign bits keep directions only"
                if kind == "binary"
                else "int8 codes are scored by matrix products"
            )
            raise ValueError(
                f"quantization={kind!r} searches with the distances "
                f"{SUPPORTED[kind]} ({why}); got distance={distance!r}."
            )
        rescore = check_positive_int(rescore, "rescore")
        if rescore > MAX_RESCORE:
            raise ValueError(f"`rescore` must be at most {MAX_RESCORE}; got {rescore}.")
        if keep_float not in KEEP_FLOAT:
            raise ValueError(
                f"`keep_float` must be one of {KEEP_FLOAT}; got {keep_float!r}."
            )
        self.kind = kind
        self.distance = distance
        self.rescore = rescore
        self.keep_float = keep_float
        self.ranges: np.ndarray | None = None
        if calibration is not None:
            if kind != "int8":
                raise ValueError(
                    "`calibration` sets the int8 ranges; binary codes take none."
                )
            calibration = check_embeddings(calibration, "calibration")
            self.ranges = int8_ranges(calibration)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the codes."""
        return _CODE_DTYPES[self.kind]

    def width(self, dim: int) -> int:
        """Columns of the codes of `dim`-dimensional embeddings."""
        return dim if self.kind == "int8" else -(-dim // 8)

    def get_config(self) -> dict[str, Any]:
        """`{"kind", "rescore", "keep_float"}`: JSON."""
        return {
            "kind": self.kind,
            "rescore": self.rescore,
            "keep_float": self.keep_float,
        }

    def check_width(self, dim: int) -> None:
        """Raise where calibration ranges were given for another size."""
        if self.ranges is not None and self.ranges.shape[1] != dim:
            raise ValueError(
                f"`calibration` has {self.ranges.shape[1]} dimensions but the "
                f"embeddings have {dim}."
            )

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """The codes of float32 `(n, dim)` rows; the first call sets missing ranges."""
        if self.kind == "binary":
            return binary_codes(rows)
        self.check_width(rows.shape[1])
        if self.ranges is None:
            self.ranges = int8_ranges(rows)
        return int8_codes(rows, self.ranges)

    def approximate(
        self, queries: np.ndarray, codes: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Distances `(n, c)` measured on the codes of each query's rows.

        int8: the distance between the query and the decoded row; binary:
        the Hamming distance between their sign bits.
        """
        if self.kind == "binary":
            bits = np.unpackbits(binary_codes(queries), axis=1)
            return np.count_nonzero(
                bits[:, None, :] != np.unpackbits(codes[rows], axis=-1), axis=-1
            ).astype(np.float32)
        decoded = int8_decode(codes[rows], self.ranges).astype(np.float64)
        q = queries.astype(np.float64)[:, None, :]
        if self.distance == "cosine":
            return (1.0 - np.sum(_unit(q) * _unit(decoded), axis=-1)).astype(np.float32)
        squares = np.sum(np.square(q - decoded), axis=-1)
        if self.distance == "euclidean":
            squares = np.sqrt(squares)
        return squares.astype(np.float32)

    def candidates(
        self,
        queries: np.ndarray,
        codes: np.ndarray,
        width: int,
        block_bytes: int = _search.DEFAULT_BLOCK_BYTES,
    ) -> np.ndarray:
        """The `width` rows of `codes` nearest each query by the codes.

        int8 codes are decoded a chunk at a time and searched exactly on the
        backend (`block_bytes`: its score budget); binary codes by their
        Hamming distances, in NumPy.

        Returns:
            int64 rows, `(n, width)`, in no particular order.
        """
        if self.kind == "int8":
            return self._decoded_candidates(queries, codes, width, block_bytes)
        bits = binary_codes(queries)
        count = len(codes)
        width = min(width, count)
        n = len(queries)
        best = np.full((n, width), np.iinfo(np.int32).max, dtype=np.int32)
        rows = np.full((n, width), -1, dtype=np.int64)
        # The first tile holds at least `width` rows, so `best` fills at
        # once; small blocks keep the word-by-word popcounts in cache.
        tile_rows = max(width, _BINARY_TILE_ROWS)
        query_step = max(1, _BINARY_BLOCK // tile_rows)
        for start in range(0, count, tile_rows):
            tile = np.asarray(codes[start : start + tile_rows])
            for first in range(0, n, query_step):
                part = slice(first, first + query_step)
                scores = hamming(bits[part], tile)
                # Once a query holds `width` candidates, only distances below
                # its worst can enter: after the first tile, a few per row.
                hit_rows, hit_columns = np.nonzero(
                    scores < best[part].max(axis=1)[:, None]
                )
                if hit_rows.size < _HITS_FRACTION * scores.size:
                    _merge_hits(best, rows, part, scores, hit_rows, hit_columns, start)
                    continue
                if scores.shape[1] > width:
                    keep = np.argpartition(scores, width - 1, axis=1)[:, :width]
                    scores = np.take_along_axis(scores, keep, axis=1)
                else:
                    keep = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
                _merge_best(best, rows, part, scores, keep + start)
        return rows

    def _decoded_candidates(
        self, queries: np.ndarray, codes: np.ndarray, width: int, block_bytes: int
    ) -> np.ndarray:
        """int8: the exact search of the backend on decoded chunks of codes.

        Only one chunk is decoded at a time; each chunk's `width` nearest
        (by the distance to the decoded rows, in float64) compete for the
        query's `width` places.
        """
        distance = get_distance(self.distance)
        count = len(codes)
        width = min(width, count)
        n = len(queries)
        best = np.full((n, width), np.inf)
        rows = np.full((n, width), -1, dtype=np.int64)
        chunk = max(width, _DECODED_CHUNK_ELEMENTS // max(1, codes.shape[1]))
        for start in range(0, count, chunk):
            decoded = int8_decode(np.asarray(codes[start : start + chunk]), self.ranges)
            prepared = _search.PreparedGallery(decoded, distance, block_bytes)
            depth = min(width, len(decoded))
            for part, found, indices in _search.search_blocks(prepared, queries, depth):
                _merge_best(best, rows, part, found, indices + start)
        return rows


def _merge_best(
    best: np.ndarray,
    rows: np.ndarray,
    part: Any,
    scores: np.ndarray,
    found: np.ndarray,
) -> None:
    """Keep, in `best[part]` / `rows[part]`, the smallest of them and `scores`.

    Each query's kept places (`best.shape[1]` of them) are the smallest
    scores among those it holds and the new ones, with their rows `found`.
    """
    width = best.shape[1]
    merged = np.concatenate([best[part], scores], axis=1)
    merged_rows = np.concatenate([rows[part], found], axis=1)
    chosen = np.argpartition(merged, width - 1, axis=1)[:, :width]
    best[part] = np.take_along_axis(merged, chosen, axis=1)
    rows[part] = np.take_along_axis(merged_rows, chosen, axis=1)


def _merge_hits(
    best: np.ndarray,
    rows: np.ndarray,
    part: slice,
    scores: np.ndarray,
    hit_rows: np.ndarray,
    hit_columns: np.ndarray,
    start: int,
) -> None:
    """`_merge_best` of the entries `(hit_rows, hit_columns)` of `scores` only.

    `hit_rows` is non-decreasing (as `np.nonzero` gives it); each row's hits
    are laid out in a row of their own, padded with scores no candidate has.
    """
    if hit_rows.size == 0:
        return
    per_row, place = _search.ragged_places(hit_rows, len(scores))
    values = np.full(
        (len(scores), int(per_row.max())), np.iinfo(best.dtype).max, best.dtype
    )
    found = np.full(values.shape, -1, dtype=np.int64)
    values[hit_rows, place] = scores[hit_rows, hit_columns]
    found[hit_rows, place] = hit_columns + start
    _merge_best(best, rows, part, values, found)


class MappedRows:
    """Float32 rows mapped read-only from a save, then rows added since, in memory.

    What a quantized index with `keep_float="disk"` rescores with after rows
    are added to a loaded index: the mapped rows stay on disk. Indexed with
    integer arrays, as the exact re-ranking reads its candidates.
    """

    def __init__(self, mapped: np.ndarray, added: np.ndarray) -> None:
        if isinstance(mapped, MappedRows):
            added = np.concatenate([mapped.added, added])
            mapped = mapped.mapped
        self.mapped = mapped
        self.added = added
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self.shape = (len(mapped) + len(added), mapped.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: the added rows only."""
        return self.added.nbytes

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, slice):
            return np.asarray(self)[rows]
        rows = np.asarray(rows)
        out = np.empty((*rows.shape, self.shape[1]), dtype=np.float32)
        first = rows < len(self.mapped)
        out[first] = self.mapped[rows[first]]
        out[~first] = self.added[rows[~first] - len(self.mapped)]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        joined = np.concatenate([self.mapped, self.added])
        return joined if dtype is None else joined.astype(dtype)
