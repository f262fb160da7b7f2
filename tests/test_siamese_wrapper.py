"""SiameseWrapper: weight sharing, merges, model styles, reproduction by hand."""

import keras
import numpy as np
import pytest

from keras_siamese import (
    ContrastiveLoss,
    EuclideanDistance,
    PairAccuracy,
    PairDataset,
    SiameseWrapper,
)
from tests.helpers import to_numpy, value_and_grad


def mlp(in_dim=5, hidden=7, out=3, seed=0):
    return keras.Sequential(
        [
            keras.Input((in_dim,)),
            keras.layers.Dense(
                hidden,
                activation="tanh",
                kernel_initializer=keras.initializers.GlorotUniform(seed),
            ),
            keras.layers.Dense(
                out, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
            ),
        ]
    )


def pair_model(encoder, merge=None, in_dim=5):
    a, b = keras.Input((in_dim,)), keras.Input((in_dim,))
    return keras.Model([a, b], SiameseWrapper(encoder, merge=merge)([a, b]))


def data(n=16, in_dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, in_dim)).astype("float32") for _ in range(3)]


def test_one_set_of_weights():
    encoder = mlp()
    model = pair_model(encoder, EuclideanDistance())
    assert len(model.trainable_weights) == len(encoder.trainable_weights) == 4
    wrapper = model.layers[-1]
    assert [id(w) for w in wrapper.weights] == [id(w) for w in encoder.weights]
    assert model.count_params() == encoder.count_params()


def test_updating_weights_changes_every_branch():
    encoder = mlp()
    wrapper = SiameseWrapper(encoder)
    x1, x2, x3 = data()
    before = [to_numpy(t) for t in wrapper([x1, x2, x3])]
    kernel = encoder.layers[0].kernel
    kernel.assign(kernel + 0.5)
    after = [to_numpy(t) for t in wrapper([x1, x2, x3])]
    for old, new, x in zip(before, after, (x1, x2, x3)):
        assert not np.allclose(old, new)
        np.testing.assert_allclose(new, to_numpy(encoder(x)), rtol=1e-6)


