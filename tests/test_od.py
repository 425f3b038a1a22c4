"""Cheap convolutions and online distillation (specs/od_cheap.md)."""

import os
import tempfile
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import od as od_config
from keras_compact import export
from keras_compact import layers
from keras_compact import losses
from keras_compact import methods
from keras_compact import profiling
from keras_compact.layers import cheap
from keras_compact.methods import od
from keras_compact.models.resnet_cifar import resnet_cifar
from tests import testing


# --------------------------------------------------------------------------
# NumPy re-derivation of the reference CUDA kernel (spec 1.1), NCHW loops.
def reference_shift(x_nchw, direction=1):
    """`moduloshiftgeneric` forward (direction 1) or backward (-1)."""
    _, channels, height, width = x_nchw.shape
    rounded = 9 * (channels // 9)
    out = np.zeros_like(x_nchw)
    for c in range(channels):
        dw = (c % 3) - 1 if c < rounded else 0
        dh = ((c // 3) % 3) - 1 if c < rounded else 0
        dh, dw = dh * direction, dw * direction
        for y in range(height):
            for x in range(width):
                sy, sx = y + dh, x + dw
                if 0 <= sy < height and 0 <= sx < width:
                    out[:, c, y, x] = x_nchw[:, c, sy, sx]
    return out


def nhwc_shift(x, direction=1):
    return reference_shift(x.transpose(0, 3, 1, 2), direction).transpose(
        0, 2, 3, 1)


@pytest.mark.parametrize("shape", [(2, 32, 32, 16), (2, 16, 16, 32),
                                   (1, 8, 8, 64), (3, 5, 7, 10),
                                   (1, 15, 29, 9), (2, 4, 4, 8),
                                   (1, 14, 14, 27), (1, 6, 3, 20)])
def test_shift_equals_reference_kernel(shape):
    x = np.random.normal(size=shape).astype("float32")
    actual = keras.ops.convert_to_numpy(layers.Shift2D()(x))
    np.testing.assert_array_equal(actual, nhwc_shift(x))


@pytest.mark.parametrize("shape", [(2, 9, 9, 16), (1, 5, 7, 10),
                                   (1, 4, 4, 27)])
def test_shift_gradient_is_reverse_shift(shape):
    x = tf.constant(np.random.normal(size=shape).astype("float32"))
    g = np.random.normal(size=shape).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(layers.Shift2D()(x) * g)
    np.testing.assert_array_equal(tape.gradient(value, x).numpy(),
                                  nhwc_shift(g, direction=-1))


def test_shift_worked_example():
    """Spec 1.1: C=16, 4x4, input 100 c + 4 y + x."""
    c, y, x = np.meshgrid(np.arange(16), np.arange(4), np.arange(4),
                          indexing="ij")
    image = (100 * c + 4 * y + x).astype("float32").transpose(1, 2, 0)
    out = keras.ops.convert_to_numpy(layers.Shift2D()(image[None]))[0]
    np.testing.assert_array_equal(
        out[..., 0], [[0, 0, 0, 0], [0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]])
    np.testing.assert_array_equal(
        out[..., 2], [[0, 0, 0, 0], [201, 202, 203, 0], [205, 206, 207, 0],
                      [209, 210, 211, 0]])
    np.testing.assert_array_equal(
        out[..., 6], [[0, 604, 605, 606], [0, 608, 609, 610],
                      [0, 612, 613, 614], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        out[..., 8], [[805, 806, 807, 0], [809, 810, 811, 0],
                      [813, 814, 815, 0], [0, 0, 0, 0]])
    for channel in (4, 9, 15):
        np.testing.assert_array_equal(out[..., channel], image[..., channel])
    assert out.sum() == 175990 and image.sum() == 193920


def test_shift_directions_identity_channels():
    for channels in (16, 32, 64):
        identities = cheap.shift_directions(channels).count((0, 0))
        assert identities == 8
    assert cheap.shift_directions(8) == [(0, 0)] * 8
    assert cheap.shift_directions(10)[:9] == list(cheap.DIRECTIONS)


def test_shift_layer_contract():
    layer = testing.run_layer_test(layers.Shift2D, {}, (2, 6, 6, 12),
                                   (2, 6, 6, 12), fit=False,
                                   expected_num_trainable_weights=0,
                                   expected_num_non_trainable_weights=0)
    assert layer.weights == []
    assert layer.profile((None, 6, 6, 12), (None, 6, 6, 12)) == {
        "params": 0, "macs": 0}


# --------------------------------------------------------------------------
# Blocks: NumPy forward of the reference skeleton in inference mode.
def _conv(x, kernel, groups=1, stride=1):
    """NHWC correlation with 'same' padding for 3x3, valid for 1x1."""
    kh, kw, in_per_group, filters = kernel.shape
    pad = kh // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, _ = x.shape
    out_h, out_w = h - kh + 1, w - kw + 1
    out = np.zeros((n, out_h, out_w, filters))
    per_group = filters // groups
    for g in range(groups):
        xs = x[..., g * in_per_group:(g + 1) * in_per_group]
        ks = kernel[..., g * per_group:(g + 1) * per_group]
        for i in range(kh):
            for j in range(kw):
                out[..., g * per_group:(g + 1) * per_group] += np.einsum(
                    "nhwc,cf->nhwf", xs[:, i:i + out_h, j:j + out_w], ks[i, j])
    return out[:, ::stride, ::stride]


def _bn(x, bn):
    gamma, beta, mean, var = (keras.ops.convert_to_numpy(w)
                              for w in bn.weights)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _randomise_bn(block):
    for layer in block._layers:
        if isinstance(layer, layers.BatchNormalization):
            for weight in layer.weights:
                low = 0.5 if "variance" in weight.path or "gamma" in \
                    weight.path else -0.5
                weight.assign(np.random.uniform(low, 1.5, weight.shape))


def _numpy_spatial(block, layer, x):
    if isinstance(layer, layers.Shift2D):
        return nhwc_shift(x)
    kernel = keras.ops.convert_to_numpy(layer.weights[0])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = kernel.transpose(0, 1, 3, 2)  # (3, 3, 1, C): C groups
        return _conv(x, kernel, groups=x.shape[-1])
    return _conv(x, kernel, groups=block.groups)


@pytest.mark.parametrize("block_cls, kwargs", [
    (layers.ShiftBlock, {}), (layers.DepthwiseBlock, {}),
    (layers.GroupBlock, {"groups": 2})])
@pytest.mark.parametrize("in_channels, filters, strides",
                         [(18, 18, 1), (12, 20, 2)])
def test_block_matches_numpy_skeleton(block_cls, kwargs, in_channels,
                                      filters, strides):
    x = np.random.normal(size=(2, 6, 6, in_channels)).astype("float32")
    block = block_cls(filters, strides=strides, **kwargs)
    block(x)
    _randomise_bn(block)
    actual = keras.ops.convert_to_numpy(block(x, training=False))

    def unit(h, spatial, conv, bn, stride):
        kernel = keras.ops.convert_to_numpy(conv.kernel)
        h = _conv(_numpy_spatial(block, spatial, h), kernel, stride=stride)
        return np.maximum(_bn(h, bn), 0)  # ReLU before the add

    h = unit(x, block.spatial1, block.conv1, block.bn1, 1)
    h = unit(h, block.spatial2, block.conv2, block.bn2, strides)
    shortcut = x
    if block.shortcut_conv is not None:
        shortcut = _bn(_conv(x, keras.ops.convert_to_numpy(
            block.shortcut_conv.kernel), stride=strides), block.shortcut_bn)
    assert (block.shortcut_conv is None) == (in_channels == filters
                                              and strides == 1)
    np.testing.assert_allclose(actual, h + shortcut, atol=1e-4)
    assert (actual < 0).any()  # no ReLU after the addition


@pytest.mark.parametrize("block_cls, kwargs", [
    (layers.ShiftBlock, {}), (layers.DepthwiseBlock, {}),
    (layers.GroupBlock, {"groups": 4})])
def test_block_layer_contract(block_cls, kwargs):
    # Three 1x1 convs and three BNs (gamma, beta; two statistics), plus two
    # spatial kernels unless the spatial op is the weightless shift.
    spatial = 0 if block_cls is layers.ShiftBlock else 2
    testing.run_layer_test(block_cls, {"filters": 16, "strides": 2, **kwargs},
                           (2, 8, 8, 8), (2, 4, 4, 16),
                           expected_num_trainable_weights=9 + spatial,
                           expected_num_non_trainable_weights=6)


def test_block_argument_errors():
    with pytest.raises(ValueError, match="strides must be 1 or 2"):
        layers.ShiftBlock(16, strides=3)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        layers.GroupBlock(16, groups=3)
    with pytest.raises(ValueError, match="must divide the input channels"):
        layers.GroupBlock(16, groups=8)(np.zeros((1, 4, 4, 12), "float32"))


def test_depthwise_init_matches_pytorch_kaiming():
    block = layers.DepthwiseBlock(64)
    block.build((None, 8, 8, 64))
    std = np.std(keras.ops.convert_to_numpy(block.spatial1.kernel))
    assert abs(std - np.sqrt(2 / 9)) < 0.03


@pytest.mark.parametrize("block, kwargs, params, macs", [
    (layers.ShiftBlock, {}, 102_106, 15_385_216),
    (layers.DepthwiseBlock, {}, 119_818, 20_472_448),
    (layers.GroupBlock, {"groups": 4}, 311_194, 50_774_656),
])
def test_resnet56_student_size_matches_spec(block, kwargs, params, macs):
    model = resnet_cifar(56, (32, 32, 3), 10, block=block.as_block(**kwargs))
    result = profiling.profile(model)
    assert (result.params, result.macs) == (params, macs)
    # Keras also counts the BN moving statistics: 4,256 per student.
    assert model.count_params() == params + 4_256
    if block is layers.DepthwiseBlock:
        # The repo's flops() counts dw2 of the two stride-2 blocks after
        # the stride, though it runs before it.
        rows = {p.name: p for p in result.layers}
        undercount = 0
        for name, channels, height in (("stage2_block1", 32, 32),
                                       ("stage3_block1", 64, 16)):
            assert rows[name].output_shape[1] == height // 2
            undercount += channels * 9 * (height**2 - (height // 2)**2)
        assert undercount == 331_776
        assert result.macs - undercount == 20_140_672


# --------------------------------------------------------------------------
# Loss: the reference values of spec 2.2 (float64).
def _fixed_logits():
    n, k = np.arange(4)[:, None], np.arange(10)[None]
    teacher = 3 * np.sin(10 * n + k)
    students = [2 * np.cos((n + 1) * (k + 1) * (j + 1) / 7) for j in range(4)]
    return teacher, students, np.array([3, 1, 4, 1])


def test_distillation_loss_reference_values():
    teacher, students, labels = _fixed_logits()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                    dtype="float64")
    kd = losses.DistillationLoss(temperature=4.0, dtype="float64")
    np.testing.assert_allclose(float(ce(labels, teacher)), 5.53218316,
                               atol=1e-6)
    expected = [(2.29755938, 0.25566036), (3.08603218, 0.27361087),
                (3.05405110, 0.32947614), (3.92815687, 0.19817360)]
    total = float(ce(labels, teacher))
    for logits, (ce_value, kd_value) in zip(students, expected):
        np.testing.assert_allclose(float(ce(labels, logits)), ce_value,
                                   atol=1e-6)
        np.testing.assert_allclose(float(kd(teacher, logits)), kd_value,
                                   atol=1e-6)
        total += float(ce(labels, logits)) + float(kd(teacher, logits))
    np.testing.assert_allclose(total, 18.95490365, atol=1e-6)
    # The reference's KL is a mean over N*K elements: batchmean is 10x.
    np.testing.assert_allclose(float(kd(teacher, students[0])) / 16,
                               0.0159787727, atol=1e-9)
    batchmean = losses.DistillationLoss(4.0, average_over_classes=False,
                                        dtype="float64")
    np.testing.assert_allclose(float(batchmean(teacher, students[0])) / 16,
                               0.1597877265, atol=1e-9)


def test_distillation_loss_gradients_reach_both_sides():
    teacher, students, _ = _fixed_logits()
    teacher, student = tf.constant(teacher), tf.constant(students[0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([teacher, student])
        value = losses.DistillationLoss(4.0, dtype="float64")(teacher,
                                                              student)
    np.testing.assert_allclose(tape.gradient(value, student)[0], [
        0.00401318, -0.00296546, -0.00400897, 0.00230845, 0.00606389,
        0.00616614, 0.00311083, -0.00384442, -0.00799729, -0.00284635],
        atol=1e-8)
    np.testing.assert_allclose(tape.gradient(value, teacher)[0], [
        -0.00413081, 0.00162827, 0.00287269, -0.00304327, -0.00431619,
        -0.00408992, -0.00325457, 0.00311207, 0.00912707, 0.00209465],
        atol=1e-8)


def test_distillation_loss_config_round_trip():
    loss = losses.DistillationLoss(temperature=2.0, average_over_classes=False)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, losses.DistillationLoss)
    assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="temperature must be positive"):
        losses.DistillationLoss(temperature=0)


# --------------------------------------------------------------------------
# The OD model. Tiny students (ResNet-8, 8x8 inputs) keep the tests fast.
SHAPE = (8, 8, 3)


def _students(count, block=layers.ShiftBlock, **kwargs):
    return [resnet_cifar(8, SHAPE, 10, block=block.as_block(**kwargs),
                         widths=(9, 18, 27), name=f"student{i + 1}")
            for i in range(count)]


def _data(steps, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * batch, *SHAPE)).astype("float32")
    y = rng.integers(0, 10, steps * batch).astype("int32")
    return x, y


def test_od_model_outputs_and_parameters():
    model = od.OnlineDistillationModel(_students(3))
    students, teacher = model(np.zeros((2, *SHAPE), "float32"))
    assert len(students) == 3 and teacher.shape == (2, 10)
    student_params = profiling.profile(model.students[0]).params
    teacher_head = 2 * 81 + 81 * 10 + 10  # BN over 3 x 27 channels + dense
    assert profiling.trainable_params(model) == 3 * student_params + \
        teacher_head


@pytest.mark.slow
def test_od_ensemble_size_resnet56():
    config = od_config.get_config()
    model = methods.get("od").build_model(config, (32, 32, 3), 10)
    assert profiling.trainable_params(model) == 411_506  # 4 x 102,106 + 3,082
    config.block = "dw"
    model = methods.get("od").build_model(config, (32, 32, 3), 10)
    assert profiling.trainable_params(model) == 482_354


def test_od_loss_matches_formula_and_gradients_flow():
    model = od.OnlineDistillationModel(_students(2), temperature=4.0)
    x, y = _data(1, 8)
    with tf.GradientTape(persistent=True) as tape:
        students, teacher = model(x, training=True)
        loss = model.od_loss(y, students, teacher)
        teacher_ce = keras.losses.sparse_categorical_crossentropy(
            y, teacher, from_logits=True)
        kl_2 = losses.distillation(teacher, students[1], 4.0)
    expected = np.mean(keras.ops.convert_to_numpy(teacher_ce))
    for logits in students:
        expected += np.mean(keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True)))
        log_t = tf.nn.log_softmax(teacher / 4.0)
        log_s = tf.nn.log_softmax(logits / 4.0)
        kl = tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), -1) / 10
        expected += 16 * np.mean(kl.numpy())
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    # No stop_gradient: the teacher CE trains every student backbone, and
    # student 2's KL term trains the teacher head and student 1.
    for student in model.students:
        stem = student.get_layer("stem_conv").kernel
        assert np.abs(tape.gradient(teacher_ce, stem)).sum() > 0
    assert np.abs(tape.gradient(kl_2, model.teacher_fc.kernel)).sum() > 0
    stem_1 = model.students[0].get_layer("stem_conv").kernel
    assert np.abs(tape.gradient(kl_2, stem_1)).sum() > 0


