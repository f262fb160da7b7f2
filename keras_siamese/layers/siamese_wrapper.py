"""`SiameseWrapper`: one shared layer applied to N inputs, one set of weights."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_inputs_given, shapes_compatible
from keras_siamese._keras_compat import mark_shared

MERGE_MODES = ("stack", "concat")


def _batch_dependent_sublayers(layer: keras.layers.Layer) -> list[str]:
    """Names of sublayers whose output for one sample depends on the others.

    Running all branches as one batch is exact only when no such layer is
    active: batch normalisation in training mixes samples through its batch
    statistics, and a stateful RNN carries state per batch row.
    """
    found = []
    for sublayer in [layer, *layer._flatten_layers(include_self=False)]:
        if isinstance(sublayer, keras.layers.BatchNormalization) or getattr(
            sublayer, "stateful", False
        ):
            found.append(sublayer.name)
    return found


def _check_merge(merge: Any) -> Any:
    if merge is None or isinstance(merge, keras.layers.Layer):
        return merge
    if isinstance(merge, str):
        if merge not in MERGE_MODES:
            raise ValueError(
                f"`merge` must be None, one of {MERGE_MODES}, or a Keras layer; "
                f"got {merge!r}."
            )
        return merge
    raise TypeError(
        f"`merge` must be None, one of {MERGE_MODES}, or a Keras layer; got "
        f"{type(merge).__name__}. Wrap custom code in a registered Layer "
        "subclass so that the model can be saved and reloaded safely."
    )


def _describe_shapes(branches: list) -> str:
    return ", ".join(
        str(keras.tree.map_structure(lambda t: tuple(t.shape), branch))
        for branch in branches
    )


def encode_fused(layer: keras.layers.Layer, branches: list) -> list:
    """Encodes every branch in one call of `layer` on their concatenation.

    The branches (each a tensor or a nest of tensors of one structure) are
    concatenated along the batch axis, encoded at once, and the output split
    back into one output per branch, with the layer's output structure.
    """
    stacked = keras.tree.map_structure(
        lambda *parts: ops.concatenate(parts, axis=0), *branches
    )
    encoded = layer(stacked)
    leaves = keras.tree.flatten(encoded)
    parts = [ops.split(leaf, len(branches), axis=0) for leaf in leaves]
    return [
        keras.tree.pack_sequence_as(encoded, [part[i] for part in parts])
        for i in range(len(branches))
    ]


def merge_outputs(merge: Any, outputs: list) -> Any:
    """The branches' outputs combined as `merge` (a mode name, a layer or None)."""
    if merge is None:
        return tuple(outputs)
    if merge == "stack":
        return ops.stack(outputs, axis=1)
    if merge == "concat":
        return ops.concatenate(outputs, axis=-1)
    return merge(outputs)


def serialize_merge(merge: Any) -> Any:
    """`merge` as written in a config: a layer's marked config, else the value."""
    return _serialize(merge) if isinstance(merge, keras.layers.Layer) else merge