def test_gradient_of_shared_kernel_is_sum_over_branches():
    """Seed 001: the shared variable receives the sum of both branches' gradients."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 8, 4)).astype("float32")
    kernel = rng.normal(size=(4, 3)).astype("float32")
    layer = keras.layers.Dense(3, use_bias=False)
    layer.build((None, 4))
    wrapper = SiameseWrapper(layer)
    wrapper.build([(None, 4), (None, 4)])
    assert len(wrapper.trainable_variables) == 1

    # Branch 1 contributes sum(f(x1)^2), branch 2 contributes sum(3 f(x2)).
    def loss(k, use_first=True, use_second=True):
        (out1, out2), _ = wrapper.stateless_call([k], [], [x1, x2])
        total = keras.ops.sum(out1**2) if use_first else 0.0
        if use_second:
            total = total + keras.ops.sum(3.0 * out2)
        return total

    _, (both,) = value_and_grad(loss, kernel)
    _, (first,) = value_and_grad(lambda k: loss(k, use_second=False), kernel)
    _, (second,) = value_and_grad(lambda k: loss(k, use_first=False), kernel)
    np.testing.assert_allclose(both, first + second, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first, 2 * x1.T @ (x1 @ kernel), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        second, x2.T @ np.full((8, 3), 3.0), rtol=1e-4, atol=1e-4
    )

    # A real optimizer step moves the one kernel by the summed gradient.
    layer.kernel.assign(kernel)
    inputs = [keras.Input((4,)), keras.Input((4,))]
    model = keras.Model(inputs, wrapper(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=[_sum_of_squares, _three_times_sum],
    )
    model.train_on_batch([x1, x2], [np.zeros((8, 3)), np.zeros((8, 3))])
    # Keras averages each per-sample loss over the batch of 8.
    step = kernel - to_numpy(layer.kernel)
    np.testing.assert_allclose(step * 8, both, rtol=1e-3, atol=1e-3)


def _sum_of_squares(y_true, y_pred):
    return keras.ops.sum(y_pred**2, axis=-1)


def _three_times_sum(y_true, y_pred):
    return keras.ops.sum(3.0 * y_pred, axis=-1)


def test_reproduce_predictions_by_hand_after_training():
    """Seeds 000 and 002: z = x @ W + b with the kernel stored as (in, out)."""
    encoder = mlp(in_dim=5, hidden=7, out=3)
    a, b = keras.Input((5,)), keras.Input((5,))
    merged = SiameseWrapper(encoder, merge="concat")([a, b])
    head = keras.layers.Dense(1)
    model = keras.Model([a, b], head(merged))
    model.compile(optimizer="sgd", loss="mse")
    x1, x2, _ = data(32)
    y = 0.1 * x1[:, :1] - 0.2 * x2[:, 1:2]
    model.fit([x1, x2], y, epochs=3, batch_size=8, verbose=0)

    w1, b1, w2, b2, w_head, b_head = model.get_weights()
    assert w1.shape == (5, 7) and w2.shape == (7, 3)  # kernels are (in, out)

    def encode(x):
        return np.tanh(x @ w1 + b1) @ w2 + b2

    by_hand = np.concatenate([encode(x1), encode(x2)], axis=1) @ w_head + b_head
    np.testing.assert_allclose(
        model.predict([x1, x2], verbose=0), by_hand, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("n", [2, 3, 5])
def test_merge_modes_shapes_and_values(n):
    encoder = mlp()
    xs = [
        np.random.default_rng(i).normal(size=(4, 5)).astype("float32") for i in range(n)
    ]
    expected = [to_numpy(encoder(x)) for x in xs]
    listed = SiameseWrapper(encoder)(xs)
    assert isinstance(listed, tuple) and len(listed) == n
    for got, want in zip(listed, expected):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6)
    stacked = to_numpy(SiameseWrapper(encoder, merge="stack")(xs))
    assert stacked.shape == (4, n, 3)
    np.testing.assert_allclose(stacked, np.stack(expected, axis=1), rtol=1e-6)
    concat = to_numpy(SiameseWrapper(encoder, merge="concat")(tuple(xs)))
    np.testing.assert_allclose(concat, np.concatenate(expected, axis=-1), rtol=1e-6)


def test_merge_layer_gives_distance():
    encoder = mlp()
    x1, x2, _ = data(6)
    out = to_numpy(SiameseWrapper(encoder, merge=EuclideanDistance())([x1, x2]))
    e1, e2 = to_numpy(encoder(x1)), to_numpy(encoder(x2))
    np.testing.assert_allclose(
        out, np.linalg.norm(e1 - e2, axis=1, keepdims=True), rtol=1e-5
    )


def test_works_in_sequential_and_subclassed_models():
    encoder = mlp()
    x1, x2, _ = data(4)
    expected = np.linalg.norm(to_numpy(encoder(x1)) - to_numpy(encoder(x2)), axis=1)

    class PairNet(keras.Model):
        def __init__(self, encoder):
            super().__init__()
            self.siamese = SiameseWrapper(encoder, merge=EuclideanDistance())

        def call(self, inputs):
            return self.siamese(inputs)

    subclassed = PairNet(encoder)
    np.testing.assert_allclose(
        to_numpy(subclassed([x1, x2]))[:, 0], expected, rtol=1e-5
    )
    assert len(subclassed.trainable_weights) == 4

    sequential = keras.Sequential([SiameseWrapper(encoder, merge="stack")])
    stacked = to_numpy(sequential([x1, x2]))
    assert stacked.shape == (4, 2, 3)
    np.testing.assert_allclose(
        np.linalg.norm(stacked[:, 0] - stacked[:, 1], axis=1), expected, rtol=1e-5
    )


@pytest.mark.parametrize(
    "encoder_factory",
    [
        lambda: keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
            ]
        ),
        lambda: keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4)]),
    ],
    ids=["cnn", "lstm"],
)
def test_cnn_and_lstm_encoders(encoder_factory):
    encoder = encoder_factory()
    shape = encoder.input_shape[1:]
    rng = np.random.default_rng(0)
    x1, x2 = (rng.normal(size=(3, *shape)).astype("float32") for _ in range(2))
    inputs = [keras.Input(shape), keras.Input(shape)]
    model = keras.Model(inputs, SiameseWrapper(encoder, merge="stack")(inputs))
    out = model.predict([x1, x2], verbose=0)
    assert out.shape == (3, 2, 4)
    np.testing.assert_allclose(out[:, 1], to_numpy(encoder(x2)), rtol=1e-5, atol=1e-6)
    assert len(model.trainable_weights) == len(encoder.trainable_weights)


def test_multi_input_encoder_with_dict_branches():
    image = keras.Input((4,), name="image")
    meta = keras.Input((2,), name="meta")
    joined = keras.layers.Concatenate()([image, meta])
    encoder = keras.Model({"image": image, "meta": meta}, keras.layers.Dense(3)(joined))
    rng = np.random.default_rng(0)
    left = {"image": rng.normal(size=(5, 4)), "meta": rng.normal(size=(5, 2))}
    right = {"image": rng.normal(size=(5, 4)), "meta": rng.normal(size=(5, 2))}
    out = to_numpy(SiameseWrapper(encoder, merge="stack")([left, right]))
    assert out.shape == (5, 2, 3)
    np.testing.assert_allclose(out[:, 0], to_numpy(encoder(left)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("merge", [None, "stack"])
def test_fused_branches_match_separate_calls(merge):
    encoder = mlp()
    xs = data(6)
    separate = SiameseWrapper(encoder, merge=merge)(xs)
    fused = SiameseWrapper(encoder, merge=merge, fuse_branches=True)(xs)
    for got, want in zip(keras.tree.flatten(fused), keras.tree.flatten(separate)):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-6)


def test_fusion_falls_back_for_batch_norm_in_training():
    encoder = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4), keras.layers.BatchNormalization()]
    )
    x1, x2, _ = data(8)
    x2 = x2 * 10 + 3  # very different batch statistics per branch
    fused = SiameseWrapper(encoder, fuse_branches=True)
    separate = SiameseWrapper(encoder)
    fused_out = fused([x1, x2], training=True)
    separate_out = separate([x1, x2], training=True)
    for got, want in zip(fused_out, separate_out):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-5)
    # In inference batch norm is per-sample, so fusion is used and exact.
    for got, want in zip(fused([x1, x2]), separate([x1, x2])):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-5)


def test_training_flag_reaches_the_shared_layer():
    encoder = keras.Sequential([keras.Input((5,)), keras.layers.Dropout(0.5)])
    x = np.ones((64, 5), "float32")
    wrapper = SiameseWrapper(encoder)
    inference = wrapper([x, x], training=False)
    np.testing.assert_array_equal(to_numpy(inference[0]), x)
    training = to_numpy(wrapper([x, x], training=True)[0])
    assert (training == 0).any()


def test_bad_inputs_raise_clear_errors():
    wrapper = SiameseWrapper(mlp())
    x = np.zeros((2, 5), "float32")
    with pytest.raises(TypeError, match="list or tuple"):
        wrapper(x)
    with pytest.raises(ValueError, match="at least two inputs"):
        wrapper([x])
    with pytest.raises(ValueError, match="same structure and shape"):
        SiameseWrapper(mlp())([x, np.zeros((2, 6), "float32")])
    with pytest.raises(ValueError, match="same structure and shape"):
        SiameseWrapper(mlp())([keras.Input((5,)), keras.Input((4,))])


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="merge"):
        SiameseWrapper(mlp(), merge="sum")
    with pytest.raises(TypeError, match="merge"):
        SiameseWrapper(mlp(), merge=lambda outputs: outputs[0])
    with pytest.raises(TypeError, match="layer"):
        SiameseWrapper(lambda x: x)
    with pytest.raises(TypeError, match="fuse_branches"):
        SiameseWrapper(mlp(), fuse_branches="yes")


def test_fused_branches_in_functional_model_train_like_separate_ones():
    xs = data(12)
    target = np.zeros((12, 3, 3), "float32")
    results = []
    for fuse in (False, True):
        keras.utils.set_random_seed(0)
        inputs = [keras.Input((5,)) for _ in range(3)]
        wrapper = SiameseWrapper(mlp(), merge="stack", fuse_branches=fuse)
        model = keras.Model(inputs, wrapper(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        history = model.fit(
            xs, target, epochs=3, batch_size=4, shuffle=False, verbose=0
        )
        results.append((history.history["loss"], model.predict(xs, verbose=0)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


def test_fuse_branches_default_is_chosen_per_backend_and_saved_as_none():
    wrapper = SiameseWrapper(mlp())
    # Measured in benchmarks/bench_branches.py: fusing only pays on eager torch.
    assert wrapper._can_fuse(training=True) == (keras.backend.backend() == "torch")
    assert wrapper.get_config()["fuse_branches"] is None
    assert SiameseWrapper(mlp(), fuse_branches=False)._can_fuse(training=None) is False


@pytest.mark.slow
def test_jit_compiled_training_matches_the_default():
    # jit_compile=True is torch.compile on PyTorch and XLA on TensorFlow;
    # bench_training.py measures it 1.7x faster than eager on PyTorch.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    pairs = PairDataset(x, np.arange(64) % 4, batch_size=8, steps_per_epoch=4, seed=0)
    results = []
    for jit_compile in ("auto", True):
        model = pair_model(mlp(), merge=EuclideanDistance())
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=ContrastiveLoss(),
            metrics=[PairAccuracy()],
            jit_compile=jit_compile,
        )
        pairs.set_epoch(0)
        history = model.fit(pairs, epochs=2, shuffle=False, verbose=0)
        results.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for eager, compiled in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(eager, compiled, rtol=1e-4, atol=1e-6)
