"""The `tf.data` pipeline of the sampled datasets, and their TensorFlow hook.

Keras feeds a `keras.utils.PyDataset` to a TensorFlow model through
`tf.data.Dataset.from_generator`, which costs about 1 ms per batch on a CPU
core (measured with `PairDataset` batches of 128 MNIST pairs, against 0.12 ms
for the batch itself): 20-25% of the seed MLP's training step. The pipeline
here calls Python once per block of batches, for the block's row indices, and
gathers the rows in the graph: 0.28 ms per batch on the same data.

TensorFlow is imported only when a pipeline is built, never at import.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import keras
import numpy as np

from keras_siamese.data.sampling import gather


def keras_adapter_bases() -> tuple[type, ...]:
    """`(DataAdapter,)` on the TensorFlow backend, `()` on the others.

    Keras' `fit`, `evaluate` and `predict` use an input that is a
    `DataAdapter` as it is, so a dataset that is one hands its own `tf.data`
    pipeline to TensorFlow. The class is private to Keras: where it cannot be
    imported, the datasets stay plain `PyDataset`s and Keras' generator path
    is used.
    """
    if keras.backend.backend() != "tensorflow":
        return ()
    try:
        from keras.src.trainers.data_adapters.data_adapter import DataAdapter
    except ImportError:
        return ()
    return (DataAdapter,)


def block_pipeline(dataset: Any) -> Any:
    """A `tf.data.Dataset` of one epoch of `dataset`'s batches.

    Each block of batches is drawn by one `tf.numpy_function` call (the
    dataset's own cached draw, so the batches equal `dataset[i]`), split into
    batches, and each batch's rows are gathered from tensors that hold `x`.
    The other arrays are copied into tensors at the first call and reused by
    later ones, so in-place changes to them after that are not seen. Arrays
    that are `np.memmap`s are gathered batch by batch in NumPy instead, so
    that they are never read into memory whole.

    Args:
        dataset: a `SampledDataset`.

    Returns:
        A `tf.data.Dataset` whose elements are `(inputs, targets)` in the
        structure of `dataset[i]`. Each iteration draws from the dataset's
        epoch when it reaches the block.
    """
    tf = importlib.import_module("tensorflow")
    parts, items = dataset._parts, dataset._batch_items
    per_block = dataset._block_batches
    num_blocks = math.ceil(len(dataset) / per_block)
    target_dtype = tf.as_dtype(dataset._block(dataset.epoch, 0)[1].dtype)

    def draw(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, targets = dataset._block(dataset.epoch, int(block))
        return rows.astype(np.int64, copy=False), targets

    def split(block: Any) -> Any:
        rows, targets = tf.numpy_function(
            draw, [block], [tf.int64, target_dtype], stateful=True
        )
        rows = tf.transpose(tf.reshape(rows, [parts, -1, items]), [1, 0, 2])
        targets = tf.reshape(targets, [-1, items])
        return tf.data.Dataset.from_tensor_slices((rows, targets))

    # Converting `x` copies it (0.03-0.8 s for MNIST): once per dataset, not
    # once per `fit`, `evaluate` or `predict` call.
    if dataset._tf_gathers is None:
        dataset._tf_gathers = keras.tree.map_structure(
            lambda leaf: _leaf_gather(tf, leaf, items), dataset._x
        )
    gathers = dataset._tf_gathers

    def batch(rows: Any, targets: Any) -> tuple:
        sides = [
            keras.tree.map_structure(lambda take, side=side: take(rows[side]), gathers)
            for side in range(parts)
        ]
        return dataset._structure(sides, targets)

    options = tf.data.Options()
    # As Keras' own array pipeline: tf.data's default graph rewrites only add
    # work here, and a distribution strategy shards by batch.
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return (
        tf.data.Dataset.range(num_blocks)
        .flat_map(split)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .with_options(options)
        .prefetch(tf.data.AUTOTUNE)
    )


def _leaf_gather(tf: Any, leaf: np.ndarray, items: int) -> Any:
    """A function from a batch's rows (a tensor) to those rows of `leaf`."""
    if not isinstance(leaf, np.memmap):
        values = tf.convert_to_tensor(leaf)
        return lambda rows: tf.gather(values, rows)

    def take(rows: Any) -> Any:
        gathered = tf.numpy_function(lambda r: gather(leaf, r), [rows], leaf.dtype)
        gathered.set_shape([items, *leaf.shape[1:]])
        return gathered

    return take
