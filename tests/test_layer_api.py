"""The public layers follow Keras's layer conventions: dtype policies reach
every sublayer, Keras's argument names work, and names mean one thing."""

import inspect
import json
import warnings
import zipfile

import keras
import numpy as np
import pytest

import keras_compact
from keras_compact import layers
from keras_compact.errors import UsageError
from tests import testing

# Every public layer class, with small arguments and an input shape.
PUBLIC_LAYERS = {
    "APSBasicBlock": ({"candidates": (4, 8)}, (2, 6, 6, 8)),
    "APSConv2D": ({"candidates_out": (4, 8), "candidates_in": (4, 8)},
                  (2, 6, 6, 8)),
    "APSDense": ({"units": 5, "candidates": (4, 8)}, (2, 8)),
    "APSDepthwiseConv2D": ({"candidates": (4, 8)}, (2, 6, 6, 8)),
    "APSInvertedResidual": ({"candidates_out": (4, 8),
                             "candidates_in": (4, 8), "expand_ratio": 2,
                             "residual": True}, (2, 6, 6, 8)),
    "APSShortcut": ({"candidates_out": (4, 8), "candidates_in": (4, 8)},
                    (2, 6, 6, 8)),
    "CandidateBatchNorm": ({"num_out": 2, "num_in": 2}, (2, 6, 6, 8)),
    "BatchNormalization": ({}, (2, 6, 6, 8)),
    "DepthwiseBlock": ({"filters": 8, "strides": 2}, (2, 6, 6, 4)),
    "GroupBlock": ({"filters": 8, "strides": 2, "groups": 2}, (2, 6, 6, 4)),
    "Shift2D": ({}, (2, 6, 6, 8)),
    "ShiftBlock": ({"filters": 8, "strides": 2}, (2, 6, 6, 4)),
    "ExpanderConv2D": ({"filters": 8, "kernel_size": 3, "degree": 2,
                        "seed": 0}, (2, 6, 6, 8)),
    "ExpanderConv2D-gather": ({"filters": 8, "kernel_size": 3, "degree": 2,
                               "seed": 0, "impl": "gather"}, (2, 6, 6, 8)),
    "ExpanderDense": ({"units": 8, "degree": 2, "seed": 0}, (2, 8)),
    "ExpanderDense-gather": ({"units": 8, "degree": 2, "seed": 0,
                              "impl": "gather"}, (2, 8)),
    "ExpandedConv2D": ({"filters": 8, "kernel_size": 3, "padding": "same"},
                       (2, 6, 6, 4)),
    "ExpandedDense": ({"units": 8}, (2, 4)),
    "GroupedConv2D": ({"filters": 8, "kernel_size": 3, "groups": 2},
                      (2, 6, 6, 4)),
    "SlimConv2D": ({"k": "4/3", "reduction": 8, "strides": 2},
                   (2, 6, 6, 16)),
}


def _layer_class(case):
    return getattr(layers, case.split("-")[0])


def test_every_public_layer_is_covered():
    public = {name for name, value in vars(layers).items()
              if inspect.isclass(value)
              and issubclass(value, keras.layers.Layer)}
    assert public == {case.split("-")[0] for case in PUBLIC_LAYERS}


@pytest.mark.parametrize("case", sorted(PUBLIC_LAYERS))
def test_every_sublayer_takes_the_per_layer_mixed_policy(case):
    kwargs, shape = PUBLIC_LAYERS[case]
    testing.run_precision_test(_layer_class(case), kwargs, shape)


# -- Keras's conv arguments ------------------------------------------------

U64 = 2.0**-53  # float64 unit roundoff