def test_od_fit_logs_per_student_metrics_and_learns():
    model = od.OnlineDistillationModel(_students(2))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  run_eagerly=True)
    x, y = _data(2, 16)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                        validation_data=(x, y))
    assert set(history.history) == {
        f"{prefix}{name}" for prefix in ("", "val_")
        for name in ("loss", "student1_accuracy", "student2_accuracy",
                     "teacher_accuracy")}
    losses_ = history.history["loss"]
    assert losses_[-1] < losses_[0]
    # The loss logged by fit is the objective on the batches seen.
    students, teacher = model(x, training=False)
    logged = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    np.testing.assert_allclose(
        logged["loss"], float(model.od_loss(y, students, teacher)), rtol=1e-5)
    accuracy = np.mean(np.argmax(students[1], -1) == y)
    np.testing.assert_allclose(logged["student2_accuracy"], accuracy)


def _train_losses(strategy, weights, x, y, batch, run_eagerly):
    with strategy.scope():
        model = od.OnlineDistillationModel(_students(2))
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      run_eagerly=run_eagerly)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(
        batch, drop_remainder=True)
    history = model.fit(data, epochs=len(x) // batch, steps_per_epoch=1,
                        shuffle=False, verbose=0)
    return history.history, model.get_weights()


def test_od_mirrored_strategy_matches_default():
    # Each global batch repeats one half, and the reference trains on the
    # halves alone: each replica then runs the same kernels on the same
    # values as the reference step (BN statistics included), and the
    # cross-replica mean of two equal gradients is exact. This checks the
    # loss scaling by the global batch and the metric reduction: a loss or
    # gradient not averaged over the replicas is off by a factor 2. What
    # remains is eager (reference) vs graph kernels (grappler's fused
    # conv + bias + ReLU rounds once where eager rounds three times): a few
    # ulp per value and step, through 8 layers and 3 steps, 8 * 3 * 3 * u
    # = 4e-6 (u = 2**-24) of the loss, hence rtol 1e-5 on the logs; each
    # weight's change over the run carries the same relative error, hence
    # 1e-5 of the change's norm (measured: losses within 1e-6, weights
    # within 2.4e-8 elementwise, oneDNN on and off).
    halves_x, halves_y = _data(3, 4)
    x = np.concatenate([np.concatenate([halves_x[i:i + 4]] * 2)
                        for i in range(0, 12, 4)])
    y = np.concatenate([np.concatenate([halves_y[i:i + 4]] * 2)
                        for i in range(0, 12, 4)])
    weights = od.OnlineDistillationModel(_students(2)).get_weights()
    # The reference run is eager (no tracing: faster, and the same maths).
    default, default_weights = _train_losses(
        tf.distribute.get_strategy(), weights, halves_x, halves_y, 4,
        run_eagerly=True)
    mirrored, mirrored_weights = _train_losses(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), weights, x, y,
        8, run_eagerly=False)
    for key in default:
        np.testing.assert_allclose(mirrored[key], default[key], rtol=1e-5)
    assert default["loss"][0] != default["loss"][2]
    for a, b, start in zip(default_weights, mirrored_weights, weights):
        change = np.linalg.norm(a - start)
        assert np.linalg.norm(b - a) <= 1e-5 * change, (
            np.linalg.norm(b - a) / change)


