"""Batch `i` of epoch `e` depends on `(seed, e, i)` only.

The worker tests run the datasets through `model.predict`, which drives a
`PyDataset` exactly as `fit` does (Keras' enqueuer, thread or process pools,
`on_epoch_begin`/`on_epoch_end`), on each backend's own data pipeline, with a
model that returns its inputs unchanged: row `i` of `x` is the number `i`, so
the predictions are the row indices of every batch, in order.
"""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import ClassBalancedDataset, PairDataset, TripletDataset
from keras_siamese.data import base

Y = np.random.default_rng(0).permutation(np.repeat(np.array(["a", "b", "c", "d"]), 12))
X = np.arange(len(Y), dtype=np.float32)[:, None]


def make(kind, seed=7, **kwargs):
    if kind == "pairs":
        return PairDataset(X, Y, batch_size=6, seed=seed, **kwargs)
    if kind == "triplets":
        return TripletDataset(X, Y, batch_size=6, seed=seed, **kwargs)
    return ClassBalancedDataset(X, Y, 3, 2, seed=seed, **kwargs)


KINDS = ["pairs", "triplets", "balanced"]


def flat_rows(dataset, index, epoch):
    rows = dataset.batch_indices(index, epoch)[0]
    return np.concatenate(rows) if isinstance(rows, tuple) else rows


def whole_epoch(dataset, epoch):
    return [flat_rows(dataset, i, epoch) for i in range(len(dataset))]


@pytest.mark.parametrize("kind", KINDS)
@given(seed=st.integers(0, 2**64), epoch=st.integers(0, 10**6))
def test_batches_depend_on_seed_epoch_and_index_only(kind, seed, epoch):
    first, second = make(kind, seed), make(kind, seed)
    # Different access order, different instance: same batches.
    forward = [flat_rows(first, i, epoch) for i in range(len(first))]
    backward = [flat_rows(second, i, epoch) for i in reversed(range(len(second)))]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward[::-1]))
    # `__getitem__` serves the current epoch.
    second.set_epoch(epoch)
    inputs, _ = second[1]
    gathered = np.concatenate(inputs) if isinstance(inputs, tuple) else inputs
    assert np.array_equal(gathered[:, 0], forward[1])
    # Another epoch, or another seed, gives other batches.
    assert not np.array_equal(
        np.concatenate(forward), np.concatenate(whole_epoch(first, epoch + 1))
    )
    other_seed = make(kind, seed + 1)
    assert not np.array_equal(
        np.concatenate(forward), np.concatenate(whole_epoch(other_seed, epoch))
    )


@pytest.mark.parametrize("kind", KINDS)
def test_seed_none_is_drawn_once_and_reproducible(kind):
    dataset = make(kind, seed=None)
    assert isinstance(dataset.seed, int) and dataset.seed >= 0
    assert make(kind, seed=None).seed != dataset.seed
    config = dataset.get_config()
    x_y = {"x": X, "y": Y}
    if kind == "balanced":
        rebuilt = ClassBalancedDataset(**x_y, **config)
    else:
        rebuilt = type(dataset)(**x_y, **config)
    assert rebuilt.get_config() == config
    for epoch in [0, 2]:
        assert all(
            np.array_equal(a, b)
            for a, b in zip(whole_epoch(dataset, epoch), whole_epoch(rebuilt, epoch))
        )


@pytest.mark.parametrize("kind", KINDS)
def test_pickled_copy_gives_the_same_batches(kind):
    dataset = make(kind, workers=2, use_multiprocessing=True)
    dataset.set_epoch(3)
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.epoch == 3 and copy.workers == 2 and copy.use_multiprocessing
    assert all(
        np.array_equal(a, b)
        for a, b in zip(whole_epoch(dataset, 3), whole_epoch(copy, 3))
    )


def test_only_a_closed_epoch_advances_the_counter():
    dataset = make("pairs")
    dataset.on_epoch_end()  # `fit` calls this once before training.
    assert dataset.epoch == 0
    for expected in [1, 2]:
        dataset.on_epoch_begin()
        assert dataset.epoch == expected - 1
        dataset.on_epoch_end()
        assert dataset.epoch == expected
    dataset.on_epoch_end()
    assert dataset.epoch == 2
    dataset.set_epoch(9)
    assert dataset.epoch == 9


def echo_model(kind):
    """A model whose prediction is the batch's row indices, inputs side by side."""
    count = {"pairs": 2, "triplets": 3, "balanced": 1}[kind]
    inputs = [keras.Input((1,)) for _ in range(count)]
    if count == 1:
        return keras.Model(inputs[0], keras.layers.Identity()(inputs[0]))
    return keras.Model(inputs, keras.layers.Concatenate(axis=0)(inputs))


def predicted_rows(kind, epochs=2, **kwargs):
    dataset = make(kind, **kwargs)
    model = echo_model(kind)
    return dataset, [model.predict(dataset, verbose=0)[:, 0] for _ in range(epochs)]


