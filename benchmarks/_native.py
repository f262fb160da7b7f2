"""The seed MLP Siamese model written in each backend's own framework, no Keras.

Two loops per backend, both on pair arrays already on the device:

- `training_loop`: the recipe's full training step (encoder with dropout,
  Euclidean distance with the recipe's epsilon, contrastive loss, RMSprop
  written out or PyTorch's), the `c_native` variant of `bench_training.py`;
- `matmul_loop`: only the encoder's matrix products, forward and backward,
  for both branches (Dense and ReLU, no dropout, loss arithmetic or weight
  update), the `d_matmuls` variant. It does the same matmul FLOPs as a
  training step and nothing else, so it is the most any implementation of
  this model can reach with this framework's kernels at these shapes.

Each returns a callable that runs one epoch and returns `(wall, cpu)`
seconds, synchronised with the device.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import _common as common
import numpy as np

# The seed recipe's hyper-parameters.
HIDDEN = 128
DEPTH = 3
LEARNING_RATE = 1e-3
RHO = 0.9
EPSILON = 1e-7

Runner = Callable[[], tuple[float, float]]


def timed(epoch: Callable[[], Any]) -> Runner:
    """Wall and CPU seconds of `epoch()`, which returns what to wait for."""

    def run() -> tuple[float, float]:
        start = (time.perf_counter(), time.process_time())
        common.sync(epoch())
        return time.perf_counter() - start[0], time.process_time() - start[1]

    return run


def layer_sizes(features: int) -> list[int]:
    return [features] + [HIDDEN] * DEPTH


def matmul_flops_per_pair(features: int) -> int:
    """Matmul FLOPs of one pair in a training step (both branches).

    Per branch and layer of `m` multiply-adds per example: `2m` forward, `2m`
    for the weight gradient, and `2m` for the gradient of the layer's input,
    except in the first layer, whose input (the image) needs no gradient.
    """
    macs = [a * b for a, b in itertools.pairwise(layer_sizes(features))]
    per_branch = 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])
    return 2 * per_branch


def initial_weights(features: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform kernels `(in, out)` and zero biases, seeded."""
    rng = np.random.default_rng(0)
    weights = []
    for fan_in, fan_out in itertools.pairwise(layer_sizes(features)):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
        weights.append((kernel, np.zeros(fan_out, np.float32)))
    return weights


def _flat_pairs(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)


def _jax_encode(params: list, h: Any, dropout: float = 0.0, key: Any = None) -> Any:
    """The encoder on JAX: Dense and ReLU layers, dropout between them."""
    import jax
    import jax.numpy as jnp

    for depth, (kernel, bias) in enumerate(params):
        h = jax.nn.relu(h @ kernel + bias)
        if depth < DEPTH - 1 and dropout > 0:
            key, sub = jax.random.split(key)
            keep = jax.random.bernoulli(sub, 1.0 - dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - dropout), 0.0)
    return h


