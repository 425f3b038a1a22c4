"""SlimConv: the layer against a NumPy re-derivation of the reference, the
Sc-ResNet sizes of spec section 3.3, the ImageNet ResNet backbone, saving,
LiteRT export and the method hooks."""

import functools
import os
import tempfile

import keras
import numpy as np
import pytest
from ai_edge_litert import interpreter

from configs import slimconv as slimconv_config
from keras_compact import export
from keras_compact import layers
from keras_compact import methods
from keras_compact import models
from keras_compact import profiling
from keras_compact.models import blocks
from keras_compact.models import resnet
from tests import testing

EPS = 1e-5  # PyTorch's BatchNorm2d epsilon, as in the reference


# --- NumPy re-derivation of the reference `slim_conv_3x3.forward` (NCHW). ---


def np_conv2d(x, w, stride=1, padding=0, groups=1):
    """PyTorch's conv2d: x (B, C, H, W), w (O, C / groups, kh, kw)."""
    out_channels, group_in, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    height = (x.shape[2] - kh) // stride + 1
    width = (x.shape[3] - kw) // stride + 1
    group_out = out_channels // groups
    y = np.zeros((x.shape[0], out_channels, height, width))
    for g in range(groups):
        xg = x[:, g * group_in:(g + 1) * group_in]
        wg = w[g * group_out:(g + 1) * group_out]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i:i + stride * (height - 1) + 1:stride,
                           j:j + stride * (width - 1) + 1:stride]
                y[:, g * group_out:(g + 1) * group_out] += np.einsum(
                    "bchw,oc->bohw", patch, wg[:, :, i, j])
    return y


def np_bn(x, bn, eps=EPS):
    """Inference BatchNorm over axis 1 with (gamma, beta, mean, var)."""
    gamma, beta, mean, var = bn
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            * gamma.reshape(shape) + beta.reshape(shape))


def relu(x):
    return np.maximum(x, 0)


def np_slim_conv(x, p, n, stride, groups, bottom_groups, flip=True,
                 eps=EPS):
    """`slim_conv_3x3` of JiaxiongQ/SlimConv (spec 1.2/1.3), n-fold."""
    channels = x.shape[1]
    pooled = x.mean(axis=(2, 3))                               # (B, C)
    h = relu(np_bn(pooled @ p["fc.0"][:, :, 0, 0].T, p["fc.1"], eps))
    w = 1 / (1 + np.exp(-(h @ p["fc.3"][:, :, 0, 0].T + p["fc.3.bias"])))
    wf = w[:, ::-1] if flip else w                             # torch.flip
    x1 = w[:, :, None, None] * x
    x2 = wf[:, :, None, None] * x
    chunk = channels // n  # torch.split; a remainder chunk is never summed
    top_in = sum(x1[:, j * chunk:(j + 1) * chunk] for j in range(n))
    bottom_in = sum(x2[:, j * chunk:(j + 1) * chunk] for j in range(n))
    top = np_bn(np_conv2d(top_in, p["conv2_1.0"], stride, 1, groups),
                p["conv2_1.1"], eps)
    bottom = relu(np_bn(np_conv2d(bottom_in, p["conv2_2.0"]), p["conv2_2.1"],
                        eps))
    bottom = np_bn(np_conv2d(bottom, p["conv2_2.3"], stride, 1,
                             bottom_groups), p["conv2_2.4"], eps)
    return np.concatenate([top, bottom], axis=1)


def randomize_bns(layer, rng):
    """Spec 6.3: BN far from identity, so eps and order bugs show."""
    for bn in (layer.squeeze_bn, layer.top_bn, layer.bottom_reduce_bn,
               layer.bottom_bn):
        c = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.2, 0.2, c),
                        rng.uniform(-0.2, 0.2, c), rng.uniform(0.5, 2.0, c)])
    layer.excite.bias.assign(rng.uniform(-0.5, 0.5, layer.excite.bias.shape))


def torch_params(layer):
    """The layer's weights in the reference's state_dict layout (OIHW)."""

    def oihw(kernel):  # HWIO -> OIHW (grouped kernels too)
        return np.transpose(kernel.numpy(), (3, 2, 0, 1)).astype("float64")

    def bn(b):
        return [w.astype("float64") for w in b.get_weights()]

    return {
        "fc.0": layer.squeeze.kernel.numpy().T[:, :, None, None],
        "fc.1": bn(layer.squeeze_bn),
        "fc.3": layer.excite.kernel.numpy().T[:, :, None, None],
        "fc.3.bias": layer.excite.bias.numpy(),
        "conv2_1.0": oihw(layer.top_conv.kernel),
        "conv2_1.1": bn(layer.top_bn),
        "conv2_2.0": oihw(layer.bottom_reduce.kernel),
        "conv2_2.1": bn(layer.bottom_reduce_bn),
        "conv2_2.3": oihw(layer.bottom_conv.kernel),
        "conv2_2.4": bn(layer.bottom_bn),
    }


