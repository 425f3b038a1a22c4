"""ExpandNets: exact contraction, the paper's model sizes, method, tool."""

import itertools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compact import layers
from keras_compact import models
from keras_compact import profiling
from keras_compact.layers import expansion
from keras_compact.methods import expandnet
from tests import testing


def _randomize(layer, rng, scale=0.5):
    """Random non-zero weights (biases included) on every variable."""
    for variable in layer.weights:
        variable.assign(rng.normal(scale=scale, size=variable.shape))


def _unit_error(dtype, input_channels, size=9, **kwargs):
    """Relative max error of contract() for one ExpandedConv2D."""
    rng = np.random.default_rng(0)
    layer = layers.ExpandedConv2D(dtype=dtype, **kwargs)
    x = rng.normal(size=(2, size, size, input_channels)).astype(dtype)
    layer.build(x.shape)
    _randomize(layer, rng)
    expected = keras.ops.convert_to_numpy(layer(x))
    compact = layer.to_compact()
    actual = keras.ops.convert_to_numpy(compact(x))
    assert actual.shape == expected.shape == tuple(
        layer.compute_output_shape(x.shape))
    return np.max(np.abs(expected - actual)) / np.max(np.abs(expected))


# Every kernel/strategy with both strides, both paddings and, across
# those, biases on and off.
CONV_CASES = [
    dict(strategy=strategy, kernel_size=k, strides=s, padding=p,
         use_bias=(s == 1) == (p == "same"))
    for (strategy, k), s, p in itertools.product(
        [("cl", 3), ("cl", 5), ("cl", 7), ("ck", 5), ("ck", 7)], (1, 2),
        ("same", "valid"))
]


@pytest.mark.parametrize("case", CONV_CASES,
                         ids=lambda c: "-".join(map(str, c.values())))
def test_conv_contraction_is_exact_in_float64(case):
    # Size 10 with stride 2 makes TF's "same" padding asymmetric.
    error = _unit_error("float64", 3, size=10, filters=5, **case)
    assert error < 1e-12


@pytest.mark.parametrize("case", CONV_CASES[::2],
                         ids=lambda c: "-".join(map(str, c.values())))
def test_conv_contraction_float32(case):
    assert _unit_error("float32", 3, size=10, filters=5, **case) <= 1e-5


@pytest.mark.parametrize("channels,rate,strides,use_bias", [
    (4, 4, 1, False), (4, 4, 2, False), (6, 2, 2, True), (3, 1, 1, True),
])
def test_depthwise_contraction(channels, rate, strides, use_bias):
    kwargs = dict(filters=channels, kernel_size=3, strides=strides,
                  padding="same", groups=channels, expansion_rate=rate,
                  use_bias=use_bias)
    assert _unit_error("float64", channels, size=10, **kwargs) < 1e-12
    assert _unit_error("float32", channels, size=10, **kwargs) <= 1e-5
    layer = layers.ExpandedConv2D(**kwargs)
    layer.build((None, 10, 10, channels))
    assert isinstance(layer.to_compact(), keras.layers.DepthwiseConv2D)


def test_grouped_and_unexpanded_input_contraction():
    assert _unit_error("float64", 4, filters=8, kernel_size=3,
                       padding="same", groups=2) < 1e-12
    assert _unit_error("float64", 3, filters=8, kernel_size=7,
                       padding="same", strategy="ck",
                       expand_input=False) < 1e-12


@pytest.mark.parametrize("hidden_units,use_bias", [
    (None, True), ((300, 40, 7), True), (None, False)])
def test_dense_contraction(hidden_units, use_bias):
    rng = np.random.default_rng(0)
    layer = layers.ExpandedDense(11, hidden_units=hidden_units,
                                 use_bias=use_bias, dtype="float64")
    x = rng.normal(size=(4, 5, 32))
    layer.build(x.shape)
    _randomize(layer, rng)
    expected = keras.ops.convert_to_numpy(layer(x))
    actual = keras.ops.convert_to_numpy(layer.to_compact()(x))
    assert np.max(np.abs(expected - actual)) / np.max(np.abs(expected)) < (
        1e-12)