def _jax_training(x1, x2, labels, batch: int, dropout: float) -> Runner:
    import jax
    import jax.numpy as jnp

    pairs = len(labels)
    left, right = map(jnp.asarray, _flat_pairs(x1, x2))
    targets = jnp.asarray(labels)
    params = [tuple(map(jnp.asarray, p)) for p in initial_weights(left.shape[1])]
    velocities = jax.tree.map(jnp.zeros_like, params)

    def loss_fn(params, a, b, y, key):
        key_a, key_b = jax.random.split(key)
        squares = jnp.sum(
            jnp.square(
                _jax_encode(params, a, dropout, key_a)
                - _jax_encode(params, b, dropout, key_b)
            ),
            axis=1,
        )
        d = jnp.sqrt(jnp.maximum(squares, EPSILON))
        return jnp.mean(y * d**2 + (1.0 - y) * jnp.maximum(1.0 - d, 0.0) ** 2)

    @jax.jit
    def step(params, velocities, left, right, targets, rows, key):
        loss, grads = jax.value_and_grad(loss_fn)(
            params, left[rows], right[rows], targets[rows], key
        )
        velocities = jax.tree.map(
            lambda v, g: RHO * v + (1.0 - RHO) * g * g, velocities, grads
        )
        params = jax.tree.map(
            lambda p, g, v: p - LEARNING_RATE * g / (jnp.sqrt(v) + EPSILON),
            params,
            grads,
            velocities,
        )
        return params, velocities, loss

    state = {"params": params, "velocities": velocities}
    key = jax.random.PRNGKey(0)
    order = np.random.default_rng(1)

    def epoch() -> Any:
        nonlocal key
        permutation = order.permutation(pairs)
        p, v = state["params"], state["velocities"]
        for s in range(pairs // batch):
            key, sub = jax.random.split(key)
            rows = permutation[s * batch : (s + 1) * batch]
            p, v, _ = step(p, v, left, right, targets, rows, sub)
        state["params"], state["velocities"] = p, v
        return p

    return timed(epoch)


def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_training(x1, x2, labels, batch: int, dropout: float) -> Runner:
    import torch

    device = _torch_device()
    pairs = len(labels)
    left, right = (torch.from_numpy(a).to(device) for a in _flat_pairs(x1, x2))
    targets = torch.from_numpy(labels).to(device)
    layers: list = []
    for depth, (kernel, bias) in enumerate(initial_weights(left.shape[1])):
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, torch.nn.ReLU()]
        if depth < DEPTH - 1 and dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
    encoder = torch.nn.Sequential(*layers).to(device).train()
    optimizer = torch.optim.RMSprop(
        encoder.parameters(), lr=LEARNING_RATE, alpha=RHO, eps=EPSILON
    )
    order = torch.Generator().manual_seed(1)

    def epoch() -> None:
        permutation = torch.randperm(pairs, generator=order).to(device)
        for s in range(pairs // batch):
            rows = permutation[s * batch : (s + 1) * batch]
            y = targets[rows]
            squares = torch.sum(
                torch.square(encoder(left[rows]) - encoder(right[rows])), dim=1
            )
            d = torch.sqrt(torch.clamp(squares, min=EPSILON))
            loss = torch.mean(y * d**2 + (1.0 - y) * torch.clamp(1.0 - d, min=0.0) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return timed(epoch)


def _tensorflow_encode(params: list, h: Any, dropout: float = 0.0) -> Any:
    """The encoder on TensorFlow: Dense and ReLU layers, dropout between them."""
    import tensorflow as tf

    for depth, (kernel, bias) in enumerate(params):
        h = tf.nn.relu(tf.matmul(h, kernel) + bias)
        if depth < DEPTH - 1 and dropout > 0:
            h = tf.nn.dropout(h, rate=dropout)
    return h


def _tensorflow_variables(features: int) -> list:
    """`(kernel, bias)` variables of the encoder, with the seeded weights."""
    import tensorflow as tf

    return [
        (tf.Variable(kernel), tf.Variable(bias))
        for kernel, bias in initial_weights(features)
    ]


def _tensorflow_training(x1, x2, labels, batch: int, dropout: float) -> Runner:
    """XLA is used where Keras' `jit_compile="auto"` would use it (not on CPU)."""
    import tensorflow as tf

    pairs = len(labels)
    left, right = map(tf.constant, _flat_pairs(x1, x2))
    targets = tf.constant(labels)
    params = _tensorflow_variables(left.shape[1])
    flat = [v for pair in params for v in pair]
    velocities = [tf.Variable(tf.zeros_like(v)) for v in flat]

    @tf.function(jit_compile=bool(common.accelerator()))
    def step(rows):
        y = tf.gather(targets, rows)
        with tf.GradientTape() as tape:
            squares = tf.reduce_sum(
                tf.square(
                    _tensorflow_encode(params, tf.gather(left, rows), dropout)
                    - _tensorflow_encode(params, tf.gather(right, rows), dropout)
                ),
                axis=1,
            )
            d = tf.sqrt(tf.maximum(squares, EPSILON))
            loss = tf.reduce_mean(
                y * d**2 + (1.0 - y) * tf.square(tf.maximum(1.0 - d, 0.0))
            )
        grads = tape.gradient(loss, flat)
        for variable, velocity, grad in zip(flat, velocities, grads):
            velocity.assign(RHO * velocity + (1.0 - RHO) * tf.square(grad))
            variable.assign_sub(LEARNING_RATE * grad / (tf.sqrt(velocity) + EPSILON))
        return loss

    order = np.random.default_rng(1)

    def epoch() -> Any:
        permutation = tf.constant(order.permutation(pairs))
        for s in range(pairs // batch):
            loss = step(permutation[s * batch : (s + 1) * batch])
        return loss

    return timed(epoch)


def _jax_matmuls(x1, x2, batch: int) -> Runner:
    import jax
    import jax.numpy as jnp

    left, right = map(jnp.asarray, _flat_pairs(x1, x2))
    params = [tuple(map(jnp.asarray, p)) for p in initial_weights(left.shape[1])]

    def objective(params, a, b):
        return jnp.sum(jnp.square(_jax_encode(params, a) - _jax_encode(params, b)))

    @jax.jit
    def step(params, left, right, start, chain):
        a = jax.lax.dynamic_slice_in_dim(left, start, batch)
        b = jax.lax.dynamic_slice_in_dim(right, start, batch)
        grads = jax.grad(objective)(params, a, b)
        # One scalar carried from step to step, so that waiting for the last
        # step waits for all of them.
        return grads, chain + grads[-1][1][0]

    def epoch() -> Any:
        chain = jnp.zeros(())
        for s in range(len(left) // batch):
            _, chain = step(params, left, right, s * batch, chain)
        return chain

    return timed(epoch)


def _torch_matmuls(x1, x2, batch: int) -> Runner:
    import torch

    device = _torch_device()
    left, right = (torch.from_numpy(a).to(device) for a in _flat_pairs(x1, x2))
    # Plain tensors rather than the training loop's `nn.Linear` layers: the
    # same products, 1.1x faster side by side on the CPU (a ceiling should
    # use the fastest way).
    params = [
        torch.from_numpy(array).to(device).requires_grad_()
        for pair in initial_weights(left.shape[1])
        for array in pair
    ]

    def encode(h):
        for kernel, bias in zip(params[::2], params[1::2]):
            h = torch.relu(h @ kernel + bias)
        return h

    def epoch() -> None:
        for s in range(len(left) // batch):
            rows = slice(s * batch, (s + 1) * batch)
            objective = torch.sum(
                torch.square(encode(left[rows]) - encode(right[rows]))
            )
            torch.autograd.grad(objective, params)

    return timed(epoch)


def _tensorflow_matmuls(x1, x2, batch: int) -> Runner:
    import tensorflow as tf

    left, right = map(tf.constant, _flat_pairs(x1, x2))
    params = _tensorflow_variables(left.shape[1])

    @tf.function(jit_compile=bool(common.accelerator()))
    def step(start):
        a, b = left[start : start + batch], right[start : start + batch]
        with tf.GradientTape() as tape:
            objective = tf.reduce_sum(
                tf.square(_tensorflow_encode(params, a) - _tensorflow_encode(params, b))
            )
        return tape.gradient(objective, params)

    def epoch() -> Any:
        for s in range(len(left) // batch):
            grads = step(tf.constant(s * batch))
        return grads

    return timed(epoch)


def training_loop(
    x1: np.ndarray, x2: np.ndarray, labels: np.ndarray, batch: int, dropout: float
) -> Runner:
    """The recipe's training epoch in the backend's own framework."""
    loops = {
        "jax": _jax_training,
        "torch": _torch_training,
        "tensorflow": _tensorflow_training,
    }
    return loops[common.backend()](x1, x2, labels, batch, dropout)


def matmul_loop(x1: np.ndarray, x2: np.ndarray, batch: int) -> Runner:
    """An epoch of only the encoder's forward and backward matmuls."""
    loops = {
        "jax": _jax_matmuls,
        "torch": _torch_matmuls,
        "tensorflow": _tensorflow_matmuls,
    }
    return loops[common.backend()](x1, x2, batch)
