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


class Similarity:
    """A similarity between embeddings: larger means more similar.

    The counterpart of `keras_siamese.distances.Distance` for measures that
    grow with similarity (pytorch-metric-learning's "inverted" distances,
    such as its `CosineSimilarity`). `inverted` says so to the miners and
    losses that take one (a `Distance` has `inverted = False`): they compare
    with the negated values, so that a similarity and a distance go through
    the same code, with margins on pair values flipped (see `Measure`).

    Subclass it to add a similarity: set `name`, implement `pairwise_form`,
    and `register_similarity` it to name it in a `distance=` argument and to
    save the objects that use it. Two similarities are equal when they are
    of the same class and name.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> class NegativeManhattan(Similarity):
        ...     name = "negative_manhattan"
        ...
        ...     def pairwise_form(self, x, y):
        ...         y = x if y is None else y
        ...         return -ops.sum(ops.abs(x[:, None, :] - y[None, :, :]), axis=-1)
        >>> values = NegativeManhattan().pairwise_form(np.array([[0.0], [2.0]]), None)
        >>> np.asarray(values).tolist()
        [[-0.0, -2.0], [-2.0, -0.0]]
    """

    name: str = ""
    #: Larger values mean more similar (pytorch-metric-learning's `is_inverted`).
    inverted: bool = True

    def pairwise_form(self, x: Any, y: Any | None) -> Any:
        """`(n, m)` similarities of the rows of `x` `(n, d)` and `y` `(m, d)`
        (`keras.ops`); `y=None` compares `x` with itself."""
        raise NotImplementedError(
            f"{type(self).__name__} lacks `pairwise_form` (the keras.ops "
            "all-pairs similarities)."
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Similarity):
            return NotImplemented
        return type(self) is type(other) and self.name == other.name

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def __repr__(self) -> str:
        return f"<Similarity {self.name!r} ({type(self).__name__})>"


class CosineSimilarity(Similarity):
    """Cosine similarity of the L2-normalised rows (`1 - cosine distance`).

    pytorch-metric-learning's `CosineSimilarity`; a zero vector has
    similarity 0 with everything, itself included.
    """

    name = "cosine_similarity"

    def pairwise_form(self, x: Any, y: Any | None) -> Any:
        return pairs.cosine_similarity(x, y)


class DotProductSimilarity(Similarity):
    """Dot product of the rows as they are (not normalised).

    pytorch-metric-learning's `DotProductSimilarity(normalize_embeddings=False)`
    (its default normalises, which is `CosineSimilarity`).
    """

    name = "dot_product_similarity"

    def pairwise_form(self, x: Any, y: Any | None) -> Any:
        return ops.matmul(x, ops.transpose(x if y is None else y))


_SIMILARITIES: dict[str, Similarity] = {
    similarity.name: similarity
    for similarity in (CosineSimilarity(), DotProductSimilarity())
}

#: The built-in similarities a miner or loss accepts next to the distances.
SIMILARITIES = tuple(_SIMILARITIES)


def register_similarity(
    similarity: Similarity, *, override: bool = False
) -> Similarity:
    """Make a similarity available by its name in every `distance=` argument
    that takes one (as `keras_siamese.distances.register` for distances).

    Returns:
        The registered similarity (the one already registered if equal).

    Raises:
        TypeError: if `similarity` is not a `Similarity` instance with a name.
        ValueError: if the name is a built-in one or a distance's, or is
            taken and `override` is false.
    """
    if not isinstance(similarity, Similarity) or not (
        isinstance(similarity.name, str) and similarity.name
    ):
        raise TypeError(
            "`similarity` must be a Similarity instance with a name; got "
            f"{similarity!r}."
        )
    name = similarity.name
    registered = _SIMILARITIES.get(name)
    if registered is not None and registered == similarity:
        return registered
    if name in SIMILARITIES or name in distances.DISTANCES:
        raise ValueError(f"The built-in name {name!r} cannot be replaced.")
    if registered is not None and not override:
        raise ValueError(
            f"A similarity named {name!r} is already registered; pass "
            "`override=True` to replace it."
        )
    _SIMILARITIES[name] = similarity
    return similarity


