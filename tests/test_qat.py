"""Quantization-aware training against the LiteRT int8 file (issue 19)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import evaluation
from keras_compact import export
from keras_compact import layers
from keras_compact import qat
from keras_compact.errors import UsageError
from keras_compact.layers.batch_normalization import BatchNormalization
from tests import deploy_models

pytest.importorskip("ai_edge_litert.interpreter")

# The twin computes on the int8 grids in float32; LiteRT computes in
# integers with a fixed-point requantization multiplier and int32 biases.
# The two round the same value to the same level except within ~1e-6 of a
# level boundary, where one lands on the neighbouring level: a difference
# of one step at the output (measured: at most 1.0000025 steps on 256 test
# images, mean 0.05). The 1e-4 of a step is float32 slack on the product
# `(q - zero) * scale`.
ONE_STEP = 1.0 + 1e-4


def _train_pixels(dataset, count=2048):
    return tf.data.Dataset.from_tensor_slices(
        (dataset.x_train[:count].astype("float32"),
         dataset.y_train[:count])).batch(128)


def _max_steps(twin, path, pixels):
    runner = evaluation.open_model(path)
    actual = runner.predict(pixels)
    expected = keras.ops.convert_to_numpy(twin(pixels.astype("float32")))
    return np.abs(actual - expected).max() / runner.output_step


@pytest.mark.slow
@pytest.mark.ci_slow
def test_qat_twin_equals_int8_file_and_keeps_accuracy(tmp_path):
    trained = deploy_models.trained("plain")
    dataset = trained.dataset
    calibration = deploy_models.calibration(dataset)
    servable = trained.load()
    twin = qat.fine_tune(servable, _train_pixels(dataset), calibration,
                         epochs=1, verbose=0)
    path = export.to_litert(servable, str(tmp_path / "qat.tflite"), "int8",
                            calibration)
    assert _max_steps(twin, path, dataset.x_test[:256]) <= ONE_STEP
    ptq = export.to_litert(trained.load(), str(tmp_path / "ptq.tflite"),
                           "int8", calibration)
    int8 = evaluation.evaluate_on(
        evaluation.open_model(path), dataset,
        reference=evaluation.KerasRunner(model=twin, raw_pixels=True),
        progress=False)
    # The file's accuracy is the QAT model's: a class changes only where
    # two logits lie within a step of each other (measured: 0.0x% of the
    # 10,000 test images); 0.5% is 50 images.
    assert int8["agreement"] >= 0.995, int8
    # Fine-tuning must not cost accuracy against post-training int8 (it
    # gained 4.5 points here, on a net one epoch short of converged).
    before = evaluation.evaluate_on(evaluation.open_model(ptq), dataset,
                                    progress=False)["top1"]
    assert int8["top1"] >= before - 0.005, (int8, before)


def _grouped_residual_net(dataset):
    """Untrained, random BN statistics: grouped conv, add + ReLU, padding,
    strided depthwise, ReLU6, max pooling, flatten and dense."""
    inputs = keras.Input(dataset.input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(BatchNormalization()(x))
    y = layers.GroupedConv2D(16, 3, padding="same", groups=4)(x)
    y = BatchNormalization()(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, use_bias=False)(x)
    x = keras.layers.ReLU(6.0)(BatchNormalization()(x))
    x = keras.layers.MaxPooling2D()(x)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c),
                               rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                               rng.uniform(0.5, 2.0, c)])
    return export.with_raw_input(model, dataset.mean, dataset.std)


def test_qat_twin_of_grouped_residual_net_equals_int8_file(tmp_path):
    dataset = deploy_models.fashion_mnist()
    servable = _grouped_residual_net(dataset)
    calibration = deploy_models.calibration(dataset)
    twin = qat.calibrate(qat.quantize_model(servable), calibration)
    path = export.to_litert(servable, str(tmp_path / "g.tflite"), "int8",
                            calibration)
    # Not one step here: the converter gives the grouped conv's output a
    # wider range than the float min / max the twin (and Keras) see on
    # the same calibration images (measured scale 0.02764 vs 0.02663, the
    # other tensors' scales agree to 1e-6); the cause is not found yet.
    # A 4% coarser grid moves each value by at most half a step, so the
    # output differs by up to two steps (measured 1.99999).
    assert _max_steps(twin, path, dataset.x_test[:64]) <= 2 * ONE_STEP


def test_qat_refuses_layers_it_cannot_model():
    inputs = keras.Input((8, 8, 32))
    outputs = layers.SlimConv2D(k="4/3")(inputs)
    with pytest.raises(UsageError, match="cannot model layer .*SlimConv2D"):
        qat.quantize_model(keras.Model(inputs, outputs))
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(4, 3, activation="sigmoid")(inputs)
    with pytest.raises(UsageError, match="fuses only relu and relu6"):
        qat.quantize_model(keras.Model(inputs, outputs))