def test_od_mixed_precision_scales_the_loss():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = od.OnlineDistillationModel(_students(2))
        model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
        assert isinstance(model.optimizer,
                          keras.optimizers.LossScaleOptimizer)
        x, y = _data(2, 8)
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        students, teacher = model(x[:2])
        assert {keras.backend.standardize_dtype(t.dtype)
                for t in (teacher, *students)} == {"float32"}
        assert np.all(np.isfinite(history.history["loss"]))
        assert model.students[0].get_layer("stem_conv").kernel.dtype == \
            "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_deployable_is_one_plain_student_and_exports(tmp_path):
    method = methods.get("od")
    model = od.OnlineDistillationModel(_students(2))
    model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
    x, y = _data(2, 16, seed=1)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    validation = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    context = types.SimpleNamespace(
        data=types.SimpleNamespace(validation=validation),
        workdir=str(tmp_path), config=od_config.get_config(),
        strategy=tf.distribute.get_strategy())
    index = model.select_student(validation)
    student = method.deployable(model, context)
    assert isinstance(student, keras.Model) and student.name == \
        f"student{index + 1}"
    assert not isinstance(student, od.OnlineDistillationModel)
    students, _ = model(x, training=False)
    accuracy = [np.mean(np.argmax(s, -1) == y) for s in students]
    assert index == int(np.argmax(accuracy))
    # A copy with new variables holding exactly the chosen student's values.
    assert len(student.weights) == len(model.students[index].weights)
    assert profiling.trainable_params(student) == profiling.trainable_params(
        model.students[index])
    assert not {id(w) for w in student.weights} & {id(w)
                                                   for w in model.weights}
    for a, b in zip(student.get_weights(),
                    model.students[index].get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(student(x, training=False)),
        keras.ops.convert_to_numpy(students[index]), atol=1e-6)
    testing.run_litert_export_test(student, x[:4])

    context.data.validation = None
    with pytest.raises(ValueError, match="validation_split"):
        method.deployable(model, context)


