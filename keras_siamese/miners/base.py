"""The base of the miners, and how miners and losses measure embeddings.

A miner chooses, in one batch of labelled embeddings, the anchor-positive
and anchor-negative pairs a loss should look at. It returns two dense
boolean `(B, M)` masks (`M = B` for the batch against itself, else the
number of references), so its output has the same shape whatever the
batch holds and the miner runs under `jit` on every backend.

Two kinds of miners:

- pair miners (`PairMarginMiner`, `MultiSimilarityMiner`,
  `BatchEasyHardMiner`): the masks are the mined pairs. A pair loss uses
  them as they are; a triplet loss forms, for every anchor, every triplet
  of one of its mined positives and one of its mined negatives (the rule of
  pytorch-metric-learning's `convert_to_triplets`).
- triplet miners (`TripletMarginMiner`): a triplet `(a, p, n)` is chosen by
  the gap `d(a, n) - d(a, p)`, which no pair of masks can express. The
  masks are the pairs that occur in at least one chosen triplet; the
  chosen triplets themselves are a window on the gap (`window`), which
  `OnlineTripletLoss` applies in `O(B M)` memory (`O(B M log M)` time),
  and `triplet_mask` gives them as a dense `(B, M, M)` mask for small
  batches.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_siamese import distances
from keras_siamese.distances import pairwise_distances
from keras_siamese.losses import pairs

#: Similarities a miner or loss accepts next to the package's distances.
SIMILARITIES = ("cosine_similarity",)


class Measure:
    """How a miner or loss compares embeddings: a `Distance` or a similarity.

    `"cosine_similarity"` is a similarity (larger means more similar), as
    pytorch-metric-learning's `CosineSimilarity`: margins are then given in
    similarity units and flip as they do there (a positive pair is mined
    when its similarity is *below* `pos_margin`, for instance). Internally
    both are handled as one matrix in which smaller means more similar: the
    distances, or the negated similarities (`matrix`), with margins on pair
    values negated accordingly (`level`); gaps between two values, such as
    a triplet margin, need no change.

    Args:
        identifier: a distance name or `Distance` (see
            `keras_siamese.distances.get`), or `"cosine_similarity"`.
        user: who uses it, for error messages.

    Raises:
        TypeError, ValueError: for an unknown name or a `Distance` without
            an all-pairs form.
    """

    def __init__(self, identifier: Any, user: str) -> None:
        if isinstance(identifier, Measure):
            identifier = identifier.identifier
        self.inverted = isinstance(identifier, str) and identifier in SIMILARITIES
        if self.inverted:
            self.distance = None
            self.name = identifier
            self.identifier: Any = identifier
        else:
            try:
                self.distance = distances.get(
                    identifier, needs=("pairwise",), user=user
                )
            except ValueError as error:
                if isinstance(identifier, str):
                    raise ValueError(f"{error} Or one of {SIMILARITIES}.") from None
                raise
            self.name = self.distance.name
            self.identifier = self.distance

    def matrix(self, embeddings: Any, references: Any | None = None) -> Any:
        """`(B, M)` values in which smaller means more similar."""
        if self.inverted:
            return -pairs.cosine_similarity(embeddings, references)
        return pairwise_distances(embeddings, self.distance, references=references)

    def level(self, margin: float) -> float:
        """A margin on pair values, in the units of `matrix`."""
        return -margin if self.inverted else margin

    def serialize(self, owner: str) -> str:
        """The name that saves this measure (see `distances.serialize`)."""
        if self.inverted:
            return self.name
        return distances.serialize(self.distance, owner)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Measure)
            and self.inverted == other.inverted
            and self.distance == other.distance
        )

    def __hash__(self) -> int:
        return hash((self.inverted, self.name))


class Miner:
    """Base class of the miners: labels and embeddings in, pair masks out.

    Subclasses implement `mine(matrix, positive, negative)`, given the
    `(B, M)` matrix of the miner's measure (smaller means more similar; see
    `Measure`) without gradient and the label masks of every valid
    anchor-positive and anchor-negative pair, and return the mined masks.
    Mined pairs are always a subset of the valid ones: never a self-pair,
    positives of the anchor's class only, negatives of other classes only.

    Args:
        distance: a distance name or `Distance` (see
            `keras_siamese.distances.get`), or `"cosine_similarity"`.
    """

    #: `"pairs"` or `"triplets"` (see the module documentation).
    kind = "pairs"

    def __init__(self, distance: Any = "euclidean") -> None:
        self.measure = Measure(distance, type(self).__name__)
        self.distance = self.measure.name

    def __call__(
        self,
        labels: Any,
        embeddings: Any,
        references: Any | None = None,
        reference_labels: Any | None = None,
        reference_mask: Any | None = None,
    ) -> tuple[Any, Any]:
        """The mined `(positive, negative)` boolean masks, each `(B, M)`.

        Args:
            labels: integer class labels `(B,)` or `(B, 1)`.
            embeddings: `(B, dim)`.
            references: optional `(M, dim)` embeddings to mine positives and
                negatives from instead of the batch.
            reference_labels: their labels `(M,)`, required with
                `references`.
            reference_mask: optional boolean `(B, M)`: only the pairs where
                it is true can be mined.

        Raises:
            ValueError: for badly shaped inputs, or only one of
                `references` and `reference_labels`.
        """
        positive, negative, matrix = self._inputs(
            labels, embeddings, references, reference_labels, reference_mask
        )
        if matrix is None:  # no rows: nothing to mine, and no row to reduce
            return positive, negative
        return self.mine(matrix, positive, negative)

    def triplet_mask(
        self,
        labels: Any,
        embeddings: Any,
        references: Any | None = None,
        reference_labels: Any | None = None,
        reference_mask: Any | None = None,
    ) -> Any:
        """The mined triplets as a dense boolean `(B, M, M)` mask.

        Entry `[a, p, n]` is true when the triplet `(a, p, n)` is mined.
        `O(B M^2)` memory: meant for small batches and for inspection.
        Arguments as for calling the miner.
        """
        positive, negative, matrix = self._inputs(
            labels, embeddings, references, reference_labels, reference_mask
        )
        if matrix is None:
            return ops.logical_and(
                ops.expand_dims(positive, 2), ops.expand_dims(negative, 1)
            )
        return self.mine_triplets(matrix, positive, negative)

    def mine(self, matrix: Any, positive: Any, negative: Any) -> tuple[Any, Any]:
        """The mined `(positive, negative)` masks from the label masks."""
        raise NotImplementedError

    def mine_triplets(self, matrix: Any, positive: Any, negative: Any) -> Any:
        """Dense `(B, M, M)` triplets: every mined positive with every mined
        negative of the same anchor (a pair miner's triplets)."""
        positive, negative = self.mine(matrix, positive, negative)
        return ops.logical_and(
            ops.expand_dims(positive, 2), ops.expand_dims(negative, 1)
        )

    def _inputs(
        self,
        labels: Any,
        embeddings: Any,
        references: Any | None,
        reference_labels: Any | None,
        reference_mask: Any | None,
    ) -> tuple[Any, Any, Any | None]:
        """Label masks and the miner's matrix; `None` for a known-empty batch."""
        labels, embeddings, references, reference_labels, reference_mask = (
            pairs.labelled_inputs(
                labels, embeddings, references, reference_labels, reference_mask
            )
        )
        positive, negative = pairs.label_masks(labels, reference_labels, reference_mask)
        if pairs.is_empty(embeddings, references):
            return positive, negative, None
        matrix = ops.stop_gradient(self.measure.matrix(embeddings, references))
        return positive, negative, matrix

    def get_config(self) -> dict[str, Any]:
        return {"distance": self.measure.serialize(type(self).__name__)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Miner:
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def masked_extreme(matrix: Any, mask: Any, largest: bool) -> tuple[Any, Any]:
    """Per row, the column of the largest (or smallest) entry inside `mask`.

    Returns `(column, found)`: `(B, 1)` int32 columns and `(B, 1)` booleans,
    false for a row whose mask is empty (its column is then meaningless).
    """
    fill = pairs._LOWEST if largest else pairs._HIGHEST
    values = ops.where(mask, matrix, fill)
    pick = ops.argmax(values, axis=1) if largest else ops.argmin(values, axis=1)
    column = ops.expand_dims(ops.cast(pick, "int32"), 1)
    return column, ops.any(mask, axis=1, keepdims=True)


def one_hot_rows(column: Any, found: Any, size: Any) -> Any:
    """A `(B, M)` mask with one true entry per row where `found`."""
    columns = ops.expand_dims(ops.arange(size, dtype="int32"), 0)
    return ops.logical_and(columns == column, found)
