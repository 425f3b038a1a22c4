"""CIFAR ResNets, the MAC/params profiler and SavedModel/LiteRT export."""

import keras
import numpy as np
import pytest

from keras_compact import export
from keras_compact import models
from keras_compact import profiling
from tests import testing


@pytest.mark.parametrize("arch,params,macs", [
    # Projection-shortcut CIFAR ResNets as counted in specs/od_cheap.md s.4.
    ("resnet20", 272_474, 40_813_184),
    ("resnet32", 466_906, 69_124_736),
    ("resnet56", 855_770, 125_747_840),
    ("resnet110", 1_730_714, 253_149_824),
])
def test_cifar_resnet_size(arch, params, macs):
    result = profiling.profile(models.build(arch, (32, 32, 3), 10))
    assert (result.params, result.macs) == (params, macs)


def test_resnet_block_is_pluggable():
    calls = []

    def counting_block(x, filters, strides, name):
        calls.append((filters, strides))
        return models.blocks.basic_block(x, filters, strides, name)

    models.build("resnet20", (32, 32, 3), 10, block=counting_block)
    assert calls == [(16, 1)] * 3 + [(32, 2)] + [(32, 1)] * 2 + [
        (64, 2)] + [(64, 1)] * 2


def test_bad_depth_and_unknown_arch():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.resnet_cifar.resnet_cifar(21, (32, 32, 3), 10)
    with pytest.raises(ValueError, match="Valid archs: .*resnet20"):
        models.build("resnet21", (32, 32, 3), 10)


def test_resnet_stride2_pads_like_pytorch():
    model = models.build("resnet20", (32, 32, 3), 10)
    pad = model.get_layer("stage2_block1_conv1_pad")
    assert pad.padding == ((1, 1), (1, 1))
    assert model.get_layer("stage2_block1_conv1").padding == "valid"


def test_resnet_saving_round_trip():
    model = models.build("resnet20", (32, 32, 3), 10)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    testing.run_model_saving_test(model, x)


def _tf_profiler_float_ops(model, input_shape):
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants
    from tensorflow.python.profiler import model_analyzer
    from tensorflow.python.profiler import option_builder

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(
        tf.TensorSpec((1, *input_shape), tf.float32))
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    result = model_analyzer.profile(frozen.graph, options=options)
    return result.total_float_ops


def test_profiler_agrees_with_tf_profiler():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="valid",
                            use_bias=False)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, use_bias=False)(x)
    model = keras.Model(inputs, outputs)
    ours = profiling.profile(model).macs
    assert ours == 16 * 16 * 8 * 27 + 7 * 7 * 12 * 72 + 7 * 7 * 12 * 9 + (
        588 * 10)
    assert _tf_profiler_float_ops(model, (16, 16, 3)) == 2 * ours


def test_profile_table_lists_layers_and_total():
    table = profiling.profile(models.build("resnet20", (32, 32, 3),
                                           10)).table()
    assert "| stem_conv | Conv2D |" in table
    assert table.endswith("| total | | | 272,474 | 40,813,184 |")


# The export path meets the same layers (conv, folded BN, pad, add, pooling,
# dense) in ResNet-8 on 16x16 as in ResNet-20 on 32x32, in a third of the
# converter's time; the ResNet-20 case runs in the ci_slow tier.
@pytest.fixture(scope="module", params=[
    pytest.param((8, 16), id="resnet8"),
    pytest.param((20, 32), id="resnet20",
                 marks=[pytest.mark.slow, pytest.mark.ci_slow]),
])
def trained_resnet(request):
    """A CIFAR ResNet with non-trivial BN statistics and its inputs."""
    depth, size = request.param
    keras.utils.set_random_seed(0)
    model = models.resnet_cifar.resnet_cifar(depth, (size, size, 3), 10)
    x = np.random.default_rng(0).normal(size=(64, size, size, 3)).astype(
        "float32")
    y = np.random.default_rng(1).integers(0, 10, 64)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=2, verbose=0)
    return model, x


def test_litert_float32_matches_keras(trained_resnet):
    model, x = trained_resnet
    testing.run_litert_export_test(model, x[:8], atol=1e-4)


def test_litert_int8_is_under_0_4_of_float32(trained_resnet, tmp_path):
    # int8 accuracy is tested on nets trained on real images in
    # tests/test_deploy.py: on random weights and noise inputs it means
    # nothing.
    model, x = trained_resnet
    path = export.to_litert(model, str(tmp_path / "m.tflite"), "int8",
                            representative_data=x)
    float_path = export.to_litert(model, str(tmp_path / "f.tflite"))
    import os

    assert os.path.getsize(path) < 0.4 * os.path.getsize(float_path)


def test_litert_float16_and_saved_model(trained_resnet, tmp_path):
    import tensorflow as tf

    model, x = trained_resnet
    expected = model.predict(x[:4], verbose=0)
    path = export.to_litert(model, str(tmp_path / "h.tflite"), "float16")
    np.testing.assert_allclose(testing.run_litert(path, x[:4]), expected,
                               atol=5e-2)
    export.to_saved_model(model, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = loaded.serve(x[:4])
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_export_bad_arguments(trained_resnet, tmp_path):
    model, _ = trained_resnet
    with pytest.raises(ValueError, match="end in '.tflite'"):
        export.to_litert(model, str(tmp_path / "m.lite"))
    with pytest.raises(ValueError, match="representative_data"):
        export.to_litert(model, str(tmp_path / "m.tflite"), "int8")
    with pytest.raises(ValueError, match="Valid LiteRT quantizations"):
        export.to_litert(model, str(tmp_path / "m.tflite"), "int4")


def test_litert_refuses_flex_ops(tmp_path):
    import tensorflow as tf

    class NeedsFlex(keras.layers.Layer):
        def call(self, x):
            # No builtin LiteRT kernel: would need the TF flex delegate.
            return tf.raw_ops.Igamma(a=tf.abs(x) + 1.0, x=tf.abs(x) + 1.0)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, NeedsFlex()(inputs))
    with pytest.raises(Exception, match="(?i)flex|not supported|select"):
        export.to_litert(model, str(tmp_path / "flex.tflite"))
