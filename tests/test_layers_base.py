"""BatchNormalization (fused) and GroupedConv2D: equal to the plain ops."""

import keras
import numpy as np
import pytest

from keras_compact import layers
from tests import testing


def _randomised_bn(cls, channels, seed=0):
    bn = cls(momentum=0.9, epsilon=1e-5)
    bn.build((None, 4, 4, channels))
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.normal(1, 0.2, channels), rng.normal(0, 0.2, channels),
                    rng.normal(0, 1, channels), rng.uniform(0.5, 2, channels)])
    return bn


@pytest.mark.parametrize("shape", [(2, 2, 3, 5), (16, 8, 8, 7)])
def test_fused_batch_norm_equals_keras(shape):
    x = np.random.default_rng(1).normal(2, 3, size=shape).astype("float32")
    fused = _randomised_bn(layers.BatchNormalization, shape[-1])
    plain = _randomised_bn(keras.layers.BatchNormalization, shape[-1])
    np.testing.assert_allclose(fused(x, training=False),
                               plain(x, training=False), atol=1e-5)
    np.testing.assert_allclose(fused(x, training=True),
                               plain(x, training=True), atol=1e-4)
    # Moving statistics use Keras's (biased) batch variance, even for a
    # batch of only 12 values per channel.
    for a, b in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def test_fused_batch_norm_gradients_equal_keras():
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(2).normal(size=(4, 5, 5, 6)),
                    tf.float32)
    grads = []
    for cls in (layers.BatchNormalization, keras.layers.BatchNormalization):
        bn = _randomised_bn(cls, 6)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y * tf.range(6, dtype=tf.float32))
        grads.append(tape.gradient(loss, [x] + bn.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_batch_norm_defaults_are_pytorch():
    bn = layers.BatchNormalization()
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    testing.run_layer_test(layers.BatchNormalization, {}, (2, 4, 4, 3),
                           (2, 4, 4, 3))


def _numpy_grouped_conv(x, kernel, groups, stride):
    """Direct loop definition of a grouped 'valid' convolution."""
    n, h, w, cin = x.shape
    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for g in range(groups):
        xs = x[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * cout_g:(g + 1) * cout_g]
        for i in range(oh):
            for j in range(ow):
                patch = xs[:, i * stride:i * stride + kh,
                           j * stride:j * stride + kw]
                out[:, i, j, g * cout_g:(g + 1) * cout_g] = np.tensordot(
                    patch, ks, axes=3)
    return out


@pytest.mark.parametrize("groups,stride", [(1, 1), (4, 1), (8, 2)])
def test_grouped_conv_equals_numpy(groups, stride):
    conv = layers.GroupedConv2D(16, 3, strides=stride, groups=groups,
                                use_bias=True, bias_initializer="ones")
    x = np.random.default_rng(3).normal(size=(2, 9, 9, 8)).astype("float32")
    y = conv(x)
    expected = _numpy_grouped_conv(x, conv.kernel.numpy(), groups, stride) + 1
    np.testing.assert_allclose(y, expected, atol=1e-4)
    assert conv.profile((None, 9, 9, 8), tuple(y.shape))["macs"] == (
        y.shape[1] * y.shape[2] * 16 * 9 * 8 // groups)


def test_grouped_conv_layer_contract():
    testing.run_layer_test(
        layers.GroupedConv2D,
        {"filters": 8, "kernel_size": 3, "padding": "same", "groups": 4},
        (2, 6, 6, 8), (2, 6, 6, 8))


def test_grouped_conv_rejects_bad_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        layers.GroupedConv2D(10, 3, groups=4)
    with pytest.raises(ValueError, match="input channels"):
        layers.GroupedConv2D(8, 3, groups=4)(np.zeros((1, 5, 5, 6)))


@pytest.mark.parametrize("make_conv", [
    lambda **kw: layers.GroupedConv2D(8, **kw),
    lambda **kw: layers.ExpandedConv2D(8, **kw),
    lambda **kw: layers.ExpanderConv2D(8, expand_ratio=2, **kw),
], ids=["grouped", "expanded", "expander"])
def test_conv_layers_reject_bad_geometry_alike(make_conv):
    with pytest.raises(ValueError, match=r"padding must be one of \('valid', "
                       r"'same'\).*ZeroPadding2D.*Received: padding='SAME'"):
        make_conv(kernel_size=3, padding="SAME")
    with pytest.raises(ValueError, match=r"kernel_size must be a positive "
                       r"int or pair. Received: kernel_size=\(3, 0\)"):
        make_conv(kernel_size=(3, 0))


def test_fused_and_plain_batch_norm_train_to_the_same_losses():
    """A ResNet-20 trained with the fused BN path and with Keras's own."""
    from keras_compact import models

    x = np.random.default_rng(4).normal(size=(32, 32, 32, 3)).astype(
        "float32")
    y = np.random.default_rng(5).integers(0, 10, 32)
    histories = []
    for fusable in (True, False):
        keras.utils.set_random_seed(7)
        model = models.build("resnet20", (32, 32, 3), 10)
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization) and not fusable:
                layer._fusable = lambda inputs, mask: False
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(True))
        histories.append(model.fit(x, y, batch_size=16, epochs=3,
                                   shuffle=False, verbose=0).history["loss"])
    assert histories[0] != histories[1]  # both paths really ran
    np.testing.assert_allclose(histories[0], histories[1], rtol=2e-3)
