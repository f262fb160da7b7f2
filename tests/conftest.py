"""Shared pytest and hypothesis configuration.

The suite runs once per backend; the backend is chosen by `KERAS_BACKEND`
(tox sets it per environment). Hypothesis uses the `ci` profile under tox and
CI: derandomised, so a run is reproducible, with a bounded number of examples.
"""

import os

import keras
import pytest
from hypothesis import HealthCheck, settings

# Derandomised, so every backend draws the same examples: 25 per property and
# backend (15 on JAX, whose eager dispatch compiles each new shape) keep the
# three backends' runs within the CI budget; the `thorough` profile explores
# far more.
settings.register_profile(
    "ci",
    max_examples=15 if keras.backend.backend() == "jax" else 25,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Give every test the default dtype policy and a clean name scope."""
    keras.config.set_dtype_policy("float32")
    # Without Keras' `gc.collect()`, which takes a quarter of a second in a
    # process holding JAX's or TensorFlow's caches: on every test, a fifth of
    # the suite's time. Python's own collector still runs.
    keras.utils.clear_session(free_memory=False)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def backend() -> str:
    return keras.backend.backend()
