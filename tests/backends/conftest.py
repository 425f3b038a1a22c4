"""The backends tier: these tests run under KERAS_BACKEND=jax and torch.

`.ci/run` runs `tests/backends` once per backend (docs/testing.md); under
TensorFlow, the default tier's layer tests cover the same ground, so here
everything is skipped. On JAX, two virtual CPU devices let
`keras.distribution` shard a batch; XLA reads the flag when JAX first
lists its devices, which importing Keras does not do.
"""

import os

import keras
import pytest

if keras.backend.backend() == "jax":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=2")


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() != "tensorflow":
        return
    skip = pytest.mark.skip(reason="backends tier: run with KERAS_BACKEND="
                            "jax or torch (docs/testing.md)")
    for item in items:
        if "tests/backends/" in item.nodeid:
            item.add_marker(skip)
