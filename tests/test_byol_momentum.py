"""BYOL's target network over several training steps: NumPy and lightly, live.

Each reference keeps its own copy of the target, started from the online
weights and updated only by its own rule from the online weights before each
step, so an error in the model's update or schedule accumulates instead of
being reset at every step.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_siamese import BYOL
from tests import lightly_reference

STEPS = 6  # the schedule's length
TRAINED = 9  # steps run: past the end of the schedule too
START = 0.8


def schedule(step):
    """The cosine momentum schedule, from its definition (Grill et al. 2020)."""
    if step >= STEPS - 1:
        return 1.0
    return 1.0 - (1.0 - START) * (np.cos(np.pi * step / (STEPS - 1)) + 1.0) / 2.0


def model_and_batch():
    keras.utils.set_random_seed(7)
    encoder = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation="relu")]
    )
    model = BYOL(
        encoder,
        momentum_steps=STEPS,
        projection_hidden_dim=10,
        projection_dim=5,
        prediction_hidden_dim=10,
        start_momentum=START,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.2))
    rng = np.random.default_rng(0)
    examples = rng.normal(size=(8, 4))
    # Two views of 8 examples, stacked on the batch axis.
    x = np.concatenate([examples, examples + rng.normal(0.0, 0.1, size=(8, 4))])
    batch = x.astype("float32"), np.zeros(16, "float32")
    model(batch[0])
    return model, batch


def trainable_pairs(model):
    # The target follows the online network's trainable variables (weights,
    # biases, batch-norm scales and offsets), as lightly's `update_momentum`
    # follows `parameters()`; batch-norm statistics (buffers) keep their own.
    return [(t, o) for t, o in model._pairs() if o.trainable]


def numpy_of(variables):
    return [keras.ops.convert_to_numpy(v).astype(np.float64) for v in variables]


def run_against(reference, momentum_of):
    """Train and compare the model's target with a reference's after every step.

    `reference(start)` makes the reference from the initial online weights
    (which the target starts as): a function `update(online_before, m)`
    that moves its own target and returns it. `momentum_of(step)` is the
    reference's momentum.
    """
    model, (x, y) = model_and_batch()
    pairs = trainable_pairs(model)
    assert pairs and all(not t.trainable for t, _ in pairs)
    update = reference(numpy_of([o for _, o in pairs]))
    moved = 0.0
    for step in range(TRAINED):
        online_before = numpy_of([o for _, o in pairs])
        expected = update(online_before, momentum_of(step))
        model.train_on_batch(x, y)
        got = numpy_of([t for t, _ in pairs])
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
        after = numpy_of([o for _, o in pairs])
        moved = max(
            moved, max(np.abs(a - b).max() for a, b in zip(after, online_before))
        )
    # The online network trained, so a target that copied it or stood still
    # would have failed the comparisons.
    assert moved > 1e-3
    return model


def test_target_follows_a_numpy_moving_average_over_several_steps():
    def reference(start):
        target = [a.copy() for a in start]

        def update(online, m):
            for i, o in enumerate(online):
                target[i] = m * target[i] + (1.0 - m) * o
            return target

        return update

    model = run_against(reference, schedule)
    assert int(keras.ops.convert_to_numpy(model.momentum_step)) == TRAINED


def load_lightly():
    pytest.importorskip("torch")
    try:
        utils = lightly_reference.load(
            "models/utils.py",
            stubs={
                "torchvision": {},
                "torchvision.ops": {"StochasticDepth": object},
                "lightly": {},
                "lightly.utils": {"dependency": None},
            },
        )
        scheduler = lightly_reference.load("utils/scheduler.py")
    except ModuleNotFoundError:
        pytest.skip("lightly is installed in the torch environment only")
    return utils.update_momentum, scheduler.cosine_schedule


def test_target_follows_lightlys_update_momentum_and_cosine_schedule():
    update_momentum, cosine_schedule = load_lightly()
    import torch

    def module(arrays):
        return torch.nn.ParameterList(
            [torch.nn.Parameter(torch.tensor(a, dtype=torch.float32)) for a in arrays]
        )

    def reference(start):
        online_module, target_module = module(start), module(start)

        def update(online, m):
            with torch.no_grad():
                for parameter, value in zip(online_module, online):
                    parameter.copy_(torch.from_numpy(value))
            update_momentum(online_module, target_module, m)
            return [p.detach().numpy().astype(np.float64) for p in target_module]

        return update

    # lightly's schedule gives the end value from step `max_steps - 1` on
    # (and warns past `max_steps`, hence the cap, which changes no value).
    run_against(
        reference, lambda step: cosine_schedule(min(step, STEPS), STEPS, START, 1.0)
    )
    for step in range(TRAINED):
        assert schedule(step) == pytest.approx(
            cosine_schedule(min(step, STEPS), STEPS, START, 1.0), abs=1e-12
        )
