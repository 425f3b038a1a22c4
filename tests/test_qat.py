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


def _random_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c),
                               rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                               rng.uniform(0.5, 2.0, c)])
    return model


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
    model = _random_bn(keras.Model(inputs, outputs))
    return export.with_raw_input(model, dataset.mean, dataset.std)


def _calibrated_twin_and_file(servable, calibration, path):
    """The calibrated twin of `servable` and its int8 file at `path`."""
    twin = qat.calibrate(qat.quantize_model(servable), calibration)
    return twin, export.to_litert(servable, str(path), "int8", calibration)


def test_qat_twin_of_grouped_residual_net_equals_int8_file(tmp_path):
    dataset = deploy_models.fashion_mnist()
    twin, path = _calibrated_twin_and_file(
        _grouped_residual_net(dataset), deploy_models.calibration(dataset),
        tmp_path / "g.tflite")
    # The converter gives the residual conv's output (the ADD operand
    # computed last) the union of its range and the ADD's; the twin
    # models that (`qat._join_add_ranges`), so one step holds here too.
    assert _max_steps(twin, path, dataset.x_test[:64]) <= ONE_STEP
    # One grouped CONV_2D with or without oneDNN: the split form that
    # trains without it (a CONV_2D per group, CONCATENATION, BN left as a
    # MUL and an ADD, each quantized) would be 2 steps from the twin.
    assert not {"SPLIT", "CONCATENATION", "MUL"} & set(
        export.litert_ops(path))
    grouped = [q for q in qat.quantizers(twin) if "grouped" in q.name]
    assert grouped[0].joined is not None


def test_qat_refuses_layers_it_cannot_model():
    inputs = keras.Input((8, 8, 32))
    outputs = layers.SlimConv2D(k="4/3")(inputs)
    with pytest.raises(UsageError, match="cannot model layer .*SlimConv2D"):
        qat.quantize_model(keras.Model(inputs, outputs))
    outputs = layers.ShiftBlock(32)(inputs)
    with pytest.raises(UsageError, match="ShiftBlock.*residual block"):
        qat.quantize_model(keras.Model(inputs, outputs))
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(4, 3, activation="sigmoid")(inputs)
    with pytest.raises(UsageError, match="fuses only relu and relu6"):
        qat.quantize_model(keras.Model(inputs, outputs))


