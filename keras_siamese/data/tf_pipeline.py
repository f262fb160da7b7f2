"""The `tf.data` pipeline of the sampled datasets.

Keras feeds a `keras.utils.PyDataset` to a TensorFlow model through
`tf.data.Dataset.from_generator`, one Python call per batch. The pipeline
here calls Python once per block of batches, for the block's row indices, and
gathers the rows in the graph (benchmarks/README.md, "Data path", compares
the two). It uses only the public interface of `SampledDataset`.

TensorFlow is imported only when a pipeline is built, never at import.
"""

from __future__ import annotations

import importlib
from typing import Any

import keras
import numpy as np

from keras_siamese.data.sampling import gather


def block_pipeline(dataset: Any) -> Any:
    """A `tf.data.Dataset` of one epoch of `dataset`'s batches.

    A dataset whose batches are not plain rows of `x` (see
    `batches_are_rows`) is read through `dataset[i]`, one call per batch.
    Otherwise each block of batches is drawn by one `tf.numpy_function` call (the
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
    if not dataset.batches_are_rows:
        return batch_pipeline(tf, dataset)
    parts, items = dataset.num_branches, dataset.batch_size
    target_dtype = tf.as_dtype(dataset.block_rows(0)[1].dtype)

    def draw(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, targets = dataset.block_rows(int(block))
        return rows.astype(np.int64, copy=False), targets

    def split(block: Any) -> Any:
        rows, targets = tf.numpy_function(
            draw, [block], [tf.int64, target_dtype], stateful=True
        )
        rows = tf.transpose(tf.reshape(rows, [parts, -1, items]), [1, 0, 2])
        targets = tf.reshape(targets, [-1, items])
        return tf.data.Dataset.from_tensor_slices((rows, targets))

    # Converting `x` copies it: once per dataset, not once per `fit`,
    # `evaluate` or `predict` call.
    gathers = dataset.cache.get("tf_gathers")
    if gathers is None:
        gathers = keras.tree.map_structure(
            lambda leaf: _leaf_gather(tf, leaf, items), dataset.x
        )
        dataset.cache["tf_gathers"] = gathers

    def batch(rows: Any, targets: Any) -> tuple:
        sides = [
            keras.tree.map_structure(lambda take, side=side: take(rows[side]), gathers)
            for side in range(parts)
        ]
        return dataset.pack_batch(sides, targets)

    return (
        tf.data.Dataset.range(dataset.num_blocks)
        .flat_map(split)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .with_options(_options(tf))
        .prefetch(tf.data.AUTOTUNE)
    )


def _options(tf: Any) -> Any:
    options = tf.data.Options()
    # As Keras' own array pipeline: tf.data's default graph rewrites only add
    # work here, and a distribution strategy shards by batch.
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return options


def batch_pipeline(tf: Any, dataset: Any) -> Any:
    """A `tf.data.Dataset` that calls `dataset[i]` for every batch.

    For datasets whose batches are not plain rows of `x` (files read,
    augmentation, an overridden `__getitem__`): the batches are then those
    of `__getitem__` on every backend. Batches are made in parallel, in
    order; the element spec comes from one batch, made at the first call.
    """
    # The structure, shapes and dtypes of a batch, from one batch made once
    # per dataset (not once per `fit`, `evaluate` or `predict` call).
    spec = dataset.cache.get("tf_batch_spec")
    if spec is None:
        batch = dataset[0]
        leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(batch)]
        skeleton = keras.tree.map_structure(lambda _: None, batch)
        spec = (skeleton, [(leaf.shape, leaf.dtype) for leaf in leaves])
        dataset.cache["tf_batch_spec"] = spec
    structure, shapes = spec
    dtypes = [tf.as_dtype(dtype) for _, dtype in shapes]

    def make(index: np.ndarray) -> list:
        batch = keras.tree.flatten(dataset[int(index)])
        return [
            np.asarray(leaf, dtype=leaf_dtype.as_numpy_dtype)
            for leaf, leaf_dtype in zip(batch, dtypes)
        ]

    def load(index: Any) -> Any:
        tensors = tf.numpy_function(make, [index], dtypes, stateful=True)
        for tensor, (shape, _) in zip(tensors, shapes):
            tensor.set_shape(shape)
        return keras.tree.pack_sequence_as(structure, tensors)

    return (
        tf.data.Dataset.range(len(dataset))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .with_options(_options(tf))
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
