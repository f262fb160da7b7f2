"""Base class of the losses computed over a whole batch of labelled embeddings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_bool
from keras_siamese.losses.replicas import gather_replicas


class LabelledEmbeddingLoss(keras.losses.Loss):
    """A batch-level loss of `y_true` class labels and `y_pred` embeddings.

    Subclasses implement `compute(labels, embeddings)`, which returns a scalar.
    This class refuses `sample_weight` (the loss is not a sum of per-example
    terms), gathers the global batch when `global_batch=True`, and returns
    the scalar as a one-element vector: Keras divides a reduced loss by the
    number of replicas under `tf.distribute` but returns a scalar unreduced,
    so as a scalar the loss and its gradients would come out `num_replicas`
    times too large.

    Args:
        global_batch: under a `tf.distribute` strategy (such as
            `MirroredStrategy`) with several replicas, all-gather every
            replica's labels and embeddings and compute the loss over the
            global batch, as one device would; gradients reach each
            replica's own rows. Without it, each replica computes the loss of
            its own slice. A no-op on JAX, whose `DataParallel` already sees
            the global batch, on PyTorch, and outside a strategy.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.
    """

    # What `y_true` holds, named when it is missing; `None` for a loss that
    # ignores it, which then also takes `y_true=None`.
    y_true_holds: str | None = "class labels"

    def __init__(
        self,
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str | None = None,
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.global_batch = check_bool(global_batch, "global_batch")

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is computed over the whole batch and "
                "does not take a `sample_weight`."
            )
        if y_true is None:
            if self.y_true_holds is not None:
                raise ValueError(
                    f"{type(self).__name__} needs `y_true` ({self.y_true_holds}); "
                    "got None."
                )
            # A loss that ignores `y_true` takes `None` (a dataset without
            # targets), which Keras would refuse to convert: a zero per row
            # stands in, which `global_batch` gathers like labels.
            y_true = ops.zeros(ops.shape(y_pred)[:1])
        return super().__call__(y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        if self.global_batch:
            y_true, y_pred = gather_replicas(y_true, y_pred)
        return ops.reshape(self.compute(y_true, y_pred), (1,))

    def compute(self, labels: Any, embeddings: Any) -> Any:
        """The scalar loss of one batch."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"global_batch": self.global_batch, "dtype": self.dtype})
        return config


class FunctionLoss(LabelledEmbeddingLoss):
    """A batch-level loss computed by a function of `(y_true, y_pred)`.

    As Keras' `LossFunctionWrapper`, it holds a function and the keyword
    arguments to call it with, and writes them into the config, so that a
    loss class only names its function and its arguments' defaults and
    checks. The arguments become config entries of their own (not a nested
    `fn`), so `from_config` is `cls(**config)`, as for any loss. Everything
    else (the refused `sample_weight`, `global_batch`, the one-element
    result) is `LabelledEmbeddingLoss`'s.

    Args:
        fn: the loss function, called as `fn(y_true, y_pred, **kwargs)`; it
            returns a scalar.
        global_batch: see `LabelledEmbeddingLoss`.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.
        **kwargs: the arguments of `fn`, each also readable as an
            attribute of the loss: plain values that JSON can hold, a
            `keras_siamese.miners.Measure` (saved by its name) or a Keras
            object such as a miner (saved by its serialized config).
    """

    def __init__(
        self,
        fn: Any,
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str | None = None,
        dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            global_batch=global_batch, reduction=reduction, name=name, dtype=dtype
        )
        self.fn = fn
        self._fn_kwargs = kwargs

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: the function's arguments.
        kwargs = self.__dict__.get("_fn_kwargs", {})
        if name in kwargs:
            return kwargs[name]
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    def compute(self, labels: Any, embeddings: Any) -> Any:
        return self.fn(labels, embeddings, **self._fn_kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {name: self._config_value(value) for name, value in self._fn_kwargs.items()}
        )
        return config

    def _config_value(self, value: Any) -> Any:
        """An argument as its config holds it: a measure (a miner's
        `Measure`) by its registered name, a Keras object (a miner) by its
        serialized config, anything else as it is."""
        if callable(getattr(value, "serialize", None)):
            return value.serialize(type(self).__name__)
        if value is not None and callable(getattr(value, "get_config", None)):
            return keras.saving.serialize_keras_object(value)
        return value
