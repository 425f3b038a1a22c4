"""Per-op breakdown of a training step (`benchmarking.step_time_breakdown`)."""

import keras
import numpy as np
import pytest

from keras_compact import benchmarking
from keras_compact import layers
from keras_compact import optimizers


def _tiny_conv_net(optimizer=None):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    model.compile(
        optimizer=optimizer or optimizers.L2SGD(learning_rate=0.1,
                                                momentum=0.9, l2=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def breakdown():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 4, 32).astype("int32")
    return benchmarking.step_time_breakdown(_tiny_conv_net(), x, y, steps=2)


def test_categories_are_non_negative_and_add_up_to_the_wall_time(breakdown):
    times = breakdown.categories
    assert all(ms >= 0 for ms in times.values())
    assert benchmarking.OVERHEAD in times
    ops_ms = sum(ms for c, ms in times.items() if c != benchmarking.OVERHEAD)
    assert 0 < ops_ms <= breakdown.wall_ms * (1 + 1e-9)
    assert sum(times.values()) == pytest.approx(breakdown.wall_ms)
    assert breakdown.untraced_wall_ms > 0


def test_a_conv_net_spends_time_in_convolutions_bn_and_its_optimizer(
        breakdown):
    times = breakdown.categories
    for category in ("conv forward", "conv backprop filter", "batch norm",
                     "optimizer update"):
        assert times.get(category, 0) > 0, category
    # The first conv needs no input gradient: no backprop input at all.
    assert "conv backprop input" not in times
    types = {row[0]: row for row in breakdown.op_types}
    assert any("Conv2D" in t for t in types)
    assert all(row[3] >= row[2] * (1 - 1e-9) for row in breakdown.op_types)
    assert "| conv forward |" in breakdown.table()


@pytest.mark.parametrize("name, category", [
    ("m/conv/convolution:_MklNativeConv2D", "conv forward"),
    ("m/dw:DepthwiseConv2dNative", "conv forward"),
    ("gradient_tape/m/conv/Conv2DBackpropFilter:"
     "_MklNativeConv2DBackpropFilter", "conv backprop filter"),
    ("gradient_tape/m/c/Conv2DBackpropInput:Conv2DBackpropInput",
     "conv backprop input"),
    ("m/bn/FusedBatchNormV3:_MklNativeFusedBatchNormEx", "batch norm"),
    ("StatefulPartitionedCall/l2sgd/mul_3:Mul", "optimizer update"),
    ("training/SGD/update:ResourceApplyKerasMomentum", "optimizer update"),
    ("gradient_tape/m/relu/ReluGrad:ReluGrad", "elementwise"),
    ("m/add/Add:AddV2", "elementwise"),
    ("gradient_tape/d/BiasAddGrad:BiasAddGrad", "reduction / loss"),
    ("IteratorGetNext:IteratorGetNext", "data / copy / layout"),
    ("m/pad/Pad:Pad", "data / copy / layout"),
    ("m/pool:MaxPoolGrad", "pooling"),
    ("m/x:SomethingNew", benchmarking.OTHER),
])
def test_op_categories_come_from_the_pattern_table(name, category):
    assert benchmarking._categorizer("l2sgd")(name) == category


def test_nested_op_events_keep_only_their_self_time():
    events = [(0, 10, "call"), (2, 4, "a"), (4, 7, "b"), (12, 13, "c")]
    segments = benchmarking._self_time(events)
    self_time = {}
    for begin, end, key in segments:
        self_time[key] = self_time.get(key, 0) + end - begin
    assert self_time == {"call": 5, "a": 2, "b": 3, "c": 1}


def test_overlapping_ops_share_the_wall_time():
    # "a" runs alone for 2, with "b" for 2, then "b" alone for 1.
    shares = benchmarking._wall_shares([(0, 4, "a"), (2, 5, "b")])
    assert shares == {"a": [3.0, 4], "b": [2.0, 3]}


def test_an_uncompiled_model_is_refused_with_the_fix():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="model.compile"):
        benchmarking.step_time_breakdown(model, np.zeros((2, 4)),
                                         np.zeros(2))


def test_thread_pools_cannot_be_resized_once_tensorflow_runs():
    import tensorflow as tf

    float(tf.reduce_sum(tf.ones(3)))  # TensorFlow has run an op
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(),
               threading.get_inter_op_parallelism_threads())
    benchmarking.set_threads(*current)  # the current sizes: nothing to do
    with pytest.raises(RuntimeError, match="new process"):
        benchmarking.set_threads(current[0] + 1, current[1] + 1)


def _train(make_optimizer, strategy, steps=6):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 4, 16).astype("int32")
    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = _tiny_conv_net(make_optimizer())
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    return losses, [w.numpy() for w in model.weights]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("mirrored", [False, True])
def test_fused_sgd_update_trains_like_keras_sgd(monkeypatch, nesterov,
                                                mirrored):
    import tensorflow as tf

    fused_calls = []
    fused_step = optimizers.L2SGD._fused_momentum_step

    def counted(self, *args):
        fused_calls.append(1)
        fused_step(self, *args)

    monkeypatch.setattr(optimizers.L2SGD, "_fused_momentum_step", counted)
    strategy = (tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
                if mirrored else tf.distribute.get_strategy())

    def train():
        return _train(lambda: optimizers.L2SGD(
            learning_rate=0.1, momentum=0.9, nesterov=nesterov, l2=1e-3),
            strategy)

    fused_losses, fused_weights = train()
    assert fused_calls  # the fused kernel ran
    monkeypatch.setattr(optimizers.L2SGD, "_fusable", lambda *_: False)
    plain_losses, plain_weights = train()
    assert fused_losses[-1] < fused_losses[0]  # it trains
    # Both paths compute m = momentum * m - lr * g, then w += m (Nesterov:
    # w += momentum * m - lr * g) in float32, in the same order; they can
    # differ only where a compiler contracts a multiply-add into an FMA, at
    # most 1 ulp per operation: 2 roundings x 6 steps = 12u = 7e-7 (u =
    # 2**-24) before the training map amplifies it. rtol 1e-5 allows a 14x
    # amplification over 6 steps of this 3-layer net; measured: bit for bit
    # equal (AMD EPYC, oneDNN on and off), and a wrong momentum or
    # learning-rate term gives errors of order 1e-2.
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-5)
    for fused, plain in zip(fused_weights, plain_weights):
        np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-6)


def _profile_tool(*args):
    import os
    import subprocess
    import sys

    from tests.test_training import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "tools.profile", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_profile_tool_traces_a_step_with_its_thread_setting():
    out = _profile_tool("--arch=smallnet7", "--trace", "--batch_size=16",
                        "--trace_steps=2", "--threads=1:1")
    assert "threads 1:1" in out
    assert "| conv forward |" in out and "| optimizer update |" in out
    assert "| ResourceApplyKerasMomentum | optimizer update |" in out


@pytest.mark.slow
def test_thread_sweep_measures_each_setting():
    out = _profile_tool("--arch=smallnet7", "--batch_size=16",
                        "--thread_sweep=1:1,2:1", "--rounds=2",
                        "--round_steps=2")
    rows = [line for line in out.splitlines()
            if line.startswith(("| 1:1 |", "| 2:1 |"))]
    assert len(rows) == 2
    assert all(float(row.split("|")[2]) > 0 for row in rows)
