"""Every public layer on the current backend: runs, fits, saves, casts."""

import os

import keras
import numpy as np
import pytest

from tests import testing
from tests.backends import cases

POLICIES = ("mixed_float16", "mixed_bfloat16")


@pytest.fixture(params=cases.CASES, ids=cases.IDS)
def case(request):
    return request.param


def test_layer_fits_one_step_and_round_trips_through_keras_file(
        case, tmp_path):
    model = cases.build_model(case)
    x = cases.inputs_for(case)
    before = keras.ops.convert_to_numpy(model(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # On JAX, fit jit-compiles the train step (Keras's default).
    history = model.fit(x, np.zeros_like(before), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = keras.ops.convert_to_numpy(model(x))
    if model.trainable_weights:
        assert not np.array_equal(before, after)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    # Same backend, same kernels, same weights: bit for bit.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), after)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_sublayer_computes_in_the_layer_policy(case, policy):
    _, name, kwargs, shape, _ = case
    from keras_compact import layers

    testing.run_precision_test(getattr(layers, name), kwargs, shape,
                               policy, inputs=cases.inputs_for(case))
