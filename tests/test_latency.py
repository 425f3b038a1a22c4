"""LiteRT graphs that XNNPACK runs whole: SlimConv2D's export form and the
int8 export's repair of degenerate scales (issue 9, latency target)."""

import collections
import os

import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

from keras_compact import export
from keras_compact import layers
from keras_compact.models import blocks
from tests import test_slimconv
from tests import testing


def _slim_model(activation="relu", reduction=8):
    inputs = keras.Input((8, 8, 32))
    layer = layers.SlimConv2D(k="4/3", strides=2, reduction=reduction,
                              activation=activation, name="slim")
    outputs = blocks.classifier(layer(inputs), 10)
    model = keras.Model(inputs, outputs)
    test_slimconv.randomize_bns(layer, np.random.default_rng(0))
    return model


def _ops(path, delegate=True):
    kwargs = {} if delegate else {"experimental_op_resolver_type": (
        litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)}
    runner = litert.Interpreter(model_path=path, num_threads=1, **kwargs)
    runner.allocate_tensors()
    return collections.Counter(op["op_name"]
                               for op in runner._get_ops_details())


def test_slimconv_exports_as_one_xnnpack_graph(tmp_path):
    model = _slim_model()
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 32)).astype("float32")
    testing.run_litert_export_test(model, x, atol=1e-4)
    path = export.to_litert(model, str(tmp_path / "m.tflite"))
    ops = _ops(path, delegate=False)
    # No channel reversal of data (XNNPACK has no REVERSE_V2 and cut the
    # graph at each), no slice from indexing, no ReLU left unfused.
    for name in ("REVERSE_V2", "STRIDED_SLICE", "RELU"):
        assert ops[name] == 0, ops
    assert ops["CONCATENATION"] == 1 and ops["CONV_2D"] == 3, ops
    assert _ops(path)["DELEGATE"] == 1


def test_activation_per_branch_is_relu_after_concat():
    model = _slim_model()
    plain = _slim_model(activation=None)
    plain.set_weights(model.get_weights())
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 32)).astype("float32")
    with_relu = model.get_layer("slim")(x, training=False)
    without = plain.get_layer("slim")(x, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(with_relu),
                                  np.maximum(keras.ops.convert_to_numpy(
                                      without), 0))
    config = model.get_layer("slim").get_config()
    assert config["activation"] == "relu"
    assert layers.SlimConv2D.from_config(config).activation is (
        keras.activations.relu)
    # Serialised as Keras serialises no activation.
    assert plain.get_layer("slim").get_config()["activation"] == "linear"


def test_flipped_weights_are_the_flip_of_the_weights():
    layer = _slim_model().get_layer("slim")
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 32)).astype("float32")
    weights, flipped = (keras.ops.convert_to_numpy(w) for w in
                        layer._channel_weights(x, training=False))
    assert weights.shape == flipped.shape == (4, 1, 1, 32)
    np.testing.assert_allclose(flipped, weights[..., ::-1], rtol=1e-6,
                               atol=1e-7)


def _dead_squeeze_model():
    """Every squeeze unit dead, as seen after a few large SGD steps."""
    model = _slim_model()
    bn = model.get_layer("slim").squeeze_bn
    c = bn.gamma.shape[0]
    bn.set_weights([np.ones(c), np.full(c, -100.0), np.zeros(c),
                    np.ones(c)])
    return model


def _int8_logits(path, x, delegate):
    kwargs = {} if delegate else {"experimental_op_resolver_type": (
        litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)}
    runner = litert.Interpreter(model_path=path, **kwargs)
    runner.allocate_tensors()
    (inp,), (out,) = runner.get_input_details(), runner.get_output_details()
    logits = []
    for sample in x:
        scale, zero = inp["quantization"]
        runner.set_tensor(inp["index"], np.clip(
            np.round(sample[None] / scale + zero), -128, 127).astype(np.int8))
        runner.invoke()
        scale, zero = out["quantization"]
        logits.append((runner.get_tensor(out["index"])[0].astype("float32")
                       - zero) * scale)
    return np.stack(logits), scale


def test_int8_export_widens_degenerate_scales_for_xnnpack(tmp_path):
    model = _dead_squeeze_model()
    rng = np.random.default_rng(4)
    calibration = rng.normal(size=(32, 8, 8, 32)).astype("float32")
    x = rng.normal(size=(4, 8, 8, 32)).astype("float32")
    raw = str(tmp_path / "raw.tflite")
    model.export(raw, format="litert", verbose=False,
                 **export.LITERT_FORMATS.get("int8")(calibration))
    with pytest.raises(RuntimeError, match="XNNPACK"):
        _ops(raw)
    before, step = _int8_logits(raw, x, delegate=False)

    path = export.to_litert(model, str(tmp_path / "m.tflite"), "int8",
                            representative_data=calibration)
    assert _ops(path)["DELEGATE"] == 1
    assert (litert.Interpreter(model_path=path).get_signature_list()
            == litert.Interpreter(model_path=raw).get_signature_list())
    after, _ = _int8_logits(path, x, delegate=False)
    np.testing.assert_allclose(after, before, atol=1.01 * step)
    delegated, _ = _int8_logits(path, x, delegate=True)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(delegated - expected).max() < 0.1 * np.abs(expected).max()
    assert export.widen_degenerate_scales(path) == 0  # already repaired


def test_widening_leaves_healthy_and_float_graphs_alone(tmp_path):
    model = _slim_model()
    calibration = np.random.default_rng(5).normal(
        size=(32, 8, 8, 32)).astype("float32")
    for quantization in ("float32", "int8"):
        path = str(tmp_path / f"{quantization}.tflite")
        model.export(path, format="litert", verbose=False,
                     **export.LITERT_FORMATS.get(quantization)(calibration))
        size = os.path.getsize(path)
        assert export.widen_degenerate_scales(path) == 0
        assert os.path.getsize(path) == size
