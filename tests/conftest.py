"""Test setup: quiet TensorFlow, deterministic seeds, two logical CPUs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy tests can run on one CPU; this
# must happen before TensorFlow initialises its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
    # Each MirroredStrategy in one process must use fresh collective keys,
    # or a later test's all-reduce meets an earlier one's instance.
    tf.distribute.MirroredStrategy._collective_key_base += 10_000
