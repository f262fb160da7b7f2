"""Augmentation and views: seeded per batch, the same through every data path.

The model-driven tests read the datasets through `model.predict`, which uses
each backend's own data path (Keras' PyDataset enqueuer on JAX and PyTorch,
the dataset's `tf.data` pipeline on TensorFlow), with a model that returns
its inputs, and compare with batches made independently in NumPy.
"""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest

from keras_siamese import ClassBalancedDataset, PairDataset, TripletDataset
from keras_siamese.data.augment import batch_seed
from keras_siamese.data.images import resize

Y = np.repeat(np.arange(4), 6)
X = np.arange(len(Y), dtype=np.float32)[:, None]  # row i holds i


def noise(images, seed):
    """A NumPy augmentation: adds uniform noise drawn from the batch seed."""
    rng = np.random.default_rng(seed)
    return images + rng.uniform(0.0, 0.5, size=images.shape).astype(images.dtype)


def make(kind, x=X, **kwargs):
    kwargs.setdefault("seed", 5)
    if kind == "pairs":
        return PairDataset(x, Y, batch_size=4, **kwargs)
    if kind == "triplets":
        return TripletDataset(x, Y, batch_size=4, **kwargs)
    return ClassBalancedDataset(x, Y, 2, 2, **kwargs)


KINDS = ["pairs", "triplets", "balanced"]


def branches(inputs):
    return list(inputs) if isinstance(inputs, tuple) else [inputs]


def expected_batch(dataset, index, epoch, augment=noise):
    """Batch `index` of `epoch` made from its rows, seeds and `augment` alone."""
    rows, targets = dataset.batch_indices(index, epoch)
    size = dataset.batch_size
    sides = []
    for branch, side_rows in enumerate(branches(rows)):
        views = [
            augment(
                X[side_rows[view * size : (view + 1) * size]],
                seed=batch_seed(dataset.seed, epoch, index, branch, view),
            )
            for view in range(dataset.views)
        ]
        sides.append(np.concatenate(views))
    return sides, targets


def echo_model(count, shape=(1,)):
    inputs = [keras.Input(shape) for _ in range(count)]
    if count == 1:
        return keras.Model(inputs[0], keras.layers.Identity()(inputs[0]))
    return keras.Model(inputs, keras.layers.Concatenate(axis=0)(inputs))


@pytest.mark.parametrize("kind", KINDS)
def test_callable_gets_a_seed_per_batch_branch_and_view(kind):
    dataset = make(kind, augment=noise, views=2)
    for epoch in (0, 3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            inputs, targets = dataset[index]
            sides, expected_targets = expected_batch(dataset, index, epoch)
            np.testing.assert_array_equal(targets, expected_targets)
            for got, expected in zip(branches(inputs), sides):
                assert got.shape == (2 * dataset.batch_size, 1)
                np.testing.assert_array_equal(got, expected)


def test_views_differ_but_are_reproducible():
    flips = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical"),
            keras.layers.RandomCrop(3, 3),
        ]
    )
    images = np.random.default_rng(0).normal(size=(24, 5, 5, 2)).astype(np.float32)
    first = make("balanced", x=images, augment=flips, views=3)
    second = make("balanced", x=images, augment=flips, views=3)
    x, labels = first[1]
    assert x.shape == (12, 3, 3, 2)
    np.testing.assert_array_equal(labels, np.tile(labels[:4], 3))
    views = x.reshape(3, 4, 3, 3, 2)
    assert not np.array_equal(views[0], views[1])
    assert not np.array_equal(views[1], views[2])
    again, _ = second[1]
    np.testing.assert_array_equal(x, again)
    # The layers' own generators are not used: calling the pipeline between
    # two reads changes nothing.
    flips(images[:2], training=True)
    np.testing.assert_array_equal(first[1][0], x)
    first.set_epoch(1)
    assert not np.array_equal(first[1][0], x)


def test_each_branch_gets_its_own_draw():
    same = np.zeros((24, 4, 4, 1), np.float32)  # every example identical
    same[:, 0, :2] = 1.0  # but not symmetric, so that flips show
    flips = keras.layers.RandomFlip("horizontal_and_vertical")
    (left, right), _ = make("pairs", x=same, augment=flips, seed=0)[0]
    assert not np.array_equal(left, right)


def test_views_and_augment_are_checked():
    with pytest.raises(ValueError, match=r"views=2.*augment"):
        make("balanced", views=2)
    with pytest.raises(ValueError, match="views"):
        make("balanced", augment=noise, views=0)
    with pytest.raises(TypeError, match="augment"):
        make("balanced", augment="flip")
    with pytest.raises(TypeError, match="own generator"):
        make("balanced", augment=keras.layers.Dropout(0.5))
    # Also inside a nested pipeline or a functional model.
    inner = keras.Sequential([keras.layers.RandomFlip(), keras.layers.GaussianNoise(1)])
    with pytest.raises(TypeError, match="gaussian_noise"):
        make("balanced", augment=keras.Sequential([inner]))
    inputs = keras.Input((1,))
    noisy = keras.Model(inputs, keras.layers.GaussianNoise(1.0)(inputs))
    with pytest.raises(TypeError, match="own generator"):
        make("balanced", augment=noisy)
    with pytest.raises(TypeError, match="single input"):
        make("pairs", x=(X, X), augment=noise)


