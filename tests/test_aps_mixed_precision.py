"""APS layers and search under mixed_float16 / mixed_bfloat16."""

import keras
import numpy as np
import pytest

from keras_compact import layers
from keras_compact.methods import aps

POLICIES = ("mixed_float16", "mixed_bfloat16")
LAYERS = {
    "conv": (lambda: layers.APSConv2D((4, 8), (4, 8)), (8, 8, 8)),
    "depthwise": (lambda: layers.APSDepthwiseConv2D((4, 8)), (8, 8, 8)),
    "norm": (lambda: layers.CandidateBatchNorm(2, 2), (8, 8, 8)),
    "shortcut": (lambda: layers.APSShortcut((4, 8), (4, 8), 2), (8, 8, 8)),
    "basic_block": (lambda: layers.APSBasicBlock((4, 8)), (8, 8, 8)),
    "inverted": (lambda: layers.APSInvertedResidual((4, 8), (4, 8), 3),
                 (8, 8, 8)),
    "dense": (lambda: layers.APSDense(6, (4, 8)), (8,)),
}


@pytest.fixture(params=POLICIES)
def policy(request):
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(request.param)
    yield keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(previous)


class Head(keras.Model):
    """The layer under test, then a float32 classifier."""

    def __init__(self, layer):
        super().__init__(name="head")
        self.layer = layer
        self.head = keras.layers.Dense(3, dtype="float32")

    def call(self, x, training=None):
        y = self.layer(x, training=training)  # dropped if not accepted
        y = keras.ops.reshape(y, (keras.ops.shape(y)[0], -1))
        return self.head(y)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_aps_layer_runs_and_trains_in_mixed_precision(name, policy):
    make, shape = LAYERS[name]
    model = Head(make())
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype("float32")
    y = model(x, training=True)
    inner = model.layer(x)
    assert keras.backend.standardize_dtype(inner.dtype) == (
        policy.compute_dtype)
    assert np.isfinite(keras.ops.convert_to_numpy(
        keras.ops.cast(inner, "float32"))).all()
    sublayers = [model.layer] + list(model.layer._flatten_layers())
    assert {s.compute_dtype for s in sublayers} == {policy.compute_dtype}
    assert all(w.dtype == "float32" for w in model.layer.weights)
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    before = [keras.ops.convert_to_numpy(w) for w in model.layer.weights]
    history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.layer.weights]
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert y.dtype == "float32"


def test_search_steps_in_mixed_precision(policy):
    net = aps.APSResNetCifar(8, (4, 8), num_classes=10,
                             input_shape=(8, 8, 3))
    budget = 0.7 * net.macs(np.ones(7, "int32"))
    model = aps.ChannelSearchModel(net, budget)
    model.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(1e-2),
                  keras.optimizers.Adam(1e-3, beta_1=0.5))
    assert model.controller.compute_dtype == "float32"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 10, 8)
    pair = ((x, y), (x, y))
    for searching in (False, True):
        if searching:
            model.start_search()
        logs = model.train_step(pair)
        assert all(np.isfinite(float(v)) for v in logs.values()), logs