@pytest.mark.slow
def test_best_student_exports_as_saved_model():
    model = od.OnlineDistillationModel(_students(2, layers.DepthwiseBlock))
    student = model.students[1]
    x, _ = _data(1, 4)
    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_saved_model(student, os.path.join(tmp, "saved"))
        loaded = tf.saved_model.load(path)  # keep it alive while serving
        served = loaded.serve(x)
    np.testing.assert_allclose(served, student(x), atol=1e-4)


def test_od_model_saves_and_loads():
    model = od.OnlineDistillationModel(_students(2, layers.GroupBlock,
                                                 groups=3), temperature=3.0)
    x, _ = _data(1, 4)
    expected = model(x, training=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "od.keras")
        model.save(path)
        restored = keras.models.load_model(path)
    assert restored.temperature == 3.0
    actual = restored(x, training=False)
    for a, b in zip(keras.tree.flatten(actual), keras.tree.flatten(expected)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_od_method_options_config_and_errors():
    method = methods.get("od")
    config = od_config.get_config("students=2,block=group,group_num=2,"
                                  "arch=resnet20")
    assert set(method.options) <= set(config)
    assert (config.epochs, config.decay_epochs, config.weight_decay,
            config.lr, config.temperature) == (300, (150, 225), 2e-4, 0.1, 4.0)
    assert config.validation_split > 0
    model = method.build_model(config, SHAPE, 10)
    assert [s.name for s in model.students] == ["student1", "student2"]
    assert model.students[0].get_layer("stage1_block1").groups == 2
    config.block = "conv"
    with pytest.raises(ValueError, match="dw, group, shift"):
        method.build_model(config, SHAPE, 10)
    config.block, config.students = "shift", 0
    with pytest.raises(ValueError, match="students must be an int >= 1"):
        method.build_model(config, SHAPE, 10)
    with pytest.raises(ValueError, match="distinct names"):
        od.OnlineDistillationModel(_students(1) * 2)


def test_single_student_od_trains():
    model = od.OnlineDistillationModel(_students(1))
    model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
    x, y = _data(1, 8)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_od_loss_adds_regularization_of_any_student():
    def student(name, l2):
        inputs = keras.Input(SHAPE)
        x = keras.layers.Conv2D(
            4, 3, kernel_regularizer=keras.regularizers.L2(l2))(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(10)(x), name=name)

    model = od.OnlineDistillationModel([student("a", 0.5), student("b", 0.0)])
    x, y = _data(1, 4)
    students, teacher = model(x, training=True)
    kernel = model.students[0].layers[1].kernel
    penalty = 0.5 * float(keras.ops.sum(kernel**2))
    base = model.cross_entropy(y, teacher) + sum(
        model.cross_entropy(y, s) + model.distillation(teacher, s)
        for s in students)
    np.testing.assert_allclose(
        float(model.od_loss(y, students, teacher)) - float(base), penalty,
        rtol=1e-5)
    # Under 2 replicas each replica's objective, penalty included, is
    # halved, so that the all-reduce sum of the gradients averages them.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    per_replica = strategy.run(lambda: model.od_loss(y, students, teacher))
    for value in strategy.experimental_local_results(per_replica):
        np.testing.assert_allclose(float(value), (float(base) + penalty) / 2,
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="no GlobalAveragePooling2D"):
        od.OnlineDistillationModel([keras.Sequential(
            [keras.Input(SHAPE), keras.layers.Flatten(),
             keras.layers.Dense(10)], name="flat")])