@pytest.mark.parametrize("kind", KINDS)
def test_augmented_batches_are_the_same_with_thread_workers(kind):
    flips = keras.Sequential([keras.layers.RandomFlip(), keras.layers.RandomCrop(3, 3)])
    images = np.random.default_rng(1).normal(size=(24, 4, 4, 1)).astype(np.float32)
    count = {"pairs": 2, "triplets": 3, "balanced": 1}[kind]
    model = echo_model(count, (3, 3, 1))
    runs = []
    for workers in (1, 2):
        dataset = make(
            kind, x=images, augment=flips, views=2, workers=workers, max_queue_size=2
        )
        runs.append([model.predict(dataset, verbose=0) for _ in range(2)])
    for serial, threaded in zip(*runs):
        np.testing.assert_array_equal(serial, threaded)
    assert not np.array_equal(runs[0][0], runs[0][1])  # epochs differ


@pytest.mark.parametrize("kind", KINDS)
def test_every_backend_feeds_the_numpy_reference(kind):
    # A NumPy augmentation gives the same batches on every backend: each
    # backend's data path is checked against the same NumPy construction.
    dataset = make(kind, augment=noise, views=2)
    count = {"pairs": 2, "triplets": 3, "balanced": 1}[kind]
    model = echo_model(count)
    for epoch in range(2):
        predicted = model.predict(dataset, verbose=0)
        expected = []
        for index in range(len(dataset)):
            sides, _ = expected_batch(dataset, index, epoch)
            expected.append(np.concatenate(sides))
        np.testing.assert_array_equal(predicted, np.concatenate(expected))


class PlusHundred(PairDataset):
    """Adds 100 to every input in `__getitem__`."""

    def __getitem__(self, index):
        (left, right), same = super().__getitem__(index)
        return (left + 100.0, right + 100.0), same


def test_an_overridden_getitem_is_used_on_every_backend():
    dataset = PlusHundred(X, Y, batch_size=4, seed=0)
    assert not dataset.batches_are_rows
    predicted = echo_model(2).predict(dataset, verbose=0)[:, 0]
    rows = np.concatenate(
        [np.concatenate(dataset.batch_indices(i, 0)[0]) for i in range(len(dataset))]
    )
    np.testing.assert_array_equal(predicted, rows + 100.0)


def test_file_backed_augmented_batches_through_predict(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(4)
    originals = {}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        for k in range(2):
            pixels = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
            path = tmp_path / name / f"{k}.png"
            image_module.fromarray(pixels).save(path)
            originals[str(path)] = pixels
    dataset = ClassBalancedDataset.from_directory(
        tmp_path,
        image_size=(4, 5),
        classes_per_batch=2,
        samples_per_class=2,
        seed=0,
        augment=noise,
        views=2,
    )
    predicted = echo_model(1, (4, 5, 3)).predict(dataset, verbose=0)
    expected = []
    for index in range(len(dataset)):
        rows, _ = dataset.batch_indices(index, 0)
        views = []
        for view in range(2):
            images = np.stack(
                [
                    resize(originals[dataset.x[row]], (4, 5), "bilinear")
                    for row in rows[view * 4 : (view + 1) * 4]
                ]
            )
            views.append(noise(images, seed=batch_seed(0, 0, index, 0, view)))
        expected.append(np.concatenate(views))
    np.testing.assert_array_equal(predicted, np.concatenate(expected))


def flipping_dataset(**kwargs):
    flips = keras.Sequential([keras.layers.RandomFlip(), keras.layers.RandomCrop(3, 3)])
    images = np.random.default_rng(1).normal(size=(24, 4, 4, 1)).astype(np.float32)
    return make("balanced", x=images, augment=flips, views=2, **kwargs)


def test_pickled_copy_augments_alike():
    dataset = flipping_dataset()
    dataset.set_epoch(2)
    copy = pickle.loads(pickle.dumps(dataset))
    for index in range(len(dataset)):
        np.testing.assert_array_equal(copy[index][0], dataset[index][0])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_augmented_batches_are_the_same_with_process_workers():
    model = echo_model(1, (3, 3, 1))
    serial = model.predict(flipping_dataset(), verbose=0)
    processes = model.predict(
        flipping_dataset(workers=2, use_multiprocessing=True), verbose=0
    )
    np.testing.assert_array_equal(processes, serial)


def test_single_example_classes_with_views_give_simclr_batches():
    ids = np.arange(24)
    dataset = ClassBalancedDataset(X, ids, 6, 1, seed=0, augment=noise, views=2)
    x, labels = dataset[0]
    assert x.shape == (12, 1)
    np.testing.assert_array_equal(labels[:6], labels[6:])
    assert len(set(labels[:6].tolist())) == 6
    # Both views are of the same image: the noise is below 0.5.
    np.testing.assert_array_equal(np.floor(x[:6]), np.floor(x[6:]))
    np.testing.assert_array_equal(np.floor(x[:6, 0]), labels[:6])
    assert not np.array_equal(x[:6], x[6:])
    with pytest.raises(ValueError, match="samples_per_class"):
        ClassBalancedDataset(X, ids, 6, 1, seed=0)
    with pytest.raises(ValueError, match="only one"):
        ClassBalancedDataset(X, ids, 6, 2, seed=0)


def test_tensor_seeds_draw_what_a_seed_generator_draws():
    from keras_siamese.data.augment import TensorSeeds, seed_dtype

    for seed in (1, 12345, 2**31 - 1):
        generator = keras.random.SeedGenerator(seed)
        seeds = TensorSeeds(keras.ops.convert_to_tensor(seed, "int32"), seed_dtype())
        for _ in range(3):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(seeds.next()),
                keras.ops.convert_to_numpy(generator.next()),
            )
        # Random numbers drawn with either are the same.
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(keras.random.uniform((4,), seed=seeds)),
            keras.ops.convert_to_numpy(keras.random.uniform((4,), seed=generator)),
        )