def _masked_xnet(dataset):
    """X-Nets' deployable default: masked expander conv and dense."""
    inputs = keras.Input(dataset.input_shape)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same",
                            use_bias=False)(inputs)
    x = keras.layers.ReLU()(BatchNormalization()(x))
    x = layers.ExpanderConv2D(32, 3, density=1 / 4, seed=0)(x)
    x = keras.layers.ReLU()(BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = layers.ExpanderDense(10, density=1 / 2, seed=1,
                                   use_bias=True)(x)
    model = _random_bn(keras.Model(inputs, outputs))
    return export.with_raw_input(model, dataset.mean, dataset.std)


def test_qat_twin_of_masked_xnet_equals_int8_file(tmp_path):
    dataset = deploy_models.fashion_mnist()
    twin, path = _calibrated_twin_and_file(
        _masked_xnet(dataset), deploy_models.calibration(dataset),
        tmp_path / "x.tflite")
    assert _max_steps(twin, path, dataset.x_test[:64]) <= ONE_STEP


def _three_channel_net(shape=(16, 16, 3)):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = _random_bn(keras.Model(inputs, keras.layers.Dense(10)(x)))
    # CIFAR-10's statistics: three different stds.
    return export.with_raw_input(model, [125.3, 123.0, 113.9],
                                 [63.0, 62.1, 66.7])


def test_qat_twin_on_three_channel_pixels_equals_int8_file(tmp_path):
    pixels = np.random.default_rng(0).integers(
        0, 256, (264, 16, 16, 3)).astype("float32")
    twin, path = _calibrated_twin_and_file(
        _three_channel_net(), pixels[:200], tmp_path / "c.tflite")
    # Three different stds: the converter keeps the input MUL (one std
    # is folded into the first conv), and so does the twin.
    assert "MUL" in export.litert_ops(path)
    assert [q.name for q in qat.quantizers(twin)][:2] == [
        "qat_input_normalization_sub", "qat_input_normalization_mul"]
    assert _max_steps(twin, path, pixels[200:]) <= ONE_STEP


# 26 s on the loaded 2-core machine (a mirrored fit and a conversion).
@pytest.mark.slow
@pytest.mark.ci_slow
def test_qat_fine_tunes_under_mirrored_strategy(tmp_path):
    dataset = deploy_models.fashion_mnist()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    calibration = deploy_models.calibration(dataset)
    with strategy.scope():
        servable = _masked_xnet(dataset)
        before = [w.copy() for w in servable.get_weights()]
        twin = qat.fine_tune(servable, _train_pixels(dataset, 512),
                             calibration, epochs=1, steps_per_epoch=2,
                             verbose=0)
    assert any(not np.array_equal(a, b)
               for a, b in zip(before, servable.get_weights()))
    expander = [layer for layer in servable.layers
                if isinstance(layer, layers.ExpanderConv2D)][0]
    # The missing connections stay missing: kernel x mask has no gradient
    # where the mask is 0.
    assert not (expander.kernel.numpy() * (1 - expander.get_mask())).any()
    path = export.to_litert(servable, str(tmp_path / "m.tflite"), "int8",
                            calibration)
    assert _max_steps(twin, path, dataset.x_test[:64]) <= ONE_STEP


def _levels_off(twin, path, pixels):
    """Share of the file's int8 outputs that the twin puts on another
    level."""
    runner = evaluation.open_model(path)
    expected = keras.ops.convert_to_numpy(twin(pixels.astype("float32")))
    return np.mean(np.abs(runner.predict(pixels) - expected)
                   > 0.5 * runner.output_step)


def _deep_separable_net(dataset, blocks=8):
    """Untrained MobileNet-like stack of depthwise + 1x1 blocks whose BN
    statistics are those of real images (so no layer dies or explodes)."""
    inputs = keras.Input(dataset.input_shape)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same",
                            use_bias=False)(inputs)
    x = keras.layers.ReLU()(BatchNormalization()(x))
    for _ in range(blocks):
        x = keras.layers.DepthwiseConv2D(3, padding="same",
                                         use_bias=False)(x)
        x = keras.layers.ReLU(6.0)(BatchNormalization()(x))
        x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
        x = keras.layers.ReLU()(BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    images = (dataset.x_train[:256].astype("float32") - dataset.mean
              ) / dataset.std
    norms = [layer for layer in model.layers
             if isinstance(layer, BatchNormalization)]
    # In training mode each BN normalises by its batch statistics, so
    # storing them as the moving ones gives that forward at inference.
    seen = keras.Model(inputs, [layer.input for layer in norms])(
        images, training=True)
    for layer, h in zip(norms, seen):
        h = keras.ops.convert_to_numpy(h)
        c = h.shape[-1]
        layer.set_weights([np.ones(c), np.zeros(c), h.mean(axis=(0, 1, 2)),
                           h.var(axis=(0, 1, 2))])
    return export.with_raw_input(model, dataset.mean, dataset.std)


# 65 s on the loaded 2-core machine (most of it the conversion).
@pytest.mark.slow
@pytest.mark.ci_slow
def test_qat_twin_of_deep_net_computes_the_int8_kernels(tmp_path):
    dataset = deploy_models.fashion_mnist()
    keras.utils.set_random_seed(0)
    twin, path = _calibrated_twin_and_file(
        _deep_separable_net(dataset), deploy_models.calibration(dataset),
        tmp_path / "d.tflite")
    pixels = dataset.x_test[:128]
    # 19 int8 ops. The twin computes each conv, depthwise and dense layer
    # and the MEAN as XNNPACK does (int32 sums, float32 requantization,
    # round half to even): measured 0.9% of the 1,280 outputs a level off
    # (2.7% with 12 blocks), at most 2 steps. A few flips are left, whose
    # source was not found; each spreads to every value that reads it, so
    # no per-value bound holds through the depth. Computed in float, as
    # before, each layer put ~0.2% of its values on the neighbouring
    # level: 58% of the outputs off, 4 steps (83% and 13 with 12 blocks).
    # 10% sits between the two.
    assert _levels_off(twin, path, pixels) <= 0.10
