"""Data-parallel training on Keras' own engines, with simulated CPU devices.

Each test runs a subprocess, because the number of devices must be fixed
before the backend initialises: `XLA_FLAGS=--xla_force_host_platform_device_count=2`
for JAX, two logical CPU devices for TensorFlow. The subprocess trains two
small models on one device and then on two, and prints the loss curves:

- pairs: `PairDataset` + `ContrastiveLoss` (a per-pair loss);
- labelled batches: `ClassBalancedDataset` + `OnlineTripletLoss` (in-batch
  mining).

JAX's `DataParallel` runs one program over the global batch, so mining sees
the whole batch and both curves match one device. TensorFlow's
`MirroredStrategy` computes the loss on each replica's slice: per-pair losses
match one device, while mining happens within each replica's slice, which
`ClassBalancedDataset` keeps P x K-valid (whole class blocks per replica).
With `global_batch=True`, the labelled losses all-gather every replica's
rows under `MirroredStrategy`, so loss and gradients equal one device's on the
global batch (tested for every mining mode and every labelled loss, and for a
`fit` curve).

PyTorch: Keras' torch trainer has no data-parallel support in `fit` (see
`docs/distributed.md`), so there is nothing to test there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

# Shared by both engines. `EPOCH_SYNC` keeps each dataset's epoch equal to
# Keras' epoch: under tf.distribute, Keras iterates the dataset once more
# before training than on one device.
COMMON = textwrap.dedent(
    """
    import json
    import keras
    import numpy as np
    from keras_siamese import EuclideanDistance, SiameseWrapper
    from keras_siamese.data import ClassBalancedDataset, PairDataset
    from keras_siamese.losses import ContrastiveLoss, OnlineTripletLoss

    P, K = 4, 4

    def data():
        rng = np.random.default_rng(0)
        y = np.repeat(np.arange(8), 10)
        x = rng.normal(size=(8, 6))[y] + 0.5 * rng.normal(size=(len(y), 6))
        return x.astype("float32"), y

    def encoder():
        return keras.Sequential([
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4),
        ])

    def fit(model, dataset, learning_rate):
        sync = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: dataset.set_epoch(epoch)
        )
        model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=LOSS[0])
        history = model.fit(
            dataset, epochs=3, shuffle=False, verbose=0, callbacks=[sync]
        )
        return history.history["loss"]

    def pair_run(learning_rate=0.05):
        keras.utils.set_random_seed(0)
        inputs = [keras.Input((6,)), keras.Input((6,))]
        model = keras.Model(
            inputs, SiameseWrapper(encoder(), merge=EuclideanDistance())(inputs)
        )
        LOSS[0] = ContrastiveLoss()
        dataset = PairDataset(*data(), batch_size=16, steps_per_epoch=4, seed=0)
        return fit(model, dataset, learning_rate), model

    def labelled_dataset():
        return ClassBalancedDataset(
            *data(), classes_per_batch=P, samples_per_class=K,
            steps_per_epoch=4, seed=0,
        )

    def triplet_run(learning_rate=0.05, global_batch=False):
        keras.utils.set_random_seed(0)
        model = encoder()
        LOSS[0] = OnlineTripletLoss("batch_hard", global_batch=global_batch)
        return fit(model, labelled_dataset(), learning_rate), model

    LOSS = [None]
    """
)

JAX_SCRIPT = COMMON + textwrap.dedent(
    """
    import jax

    out = {"devices": len(jax.devices())}
    out["single"] = [pair_run()[0], triplet_run()[0]]
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices())
    )
    pair_curve, model = pair_run()
    out["weight_devices"] = len(model.trainable_variables[0].value.sharding.device_set)
    out["parallel"] = [pair_curve, triplet_run()[0]]
    print("RESULT", json.dumps(out))
    """
)

TF_SCRIPT = (
    textwrap.dedent(
        """
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        """
    )
    + COMMON
    + textwrap.dedent(
        """
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        out = {"devices": len(devices)}
        out["single"] = [pair_run()[0]]
        strategy = tf.distribute.MirroredStrategy(devices)
        out["replicas"] = strategy.num_replicas_in_sync
        with strategy.scope():
            out["parallel"] = [pair_run()[0]]
            # Learning rate 0: the weights stay put, so the curve can be
            # recomputed below from the batches alone.
            curve, model = triplet_run(learning_rate=0.0)
        out["parallel_triplet"] = curve
        loss = OnlineTripletLoss("batch_hard")
        dataset = labelled_dataset()
        whole, per_replica, slices_valid = [], [], True
        half = P * K // 2
        for epoch in range(3):
            dataset.set_epoch(epoch)
            whole.append([])
            per_replica.append([])
            for index in range(len(dataset)):
                x, y = dataset[index]
                embeddings = model(x)
                whole[-1].append(float(loss(y, embeddings)))
                parts = [slice(0, half), slice(half, None)]
                per_replica[-1].append(
                    np.mean([float(loss(y[s], embeddings[s])) for s in parts])
                )
                for s in parts:
                    _, counts = np.unique(y[s], return_counts=True)
                    slices_valid &= len(counts) == P // 2 and set(counts) == {K}
        out["whole_batch"] = [float(np.mean(e)) for e in whole]
        out["per_replica"] = [float(np.mean(e)) for e in per_replica]
        out["slices_valid"] = bool(slices_valid)
        print("RESULT", json.dumps(out))
        """
    )
)


GLOBAL_BATCH_SCRIPT = (
    textwrap.dedent(
        """
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        """
    )
    + COMMON
    + textwrap.dedent(
        """
        from keras_siamese.losses import (
            CircleLoss,
            MultiSimilarityLoss,
            NTXentLoss,
            SupervisedContrastiveLoss,
        )

        BUILD = {
            "batch_hard": lambda g: OnlineTripletLoss("batch_hard", global_batch=g),
            "batch_all": lambda g: OnlineTripletLoss("batch_all", global_batch=g),
            "semi_hard": lambda g: OnlineTripletLoss("semi_hard", global_batch=g),
            "supcon": lambda g: SupervisedContrastiveLoss(global_batch=g),
            "ntxent": lambda g: NTXentLoss(global_batch=g),
            "multi_similarity": lambda g: MultiSimilarityLoss(global_batch=g),
            "multi_similarity-mining": lambda g: MultiSimilarityLoss(
                mining=True, global_batch=g
            ),
            "circle": lambda g: CircleLoss(global_batch=g),
        }
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        replicas = strategy.num_replicas_in_sync
        rng = np.random.default_rng(1)
        # 16 rows, 5 classes in a random order: the two halves differ from
        # the whole batch in what they can mine.
        y = rng.permutation(np.arange(16) % 5).astype("float32")
        x = rng.normal(size=(16, 6)).astype("float32")
        half = len(y) // replicas
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = encoder()
        slices = lambda a: strategy.experimental_distribute_values_from_function(
            lambda context: a[
                context.replica_id_in_sync_group * half :
                (context.replica_id_in_sync_group + 1) * half
            ]
        )

        def gradients(loss, features, labels):
            # Under the strategy, Keras' reduction divides the loss by the
            # number of replicas, so the replicas' gradients add up.
            with tf.GradientTape() as tape:
                value = loss(labels, model(features))
            return value, tape.gradient(value, model.trainable_variables)

        out = {"replicas": replicas, "losses": {}}
        for name, build in BUILD.items():
            single_value, single_grads = gradients(build(False), x, y)
            result = {"single": float(single_value)}
            for global_batch in (True, False):
                loss = build(global_batch)
                step = tf.function(
                    lambda a, b: strategy.run(gradients, args=(loss, a, b))
                )
                values, grads = step(slices(x), slices(y))
                key = "global" if global_batch else "per_replica"
                result[key] = [
                    float(v) * replicas
                    for v in strategy.experimental_local_results(values)
                ]
                summed = [
                    strategy.reduce("SUM", g, axis=None) for g in grads
                ]
                # Relative to the largest entry of all gradients: a
                # translation-invariant loss has an exactly zero bias gradient.
                scale = max(float(np.max(np.abs(b.numpy()))) for b in single_grads)
                result[key + "_grad_error"] = max(
                    float(np.max(np.abs(a.numpy() - b.numpy()))) / scale
                    for a, b in zip(summed, single_grads)
                )
            out["losses"][name] = result
        out["single_curve"] = triplet_run()[0]
        with strategy.scope():
            out["global_curve"] = triplet_run(global_batch=True)[0]
        print("RESULT", json.dumps(out))
        """
    )
)


def _run(script: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
def test_jax_data_parallel_gives_the_single_device_loss_curves():
    out = _run(
        JAX_SCRIPT,
        {
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        },
    )
    assert out["devices"] == 2
    assert out["weight_devices"] == 2  # the variables live on both devices
    for single, parallel in zip(out["single"], out["parallel"]):
        assert np.all(np.isfinite(parallel))
        np.testing.assert_allclose(parallel, single, rtol=1e-5, atol=1e-6)


# Before Keras 3.10, `fit` under MirroredStrategy did not give the one-device
# loss curve for any model (a Dense model with Keras' own MSE loss included;
# keras-team/keras#19891): a Keras bug, not one of this package.
KERAS_SCALES_MIRRORED_LOSS = tuple(
    int(part) for part in keras.__version__.split(".")[:2]
) >= (3, 10)


# Not marked slow although each runs a subprocess: they run on one backend
# only, and the tensorflow and jax environments skip slow tests.
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute on TensorFlow")
@pytest.mark.skipif(
    not KERAS_SCALES_MIRRORED_LOSS,
    reason="Keras < 3.10 scales losses wrongly under MirroredStrategy",
)
def test_tf_mirrored_strategy_pairs_match_and_mining_is_per_replica():
    out = _run(TF_SCRIPT, {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out["devices"] == 2
    assert out["replicas"] == 2
    # A per-pair loss averages the same way over replicas as over one batch.
    np.testing.assert_allclose(out["parallel"][0], out["single"][0], rtol=1e-5)
    # In-batch mining sees each replica's half of the batch: the loss is the
    # mean of the two halves' losses, not the loss of the whole batch.
    np.testing.assert_allclose(out["parallel_triplet"], out["per_replica"], rtol=1e-5)
    assert not np.allclose(out["per_replica"], out["whole_batch"], rtol=1e-3)
    # Every replica's slice holds whole class blocks: P/2 classes x K each.
    assert out["slices_valid"]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute on TensorFlow")
@pytest.mark.skipif(
    not KERAS_SCALES_MIRRORED_LOSS,
    reason="Keras < 3.10 scales losses wrongly under MirroredStrategy",
)
def test_tf_mirrored_strategy_global_batch_equals_one_device():
    out = _run(
        GLOBAL_BATCH_SCRIPT,
        {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert out["replicas"] == 2
    for name, result in out["losses"].items():
        # Every replica computes the loss of the whole global batch...
        np.testing.assert_allclose(
            result["global"], [result["single"]] * 2, rtol=1e-5, err_msg=name
        )
        # ...and the summed gradients are one device's on that batch.
        assert result["global_grad_error"] < 1e-5, name
        # Control: without gathering, each replica's slice gives other numbers.
        assert not np.allclose(result["per_replica"], result["single"], rtol=1e-3), name
        assert result["per_replica_grad_error"] > 1e-3, name
    # And in `fit`: the same loss curve as one device.
    np.testing.assert_allclose(out["global_curve"], out["single_curve"], rtol=1e-5)


def test_global_batch_is_a_no_op_outside_a_strategy():
    from keras_siamese.losses import OnlineTripletLoss, SupervisedContrastiveLoss

    labels = np.array([0, 0, 1, 1, 2, 2, 0], "int32")
    x = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    for build in (
        lambda g: OnlineTripletLoss("semi_hard", global_batch=g),
        lambda g: SupervisedContrastiveLoss(global_batch=g),
    ):
        with_gather = keras.ops.convert_to_numpy(build(True)(labels, x))
        without = keras.ops.convert_to_numpy(build(False)(labels, x))
        np.testing.assert_array_equal(with_gather, without)