def test_unit_structure():
    # Spec 1.1/1.2: widths, kernels and where padding and stride sit.
    cl = layers.ExpandedConv2D(16, 7, padding="same")
    cl.build((None, 32, 32, 8))
    assert [c.kernel.shape for c in cl.convs] == [
        (1, 1, 8, 32), (7, 7, 32, 64), (1, 1, 64, 16)]
    assert [c.strides for c in cl.convs] == [(1, 1)] * 3
    assert cl.pads == ((3, 3), (3, 3))
    ck = layers.ExpandedConv2D(8, 7, strides=2, padding="same",
                               strategy="ck", expand_input=False)
    ck.build((None, 32, 32, 3))
    assert [c.kernel.shape for c in ck.convs] == [
        (3, 3, 3, 3), (3, 3, 3, 32), (3, 3, 32, 8)]
    assert [c.strides for c in ck.convs] == [(1, 1), (1, 1), (2, 2)]
    assert ck.pads == ((2, 3), (2, 3))  # TF "same", stride 2, even input
    assert all(c.padding == "valid" for c in cl.convs + ck.convs)
    dw = layers.ExpandedConv2D(32, 3, strides=2, groups=32, use_bias=False)
    dw.build((None, 16, 16, 32))
    assert [c.kernel.shape for c in dw.convs] == [
        (1, 1, 1, 128), (3, 3, 4, 128), (1, 1, 4, 32)]
    assert [c.strides for c in dw.convs] == [(1, 1), (2, 2), (1, 1)]


def test_padding_on_an_inner_layer_breaks_exactness():
    # Why the layer pads before the first conv (spec 2.4, reference
    # issue #3): the same weights with "same" padding on every inner conv
    # differ from the contracted conv at the borders.
    rng = np.random.default_rng(0)
    layer = layers.ExpandedConv2D(5, 5, padding="same", strategy="ck",
                                  dtype="float64")
    x = rng.normal(size=(1, 8, 8, 3))
    layer.build(x.shape)
    _randomize(layer, rng)
    y = x
    for conv in layer.convs:
        y = keras.ops.conv(y, conv.kernel, padding="same") + conv.bias
    contracted = keras.ops.convert_to_numpy(layer.to_compact()(x))
    assert np.max(np.abs(contracted - keras.ops.convert_to_numpy(y))) > 0.1


@pytest.mark.parametrize("kwargs,message", [
    (dict(filters=8, kernel_size=3, strategy="ck"), "strategy='cl'"),
    (dict(filters=8, kernel_size=4, strategy="ck"), "odd"),
    (dict(filters=8, kernel_size=3, strategy="xx"), "strategy must be"),
    (dict(filters=8, kernel_size=3, padding=1), "ZeroPadding2D"),
    (dict(filters=8, kernel_size=3, groups=3), "divisible"),
    (dict(filters=8, kernel_size=3, expansion_rate=0), "positive"),
])
def test_bad_arguments_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.ExpandedConv2D(**kwargs)


def test_bad_expansions_fail_clearly():
    with pytest.raises(ValueError, match="strategy='cl'"):
        expandnet.build_expanded("mobilenet_v2", (32, 32, 3), 10, "ck")
    with pytest.raises(ValueError, match="no hidden fully-connected"):
        expandnet.build_expanded("mobilenet_v1", (32, 32, 3), 10, "cl+fc")
    with pytest.raises(ValueError, match="expand must be one of"):
        expandnet.build_expanded("smallnet7", (32, 32, 3), 10, "cl+ck")
    with pytest.raises(ValueError, match="smallnet7"):
        expandnet.build_expanded("resnet20", (32, 32, 3), 10, "cl")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or sequential"):
        expandnet.contract(Subclassed())


