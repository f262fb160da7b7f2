"""Exact k-nearest-neighbour search in blocks, with `keras.ops` on the backend.

The gallery is split once into tiles of at most `TILE_COLUMNS` rows, kept on
the backend's device. A block of queries is scored against one tile at a
time (a matrix product where the distance has a `MatmulForm`, as the
Euclidean and cosine distances do, else its pairwise form), so the device
never holds more than one `(block rows, tile columns)` matrix. The backend
reads each score matrix once more, for the minimum of every group of
`_GROUP` columns; the host compares these minima with a bound per query
(the worst of the candidates kept so far) and gathers from the backend only
the groups that can hold a better score, typically a handful per query once
the first tiles are done (`_tile_candidates`). No `top_k` runs on the
backend: the candidates are merged on the host with a stable `(score,
index)` sort, so ties are broken by the lower gallery index identically on
every backend. The final candidates get their distances computed again,
directly from the coordinates in float64: the matrix-product form loses
precision to cancellation for near-zero distances (a query that is a
gallery item), the direct form does not.

Each tile's scores and their temporaries are freed before the next tile's
are made: they live inside one function call that returns only NumPy
results (`_tile_candidates`, `_best_relevant`, `_count_ahead`). Were the
previous scores still alive while the next ones are allocated, the host
allocator (glibc's, on CPU) would carve the freed block into the smaller
temporaries and take fresh memory for every new score matrix: the resident
memory would grow far past the block budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import keras
import numpy as np
from keras import ops

from keras_siamese.distances import Distance

DEFAULT_BLOCK_BYTES = 64 * 2**20
# Widest tile of gallery rows scored at once: narrower than a large gallery,
# so that a block still holds many query rows (efficient matrix products)
# within the memory budget.
TILE_COLUMNS = 16384
# Copies of a `(rows, columns)` score matrix alive at once on the backend
# (the product, a mask, a reshaped copy for the group minima), for the
# memory budget.
_TEMPORARIES = 3
# Smallest score matrix, whatever the budget: below it, per-operation
# overhead dominates and no memory is saved.
_MIN_BLOCK_ELEMENTS = 16
# Elements of the `(rows, candidates, dim)` differences of the final,
# direct distance computation on the host (float64).
_EXACT_CHUNK_ELEMENTS = 2**22
# A chunk of queries is measured with one product (a `GramForm`) where its
# candidates lie in at most this many times as many distinct gallery rows as
# one query has candidates.
_GRAM_SHARE = 16
# Pairs whose squared difference of prepared rows is at most this fraction
# of their squared norms are measured again from their differences: the
# product form's absolute round-off (about `dim * 1e-16` of the squared
# norms) is then at most about `1e-9` of the value.
_GRAM_CANCELLATION = 2.0**-10
# Tiles at least this wide (and a multiple of `_GROUP`) are pruned by the
# minima of groups of `_GROUP` consecutive columns (see `_tile_candidates`);
# narrower ones are read whole.
_GROUPED_MIN_WIDTH = 1024
_GROUP = 32
# Column number of "no such column" in the rank computation.
_NO_COLUMN = np.iinfo(np.int32).max
# Column of the placeholder candidates that real ones displace.
_NO_CANDIDATE = np.iinfo(np.int64).max


def over_fetch(k: int, available: int) -> int:
    """Candidates to take from the fast scores to return `k` exact neighbours.

    A few more than `k`: round-off in the float32 matrix-product scores (about
    1e-7 of the squared norms) can reorder near-ties, and a true neighbour is
    only lost if more than `max(8, k // 8)` candidates lie within that
    round-off of the `k`-th distance.
    """
    return min(available, k + max(8, k // 8))


def exact_distances(
    queries: np.ndarray,
    gallery: np.ndarray,
    indices: np.ndarray,
    distance: Distance,
) -> np.ndarray:
    """Distances from each query to its candidate gallery rows, in float64.

    Where the distance has a `GramForm` and the candidates of a chunk of
    queries share few enough gallery rows, those rows are prepared once and
    measured with one float64 matrix product; the pairs that product cannot
    measure precisely (nearly equal rows) are measured again from their
    coordinate differences. Otherwise every pair is measured from its
    coordinate differences (`exact_form`). Either way the result is exact to
    float64 round-off for (near-)identical embeddings, and within about
    `1e-9` relative elsewhere.

    Args:
        queries: `(n, dim)` float32.
        gallery: `(m, dim)` float32.
        indices: `(n, c)` gallery rows to measure for each query.
        distance: the distance (its exact form is used).

    Returns:
        `(n, c)` float64 distances.
    """
    n, c = indices.shape
    out = np.empty((n, c), dtype=np.float64)
    if n == 0 or c == 0:
        return out
    form = distance.gram_form
    if form is None:
        _direct(queries, gallery, indices, distance, out, 0, n)
        return out
    # Chunks whose product with `_GRAM_SHARE` times the candidates' rows
    # stays within `_EXACT_CHUNK_ELEMENTS`.
    step = max(1, _EXACT_CHUNK_ELEMENTS // (_GRAM_SHARE * c))
    for start in range(0, n, step):
        stop = min(start + step, n)
        part = indices[start:stop]
        rows, position = np.unique(part, return_inverse=True)
        if (
            rows.size > _GRAM_SHARE * c
            or rows.size * gallery.shape[1] > 2 * _EXACT_CHUNK_ELEMENTS
        ):
            # Candidates spread over many rows: a product over all of them
            # would measure far more pairs than asked for, or their
            # prepared copy would outgrow the differences' memory.
            _direct(queries, gallery, indices, distance, out, start, stop)
            continue
        prepared = form.rows(gallery[rows].astype(np.float64))
        prepared_queries = form.rows(queries[start:stop].astype(np.float64))
        squares = np.sum(np.square(prepared), axis=1)
        query_squares = np.sum(np.square(prepared_queries), axis=1)
        position = position.reshape(part.shape)
        products = np.take_along_axis(prepared_queries @ prepared.T, position, axis=1)
        row_squares = squares[position]
        out[start:stop] = form.finish(products, query_squares[:, None], row_squares)
        # Cancellation: where the rows are nearly equal, the product form
        # keeps only the round-off of the norms.
        total = query_squares[:, None] + row_squares
        close = total - 2.0 * products <= _GRAM_CANCELLATION * total
        if close.any():
            query_rows, slots = np.nonzero(close)
            out[start + query_rows, slots] = distance.exact(
                queries[start + query_rows], gallery[part[query_rows, slots]]
            )
    return out


def _direct(
    queries: np.ndarray,
    gallery: np.ndarray,
    indices: np.ndarray,
    distance: Distance,
    out: np.ndarray,
    begin: int,
    end: int,
) -> None:
    """`out[begin:end]`: each pair measured from its coordinate differences."""
    c = indices.shape[1]
    step = max(1, _EXACT_CHUNK_ELEMENTS // max(c * gallery.shape[1], 1))
    for start in range(begin, end, step):
        stop = min(start + step, end)
        q = queries[start:stop, None, :].astype(np.float64)
        g = gallery[indices[start:stop]].astype(np.float64)
        out[start:stop] = distance.exact(q, g)


def paired_exact(a: np.ndarray, b: np.ndarray, distance: Distance) -> np.ndarray:
    """Distance between `a[..., :]` and `b[..., :]` (broadcast), in float64."""
    return distance.exact(a, b)


def _stable_order(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per row, the positions that sort by `(value, index)`."""
    return np.lexsort((indices, values), axis=-1)