def _conv64(x, kernel, dilation):
    """A float64 NumPy 'valid' dilated convolution (groups = 1)."""
    kh, kw, _, _ = kernel.shape
    dh, dw = dilation
    height = x.shape[1] - (kh - 1) * dh
    width = x.shape[2] - (kw - 1) * dw
    out = np.zeros((x.shape[0], height, width, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dh:i * dh + height, j * dw:j * dw + width]
            out += np.einsum("bhwc,co->bhwo", patch, kernel[i, j])
    return out


def _bound(x, kernel, dilation):
    """gamma_n |x| * |w| (n = k*k*C, float64): the error of any order of the
    float64 sums, with a factor 4 for the bias add and the activation."""
    n = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
    return 4 * n * U64 * _conv64(np.abs(x), np.abs(kernel), dilation)


@pytest.mark.parametrize("make", [
    lambda: layers.GroupedConv2D(6, 3, dilation_rate=(2, 1),
                                 activation="relu", dtype="float64"),
    lambda: layers.ExpanderConv2D(6, 3, padding="valid", dilation_rate=2,
                                  activation="relu", degree=2, seed=0,
                                  dtype="float64"),
], ids=["grouped", "expander"])
def test_dilation_and_activation_match_a_float64_reference(make):
    layer = make()
    x = np.random.default_rng(0).normal(size=(2, 9, 8, 4))
    y = keras.ops.convert_to_numpy(layer(x))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    if isinstance(layer, layers.ExpanderConv2D):
        kernel = kernel * layer.get_mask()[None, None]
    dilation = layer.dilation_rate
    np.testing.assert_allclose(y, np.maximum(_conv64(x, kernel, dilation), 0),
                               rtol=0, atol=_bound(x, kernel, dilation).max())
    assert y.shape == layer.compute_output_shape(x.shape)


@pytest.mark.parametrize("strategy,kernel_size", [("cl", 3), ("ck", 5)])
def test_dilated_expanded_conv_contracts_exactly(strategy, kernel_size):
    # Float64 throughout: the chain and its contraction differ by float64
    # rounding only, about depth * n * u * |x||w| < 1e-10 here.
    layer = layers.ExpandedConv2D(4, kernel_size, padding="same",
                                  strategy=strategy, expansion_rate=2,
                                  dilation_rate=2, activation="relu",
                                  dtype="float64")
    x = np.random.default_rng(1).normal(size=(2, 11, 10, 3))
    chain = keras.ops.convert_to_numpy(layer(x))
    compact = layer.to_compact()
    assert compact.dilation_rate == (2, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(compact(x)), chain,
                               rtol=0, atol=1e-10)
    assert chain.min() == 0 and chain.max() > 0  # the ReLU acted


# Each conv-like layer with every Keras argument it takes set to a
# non-default value: (class, arguments, input shape).
KERAS_ARGUMENTS = [
    (layers.GroupedConv2D, dict(filters=4, kernel_size=3, groups=2,
                                use_bias=True, dilation_rate=2,
                                activation="relu", kernel_regularizer="l2",
                                bias_regularizer="l1",
                                kernel_constraint="non_neg",
                                bias_constraint="non_neg"), (2, 8, 8, 4)),
    (layers.ExpandedConv2D, dict(filters=4, kernel_size=3, dilation_rate=2,
                                 activation="relu", kernel_regularizer="l2",
                                 bias_regularizer="l1",
                                 kernel_constraint="non_neg",
                                 bias_constraint="non_neg"), (2, 8, 8, 4)),
    (layers.ExpanderConv2D, dict(filters=4, kernel_size=3, density=0.5,
                                 seed=0, use_bias=True, dilation_rate=2,
                                 activation="relu", kernel_regularizer="l2",
                                 bias_regularizer="l1",
                                 kernel_constraint="non_neg",
                                 bias_constraint="non_neg"), (2, 8, 8, 4)),
    (layers.ExpanderDense, dict(units=4, density=0.5, seed=0, use_bias=True,
                                activation="relu", kernel_regularizer="l2",
                                bias_regularizer="l1",
                                kernel_constraint="non_neg",
                                bias_constraint="non_neg"), (2, 8)),
    (layers.ExpandedDense, dict(units=4, activation="relu",
                                kernel_regularizer="l2",
                                bias_regularizer="l1",
                                kernel_constraint="non_neg",
                                bias_constraint="non_neg"), (2, 8)),
    (layers.SlimConv2D, dict(k="2", reduction=4, activation="relu",
                             kernel_regularizer="l2",
                             kernel_constraint="non_neg"), (2, 6, 6, 8)),
    (layers.ShiftBlock, dict(filters=8, activation="relu",
                             kernel_regularizer="l2",
                             kernel_constraint="non_neg"), (2, 6, 6, 8)),
    (layers.DepthwiseBlock, dict(filters=8, activation="relu",
                                 kernel_initializer="ones",
                                 kernel_regularizer="l2",
                                 kernel_constraint="non_neg"), (2, 6, 6, 8)),
    (layers.APSConv2D, dict(candidates_out=(2, 4), candidates_in=(2, 4),
                            kernel_initializer="ones",
                            kernel_regularizer="l2",
                            kernel_constraint="non_neg"), (2, 6, 6, 4)),
    (layers.APSDense, dict(units=3, candidates=(2, 4),
                           kernel_regularizer="l2", bias_regularizer="l1",
                           kernel_constraint="non_neg",
                           bias_constraint="non_neg"), (2, 4)),
    (layers.APSBasicBlock, dict(candidates=(2, 4), kernel_regularizer="l2",
                                kernel_constraint="non_neg"), (2, 6, 6, 4)),
]


@pytest.mark.parametrize("cls,kwargs,shape", KERAS_ARGUMENTS,
                         ids=[c.__name__ for c, _, _ in KERAS_ARGUMENTS])
def test_keras_arguments_round_trip_and_act(cls, kwargs, shape):
    layer = cls(**kwargs)
    output = keras.ops.convert_to_numpy(
        layer(np.random.default_rng(0).normal(size=shape)))
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config
    if "activation" in kwargs:
        assert config["activation"] == "relu" and output.min() >= 0
    # Every kernel (and bias) weight carries the regularizer (one loss each)
    # and the constraint, which the optimizer applies after each step.
    regularized = [w for w in layer.trainable_weights
                   if w.regularizer is not None]
    assert len(layer.losses) == len(regularized) > 0
    assert all(isinstance(w.constraint, keras.constraints.NonNeg)
               for w in regularized)


@pytest.mark.parametrize("make,message", [
    (lambda: layers.SlimConv2D(filters=8), "SlimConv2D has no filters: "
     "its output width"),
    (lambda: layers.SlimConv2D(kernel_size=5), r"takes kernel_size=3 or "
     r"\(3, 3\) only"),
    (lambda: layers.SlimConv2D(use_bias=True), "takes use_bias=False only: "
     "a BatchNormalization follows every conv"),
    (lambda: layers.ShiftBlock(8, bias_regularizer="l2"),
     "ShiftBlock takes bias_regularizer=None only"),
    (lambda: layers.GroupBlock(8, padding="valid"), "takes padding='same'"),
    (lambda: layers.APSConv2D((4,), (4,), padding="valid"),
     "it pads k // 2 on every side"),
    (lambda: layers.APSBasicBlock((4,), dilation_rate=2),
     "takes dilation_rate=1"),
    (lambda: layers.APSDense(3, (4,), use_bias=False), "takes use_bias=True"),
    (lambda: layers.GroupedConv2D(4, 3, data_format="channels_first"),
     "channels-last"),
    (lambda: layers.GroupedConv2D(4, 3, strides=2, dilation_rate=2),
     "dilation_rate > 1 needs strides=1"),
], ids=["slim-filters", "slim-kernel", "slim-bias", "shift-bias",
        "group-padding", "aps-padding", "aps-dilation", "aps-dense-bias",
        "channels-first", "dilation-stride"])
def test_arguments_a_technique_fixes_fail_with_the_reason(make, message):
    with pytest.raises(UsageError, match=message):
        make()


def test_fixed_arguments_at_their_fixed_value_are_accepted():
    layer = layers.SlimConv2D(kernel_size=3, padding="same", use_bias=False,
                              bias_initializer=None, dilation_rate=(1, 1),
                              data_format="channels_last", name="s")
    assert layer.get_config() == layers.SlimConv2D(name="s").get_config()


@pytest.mark.parametrize("case", ["GroupedConv2D", "ExpanderConv2D",
                                  "ExpandedConv2D", "SlimConv2D",
                                  "ShiftBlock", "APSConv2D", "ExpanderDense"])
def test_input_spec_fixes_rank_and_channels_once_built(case):
    kwargs, shape = PUBLIC_LAYERS[case]
    layer = _layer_class(case)(**kwargs)
    assert layer.input_spec.ndim in (len(shape), None)
    layer(np.ones(shape, "float32"))
    assert layer.input_spec.axes == {-1: shape[-1]}
    wider = shape[:-1] + (shape[-1] * 2,)
    with pytest.raises(ValueError, match="expected axis -1"):
        layer(np.ones(wider, "float32"))


# -- Names: X-Nets' density (formerly expand_ratio) -------------------------


def test_expand_ratio_is_a_deprecated_density():
    with pytest.warns(DeprecationWarning, match=r"use density=0\.25"):
        old = layers.ExpanderConv2D(8, 3, expand_ratio=4, seed=0, name="x")
    new = layers.ExpanderConv2D(8, 3, density=0.25, seed=0, name="x")
    assert old.get_config() == new.get_config()
    with pytest.warns(DeprecationWarning, match="expand_ratio"):
        model = keras_compact.models.densenet.densenet_bc_cifar(
            10, 4, (8, 8, 3), 10, expand_ratio=2)
    assert model.name == "x_densenet_bc_10_4_2"
    assert {layer.density for layer in model.layers
            if isinstance(layer, layers.ExpanderConv2D)} == {0.5}


@pytest.mark.parametrize("in_channels,compression", [
    (48, 3), (32, 3), (64, 4), (5, 4), (96, 2), (24, 8)])
def test_density_draws_the_papers_degree(in_channels, compression):
    # The paper's rule max(C // ES, 1), through density = 1 / ES.
    layer = layers.ExpanderConv2D(8, 1, density=1 / compression, seed=0)
    layer.build((None, 4, 4, in_channels))
    assert (layer.get_mask().sum(axis=0) == max(
        in_channels // compression, 1)).all()


def _rewrite_config(path, edit):
    """Rewrites `config.json` inside the `.keras` zip at `path`."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_keras_files_saved_before_the_new_arguments_still_load(tmp_path):
    inputs = keras.Input((6, 6, 8))
    x = layers.ExpanderConv2D(8, 3, density=0.5, seed=0, name="x")(inputs)
    x = layers.GroupedConv2D(16, 3, groups=2, name="g")(x)
    x = layers.SlimConv2D(k="2", reduction=4, name="s")(x)
    x = layers.ShiftBlock(8, name="b")(x)
    model = keras.Model(inputs, x)
    path = str(tmp_path / "old.keras")
    model.save(path)
    new_keys = ("dilation_rate", "activation", "kernel_constraint",
                "bias_constraint", "kernel_regularizer")

    def as_before(config):
        for layer in config["config"]["layers"]:
            arguments = layer["config"]
            if layer["class_name"] == "SlimConv2D":
                arguments["activation"] = None  # its old "none"
                new = ("kernel_regularizer", "kernel_constraint")
            else:
                new = new_keys
            for key in new:
                arguments.pop(key, None)
            if "density" in arguments:
                arguments["expand_ratio"] = 1 / arguments.pop("density")

    _rewrite_config(path, as_before)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        restored = keras.models.load_model(path)
    assert restored.get_layer("x").density == 0.5
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)),
        keras.ops.convert_to_numpy(model(x)))
