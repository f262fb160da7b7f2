"""Seeded augmentation of the datasets' batches.

An augmentation must give the same result for the same batch seed whatever
thread or process runs it, so it is never left to a random state that the
workers share. A Keras image preprocessing pipeline is run layer by layer
through the layers' stateless interface (`get_random_transformation` with a
seed generator made for the batch, then `transform_images`), so the layers'
own generators are never advanced. A plain callable receives the batch's
seed as `seed=`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

# Batch seeds are positive 31-bit integers: an int32 on every backend, and
# never 0, which some Keras layers read as "no seed given".
_SEED_BITS = 0x7FFFFFFF


def batch_seed(seed: int, epoch: int, index: int, branch: int, view: int) -> int:
    """The augmentation seed of one branch and view of one batch."""
    state = np.random.SeedSequence([seed, epoch, index, branch, view, 0xA09])
    value = int(state.generate_state(1, np.uint32)[0]) & _SEED_BITS
    return value or 1


def _draws_own_random(layer: Any) -> bool:
    """Whether `layer` or a layer inside it holds a `SeedGenerator`."""
    for value in vars(layer).values():
        if isinstance(value, keras.random.SeedGenerator):
            return True
        inner = value if isinstance(value, (list, tuple)) else [value]
        for item in inner:
            if isinstance(item, keras.layers.Layer) and _draws_own_random(item):
                return True
    return False


def _steps(layer: Any) -> list:
    """The layers of a (possibly nested) `keras.Sequential`, in order."""
    if isinstance(layer, keras.Sequential):
        return [step for inner in layer.layers for step in _steps(inner)]
    return [layer]


def _is_image_preprocessing(layer: Any) -> bool:
    return callable(getattr(layer, "get_random_transformation", None)) and callable(
        getattr(layer, "transform_images", None)
    )


class TensorSeeds(keras.random.SeedGenerator):
    """The seeds of `keras.random.SeedGenerator(seed)` for a seed tensor.

    A seed generator draws `[seed, 0]`, `[seed, 1]`, ... from a variable;
    this one counts its draws in Python while a graph is traced, so that a
    graph without variables (a `tf.data` function) draws the same seeds.

    Args:
        seed: a scalar integer tensor.
        dtype: the dtype of the seeds, `seed_dtype()`.
    """

    def __init__(self, seed: Any, dtype: str) -> None:
        # No `super().__init__()`: it would create the state variable.
        self.name = "tensor_seeds"
        self._seed = seed
        self._dtype = dtype
        self._draws = 0

    def next(self, ordered: bool = True) -> Any:
        seed = keras.ops.cast(self._seed, self._dtype)
        draw = keras.ops.convert_to_tensor(self._draws, self._dtype)
        self._draws += 1
        return keras.ops.stack([seed, draw])


def seed_dtype() -> str:
    """The dtype of a `keras.random.SeedGenerator`'s state on this backend.

    Creates a variable: call it outside graph functions.
    """
    return keras.backend.standardize_dtype(keras.random.SeedGenerator(1).state.dtype)


class Augmentation:
    """A seeded augmentation: a Keras preprocessing pipeline or a callable.

    Args:
        augment: a `keras.layers.Layer` (a single image preprocessing layer,
            or a `keras.Sequential`, nested or not, of them and of layers without randomness
            such as `Rescaling`), or a callable `augment(images, seed=seed)`
            returning the augmented batch.

    Raises:
        TypeError: if `augment` is not callable, or is a Keras layer that
            draws random numbers from its own generator and cannot be given
            a seed per batch (e.g. `Dropout`).
    """

    def __init__(self, augment: Any) -> None:
        if not callable(augment):
            raise TypeError(
                "`augment` must be a Keras preprocessing layer or pipeline, or a "
                f"callable `augment(images, seed=...)`; got {augment!r}."
            )
        self.augment = augment
        self._layers = None
        if isinstance(augment, keras.layers.Layer):
            layers = _steps(augment)
            for layer in layers:
                if not _is_image_preprocessing(layer) and _draws_own_random(layer):
                    raise TypeError(
                        f"Layer {layer.name!r} of `augment` draws random numbers "
                        "from its own generator, which cannot be seeded per batch; "
                        "use Keras image preprocessing layers (RandomFlip, "
                        "RandomCrop, ...) or a callable `augment(images, seed=...)`."
                    )
            self._layers = layers

    def __call__(self, images: np.ndarray, seed: int) -> np.ndarray:
        """The augmented batch, as a NumPy array."""
        if self._layers is None:
            result = self.augment(images, seed=seed)
        else:
            # On the CPU, where the rest of the batch is made: the
            # accelerator is left to the model.
            with keras.device("cpu:0"):
                # One generator per batch: each random layer draws from it
                # in turn, so the layers get different numbers from one seed.
                result = self._run_layers(images, keras.random.SeedGenerator(seed))
        return np.asarray(keras.ops.convert_to_numpy(result))

    @property
    def runs_in_graph(self) -> bool:
        """Whether `in_graph` can run it: it is Keras layers, not a callable."""
        return self._layers is not None

    def in_graph(self, images: Any, seed: Any, seed_dtype: str) -> Any:
        """The augmented batch inside a graph function, for a seed tensor.

        The same numbers as `self(images, seed)` for the same seed value: the
        layers draw from `TensorSeeds`, which gives the seeds a
        `keras.random.SeedGenerator(seed)` gives, without a variable (a
        `tf.data` function cannot create one).

        Args:
            images: a batch tensor.
            seed: a scalar integer tensor, the batch's seed.
            seed_dtype: the dtype of a seed generator's state, from
                `seed_dtype()` called outside the graph.
        """
        return self._run_layers(images, TensorSeeds(seed, seed_dtype))

    def _run_layers(self, images: Any, generator: Any) -> Any:
        """The layers on `images`, each random one drawing from `generator`."""
        result = images
        for layer in self._layers:
            if _is_image_preprocessing(layer):
                transformation = layer.get_random_transformation(
                    result, training=True, seed=generator
                )
                result = layer.transform_images(result, transformation, training=True)
            else:
                result = layer(result)
        return result