def padded_size(size: int) -> int:
    """`size` rounded up to one of four sizes per power of two (1, 2, 4, 8, ...).

    On JAX every new array shape compiles every operation anew; rounding the
    shapes of blocks and tiles up keeps the number of distinct shapes small,
    for at most 25% more work (none where the shapes are already round).
    """
    if size <= 16:
        return 1 << max(size - 1, 0).bit_length()
    step = 1 << (size.bit_length() - 3)
    return -(-size // step) * step


def padded_floor(size: int) -> int:
    """The largest `padded_size` value not above `size` (`size >= 1`).

    So `padded_size(padded_floor(n)) <= n`, in constant time whatever `n`
    (a block budget of 1 GiB allows hundreds of millions of rows).
    """
    if size <= 16:
        return 1 << (size.bit_length() - 1)
    step = 1 << (size.bit_length() - 3)
    return size // step * step


@dataclasses.dataclass
class Tile:
    """Gallery rows `[start, stop)` on the device, padded to `width` columns.

    Attributes:
        start: first gallery row.
        stop: one past the last gallery row.
        width: columns of the tile's scores, padding included.
        weights: with a `MatmulForm`, a `(k + 1, width)` tensor whose last
            row is the bias, so that one matrix product with `[query, 1]`
            gives the scores; without, the `(width, dim)` rows.
        bias: without a `MatmulForm`, the `(width,)` bias (0); `None`
            otherwise. The bias is +inf on padding columns.
    """

    start: int
    stop: int
    width: int
    weights: object
    bias: object | None


class PreparedGallery:
    """A gallery laid out on the backend for blocked exact search.

    The distance's `MatmulForm` lays the gallery out as tiles of its
    transposed weights with its bias (centred on the gallery mean first where
    the form says the distance allows it: the matrix-product scores then
    lose less to cancellation); a distance without one is stored as plain
    row tiles, scored with its pairwise form. On JAX, tiles and query blocks
    are padded to few distinct shapes (`padded_size`).

    Args:
        embeddings: `(m, dim)` float32, finite.
        distance: the distance; it must have an exact form, and a matrix
            product or a pairwise form.
        block_bytes: memory budget of one score matrix on the backend.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        distance: Distance,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        self.embeddings = embeddings
        self.distance = distance
        self.form = distance.matmul_form
        self.pad = keras.backend.backend() == "jax"
        count = embeddings.shape[0]
        self.center = None
        if self.form is not None and self.form.centered and count:
            self.center = embeddings.mean(axis=0, dtype=np.float64).astype(np.float32)
        budget = max(_MIN_BLOCK_ELEMENTS, block_bytes // (4 * _TEMPORARIES))
        self.tile_columns = max(1, min(count, TILE_COLUMNS, budget))
        if self.pad:
            # Padded tiles must still fit the budget.
            while self.tile_columns > 1 and padded_size(self.tile_columns) > budget:
                self.tile_columns -= 1
        self.block_elements = budget
        self.tiles: list[Tile] = []
        for start in range(0, count, self.tile_columns):
            stop = min(start + self.tile_columns, count)
            self.tiles.append(self._tile(start, stop))

    def _tile(self, start: int, stop: int) -> Tile:
        width = stop - start
        if self.pad:
            width = padded_size(width)
        elif width >= _GROUPED_MIN_WIDTH:
            width = -(-width // _GROUP) * _GROUP
        rows = self.embeddings[start:stop]
        bias = np.zeros(width, dtype=np.float32)
        bias[stop - start :] = np.inf
        if self.form is None:
            part = np.zeros((width, self.embeddings.shape[1]), dtype=np.float32)
            part[: stop - start] = rows
            return Tile(
                start,
                stop,
                width,
                ops.convert_to_tensor(part),
                ops.convert_to_tensor(bias),
            )
        if self.center is not None:
            rows = rows - self.center
        row_weights, row_bias = self.form.gallery(rows)
        weights = np.zeros((row_weights.shape[1], width), dtype=np.float32)
        weights[:, : stop - start] = row_weights.T
        bias[: stop - start] = row_bias
        # The bias rides in the matrix product (a column of ones in the
        # queries): one pass over the scores instead of two.
        weights = np.ascontiguousarray(np.concatenate([weights, bias[None, :]]))
        if self.pad and _grouped(width):
            # On JAX an eager reshape of the scores copies them; weights laid
            # out as `(dim + 1, groups, _GROUP)` give the scores already
            # grouped, so the group minima need no copy.
            weights = weights.reshape(weights.shape[0], width // _GROUP, _GROUP)
        return Tile(start, stop, width, ops.convert_to_tensor(weights), None)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Queries in the layout the scores use (float32)."""
        if self.form is None:
            return x
        if self.center is not None:
            x = x - self.center
        if self.form.query is not None:
            x = self.form.query(x)
        return x

    def block(self, queries: np.ndarray) -> object:
        """A block of queries on the device, padded with zero rows on JAX.

        With a `MatmulForm`, a column of ones is appended, which picks up
        the bias row of the tiles' weights.
        """
        prepared = self.prepare(queries)
        rows = padded_size(len(prepared)) if self.pad else len(prepared)
        ones = self.form is not None
        block = np.zeros((rows, prepared.shape[1] + ones), dtype=np.float32)
        block[: len(prepared), : prepared.shape[1]] = prepared
        if ones:
            block[:, -1] = 1.0
        return ops.convert_to_tensor(block)

    def rows_per_block(self, candidates: int = 0) -> int:
        """Query rows per block: one score matrix, plus the candidates kept."""
        tiles = max(len(self.tiles), 1)
        width = padded_size(self.tile_columns) if self.pad else self.tile_columns
        width += (tiles + 1) * candidates
        rows = max(1, self.block_elements // max(width, 1))
        return padded_floor(rows) if self.pad else rows

    def scores(
        self, queries: object, tile: Tile, exclude_rows: np.ndarray | None = None
    ) -> object:
        """`(rows, width)` scores that order like the distance, smaller nearer.

        The `MatmulForm`'s scores (for the Euclidean kinds `||g||^2 - 2 q.g`,
        for cosine `-cos`), else the distances; +inf on padding.

        Args:
            queries: a block from `block`.
            tile: one of `tiles`.
            exclude_rows: optionally, one gallery row per row of `queries`
                whose score is set to +inf (-1: none); for leave-one-out.
        """
        if self.form is None:
            scores = self.distance.pairwise(queries, tile.weights) + tile.bias
        else:
            weights = tile.weights
            if len(weights.shape) == 3:
                weights = ops.reshape(weights, (weights.shape[0], tile.width))
            scores = ops.matmul(queries, weights)
        if exclude_rows is not None:
            scores = _mask_self(scores, exclude_rows, tile)
        return scores

    def grouped_scores(
        self, queries: object, tile: Tile, exclude_rows: np.ndarray | None = None
    ) -> tuple[object, object, int]:
        """The scores of `scores`, their group minima and the group size.

        Returns `(scores, minima, group)`: with `group > 1`, the minima are
        `(rows, width // group)`, the minimum of each run of `group`
        consecutive columns, and the scores may come as `(rows, width //
        group, group)` (JAX); with `group == 1` (a tile too narrow, or not a
        multiple of `_GROUP` wide) the minima are the `(rows, width)` scores.
        """
        if len(tile.weights.shape) != 3:
            scores = self.scores(queries, tile, exclude_rows)
            if not _grouped(tile.width):
                return scores, scores, 1
            rows = scores.shape[0]
            grouped = ops.reshape(scores, (rows, tile.width // _GROUP, _GROUP))
            return scores, ops.min(grouped, axis=2), _GROUP
        scores = ops.einsum("qd,dgc->qgc", queries, tile.weights)
        if exclude_rows is not None:
            scores = _mask_self(scores, exclude_rows, tile)
        return scores, ops.min(scores, axis=2), _GROUP


def _grouped(width: int) -> bool:
    """Whether a tile of `width` columns is pruned by group minima."""
    return width % _GROUP == 0 and width >= _GROUPED_MIN_WIDTH


def _mask_self(scores: object, row_ids: np.ndarray, tile: Tile) -> object:
    """Set the score of each query against itself (same row number) to +inf.

    `row_ids` holds one gallery row per row of `scores`; -1 matches none.
    """
    if row_ids.max() < tile.start or row_ids.min() >= tile.stop:
        return scores
    columns = np.arange(tile.start, tile.start + tile.width)
    same = (row_ids[:, None] == columns[None, :]).reshape(tuple(scores.shape))
    return ops.where(ops.convert_to_tensor(same), np.inf, scores)


def _row_ids(rows: np.ndarray, padded: int) -> np.ndarray:
    """Gallery row of each row of a (padded) block; -1 for padding."""
    ids = np.full(padded, -1, dtype=np.int64)
    ids[: len(rows)] = rows
    return ids


class _Best:
    """The `fetch` best `(score, column)` pairs of each row found so far.

    Kept sorted by `(score, column)` on the host; rows start with `+inf`
    scores at an impossible column, which real candidates always displace.
    """

    def __init__(self, rows: int, fetch: int) -> None:
        self.values = np.full((rows, fetch), np.inf, dtype=np.float32)
        self.columns = np.full((rows, fetch), _NO_CANDIDATE, dtype=np.int64)

    def bound(self) -> np.ndarray:
        """Per row, a score that the final `fetch`-th best cannot exceed."""
        return self.values[:, -1]

    def merge(self, rows: np.ndarray, values: np.ndarray, columns: np.ndarray) -> None:
        """Add candidates given row by row (`rows` non-decreasing)."""
        if rows.size == 0:
            return
        per_row, place = ragged_places(rows, len(self.values))
        touched = np.flatnonzero(per_row)
        width = int(per_row.max())
        new_values = np.full((len(self.values), width), np.inf, dtype=np.float32)
        new_columns = np.full(new_values.shape, _NO_CANDIDATE, dtype=np.int64)
        new_values[rows, place] = values
        new_columns[rows, place] = columns
        both_values = np.concatenate(
            [self.values[touched], new_values[touched]], axis=1
        )
        both_columns = np.concatenate(
            [self.columns[touched], new_columns[touched]], axis=1
        )
        order = _stable_order(both_values, both_columns)[:, : self.values.shape[1]]
        self.values[touched] = np.take_along_axis(both_values, order, axis=1)
        self.columns[touched] = np.take_along_axis(both_columns, order, axis=1)


def ragged_places(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Where entries given row by row go in a padded `(count, width)` table.

    Args:
        rows: the row of each entry, non-decreasing.
        count: the number of rows.

    Returns:
        `(per_row, place)`: the number of entries of each row, and each
        entry's position within its row.
    """
    per_row = np.bincount(rows, minlength=count)
    place = np.arange(rows.size) - (np.cumsum(per_row) - per_row)[rows]
    return per_row, place


def _gather_groups(
    scores: object, rows: np.ndarray, groups: np.ndarray, group: int, pad: bool
) -> np.ndarray:
    """The `(len(rows), group)` scores of group `groups[i]` of row `rows[i]`.

    `rows` is non-decreasing. The faster gather differs: on XLA, a reshape
    copies the whole score matrix, so the groups are gathered along each
    row of it (`take_along_axis`, with each row's groups padded to the
    longest); on PyTorch and TensorFlow, as rows of the `(-1, group)` view.
    Scores that come grouped, `(rows, width // group, group)`, are gathered
    along their second axis.
    """
    if len(scores.shape) == 3:
        per_row, place = ragged_places(rows, scores.shape[0])
        width = padded_size(int(per_row.max()))
        chosen = np.zeros((scores.shape[0], width, 1), dtype=np.int32)
        chosen[rows, place, 0] = groups
        values = ops.convert_to_numpy(ops.take_along_axis(scores, chosen, axis=1))
        return values[rows, place]
    if not pad:
        picked = rows * (scores.shape[1] // group) + groups
        values = ops.take(ops.reshape(scores, (-1, group)), picked, axis=0)
        return ops.convert_to_numpy(values)
    per_row, place = ragged_places(rows, scores.shape[0])
    # Few distinct shapes: each new one compiles on JAX.
    width = padded_size(int(per_row.max()))
    chosen = np.zeros((scores.shape[0], width), dtype=np.int32)
    chosen[rows, place] = groups
    columns = chosen[:, :, None] * group + np.arange(group, dtype=np.int32)
    columns = columns.reshape(scores.shape[0], width * group)
    values = ops.convert_to_numpy(ops.take_along_axis(scores, columns, axis=1))
    return values.reshape(scores.shape[0], width, group)[rows, place]


def _tile_candidates(
    gallery: PreparedGallery,
    block: object,
    tile: Tile,
    best: _Best,
    exclude_rows: np.ndarray | None,
) -> None:
    """Merge into `best` every score of a tile that could be among them.

    One pass over the scores on the backend takes the minimum of each group
    of `_GROUP` columns; on the host, a group whose minimum exceeds the
    row's bound (the `fetch`-th best score so far, or on the first tile the
    `fetch`-th smallest group minimum, which no `fetch`-th best score can
    exceed) holds no candidate. Only the other groups are gathered from the
    backend: once a few tiles have set the bounds, a handful per row. Every
    score at most the bound is kept, ties included, and `best` orders them
    by `(score, column)`, so the selection is exact and ties go to the
    lower index on every backend. The tile's scores live only inside this
    call (see the module's docstring).
    """
    count = len(best.values)
    scores, minima, group = gallery.grouped_scores(block, tile, exclude_rows)
    minima = ops.convert_to_numpy(minima)[:count]
    bound = best.bound()
    open_rows = np.flatnonzero(np.isinf(bound))
    fetch = best.values.shape[1]
    if open_rows.size and minima.shape[1] > fetch:
        bound = bound.copy()
        bound[open_rows] = np.partition(minima[open_rows], fetch - 1, axis=1)[
            :, fetch - 1
        ]
    rows, groups = np.nonzero(minima <= bound[:, None])
    if rows.size == 0:
        return
    if group == 1:
        values = minima[rows, groups][:, None]
    else:
        values = _gather_groups(scores, rows, groups, group, gallery.pad)
    columns = tile.start + groups[:, None] * group + np.arange(group)
    keep = (values <= bound[rows, None]) & (columns < tile.stop)
    best.merge(
        np.broadcast_to(rows[:, None], keep.shape)[keep], values[keep], columns[keep]
    )


def search_blocks(
    gallery: PreparedGallery,
    queries: np.ndarray,
    depth: int | Callable[[slice], int],
    exclude_self: bool = False,
    candidates_only: bool = False,
) -> Iterator[tuple[slice, np.ndarray | None, np.ndarray]]:
    """Yield the exact nearest neighbours of successive blocks of queries.

    Args:
        gallery: the prepared gallery.
        queries: `(n, dim)` float32, finite.
        depth: neighbours wanted per query, or a function of the block's rows
            giving that number; capped at the number of candidates.
        exclude_self: the queries are the gallery itself, row for row, and a
            query must not find itself (leave-one-out).
        candidates_only: stop before the exact distances: yield, unordered,
            the `over_fetch(k, ...)` candidates the float32 scores select,
            for a caller that measures them exactly itself (the index's
            re-ranking), so that no candidate is measured twice.

    Yields:
        `(rows, distances, indices)`: the block's query rows, the float64
        distances and int64 gallery indices of their neighbours, `(b, k)`,
        nearest first, ties by the lower index; with `candidates_only`,
        `(rows, None, candidates)`.
    """
    available = len(gallery) - int(exclude_self)
    depth_of = depth if callable(depth) else (lambda rows: depth)
    count = queries.shape[0]
    deepest = min(max(int(depth_of(slice(0, count))), 1), max(available, 1))
    size = gallery.rows_per_block(over_fetch(deepest, max(available, 1)))
    for start in range(0, count, size):
        rows = slice(start, min(start + size, count))
        k = min(int(depth_of(rows)), available)
        if k < 1:
            empty = np.zeros((rows.stop - rows.start, 0))
            yield rows, empty, empty.astype(np.int64)
            continue
        block = gallery.block(queries[rows])
        row_ids = None
        if exclude_self:
            row_ids = _row_ids(np.arange(rows.start, rows.stop), int(block.shape[0]))
        best = _Best(rows.stop - rows.start, over_fetch(k, available))
        for tile in gallery.tiles:
            _tile_candidates(gallery, block, tile, best, row_ids)
        columns = best.columns
        if candidates_only:
            yield rows, None, columns
            continue
        distances = exact_distances(
            queries[rows], gallery.embeddings, columns, gallery.distance
        )
        if exclude_self:
            distances[columns == np.arange(rows.start, rows.stop)[:, None]] = np.inf
        order = _stable_order(distances, columns)[:, :k]
        yield (
            rows,
            np.take_along_axis(distances, order, axis=1),
            np.take_along_axis(columns, order, axis=1),
        )


def first_relevant_ranks(
    gallery: PreparedGallery,
    queries: np.ndarray,
    query_rows: np.ndarray,
    query_codes: np.ndarray,
    gallery_codes: np.ndarray,
    exclude_self: bool,
) -> np.ndarray:
    """1-based rank of each query's nearest same-class gallery item.

    Two passes over the tiles: the best same-class score (and its lowest
    index) of each query, then how many items come before it.

    Args:
        gallery: the prepared gallery.
        queries: `(n, dim)` float32, the queries to rank for.
        query_rows: their row numbers, matched to gallery rows when
            `exclude_self`.
        query_codes: their integer class codes.
        gallery_codes: the gallery's integer class codes.
        exclude_self: the query does not count itself.

    Returns:
        `(n,)` int64 ranks (every query must have a same-class item).
    """
    ranks = np.zeros(len(query_rows), dtype=np.int64)
    size = gallery.rows_per_block()
    code_tiles, column_tiles = [], []
    for tile in gallery.tiles:
        codes = np.full(tile.width, -1, dtype=np.int32)
        codes[: tile.stop - tile.start] = gallery_codes[tile.start : tile.stop]
        code_tiles.append(ops.convert_to_tensor(codes[None, :]))
        columns = np.arange(tile.start, tile.start + tile.width, dtype=np.int32)
        column_tiles.append(ops.convert_to_tensor(columns[None, :]))
    for begin in range(0, len(query_rows), size):
        part = slice(begin, min(begin + size, len(query_rows)))
        count = part.stop - part.start
        block = gallery.block(queries[part])
        padded = int(block.shape[0])
        row_ids = _row_ids(query_rows[part], padded) if exclude_self else None
        codes = np.full((padded, 1), -2, dtype=np.int32)
        codes[:count, 0] = query_codes[part]
        codes = ops.convert_to_tensor(codes)
        best = np.full(padded, np.inf, dtype=np.float64)
        best_index = np.full(padded, _NO_COLUMN, dtype=np.int64)
        for tile, tile_codes, columns in zip(gallery.tiles, code_tiles, column_tiles):
            low, first = _best_relevant(
                gallery, block, tile, row_ids, tile_codes, codes, columns
            )
            better = (low < best) | ((low == best) & (first < best_index))
            best = np.where(better, low, best)
            best_index = np.where(better, first, best_index)
        threshold = ops.convert_to_tensor(best[:, None].astype(np.float32))
        limit = ops.convert_to_tensor(best_index[:, None].astype(np.int32))
        before = np.zeros(padded, dtype=np.int64)
        for tile, columns in zip(gallery.tiles, column_tiles):
            before += _count_ahead(
                gallery, block, tile, row_ids, columns, threshold, limit
            )
        ranks[part] = before[:count] + 1
    return ranks


def _best_relevant(
    gallery: PreparedGallery,
    block: object,
    tile: Tile,
    exclude_rows: np.ndarray | None,
    tile_codes: object,
    codes: object,
    columns: object,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the best same-class score of a tile and its lowest column.

    Rows without a same-class column get +inf and `_NO_COLUMN`. The tile's
    scores live only inside this call (see the module's docstring).
    """
    scores = gallery.scores(block, tile, exclude_rows)
    relevant = ops.equal(tile_codes, codes)
    masked = ops.where(relevant, scores, np.inf)
    low = ops.min(masked, axis=1, keepdims=True)
    at_low = ops.logical_and(relevant, ops.equal(masked, low))
    first = ops.min(ops.where(at_low, columns, _NO_COLUMN), axis=1)
    return (
        ops.convert_to_numpy(low)[:, 0].astype(np.float64),
        ops.convert_to_numpy(first).astype(np.int64),
    )


def _count_ahead(
    gallery: PreparedGallery,
    block: object,
    tile: Tile,
    exclude_rows: np.ndarray | None,
    columns: object,
    threshold: object,
    limit: object,
) -> np.ndarray:
    """Per row, the columns of a tile ordered before `(threshold, limit)`.

    The tile's scores live only inside this call (see the module's docstring).
    """
    scores = gallery.scores(block, tile, exclude_rows)
    ahead = ops.logical_or(
        ops.less(scores, threshold),
        ops.logical_and(ops.equal(scores, threshold), columns < limit),
    )
    return ops.convert_to_numpy(ops.sum(ops.cast(ahead, "int32"), axis=1)).astype(
        np.int64
    )