@keras.saving.register_keras_serializable(package="keras_siamese")
class SiameseWrapper(keras.layers.Layer):
    """Applies one shared layer to each of N >= 2 inputs, with one set of weights.

    Every branch calls the very same `layer` object, so there is exactly one
    copy of each weight: the wrapper's weights *are* the wrapped layer's, and
    training sums the gradients of all branches into that one copy. There is
    nothing to tie or copy.

    Args:
        layer: the shared encoder, any Keras layer or model (an MLP, a CNN, an
            LSTM encoder, ...). Each branch input may be a tensor or, for a
            multi-input encoder, a tuple or dict of tensors.
        merge: how the N outputs are returned. `None` (default): a tuple, in
            input order (a tuple, as Keras' own multi-output layers return,
            so that the outputs can also be targets of a `tf.data`
            pipeline). `"stack"`: one tensor with a new axis 1,
            `(batch, N, ...)`, the layout `TripletLoss` expects. `"concat"`:
            concatenated on the last axis. A Keras layer: called on the list
            of outputs, e.g. `EuclideanDistance()` for a pair model.
        fuse_branches: run the N branches as one call of `layer` on the inputs
            concatenated along the batch axis, then split the result: the same
            math in fewer and larger kernels. `None` (default) fuses on the
            PyTorch backend, which runs eagerly, so that Keras' per-layer
            Python work is done once instead of N times; JAX and TensorFlow
            compile the step, where separate calls cost no Python time, and
            run the branches separately. `True` or `False` forces either way
            on any backend (`benchmarks/bench_branches.py` compares them).
            While training, layers whose output depends on the rest of the
            batch (`BatchNormalization`, stateful RNNs) make the wrapper fall
            back to separate calls.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        TypeError: at construction if `layer` is not a Keras layer or `merge`
            is of the wrong type; when called on a single tensor instead of a
            list or tuple.
        ValueError: at construction for an unknown `merge` string; when called
            with fewer than two inputs or with inputs whose shapes disagree.

    Examples:
        >>> import keras
        >>> from keras_siamese import EuclideanDistance, SiameseWrapper
        >>> encoder = keras.Sequential([keras.layers.Dense(8)])
        >>> siamese = SiameseWrapper(encoder, merge=EuclideanDistance())
        >>> a = keras.Input((4,))
        >>> b = keras.Input((4,))
        >>> model = keras.Model([a, b], siamese([a, b]))
        >>> len(model.trainable_weights) == len(encoder.trainable_weights)
        True

        Three branches stacked for `TripletLoss`, and the default, a tuple:

        >>> triplet = [keras.Input((4,)) for _ in range(3)]
        >>> SiameseWrapper(encoder, merge="stack")(triplet).shape
        (None, 3, 8)
        >>> [tuple(z.shape) for z in SiameseWrapper(encoder)([a, b])]
        [(None, 8), (None, 8)]
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        merge: str | keras.layers.Layer | None = None,
        fuse_branches: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"`layer` must be a Keras layer or model; got {type(layer).__name__}."
            )
        if fuse_branches is not None and not isinstance(fuse_branches, bool):
            raise TypeError(
                f"`fuse_branches` must be True, False or None; got {fuse_branches!r}."
            )
        super().__init__(**kwargs)
        self.layer = layer
        self.merge = _check_merge(merge)
        self.fuse_branches = fuse_branches
        self._fuse = (
            keras.backend.backend() == "torch"
            if fuse_branches is None
            else fuse_branches
        )
        self._batch_dependent = _batch_dependent_sublayers(layer)

    def _branches(self, inputs: Any) -> list:
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(
                f"{self.name} expects a list or tuple of N >= 2 inputs, one per "
                f"branch; got a single {type(inputs).__name__}. Pass "
                "[x1, x2] (or [anchor, positive, negative])."
            )
        branches = list(inputs)
        if len(branches) < 2:
            raise ValueError(
                f"{self.name} needs at least two inputs, one per branch; got "
                f"{len(branches)}."
            )
        reference = keras.tree.flatten(branches[0])
        if any(len(getattr(leaf, "shape", ())) == 0 for leaf in reference):
            raise ValueError(
                f"The `inputs` of {self.name} must be tensors with a batch axis; "
                f"got {_describe_shapes(branches)}."
            )
        for branch in branches[1:]:
            leaves = keras.tree.flatten(branch)
            if len(leaves) != len(reference) or not all(
                shapes_compatible(r.shape, o.shape) for r, o in zip(reference, leaves)
            ):
                raise ValueError(
                    f"All inputs of {self.name} must have the same structure and "
                    f"shape, since one layer encodes them all; got "
                    f"{_describe_shapes(branches)}."
                )
        return branches

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        check_inputs_given(inputs, self.name)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape: Any) -> None:
        # A single tensor arrives here as one shape tuple of ints, before
        # `call` can check its `inputs`; building the encoder on its batch
        # size would fail with an unrelated error.
        if isinstance(input_shape, dict) or not (
            input_shape and isinstance(input_shape[0], (list, tuple, dict))
        ):
            raise TypeError(
                f"{self.name} expects `inputs` to be a list or tuple of N >= 2 "
                f"inputs, one per branch; got a single input of shape {input_shape}."
            )
        if not self.layer.built:
            self.layer.build(input_shape[0])
        self.built = True

    def _can_fuse(self, training: Any) -> bool:
        return self._fuse and not (self._batch_dependent and training)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        branches = self._branches(inputs)
        if self._can_fuse(training):
            outputs = encode_fused(self.layer, branches)
        else:
            outputs = [self.layer(branch) for branch in branches]
        return merge_outputs(self.merge, outputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "layer": _serialize(self.layer),
                "merge": serialize_merge(self.merge),
                "fuse_branches": self.fuse_branches,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> SiameseWrapper:
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        merge = config.pop("merge", None)
        if isinstance(merge, dict):
            merge = keras.saving.deserialize_keras_object(merge)
        return cls(layer, merge=merge, **config)


def _serialize(layer: keras.layers.Layer) -> dict:
    """The JSON config of a wrapped layer, marked as shared while saving.

    Marked, an encoder that two wrappers (or a wrapper and the model itself)
    use is rebuilt once on loading, and still shared; outside a save
    the config is a plain description, so `from_config(get_config())` (which
    `keras.models.clone_model` calls) builds a new encoder.
    """
    return mark_shared(keras.saving.serialize_keras_object(layer), layer)