def expected_rows(dataset, epoch):
    # `Concatenate(axis=0)` stacks each batch's inputs one after the other,
    # which is the order `flat_rows` uses.
    return np.concatenate(whole_epoch(dataset, epoch)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_thread_workers_give_the_same_batches(kind):
    reference, serial = predicted_rows(kind, workers=1)
    _, threaded = predicted_rows(kind, workers=2, max_queue_size=2)
    for epoch in range(2):
        assert np.array_equal(serial[epoch], expected_rows(reference, epoch))
        assert np.array_equal(threaded[epoch], serial[epoch])
    assert not np.array_equal(serial[0], serial[1])
    assert reference.epoch == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_process_workers_give_the_same_batches(kind):
    reference, processes = predicted_rows(
        kind, epochs=3, workers=2, use_multiprocessing=True
    )
    # A new process pool starts each epoch, holding the advanced counter.
    for epoch in range(3):
        assert np.array_equal(processes[epoch], expected_rows(reference, epoch))
    assert not np.array_equal(processes[1], processes[2])


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of two batches, so that an epoch spans four of them."""
    monkeypatch.setattr(base, "_BLOCK_ITEMS", 12)


@pytest.mark.parametrize("kind", KINDS)
@given(seed=st.integers(0, 2**64), order=st.randoms(use_true_random=False))
def test_cached_blocks_match_uncached_draws(kind, seed, order):
    # Not a fixture: hypothesis runs every example under one fixture call.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "_BLOCK_ITEMS", 12)
        dataset = make(kind, seed)
        assert dataset._block_batches == 2
        requests = [(e, i) for e in range(3) for i in range(len(dataset))]
        order.shuffle(requests)
        for epoch, index in requests:
            # A fresh instance holds no block: it draws this one from scratch.
            expected = flat_rows(make(kind, seed), index, epoch)
            dataset.set_epoch(epoch)
            inputs, _ = dataset[index]
            gathered = np.concatenate(inputs) if isinstance(inputs, tuple) else inputs
            assert np.array_equal(gathered[:, 0], expected)
            assert np.array_equal(flat_rows(dataset, index, epoch), expected)


def count_draws(dataset, monkeypatch) -> list:
    draws = []
    sample = type(dataset)._sample

    def counting(self, rng, count):
        draws.append(count)
        return sample(self, rng, count)

    monkeypatch.setattr(type(dataset), "_sample", counting)
    return draws


@pytest.mark.parametrize("kind", KINDS)
def test_shuffled_batch_order_draws_each_block_once(kind, small_blocks, monkeypatch):
    # Keras' fit(shuffle=True) asks for an epoch's batches in random order.
    dataset = make(kind)
    draws = count_draws(dataset, monkeypatch)
    order = np.random.default_rng(0).permutation(len(dataset))
    for index in [*order, *order]:
        dataset[int(index)]
    blocks = -(-len(dataset) // dataset._block_batches)
    assert blocks > 1
    assert len(draws) == blocks
    dataset.set_epoch(1)
    dataset[0]
    assert len(draws) == blocks + 1
    # Blocks of a finished epoch are not kept.
    assert {epoch for epoch, _ in dataset._blocks} == {1}


@pytest.mark.parametrize("kind", KINDS)
def test_block_cache_is_bounded(kind, small_blocks, monkeypatch):
    monkeypatch.setattr(base, "_CACHED_ITEMS", 24)  # two blocks of 12 items
    dataset = make(kind)
    draws = count_draws(dataset, monkeypatch)
    blocks = -(-len(dataset) // dataset._block_batches)
    assert blocks > 2
    for index in range(len(dataset)):
        dataset[index]
    assert len(dataset._blocks) == 2
    # The two newest blocks are kept, the oldest is drawn again.
    dataset[len(dataset) - 1]
    dataset[0]
    assert len(draws) == blocks + 1


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_of_an_epoch_are_independent(kind, small_blocks):
    dataset = make(kind)
    batches = whole_epoch(dataset, 0)
    # Batch `j` of one block is not batch `j` of another: each block draws
    # from its own stream, seeded with its own number.
    for first in range(0, len(batches), 2):
        for second in range(first + 2, len(batches), 2):
            assert not np.array_equal(batches[first], batches[second])


@pytest.mark.parametrize("kind", KINDS)
def test_writing_into_a_batch_leaves_later_batches_unchanged(kind):
    dataset = make(kind)
    expected = dataset.batch_indices(2)
    _, targets = dataset[2]
    targets[...] = -1
    rows, _ = dataset.batch_indices(2)
    for side in rows if isinstance(rows, tuple) else [rows]:
        side[...] = 0
    again_rows, again_targets = dataset.batch_indices(2)
    assert np.array_equal(again_targets, expected[1])
    for side, original in zip(
        again_rows if isinstance(again_rows, tuple) else [again_rows],
        expected[0] if isinstance(expected[0], tuple) else [expected[0]],
    ):
        assert np.array_equal(side, original)
    assert np.array_equal(dataset[2][1], expected[1])


@pytest.mark.parametrize("kind", KINDS)
def test_pickles_leave_the_drawn_block_behind(kind):
    dataset = make(kind)
    size = len(pickle.dumps(dataset))
    dataset[0]
    assert len(pickle.dumps(dataset)) == size


@pytest.mark.parametrize("kind", KINDS)
def test_thread_workers_agree_across_blocks(kind, small_blocks):
    reference, serial = predicted_rows(kind, workers=1)
    _, threaded = predicted_rows(kind, workers=3, max_queue_size=2)
    for epoch in range(2):
        assert np.array_equal(serial[epoch], expected_rows(reference, epoch))
        assert np.array_equal(threaded[epoch], serial[epoch])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_process_workers_agree_across_blocks(small_blocks):
    reference, processes = predicted_rows(
        "pairs", epochs=2, workers=2, use_multiprocessing=True
    )
    for epoch in range(2):
        assert np.array_equal(processes[epoch], expected_rows(reference, epoch))
