"""Data parallelism through keras.distribution on JAX (2 virtual CPUs)."""

import keras
import numpy as np
import pytest

from keras_compact import layers

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution shards on the JAX backend")


def _train_one_step(x, y):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 4))
    h = layers.GroupedConv2D(8, 3, padding="same", groups=2)(inputs)
    h = layers.BatchNormalization()(h, training=True)
    h = layers.Shift2D()(keras.ops.relu(h))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    loss = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0,
                     shuffle=False).history["loss"][0]
    return model, loss, before


def test_data_parallel_step_equals_the_one_device_step():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, devices  # XLA_FLAGS of tests/backends/conftest
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 4)).astype("float32")
    y = rng.integers(0, 3, 8)
    single, single_loss, start = _train_one_step(x, y)
    mesh = keras.distribution.DeviceMesh((2,), ["batch"], devices)
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(device_mesh=mesh))
    try:
        parallel, parallel_loss, parallel_start = _train_one_step(x, y)
        kernel = parallel.layers[1].kernel.value
        # Replicated weights; the batch is split over the mesh's devices.
        assert kernel.sharding.is_fully_replicated
        assert len(kernel.sharding.device_set) == 2
    finally:
        keras.distribution.set_distribution(None)
    for a, b in zip(start, parallel_start):
        np.testing.assert_array_equal(a, b)
    # The same global-batch math (GSPMD), only the batch sums are split in
    # two partial sums: float32 reordering of sums of 8 * 64 terms of the
    # gradient, u * 512 ~ 3e-5 relative; a gradient summed instead of
    # averaged over the devices would be off by 2x.
    np.testing.assert_allclose(parallel_loss, single_loss, rtol=1e-5)
    for a, b in zip(single.weights, parallel.weights):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        np.testing.assert_allclose(b, a, rtol=0,
                                   atol=3e-5 * max(np.abs(a).max(), 1e-3))
    assert all(not np.array_equal(a, keras.ops.convert_to_numpy(w))
               for a, w in zip(start, single.weights) if w.trainable)
