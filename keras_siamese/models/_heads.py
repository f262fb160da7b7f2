"""Multilayer perceptron heads of the self-supervised models."""

from __future__ import annotations

import keras

from keras_siamese._checks import check_positive_int

# PyTorch's BatchNorm1d defaults (a running-average momentum of 0.1 there is
# Keras' 0.9), the published heads' normalisation.
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def check_head_layers(value: object, argument: str = "projection_layers") -> int:
    """`value` as a number of Dense layers of a head: an integer >= 2.

    Raises:
        TypeError: if it is not an integer.
        ValueError: if it is below 2.
    """
    layers = check_positive_int(value, argument)
    if layers < 2:
        raise ValueError(
            f"`{argument}` must be at least 2 (a hidden layer and the output "
            f"layer); got {layers}."
        )
    return layers


def mlp_head(
    name: str,
    hidden_dim: int,
    output_dim: int,
    num_layers: int,
    batch_norm: bool = True,
    output_norm: str | None = None,
) -> keras.Sequential:
    """`num_layers` Dense layers: hidden ones with batch norm and ReLU.

    A Dense layer followed by batch normalisation has no bias (the
    normalisation's offset replaces it).

    Args:
        name: name of the head.
        hidden_dim: units of the hidden layers.
        output_dim: units of the last layer.
        num_layers: number of Dense layers, at least 1.
        batch_norm: whether the hidden layers are batch-normalised.
        output_norm: `None` (a plain last layer), `"affine"` (batch norm
            with a learned scale and offset) or `"plain"` (batch norm
            without them).
    """
    layers = []
    for index in range(num_layers - 1):
        layers.append(
            keras.layers.Dense(
                hidden_dim, use_bias=not batch_norm, name=f"{name}_dense_{index}"
            )
        )
        if batch_norm:
            layers.append(
                keras.layers.BatchNormalization(**_BN, name=f"{name}_bn_{index}")
            )
        layers.append(keras.layers.ReLU(name=f"{name}_relu_{index}"))
    last = num_layers - 1
    layers.append(
        keras.layers.Dense(
            output_dim, use_bias=output_norm is None, name=f"{name}_dense_{last}"
        )
    )
    if output_norm is not None:
        affine = output_norm == "affine"
        layers.append(
            keras.layers.BatchNormalization(
                center=affine, scale=affine, **_BN, name=f"{name}_bn_{last}"
            )
        )
    return keras.Sequential(layers, name=name)