def _reference_case(channels, k, stride, groups, bottom_groups=None,
                    size=None):
    rng = np.random.default_rng(channels + stride + groups)
    size = size or (8 if stride == 2 else 7)  # even input: stride-2 padding
    x = rng.normal(size=(2, channels, size, size))
    layer = layers.SlimConv2D(k=k, strides=stride, groups=groups,
                              bottom_groups=bottom_groups)
    layer.build((None, size, size, channels))
    randomize_bns(layer, rng)
    actual = layer(np.transpose(x, (0, 2, 3, 1)).astype("float32"),
                   training=False)
    actual = np.transpose(keras.ops.convert_to_numpy(actual), (0, 3, 1, 2))
    return layer, x, actual


def _valid(channels, k, groups):
    top = channels // layers.slim_conv.fold_factor(k)
    return top % groups == 0 and (top // 2) % groups == 0


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", ["4/3", "2", "8/3"])
@pytest.mark.parametrize("channels", [64, 128, 256])
def test_matches_numpy_reference(channels, k, stride, groups):
    if not _valid(channels, k, groups):
        # k=2 folds C // 3 channels (21, 42, 85): an odd path width cannot
        # take 2 groups; the reference's conv raises too.
        with pytest.raises(ValueError, match="must divide"):
            _reference_case(channels, k, stride, groups)
        return
    layer, x, actual = _reference_case(channels, k, stride, groups)
    n = layers.slim_conv.fold_factor(k)
    expected = np_slim_conv(x, torch_params(layer), n, stride, groups, groups)
    assert actual.shape == expected.shape
    assert actual.shape[1] == layers.SlimConv2D.output_channels(channels, k)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels,size", [(96, 8), (192, 9)])
def test_matches_reference_resnext_groups_odd_size(channels, size):
    # Sc-ResNeXt-101's k=2 unit: top groups 32, bottom 16; odd input size.
    layer, x, actual = _reference_case(channels, "2", 2, 32, 16, size=size)
    expected = np_slim_conv(x, torch_params(layer), 3, 2, 32, 16)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_reference_check_catches_flip_and_epsilon_bugs():
    layer, x, actual = _reference_case(64, "4/3", 2, 1)
    params = torch_params(layer)
    no_flip = np_slim_conv(x, params, 2, 2, 1, 1, flip=False)
    keras_eps = np_slim_conv(x, params, 2, 2, 1, 1, eps=1e-3)
    assert np.abs(actual - no_flip).max() > 1e-2
    assert np.abs(actual - keras_eps).max() > 1e-4


# --- The layer's contract. ---


def test_layer_contract_and_serialization():
    # Five kernels (squeeze, excite, three convs), the excite bias, four BNs.
    testing.run_layer_test(layers.SlimConv2D, {"k": "4/3", "strides": 2},
                           (2, 8, 8, 64), (2, 4, 4, 48),
                           expected_num_trainable_weights=14,
                           expected_num_non_trainable_weights=8)
    testing.run_layer_test(
        layers.SlimConv2D, {"k": "2", "groups": 32, "bottom_groups": 16},
        (2, 5, 5, 96), (2, 5, 5, 48), fit=False)


@pytest.mark.parametrize("channels,k,expected", [
    (64, "4/3", 48), (64, 4 / 3, 48), (512, "8/3", 192), (768, "2", 384),
    (64, "2", 31), (16, "4/3", 12),
])
def test_output_channels(channels, k, expected):
    assert layers.SlimConv2D.output_channels(channels, k) == expected
    assert layers.SlimConv2D(k=k).compute_output_shape(
        (None, 57, 57, channels)) == (None, 57, 57, expected)
    assert layers.SlimConv2D(k=k, strides=2).compute_output_shape(
        (None, 57, 57, channels)) == (None, 29, 29, expected)


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 1.5}, "2n/3"), ({"k": "2/3"}, "2n/3"), ({"k": "x"}, "2n/3"),
    ({"strides": 3}, "strides"), ({"groups": 0}, "groups"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.SlimConv2D(**kwargs)


def test_too_narrow_input_says_how_to_fix():
    with pytest.raises(ValueError, match="lower `reduction`"):
        layers.SlimConv2D().build((None, 8, 8, 16))


@pytest.mark.parametrize("channels,k,groups,params", [
    (64, "4/3", 1, 12484), (512, "4/3", 1, 788000), (256, "8/3", 1, 52752),
    (768, "2", 32, 99120), (128, "4/3", 2, 26504),
])
def test_module_params_match_spec(channels, k, groups, params):
    bottom = 16 if groups == 32 else None
    layer = layers.SlimConv2D(k=k, groups=groups, bottom_groups=bottom)
    model = keras.Sequential([keras.Input((14, 14, channels)), layer])
    assert profiling.profile(model).params == params


def test_trains_with_batch_size_one():
    inputs = keras.Input((8, 8, 64))
    layer = layers.SlimConv2D()
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.random.normal(size=(4, 8, 8, 64)).astype("float32")
    y = np.random.normal(size=(4, 8, 8, 48)).astype("float32")
    squeeze_stats = [w.numpy() for w in layer.squeeze_bn.non_trainable_weights]
    top_mean = layer.top_bn.moving_mean.numpy()
    loss = model.fit(x, y, batch_size=1, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(loss[0])
    # One image has no batch statistics for the squeeze BN: kept as they are.
    for before, after in zip(squeeze_stats,
                             layer.squeeze_bn.non_trainable_weights):
        np.testing.assert_array_equal(after.numpy(), before)
    assert not np.allclose(layer.top_bn.moving_mean.numpy(), top_mean)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert not np.allclose(layer.squeeze_bn.moving_mean.numpy(),
                           squeeze_stats[0])


# --- Models: spec section 3.3 (224x224, 1000 classes, DMCP-style MACs). ---


@pytest.mark.parametrize("arch,k,params,gmacs", [
    ("resnet50", None, 25_557_032, 4.089),
    ("sc_resnet50", "4/3", 16_758_740, 2.652),
    pytest.param("sc_resnet50", "8/3", 12_098_388, 1.880,
                 marks=pytest.mark.slow),
    pytest.param("sc_resnet50", "2", 13_413_470, 2.091, marks=pytest.mark.slow),
    pytest.param("sc_resnet101", "4/3", 27_956_708, 4.822,
                 marks=pytest.mark.slow),
    pytest.param("sc_resnext101_32x3d", "2", 23_698_976, 4.581,
                 marks=pytest.mark.slow),
])
def test_imagenet_model_sizes(arch, k, params, gmacs):
    kwargs = {"k": k} if k else {}
    model = models.build(arch, (224, 224, 3), 1000, **kwargs)
    result = profiling.profile(model)
    assert result.params == params
    assert round(result.macs / 1e9, 3) == gmacs


@pytest.mark.parametrize("arch,params,gmacs", [
    pytest.param("resnet18", 11_689_512, 1.814, marks=pytest.mark.slow),
    pytest.param("resnet34", 21_797_672, 3.664, marks=pytest.mark.slow),
    pytest.param("resnext50_32x4d", 25_028_904, 4.230,
                 marks=pytest.mark.slow),
    pytest.param("resnext101_32x3d", 30_588_328, 6.008,
                 marks=pytest.mark.slow),
])
def test_baseline_resnet_sizes(arch, params, gmacs):
    result = profiling.profile(models.build(arch, (224, 224, 3), 1000))
    assert result.params == params
    assert round(result.macs / 1e9, 3) == gmacs


@pytest.mark.slow
def test_cifar_resnet50_sizes_match_paper_figure():
    # Spec 3.4: 100-class ResNet-50 with a 3x3 stem 23.705 M; compression of
    # Sc-ResNet-50 k=4/3 37.1% (figure: 36.97%).
    base = profiling.profile(models.build("resnet50_cifar", (32, 32, 3), 100))
    sc = profiling.profile(models.build("sc_resnet50_cifar", (32, 32, 3), 100))
    assert round(base.params / 1e6, 3) == 23.705
    assert 0.36 < 1 - sc.params / base.params < 0.38


def test_cifar_basic_block_sc_resnet():
    model = models.build("sc_resnet20", (32, 32, 3), 10, k="8/3")
    slim = [layer for layer in model.layers
            if isinstance(layer, layers.SlimConv2D)]
    assert len(slim) == 9  # the first 3x3 of every block
    assert slim[0].output.shape[-1] == 6  # 16 channels / (8/3)
    base = profiling.profile(models.build("resnet20", (32, 32, 3), 10))
    assert profiling.profile(model).params < base.params / 2


def test_backbone_plugs_in_convs_mids_and_per_block_widths():
    calls = []

    def recording_conv(x, filters, kernel_size, strides, name, groups=1):
        calls.append((name, kernel_size, groups))
        return blocks.conv2d(x, filters, kernel_size, strides, groups=groups,
                             name=name)

    block = functools.partial(resnet.bottleneck_block, conv=recording_conv,
                              groups=4, base_width=16)
    widths = (8, (8, 16), 16, 16)  # stage 2 has one width per block
    model = resnet.resnet((1, 2, 1, 1), (32, 32, 3), 10, block=block,
                          widths=widths, stem="cifar")
    assert ("stage1_block1_conv2", 3, 4) in calls
    assert len(calls) == 5 * 3  # every block conv, not stem or shortcuts
    assert model.get_layer("stage2_block2_conv3").output.shape[-1] == 64
    with pytest.raises(ValueError, match="widths"):
        resnet.resnet((1, 2, 1, 1), (32, 32, 3), 10,
                      widths=(8, (8,), 16, 16))


# --- Saving, export, method. ---


def _small_sc_model():
    model = models.build("sc_resnet20", (16, 16, 3), 10)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.SlimConv2D):
            randomize_bns(layer, rng)
    return model


def test_keras_round_trip():
    model = _small_sc_model()
    x = np.random.normal(size=(2, 16, 16, 3)).astype("float32")
    restored = testing.run_model_saving_test(model, x, atol=1e-5)
    assert restored.get_layer("stage2_block1_slimconv").strides == 2


def _tiny_slim_model():
    inputs = keras.Input((8, 8, 32))
    layer = layers.SlimConv2D(k="4/3", strides=2)
    x = keras.layers.ReLU()(layer(inputs))
    outputs = blocks.classifier(x, 10)
    model = keras.Model(inputs, outputs)
    randomize_bns(layer, np.random.default_rng(0))
    return model


def _check_litert(model, input_shape):
    x = np.random.normal(size=(3, *input_shape)).astype("float32")
    testing.run_litert_export_test(model, x, atol=1e-4)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_litert(
            model, os.path.join(tmp, "m.tflite"), "int8",
            representative_data=np.random.normal(size=(32, *input_shape)))
        # XNNPACK: the export repairs the degenerate scales of dead squeeze
        # units that made it refuse SlimConv int8 graphs.
        runner = interpreter.Interpreter(model_path=path)
        runner.allocate_tensors()
        (inp,), (out,) = (runner.get_input_details(),
                          runner.get_output_details())
        assert inp["dtype"] == np.int8
        logits = []
        for sample in x:
            scale, zero = inp["quantization"]
            runner.set_tensor(inp["index"], np.round(
                sample[None] / scale + zero).clip(-128, 127).astype(np.int8))
            runner.invoke()
            scale, zero = out["quantization"]
            quantized = runner.get_tensor(out["index"])[0].astype("float32")
            logits.append((quantized - zero) * scale)
    logits = np.stack(logits)
    # XNNPACK ran it; the int8 accuracy of a trained SlimConv net on real
    # images is tested in tests/test_deploy.py.
    assert np.all(np.isfinite(logits)) and logits.shape == expected.shape


def test_litert_float32_matches_and_int8_runs():
    _check_litert(_tiny_slim_model(), (8, 8, 32))


@pytest.mark.slow
@pytest.mark.ci_slow
def test_litert_sc_resnet20():
    _check_litert(_small_sc_model(), (16, 16, 3))


def test_method_builds_trains_and_deploys():
    method = methods.get("slimconv")
    assert "slim_k" in methods.all_options()
    config = slimconv_config.get_config("smoke,slim_k=8/3")
    assert config.arch == "sc_resnet20" and config.method == "slimconv"
    model = method.build_model(config, (16, 16, 3), 10)
    assert model.get_layer("stage1_block1_slimconv").n == 4
    method.compile_model(model, keras.optimizers.SGD(0.05), config)
    x = np.random.normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.random.randint(0, 10, size=8)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert method.deployable(model, None) is model
    config.arch = "resnet20"
    with pytest.raises(ValueError, match="Sc arch"):
        method.build_model(config, (16, 16, 3), 10)
