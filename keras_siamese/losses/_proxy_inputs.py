"""What the proxy losses share: checked labels and cosines, the class mask."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_class_labels, check_class_scores
from keras_siamese.distances import as_float


def class_mask(labels: Any, num_classes: int, dtype: str = "float32") -> Any:
    """`(batch, num_classes)` boolean mask of each example's class.

    Labels are compared with the class indices as numbers, so float labels
    (Keras casts `y_true` to float32) work, and a label outside
    `[0, num_classes)` or not an integer has no class at all.
    """
    classes = ops.arange(num_classes, dtype=dtype)
    return ops.expand_dims(ops.cast(labels, dtype), 1) == ops.expand_dims(classes, 0)


def proxy_inputs(labels: Any, similarities: Any) -> tuple[Any, Any, Any]:
    similarities = as_float(similarities)
    if len(similarities.shape) == 2 and similarities.shape[1] is not None:
        check_class_labels(labels, similarities.shape[1])
    labels, similarities = check_class_scores(labels, similarities, "similarities")
    return labels, similarities, class_mask(labels, ops.shape(similarities)[1])


def cross_entropy(logits: Any, target: Any, target_logit: Any) -> Any:
    """Softmax cross-entropy per row; NaN for a row without a valid class."""
    losses = ops.logsumexp(logits, axis=1) - target_logit
    has_class = ops.any(target, axis=1)
    return ops.where(has_class, losses, float("nan"))


class ProxyLoss(keras.losses.Loss):
    """Base of the proxy losses: NumPy labels checked before Keras casts them."""

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        shape = getattr(y_pred, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] is not None:
            check_class_labels(y_true, shape[1])
        return super().__call__(y_true, y_pred, sample_weight)