def _resolve(identifier: Any, user: str) -> Any:
    """The `Similarity` or `Distance` an identifier names."""
    if isinstance(identifier, Similarity):
        return identifier
    if isinstance(identifier, str) and identifier in _SIMILARITIES:
        return _SIMILARITIES[identifier]
    try:
        return distances.get(identifier, needs=("pairwise",), user=user)
    except ValueError as error:
        if isinstance(identifier, str):
            raise ValueError(
                f"{error} Or a similarity: one of {tuple(_SIMILARITIES)} or a "
                "Similarity."
            ) from None
        raise


class Measure:
    """How a miner or loss compares embeddings: a `Distance` or a `Similarity`.

    The measure object says which it is (`inverted`: larger means more
    similar, as pytorch-metric-learning's `is_inverted`). With a similarity
    such as `"cosine_similarity"`, margins are given in similarity units
    and flip as they do there (a positive pair is mined when its similarity
    is *below* `pos_margin`, for instance). Internally both are handled as
    one matrix in which smaller means more similar: the distances, or the
    negated similarities (`matrix`), with margins on pair values negated
    accordingly (`level`); gaps between two values, such as a triplet
    margin, need no change.

    Args:
        identifier: a distance name or `Distance` (see
            `keras_siamese.distances.get`), a similarity name
            (`"cosine_similarity"`, `"dot_product_similarity"`, or one given
            to `register_similarity`) or `Similarity`, or a `Measure`.
        user: who uses it, for error messages.

    Raises:
        TypeError, ValueError: for an unknown name or a `Distance` without
            an all-pairs form.
    """

    def __init__(self, identifier: Any, user: str) -> None:
        if isinstance(identifier, Measure):
            identifier = identifier.identifier
        self.identifier: Any = _resolve(identifier, user)
        self.inverted: bool = self.identifier.inverted
        self.name: str = self.identifier.name
        #: The `Distance`, or `None` for a similarity.
        self.distance = None if self.inverted else self.identifier

    def matrix(self, embeddings: Any, references: Any | None = None) -> Any:
        """`(B, M)` values in which smaller means more similar."""
        if self.inverted:
            return -self.identifier.pairwise_form(embeddings, references)
        return pairwise_distances(embeddings, self.distance, references=references)

    def similarity(self, embeddings: Any, references: Any | None = None) -> Any:
        """`(B, M)` values in which larger means more similar: the
        similarities, or the negated distances (how pytorch-metric-learning
        feeds a distance to a loss written on similarities)."""
        if self.inverted:
            return self.identifier.pairwise_form(embeddings, references)
        return -pairwise_distances(embeddings, self.distance, references=references)

    def level(self, margin: float) -> float:
        """A margin on pair values, in the units of `matrix`."""
        return -margin if self.inverted else margin

    def serialize(self, owner: str) -> str:
        """The name that saves this measure (see `distances.serialize`).

        Raises:
            ValueError: for a similarity not registered under its name.
        """
        if not self.inverted:
            return distances.serialize(self.distance, owner)
        if _SIMILARITIES.get(self.name) != self.identifier:
            raise ValueError(
                f"{owner} uses the similarity {self.name!r} "
                f"({type(self.identifier).__name__}), which is not registered "
                "under that name, so it cannot be saved by name: call "
                "`keras_siamese.miners.register_similarity(...)` on it first."
            )
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Measure) and self.identifier == other.identifier

    def __hash__(self) -> int:
        return hash(self.identifier)


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
            `keras_siamese.distances.get`), or a similarity name or
            `Similarity` (see `Measure`).
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

    def mine_for(
        self,
        measure: Measure,
        matrix: Any,
        embeddings: Any,
        references: Any | None,
        positive: Any,
        negative: Any,
    ) -> tuple[Any, Any]:
        """The mined masks for a pair loss that measures with `measure`.

        `matrix` is the loss's own smaller-is-nearer matrix, reused when the
        miner measures alike; otherwise the miner measures the embeddings
        itself. Either way without gradient. A triplet miner gives the pairs
        of its triplets, as pytorch-metric-learning turns triplets into
        pairs for a pair loss.
        """
        if self.measure != measure:
            matrix = self.measure.matrix(embeddings, references)
        return self.mine(ops.stop_gradient(matrix), positive, negative)

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