def test_layers_serialize_and_train():
    # Expand-CK of a 5x5: two 3x3 convs, kernel and bias each.
    testing.run_layer_test(
        layers.ExpandedConv2D,
        dict(filters=6, kernel_size=5, strides=2, padding="same",
             strategy="ck", expansion_rate=2),
        (2, 9, 9, 4), (2, 5, 5, 6), expected_num_trainable_weights=4,
        expected_num_non_trainable_weights=0)
    testing.run_layer_test(
        layers.ExpandedDense, dict(units=6, hidden_units=(12, 10)),
        (2, 4), (2, 6), expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=0)


# Spec table 4.3 (reference code's models): (arch, input, classes) ->
# compact (params, MACs) and expanded {expand: (params, MACs or None)}.
TABLE = [
    ("smallnet3", 32, 10, (15050, 471648), {
        "fc": (220618, 676448), "cl": (109086, 5653760),
        "cl+fc": (314654, 5858560)}),
    ("smallnet3", 32, 100, (20900, None), {
        "fc": (226468, None), "cl": (114936, None),
        "cl+fc": (320504, None)}),
    ("smallnet7", 32, 10, (66186, 4448896), {
        "fc": (1624970, 6005376), "cl": (547102, 57354564),
        "cl+fc": (2105886, 58911044), "ck": (186982, 23808528),
        "ck+fc": (1745766, 25365008)}),
    ("smallnet7", 32, 100, (72036, None), {
        "fc": (1630820, None), "cl": (552952, None),
        "cl+fc": (2111736, None), "ck": (192832, None),
        "ck+fc": (1751616, None)}),
    ("mobilenet_v1", 224, 1000, (4231976, 568740352),
     {"cl": (4958348, 1066802320)}),
    ("mobilenet_v2", 224, 1000, (3504872, 300774272),
     {"cl": (3666108, 591465936)}),
]


def _assert_distinct_kernels(model):
    # A shared unseeded initializer would start same-shaped layers equal
    # (and LiteRT would then store one buffer for them).
    kernels = [keras.ops.convert_to_numpy(w).tobytes()
               for w in model.trainable_weights if len(w.shape) > 1]
    assert len(set(kernels)) == len(kernels)


def _layer_types(model):
    return [(type(layer).__name__, layer.name,
             [tuple(w.shape) for w in layer.weights])
            for layer in model.layers]


@pytest.mark.parametrize("arch,size,classes,compact,expanded", TABLE,
                         ids=[f"{r[0]}-{r[2]}" for r in TABLE])
def test_params_and_macs_match_the_paper(arch, size, classes, compact,
                                         expanded):
    shape = (size, size, 3)
    native = models.build(arch, shape, classes)
    native_profile = profiling.profile(native)
    _assert_distinct_kernels(native)
    assert native_profile.params == native.count_params() - sum(
        np.prod(w.shape) for w in native.non_trainable_weights)
    for actual, wanted in zip((native_profile.params, native_profile.macs),
                              compact):
        assert wanted is None or actual == wanted
    for expand, wanted_counts in expanded.items():
        model = expandnet.build_expanded(arch, shape, classes, expand)
        _assert_distinct_kernels(model)
        result = profiling.profile(model)
        for actual, wanted in zip((result.params, result.macs),
                                  wanted_counts):
            assert wanted is None or actual == wanted
        contracted = expandnet.contract(model)
        assert _layer_types(contracted) == _layer_types(native)
        assert profiling.profile(contracted).macs == native_profile.macs


