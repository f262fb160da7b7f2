"""`DualEncoder`: two towers with their own weights, a query and a candidate encoder."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese._checks import check_inputs_given, shapes_compatible
from keras_siamese.layers.siamese_wrapper import (
    _batch_dependent_sublayers,
    _check_merge,
    _describe_shapes,
    _serialize,
    encode_fused,
    merge_outputs,
    serialize_merge,
)


@keras.saving.register_keras_serializable(package="keras_siamese")
class DualEncoder(keras.layers.Layer):
    """Two unshared encoders: one for queries, one for candidates.

    The first input goes through `query_encoder`; every other input (a
    positive, hard negatives, ...) through `candidate_encoder`, which all
    candidates share. The two towers have separate weights, and may take
    inputs of different kinds and shapes (text and images, sketches and
    photos, a user and an item). Where both sides are of one kind and
    should be measured alike, use `SiameseWrapper`: one set of weights.

    For retrieval, index the gallery with `candidate_encoder` and embed the
    queries with `query_encoder` (`Verifier(..., query_encoder=...)`,
    `RetrievalEvaluation(..., query_encoder=...)`).

    Args:
        query_encoder: the query tower, a Keras layer or model.
        candidate_encoder: the candidate tower, a different Keras layer or
            model. Its embeddings must have the size of the query tower's
            for every `merge` but `"concat"`.
        merge: how the outputs `(query, candidate_1, ...)` are returned, as
            in `SiameseWrapper`: `None` (default), a tuple; `"stack"`, one
            `(batch, N, dim)` tensor (the layout of
            `MultipleNegativesRankingLoss` and `TripletLoss`); `"concat"`,
            concatenated on the last axis; or a Keras layer called on the
            list of outputs, e.g. `CosineDistance()`.
        fuse_candidates: run two or more candidate inputs as one call of
            `candidate_encoder` on their concatenation along the batch axis
            (as `SiameseWrapper`'s `fuse_branches`; `None`, the default,
            fuses on PyTorch). Falls back to separate calls while training
            when the candidate tower has batch-dependent layers
            (`BatchNormalization`, stateful RNNs).
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        TypeError: at construction if an encoder is not a Keras layer or
            `merge` is of the wrong type; when called on a single tensor.
        ValueError: at construction if both towers are the same object or
            `merge` is an unknown string; when called with fewer than two
            inputs, with candidates whose shapes disagree, or (for `"stack"`
            and layer merges) with towers whose embedding sizes differ.

    Examples:
        >>> import keras
        >>> from keras_siamese import CosineDistance, DualEncoder
        >>> text = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
        >>> image = keras.Sequential([keras.Input((3, 3)), keras.layers.Flatten(),
        ...                           keras.layers.Dense(4)])
        >>> towers = DualEncoder(text, image, merge=CosineDistance())
        >>> query, candidate = keras.Input((6,)), keras.Input((3, 3))
        >>> model = keras.Model([query, candidate], towers([query, candidate]))
        >>> model.output.shape
        (None, 1)
        >>> len(model.trainable_weights)  # two towers, two weights each
        4

        A query with its positive and two hard negatives, stacked:

        >>> negatives = [keras.Input((3, 3)) for _ in range(2)]
        >>> DualEncoder(text, image, merge="stack")([query, candidate, *negatives]).shape
        (None, 4, 4)
    """

    def __init__(
        self,
        query_encoder: keras.layers.Layer,
        candidate_encoder: keras.layers.Layer,
        merge: str | keras.layers.Layer | None = None,
        fuse_candidates: bool | None = None,
        **kwargs: Any,
    ) -> None:
        for name, tower in (
            ("query_encoder", query_encoder),
            ("candidate_encoder", candidate_encoder),
        ):
            if not isinstance(tower, keras.layers.Layer):
                raise TypeError(
                    f"`{name}` must be a Keras layer or model; got "
                    f"{type(tower).__name__}."
                )
        if query_encoder is candidate_encoder:
            raise ValueError(
                "`query_encoder` and `candidate_encoder` are the same object: "
                "the towers would share their weights. Use "
                "`SiameseWrapper(encoder)` for one shared encoder."
            )
        if fuse_candidates is not None and not isinstance(fuse_candidates, bool):
            raise TypeError(
                "`fuse_candidates` must be True, False or None; got "
                f"{fuse_candidates!r}."
            )
        super().__init__(**kwargs)
        self.query_encoder = query_encoder
        self.candidate_encoder = candidate_encoder
        self.merge = _check_merge(merge)
        self.fuse_candidates = fuse_candidates
        self._fuse = (
            keras.backend.backend() == "torch"
            if fuse_candidates is None
            else fuse_candidates
        )
        self._batch_dependent = _batch_dependent_sublayers(candidate_encoder)

    def _inputs(self, inputs: Any) -> tuple[Any, list]:
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(
                f"{self.name} expects a list or tuple [query, candidate, ...]; "
                f"got a single {type(inputs).__name__}."
            )
        if len(inputs) < 2:
            raise ValueError(
                f"{self.name} needs a query and at least one candidate; got "
                f"{len(inputs)} input(s)."
            )
        query, *candidates = inputs
        reference = keras.tree.flatten(candidates[0])
        for candidate in candidates[1:]:
            leaves = keras.tree.flatten(candidate)
            if len(leaves) != len(reference) or not all(
                shapes_compatible(r.shape, o.shape) for r, o in zip(reference, leaves)
            ):
                raise ValueError(
                    f"All candidate inputs of {self.name} must have the same "
                    "structure and shape, since one tower encodes them all; got "
                    f"{_describe_shapes(candidates)}."
                )
        return query, candidates

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        check_inputs_given(inputs, self.name)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape: Any) -> None:
        if isinstance(input_shape, dict) or not (
            input_shape and isinstance(input_shape[0], (list, tuple, dict))
        ):
            raise TypeError(
                f"{self.name} expects `inputs` to be a list or tuple [query, "
                f"candidate, ...]; got a single input of shape {input_shape}."
            )
        if len(input_shape) < 2:
            raise ValueError(
                f"{self.name} needs a query and at least one candidate; got "
                f"{len(input_shape)} input(s)."
            )
        if not self.query_encoder.built:
            self.query_encoder.build(input_shape[0])
        if not self.candidate_encoder.built:
            self.candidate_encoder.build(input_shape[1])
        self.built = True

    def _encode_candidates(self, candidates: list, training: Any) -> list:
        fuse = len(candidates) > 1 and self._fuse
        if not fuse or (self._batch_dependent and training):
            return [self.candidate_encoder(c) for c in candidates]
        return encode_fused(self.candidate_encoder, candidates)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        query, candidates = self._inputs(inputs)
        outputs = [
            self.query_encoder(query),
            *self._encode_candidates(candidates, training),
        ]
        if self.merge is None or self.merge == "concat":
            return merge_outputs(self.merge, outputs)
        query_size, candidate_size = outputs[0].shape[-1], outputs[1].shape[-1]
        if (
            query_size is not None
            and candidate_size is not None
            and query_size != candidate_size
        ):
            raise ValueError(
                f"The towers of {self.name} must give embeddings of one size to "
                f"be compared: the query tower gives {query_size}, the candidate "
                f"tower {candidate_size}."
            )
        return merge_outputs(self.merge, outputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "query_encoder": _serialize(self.query_encoder),
                "candidate_encoder": _serialize(self.candidate_encoder),
                "merge": serialize_merge(self.merge),
                "fuse_candidates": self.fuse_candidates,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> DualEncoder:
        config = dict(config)
        query_encoder = keras.saving.deserialize_keras_object(
            config.pop("query_encoder")
        )
        candidate_encoder = keras.saving.deserialize_keras_object(
            config.pop("candidate_encoder")
        )
        merge = config.pop("merge", None)
        if isinstance(merge, dict):
            merge = keras.saving.deserialize_keras_object(merge)
        return cls(query_encoder, candidate_encoder, merge=merge, **config)
