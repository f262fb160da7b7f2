"""Cross-batch memory (XBM, Wang et al. 2020): mine each batch against past ones.

`CrossBatchMemory` wraps an encoder in a `keras.Model` that keeps the
embeddings and labels of the last `memory_size` training examples in
non-trainable variables (a ring buffer) and computes a labels-and-embeddings
loss with every example of the batch as an anchor against the batch itself
and the memory. Because the memory is part of the model's state, it works in
the compiled training step of every backend (on JAX the training state is
the model's variables), and it is saved in the `.keras` file with the model.

The loss is any registered function with the signature

    fn(labels, embeddings, references=None, reference_labels=None,
       reference_mask=None, **loss_kwargs) -> scalar

where `references` `(R, dim)` and `reference_labels` `(R,)` are the
embeddings anchors are mined against (the batch itself when `None`), and
`reference_mask` `(batch, R)` says which anchor-reference pairs exist at
all: a masked pair is neither a positive nor a negative. Every labelled
loss of this package (`online_triplet_loss`, `supervised_contrastive_loss`,
`ntxent_loss`, `multi_similarity_loss`, `circle_loss`) has this signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_siamese._checks import (
    as_vector,
    check_positive_int,
    check_same_batch,
)
from keras_siamese._keras_compat import mark_shared
from keras_siamese.distances import as_float
from keras_siamese.losses.online_triplet import online_triplet_loss

REFERENCE_ARGUMENTS = ("references", "reference_labels", "reference_mask")
_JSON_VALUES = (str, int, float, bool, type(None))


def _takes_references(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    return all(name in parameters for name in REFERENCE_ARGUMENTS)


def _is_registered(fn: Any) -> bool:
    try:
        name = keras.saving.get_registered_name(fn)
    except (AttributeError, TypeError):
        return False
    return keras.saving.get_registered_object(name) is fn


def _check_loss_fn(loss_fn: Any) -> Callable[..., Any]:
    """The loss function, checked to be registered and to take references."""
    if not callable(loss_fn) or isinstance(loss_fn, (type, keras.losses.Loss)):
        raise TypeError(
            "`loss_fn` must be a loss function such as "
            "keras_siamese.online_triplet_loss (a Keras Loss object cannot take "
            f"references); got {loss_fn!r}."
        )
    if not _is_registered(loss_fn):
        raise TypeError(
            "`loss_fn` must be registered with "
            "`keras.saving.register_keras_serializable`, so that the model can "
            f"be saved and reloaded in safe mode; got {loss_fn!r}."
        )
    if _takes_references(loss_fn):
        return loss_fn
    raise TypeError(
        f"`loss_fn` must take the keyword arguments {REFERENCE_ARGUMENTS}, which "
        f"cross-batch memory passes; {loss_fn.__name__} does not."
    )


def _check_loss_kwargs(loss_kwargs: Any) -> dict[str, Any]:
    if loss_kwargs is None:
        return {}
    if not isinstance(loss_kwargs, dict) or not all(
        isinstance(key, str) for key in loss_kwargs
    ):
        raise TypeError(
            f"`loss_kwargs` must be a dict of keyword arguments; got {loss_kwargs!r}."
        )
    for key, value in loss_kwargs.items():
        if key in REFERENCE_ARGUMENTS:
            raise ValueError(
                f"`loss_kwargs` must not set {key!r}: the memory provides it."
            )
        if not isinstance(value, _JSON_VALUES):
            raise TypeError(
                f"`loss_kwargs[{key!r}]` must be a string, number, bool or None "
                f"(it is saved with the model); got {value!r}."
            )
    return dict(loss_kwargs)


@keras.saving.register_keras_serializable(package="keras_siamese")
class CrossBatchMemory(keras.Model):
    """An encoder trained with cross-batch memory (XBM): mining against past batches.

    Wang et al. (2020) observed that embeddings drift slowly, so those of the
    last few thousand training examples are still good negatives and
    positives for the current batch. This model keeps them: the embeddings
    and labels of the last `memory_size` examples, in non-trainable
    variables (no gradient flows into them). At each training step, every
    example of the batch is an anchor mined against the batch itself and
    the memory; then the batch is written into the memory, overwriting the
    oldest entries. As in PyTorch Metric Learning's `CrossBatchMemory`, the
    batch is enqueued first and each anchor's comparison with itself is
    removed: until the memory is full only its filled part counts, and an
    entry the current batch overwrites counts once, as the batch's own row.
    The values equal PML's `CrossBatchMemory` around a `TripletMarginLoss`
    on `LpDistance(normalize_embeddings=False)` (PML normalises by default:
    end the encoder with `keras.layers.UnitNormalization()` for that), with
    `mining="batch_all"` for PML's default reducer, and `"batch_hard"` for
    its `BatchHardMiner` with a `MeanReducer`. One difference: PML compares
    the anchors with the batch's rows as stored memory entries, without
    gradient; here they keep theirs, as in the in-batch loss.

    Training is `model.fit(x, labels)`; `model(x)` and `model.predict(x)`
    return the encoder's embeddings, so `model.encoder` can be used alone
    after training. `evaluate` computes the loss within each batch, without
    the memory (validation data may have other classes), and leaves the
    memory as it is. The memory is saved with the model and restored by
    `keras.saving.load_model`, so a resumed training continues with it;
    call `reset_memory()` to start empty.

    Data-parallel training under `tf.distribute` is not supported (each
    replica would need its own memory); JAX's `keras.distribution` runs one
    program over the global batch and keeps one memory.

    Args:
        encoder: the embedding model, any Keras layer or model producing
            `(batch, dim)` embeddings.
        loss_fn: a registered loss function taking `(labels, embeddings,
            references=None, reference_labels=None, reference_mask=None,
            **loss_kwargs)` and returning a scalar (see the module's
            documentation); default `online_triplet_loss`.
        memory_size: the number of past examples kept; at least the batch
            size. Default 1024.
        loss_kwargs: keyword arguments of `loss_fn` (strings, numbers,
            booleans), e.g. `{"mining": "batch_hard", "margin": 0.2}`.
        **kwargs: passed to `keras.Model` (`name`, ...).

    Raises:
        TypeError: if `encoder` is not a Keras layer, `loss_fn` is not a
            registered function taking the reference arguments, or
            `loss_kwargs` is not a dict of plain values.
        ValueError: if `memory_size` is not positive, `loss_fn` refuses
            `loss_kwargs` (checked on a tiny batch at construction), or a
            training batch is larger than the memory.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model = CrossBatchMemory(
        ...     encoder, memory_size=16, loss_kwargs={"margin": 0.5}
        ... )
        >>> model.compile(optimizer="sgd")
        >>> x = np.random.default_rng(0).normal(size=(8, 4))
        >>> y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
        >>> history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        >>> int(model.memory_count)
        8
        >>> model.predict(x, verbose=0).shape
        (8, 2)
    """

    def __init__(
        self,
        encoder: keras.layers.Layer,
        loss_fn: Callable[..., Any] = online_triplet_loss,
        memory_size: int = 1024,
        loss_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(encoder, keras.layers.Layer):
            raise TypeError(
                "`encoder` must be a Keras layer or model; got "
                f"{type(encoder).__name__}."
            )
        reference_loss = _check_loss_fn(loss_fn)
        loss_kwargs = _check_loss_kwargs(loss_kwargs)
        memory_size = check_positive_int(memory_size, "memory_size")
        # Validate the keyword arguments now, by name, rather than at the
        # first training step inside a compiled function.
        reference_loss(np.zeros(2, "int32"), np.zeros((2, 1), "float32"), **loss_kwargs)
        super().__init__(**kwargs)
        self._reference_loss = reference_loss
        self.encoder = encoder
        self.loss_fn = loss_fn
        self.memory_size = memory_size
        self.loss_kwargs = loss_kwargs

    def build(self, input_shape: Any) -> None:
        if not self.encoder.built:
            self.encoder.build(input_shape)
        output_shape = tuple(self.encoder.compute_output_shape(input_shape))
        if len(output_shape) != 2 or output_shape[-1] is None:
            raise ValueError(
                "CrossBatchMemory needs an encoder producing (batch, dim) "
                f"embeddings with a known dim; got {output_shape}."
            )
        size, dim = self.memory_size, output_shape[-1]
        self.memory_embeddings = self.add_weight(
            name="memory_embeddings",
            shape=(size, dim),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
        )
        self.memory_labels = self.add_weight(
            name="memory_labels",
            shape=(size,),
            initializer="zeros",
            dtype="int32",
            trainable=False,
        )
        # The next slot to write, and how many slots hold an example.
        self.memory_position = self.add_weight(
            name="memory_position",
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
        )
        self.memory_count = self.add_weight(
            name="memory_count",
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
        )
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.encoder(inputs, training=training)

    def memory_loss(self, labels: Any, embeddings: Any, update: bool = True) -> Any:
        """The loss of a batch against itself and the memory; then store it.

        Args:
            labels: integer labels `(batch,)` or `(batch, 1)`.
            embeddings: the batch's embeddings `(batch, dim)`.
            update: write the batch into the memory after computing the
                loss (what a training step does).

        Returns:
            The scalar loss.

        Raises:
            ValueError: if the batch is larger than the memory, or shapes are
                wrong.
        """
        if not self.built:
            raise ValueError(
                "CrossBatchMemory must be built (called on data) before `memory_loss`."
            )
        embeddings = ops.cast(as_float(embeddings), "float32")
        labels = ops.cast(as_vector(ops.convert_to_tensor(labels), "labels"), "int32")
        check_same_batch(labels, embeddings, "labels", "embeddings")
        batch = embeddings.shape[0]
        if batch is not None and batch > self.memory_size:
            raise ValueError(
                f"A batch of {batch} examples does not fit a `memory_size` of "
                f"{self.memory_size}; use a memory at least as large as the batch."
            )
        batch = ops.shape(embeddings)[0]
        size = self.memory_size
        stored = ops.convert_to_tensor(self.memory_embeddings)
        stored_labels = ops.convert_to_tensor(self.memory_labels)
        position = ops.convert_to_tensor(self.memory_position)
        count = ops.convert_to_tensor(self.memory_count)
        slots = ops.arange(size, dtype="int32")
        # The slots this batch overwrites: their old entries no longer count.
        overwritten = ops.mod(slots - position, size) < batch
        kept = ops.logical_and(slots < count, ops.logical_not(overwritten))
        rows = ops.arange(batch, dtype="int32")
        not_self = ops.expand_dims(rows, 1) != ops.expand_dims(rows, 0)
        mask = ops.concatenate(
            [not_self, ops.broadcast_to(ops.expand_dims(kept, 0), (batch, size))],
            axis=1,
        )
        loss = self._reference_loss(
            labels,
            embeddings,
            references=ops.concatenate([embeddings, stored], axis=0),
            reference_labels=ops.concatenate([labels, stored_labels], axis=0),
            reference_mask=mask,
            **self.loss_kwargs,
        )
        if update:
            self._enqueue(labels, embeddings, position, count, batch)
        return loss

    def _enqueue(
        self, labels: Any, embeddings: Any, position: Any, count: Any, batch: Any
    ) -> None:
        """Write the batch into the ring buffer, overwriting the oldest entries.

        Only the last `memory_size` rows are written: a batch larger than
        the memory (refused where the batch size is known while tracing,
        possible in a TensorFlow graph of unknown batch size) would otherwise
        scatter several rows into one slot.
        """
        size = self.memory_size
        tail, tail_labels = embeddings[-size:], labels[-size:]
        written = ops.shape(tail)[0]
        offsets = position + (batch - written) + ops.arange(written, dtype="int32")
        indices = ops.expand_dims(ops.mod(offsets, size), 1)
        self.memory_embeddings.assign(
            ops.scatter_update(
                ops.convert_to_tensor(self.memory_embeddings),
                indices,
                ops.stop_gradient(tail),
            )
        )
        self.memory_labels.assign(
            ops.scatter_update(
                ops.convert_to_tensor(self.memory_labels), indices, tail_labels
            )
        )
        self.memory_position.assign(ops.mod(position + batch, size))
        self.memory_count.assign(ops.minimum(count + batch, size))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """The memory loss in training, the in-batch loss in evaluation.

        A loss given to `compile()` and the layers' regularisation losses
        are added to it.
        """
        if sample_weight is not None:
            raise ValueError(
                "CrossBatchMemory computes its loss over the batch and the "
                "memory and does not take a `sample_weight`."
            )
        if y is None:
            raise ValueError(
                "CrossBatchMemory needs integer labels: call `fit(x, labels)`."
            )
        if training:
            loss = self.memory_loss(y, y_pred, update=True)
        else:
            loss = self._reference_loss(y, y_pred, **self.loss_kwargs)
        if getattr(self, "loss", None) is not None or self.losses:
            loss = loss + super().compute_loss(
                x, y, y_pred, sample_weight, training=training
            )
        return loss

    def reset_memory(self) -> None:
        """Empty the memory (its entries are zeroed and no longer count)."""
        if not self.built:
            return
        for variable in (
            self.memory_embeddings,
            self.memory_labels,
            self.memory_position,
            self.memory_count,
        ):
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": mark_shared(
                    keras.saving.serialize_keras_object(self.encoder), self.encoder
                ),
                "loss_fn": keras.saving.serialize_keras_object(self.loss_fn),
                "memory_size": self.memory_size,
                "loss_kwargs": dict(self.loss_kwargs),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CrossBatchMemory:
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        loss_fn = config.pop("loss_fn", online_triplet_loss)
        if isinstance(loss_fn, dict):
            loss_fn = keras.saving.deserialize_keras_object(loss_fn)
        return cls(encoder, loss_fn=loss_fn, **config)