def _randomize_batch_norms(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(scale=0.5, size=channels))
            layer.moving_mean.assign(rng.normal(scale=0.5, size=channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


@pytest.mark.parametrize("arch,expand,shape", [
    ("smallnet7", "ck+fc", (32, 32, 3)),
    ("smallnet3", "cl+fc", (32, 32, 3)),
    ("mobilenet_v2", "cl", (96, 96, 3)),  # same layers as at 224
])
def test_whole_network_contraction(arch, expand, shape):
    rng = np.random.default_rng(0)
    model = expandnet.build_expanded(arch, shape, 10, expand)
    _randomize_batch_norms(model, rng)
    contracted = expandnet.contract(model)
    x = rng.normal(size=(4, *shape)).astype("float32")
    assert expandnet.max_relative_error(model, contracted, x) <= 1e-5
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = keras.ops.convert_to_numpy(contracted(x, training=False))
    np.testing.assert_array_equal(expected.argmax(-1), actual.argmax(-1))
    # Every weight that is not an expanded layer's is copied bit for bit.
    for layer in model.layers:
        if not isinstance(layer, expandnet.EXPANDED_LAYERS):
            for a, b in zip(layer.get_weights(),
                            contracted.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)


def test_method_hooks_train_then_contract():
    from configs import expandnet as recipe
    from keras_compact import methods

    config = recipe.get_config("smoke")
    assert (config.expand, config.expand_rate, config.lr) == (
        "ck+fc", 4.0, 0.01)
    method = methods.get("expandnet")
    assert set(method.options) <= set(config.keys())
    model = method.build_model(config, (32, 32, 3), 10)
    method.compile_model(model, keras.optimizers.SGD(0.05, momentum=0.9),
                         config)
    before = [w.numpy().copy() for w in model.trainable_weights]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64).astype("int32")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # Gradients reach every factor of every chain.
    for old, new in zip(before, model.trainable_weights):
        assert not np.array_equal(old, new.numpy()), new.path
    compact = method.deployable(model, context=None)
    assert expandnet.max_relative_error(model, compact, x) <= 1e-5
    assert _layer_types(compact) == _layer_types(
        models.build("smallnet7", (32, 32, 3), 10))


def test_save_load_and_contract_tool(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(
        "float32")
    model = expandnet.build_expanded("smallnet7", (32, 32, 3), 10, "ck+fc")
    _randomize_batch_norms(model, np.random.default_rng(1))
    restored = testing.run_model_saving_test(model, x)
    path, out = str(tmp_path / "expanded.keras"), str(
        tmp_path / "compact.keras")
    restored.save(path)
    # As a user runs it: a process of its own (tools' absl flags would
    # collide with other tools imported by the test session).
    subprocess.run([sys.executable, "-m", "tools.contract",
                    f"--input={path}", f"--output={out}"],
                   cwd=testing.ROOT, check=True, capture_output=True)
    compact = keras.models.load_model(out)
    assert expandnet.max_relative_error(model, compact, x) <= 1e-5
    testing.run_model_saving_test(compact, x)


def test_contracted_tflite_equals_native_compact(tmp_path):
    from keras_compact import export

    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(
        "float32")
    model = expandnet.build_expanded("smallnet7", (32, 32, 3), 10, "ck+fc")
    contracted = expandnet.contract(model)
    sizes = []
    for name, net in (("contracted", contracted),
                      ("native", models.build("smallnet7", (32, 32, 3),
                                              10))):
        path = export.to_litert(net, str(tmp_path / f"{name}.tflite"))
        sizes.append(os.path.getsize(path))
    assert sizes[0] == sizes[1]
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = testing.run_litert(str(tmp_path / "contracted.tflite"), x)
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(
        np.abs(expected))


def test_torch_default_initializers():
    layer = layers.ExpandedConv2D(8, 3)
    layer.build((None, 8, 8, 16))
    bound = 1 / np.sqrt(16)  # the first 1x1: fan_in 16
    for weight in (layer.convs[0].kernel, layer.convs[0].bias):
        values = keras.ops.convert_to_numpy(weight)
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.8 * bound
    # Each inner conv draws its own values (no shared unseeded instance).
    first = keras.ops.convert_to_numpy(layer.convs[0].kernel).ravel()
    assert not np.allclose(first[:8], keras.ops.convert_to_numpy(
        layer.convs[2].kernel).ravel()[:8])
    assert expansion.torch_default_bias(4).maxval == 0.5
