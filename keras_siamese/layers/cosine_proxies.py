"""`CosineProxies`: trainable class proxies, and the embeddings' cosines to them."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float, check_positive_int
from keras_siamese.distances import as_float, l2_normalize


def _scaled(initializer: keras.initializers.Initializer, factor: float) -> Any:
    """`initializer`, its draws multiplied by `factor`."""

    def initialize(shape: Any, dtype: Any = None) -> Any:
        return initializer(shape, dtype=dtype) * factor

    return initialize


@keras.saving.register_keras_serializable(package="keras_siamese")
class CosineProxies(keras.layers.Layer):
    """Trainable class proxies; maps embeddings to their cosines to each class.

    The head of the proxy losses: ArcFace, CosFace and sub-center ArcFace
    (`ArcFaceLoss`, `CosFaceLoss`) and Proxy-Anchor (`ProxyAnchorLoss`). It
    holds `num_classes * sub_centers` proxy vectors `w` and returns, for each
    embedding `x`, the cosine similarity `cos(x, w_c)` to every class `c`;
    with sub-centers, the largest cosine over the class's `sub_centers`
    proxies (Deng et al. 2020). Put it after the encoder and compile with a
    proxy loss: training is then a plain `model.fit(x, labels)`, the proxies
    are ordinary weights of the model (saved in the `.keras` file), and the
    encoder alone gives the embeddings:

        encoder = keras.Sequential([...])
        model = keras.Sequential([encoder, CosineProxies(num_classes)])
        model.compile(optimizer="adam", loss=ArcFaceLoss())
        model.fit(x, y)
        embeddings = encoder.predict(x)

    Why a layer and a separate loss: a Keras loss cannot own weights (on JAX
    only the model's variables are part of the training state), and every
    proxy loss is a function of these cosines and the labels alone. The
    proxies therefore live in this layer, which needs no labels, and the
    margin, scale and reduction in a standard `keras.losses.Loss`. The
    alternatives need more machinery: a layer that adds its loss with
    `add_loss` must receive the labels as a model input, so `fit(x, y)`
    becomes `fit([x, y])` or needs a custom `Model.compute_loss`; a model
    subclass wrapping the encoder must re-implement saving. Here `predict` on
    the whole model returns the cosines to the classes, a cosine classifier.

    Learning rate of the proxies: PyTorch Metric Learning trains the proxies
    with a separate optimizer, often at 10 to 100 times the encoder's
    learning rate (its ArcFace proxies barely move otherwise). Keras 3
    optimizers have one learning rate, so `lr_multiplier` reparametrises the
    proxies instead: the variable holds `w / m` and the layer uses `m` times
    it, with the gradient of the variable set to the gradient of `w`. Every
    optimizer whose step is `-learning_rate * f(gradients)` (SGD, momentum,
    Adam, RMSprop, Adagrad, Lion, ...) then moves `w` exactly as it would
    with `m` times the learning rate; decoupled weight decay (`AdamW`) is
    not multiplied. The `proxies` property returns `w`.

    Args:
        num_classes: the number of classes (output columns).
        sub_centers: proxies per class; the cosine to a class is the largest
            over its sub-centers. 1 (default) for ArcFace, CosFace and
            Proxy-Anchor; PyTorch Metric Learning's `SubCenterArcFaceLoss`
            uses 3.
        initializer: how the proxies are drawn; default a normal
            distribution with standard deviation 1, as PyTorch Metric
            Learning initialises the ArcFace and CosFace weights. Its
            `ProxyAnchorLoss` draws them with Kaiming's normal initialisation
            over the number of classes: `initializer="he_normal"` gives the
            same scale here (the proxies have shape
            `(num_classes * sub_centers, dim)`). Only the directions enter
            the cosines; the scale sets how fast the optimizer turns them.
        lr_multiplier: a positive factor on the proxies' learning rate (see
            above); default 1.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Returns:
        When called on embeddings `(batch, dim)`: the cosines
        `(batch, num_classes)`, in `[-1, 1]` up to round-off. They are computed in float32
        and returned in the layer's compute dtype, as every Keras layer
        does; in a mixed-precision model give the layer `dtype="float32"`,
        since the losses multiply the cosines by their scale (64).

    Raises:
        TypeError: if `num_classes` or `sub_centers` is not an integer, or
            `lr_multiplier` is not a number.
        ValueError: if one of them is not positive (at construction), or the
            input is not `(batch, dim)` with a known `dim` (when built).

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> head = CosineProxies(3)
        >>> cosines = head(np.ones((2, 4), "float32"))
        >>> tuple(cosines.shape)
        (2, 3)
        >>> head.set_weights([np.eye(3, 4, dtype="float32")])
        >>> cosines = head(np.array([[1.0, 1.0, 0.0, 0.0]]))
        >>> [round(float(c), 4) for c in keras.ops.convert_to_numpy(cosines)[0]]
        [0.7071, 0.7071, 0.0]

        Training with a proxy loss, then embedding with the encoder:

        >>> from keras_siamese import ArcFaceLoss
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model = keras.Sequential([encoder, CosineProxies(3)])
        >>> model.compile(optimizer="adam", loss=ArcFaceLoss())
        >>> x = np.random.default_rng(0).normal(size=(6, 4))
        >>> history = model.fit(x, np.array([0, 1, 2, 0, 1, 2]), verbose=0)
        >>> encoder.predict(x, verbose=0).shape
        (6, 2)
    """

    def __init__(
        self,
        num_classes: int,
        sub_centers: int = 1,
        initializer: Any = None,
        lr_multiplier: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.sub_centers = check_positive_int(sub_centers, "sub_centers")
        self.lr_multiplier = check_float(
            lr_multiplier, "lr_multiplier", minimum=0.0, inclusive=False
        )
        if initializer is None:
            initializer = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
        try:
            self.initializer = keras.initializers.get(initializer)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(
                "`initializer` must be a Keras initializer, its name or its "
                f"config; got {initializer!r}."
            ) from error
        if not callable(self.initializer):
            raise TypeError(
                f"`initializer` must be a Keras initializer; got {initializer!r}."
            )

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects embeddings of shape (batch, dim) "
                f"with a known dim; got {shape}."
            )
        # The variable holds the proxies divided by the multiplier (see the
        # class docstring), so that it starts from `initializer`'s proxies.
        self._proxies = self.add_weight(
            name="proxies",
            shape=(self.num_classes * self.sub_centers, shape[-1]),
            initializer=_scaled(self.initializer, 1.0 / self.lr_multiplier),
            trainable=True,
            autocast=False,
        )
        self.built = True

    @property
    def proxies(self) -> Any:
        """The proxies `(num_classes * sub_centers, dim)`, sub-centers adjacent.

        Row `c * sub_centers + j` is sub-center `j` of class `c`.
        """
        stored = self._proxies
        if self.lr_multiplier == 1.0:
            return ops.convert_to_tensor(stored)
        # Value m * v (the second term is exactly 0), derivative 1 with respect
        # to v: the variable's gradient is the gradient of the proxies, and
        # its steps are scaled by m.
        stored = ops.convert_to_tensor(stored)
        frozen = ops.stop_gradient(stored)
        return self.lr_multiplier * frozen + (stored - frozen)

    def call(self, embeddings: Any) -> Any:
        embeddings = as_float(embeddings)
        proxies = ops.cast(self.proxies, embeddings.dtype)
        cosines = ops.matmul(
            l2_normalize(embeddings), ops.transpose(l2_normalize(proxies))
        )
        if self.sub_centers > 1:
            cosines = ops.reshape(cosines, (-1, self.num_classes, self.sub_centers))
            cosines = ops.max(cosines, axis=-1)
        return ops.cast(cosines, self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (*tuple(input_shape)[:-1], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "sub_centers": self.sub_centers,
                "initializer": keras.initializers.serialize(self.initializer),
                "lr_multiplier": self.lr_multiplier,
            }
        )
        return config
