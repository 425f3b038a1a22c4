"""BatchNormalization (fused) and GroupedConv2D: equal to the plain ops."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compact import layers
from tests import testing

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
    # Inference: (x - m) * gamma / sqrt(v + eps) + beta grouped two ways,
    # ~4 roundings on |y| <= ~35 (|x - m| <= 15, v >= 0.5, gamma <= 1.6):
    # 4 u * 35 = 8e-6. Training: the batch statistics are sums of n = 12 or
    # 1,024 values in two orders (~sqrt(n) u relative, typical) on |y| <= 6,
    # then the same few roundings: ~1e-5, inside 1e-4. A biased/unbiased
    # variance mix-up moves y by ~1/(2n), 4e-2 at n = 12.
    np.testing.assert_allclose(fused(x, training=False),
                               plain(x, training=False), atol=1e-5)
    np.testing.assert_allclose(fused(x, training=True),
                               plain(x, training=True), atol=1e-4)
    # Moving statistics use Keras's (biased) batch variance, even for a
    # batch of only 12 values per channel.
    for a, b in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def _batch_norm_gradients(x, dy, gamma, epsilon):
    """Training-mode BN gradients (x, gamma, beta) in float64, with bounds.

    Returns each exact gradient and the magnitude its float32 error scales
    with: the sums of |terms| of the formulas below, where x_hat (a float32
    mean and variance of n values) counts as (1 + |x_hat|) in error.
    """
    n = x.size // x.shape[-1]
    axes = (0, 1, 2)
    inv = 1 / np.sqrt(x.var(axes) + epsilon)
    x_hat = (x - x.mean(axes)) * inv
    d_beta = dy.sum(axes)
    d_gamma = (dy * x_hat).sum(axes)
    d_x = gamma * inv * (dy - d_beta / n - x_hat * d_gamma / n)
    m_beta = np.abs(dy).sum(axes)
    m_gamma = (np.abs(dy) * (1 + np.abs(x_hat))).sum(axes)
    m_x = np.abs(gamma) * inv * (np.abs(dy) + m_beta / n
                                 + (1 + np.abs(x_hat)) * m_gamma / n)
    return [d_x, d_gamma, d_beta], [m_x, m_gamma, m_beta]


def test_fused_batch_norm_gradients_equal_keras():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5, 5, 6))
    dy = rng.normal(size=x.shape)
    for cls in (layers.BatchNormalization, keras.layers.BatchNormalization):
        bn = _randomised_bn(cls, 6)
        x32 = tf.constant(x, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x32)
            loss = tf.reduce_sum(bn(x32, training=True) * dy.astype("f4"))
        grads = tape.gradient(loss, [x32, bn.gamma, bn.beta])
        exact, magnitude = _batch_norm_gradients(
            x.astype("f4").astype("f8"), dy.astype("f4").astype("f8"),
            bn.gamma.numpy().astype("f8"), bn.epsilon)
        # Each gradient chains at most 4 float32 reductions of n = 100
        # values (mean, variance, sum dy, sum dy x_hat) and ~8 elementwise
        # roundings: within gamma_{4n+8} of the magnitude (~2.4e-5 times
        # |terms| ~ 3, so ~1e-4 on dx); measured at most 2.3e-3 of the
        # bound (oneDNN on/off, 1/2 threads, 2026-12-02). A dx missing its
        # mean(dy) or its x_hat mean(dy x_hat) term, or x_hat from the
        # unbiased variance, is off by 0.19, 0.61 and 0.018.
        for got, want, size in zip(grads, exact, magnitude):
            testing.assert_float32_sums_agree(got, want, size,
                                              terms=4 * 100 + 8)


def test_batch_norm_defaults_are_pytorch():
    bn = layers.BatchNormalization()
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    testing.run_layer_test(layers.BatchNormalization, {}, (2, 4, 4, 3),
                           (2, 4, 4, 3), expected_num_trainable_weights=2,
                           expected_num_non_trainable_weights=2)


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
    testing.assert_float32_sums_agree(y, expected, testing.absolute_twin_output(
        conv, x), terms=3 * 3 * 8 // groups + 1)
    assert conv.profile((None, 9, 9, 8), tuple(y.shape))["macs"] == (
        y.shape[1] * y.shape[2] * 16 * 9 * 8 // groups)


def test_grouped_conv_layer_contract():
    testing.run_layer_test(
        layers.GroupedConv2D,
        {"filters": 8, "kernel_size": 3, "padding": "same", "groups": 4},
        (2, 6, 6, 8), (2, 6, 6, 8), expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0)


def _conv_gradients(conv, inputs, kernel, weights):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([inputs, kernel])
        loss = tf.reduce_sum(conv(inputs, kernel) * weights)
    return tape.gradient(loss, [inputs, kernel])


@pytest.mark.parametrize("strides,padding,dilations",
                         [(1, "SAME", 1), (2, "VALID", 1), (1, "SAME", 2)])
def test_split_fallback_equals_grouped_conv(strides, padding, dilations):
    """The path for CPUs without oneDNN: one plain conv per group."""
    import functools

    import tensorflow as tf

    from keras_compact.layers import grouped_conv

    if dilations > 1 and not grouped_conv.grouped_gradients_work():
        pytest.skip("without oneDNN, TF's CPU backprop refuses dilation > 1 "
                    "for any conv, grouped or not")
    rng = np.random.default_rng(4)
    inputs = tf.constant(rng.normal(size=(2, 9, 9, 8)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 2, 12)), tf.float32)
    split, grouped = (functools.partial(conv, strides=strides,
                                        padding=padding, dilations=dilations)
                      for conv in (grouped_conv._split_grouped_conv,
                                   tf.nn.conv2d))
    outputs = split(inputs, kernel)
    weights = tf.constant(rng.normal(size=outputs.shape), tf.float32)
    # Each entry is a float32 sum of n products, exact up to
    # gamma_n = n u / (1 - n u) times the sum of their magnitudes in any
    # order (blocked, FMA), so two orders differ by at most twice that.
    # n is 3 * 3 * 2 for the outputs, 3 * 3 * 3 for the input gradient and
    # 2 * 9 * 9 positions for the kernel's: bound all by the largest. The
    # magnitudes are the same sums over |inputs|, |kernel| and |weights|.
    n = 2 * 9 * 9
    gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
    magnitude = [split(tf.abs(inputs), tf.abs(kernel))] + _conv_gradients(
        split, tf.abs(inputs), tf.abs(kernel), tf.abs(weights))
    actual = [outputs] + _conv_gradients(split, inputs, kernel, weights)
    expected = [grouped(inputs, kernel)]
    if grouped_conv.grouped_gradients_work():  # else TF cannot compute them
        expected += _conv_gradients(grouped, inputs, kernel, weights)
    for a, b, size in zip(actual, expected, magnitude):
        assert np.all(np.abs(a - b) <= 2 * gamma * size.numpy())


@pytest.mark.slow
@pytest.mark.ci_slow  # CI's own runs keep oneDNN on.
def test_grouped_conv_trains_without_onednn():
    """TF's CPU kernels without oneDNN have no grouped backprops."""
    script = (
        "import numpy as np, keras\n"
        "from keras_compact import layers\n"
        "from keras_compact.layers import grouped_conv\n"
        "print(grouped_conv.grouped_gradients_work())\n"
        "model = keras.Sequential([keras.Input((6, 6, 4)),\n"
        "    layers.GroupedConv2D(4, 3, groups=2), keras.layers.Flatten()])\n"
        "model.compile('sgd', 'mse')\n"
        "print(model.train_on_batch(np.ones((2, 6, 6, 4)), np.zeros((2, 64))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        cwd=ROOT, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"},
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    probe, loss = result.stdout.split()[-2:]
    assert probe == "False" and np.isfinite(float(loss))


def test_grouped_conv_rejects_bad_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        layers.GroupedConv2D(10, 3, groups=4)
    with pytest.raises(ValueError, match="input channels"):
        layers.GroupedConv2D(8, 3, groups=4)(np.zeros((1, 5, 5, 6)))


@pytest.mark.parametrize("make_conv", [
    lambda **kw: layers.GroupedConv2D(8, **kw),
    lambda **kw: layers.ExpandedConv2D(8, **kw),
    lambda **kw: layers.ExpanderConv2D(8, density=0.5, **kw),
], ids=["grouped", "expanded", "expander"])
def test_conv_layers_reject_bad_geometry_alike(make_conv):
    with pytest.raises(ValueError, match=r"padding must be one of \('valid', "
                       r"'same'\).*ZeroPadding2D.*Received: padding='SAME'"):
        make_conv(kernel_size=3, padding="SAME")
    with pytest.raises(ValueError, match=r"kernel_size must be a positive "
                       r"int or pair. Received: kernel_size=\(3, 0\)"):
        make_conv(kernel_size=(3, 0))


def _counted(method, calls, tag):
    def wrapper(*args, **kwargs):
        calls.append(tag)
        return method(*args, **kwargs)
    return wrapper


def test_fused_and_plain_batch_norm_train_alike_step_by_step():
    """A ResNet-20 trained with the fused BN path and with Keras's own.

    Each step starts both paths from the same weights, momentum and moving
    statistics (copied from the plain run), so the comparison measures one
    step's rounding, not the chaotic growth of a difference over a training
    run (free-running losses drift apart by 3e-3 after 6 steps on some
    CPUs). Tolerances, with u = 2**-24 (float32 unit roundoff):

    - loss and moving statistics: forward values only. Each of the 19
      conv/BN stages reduces at most n = 16 * 32 * 32 = 16384 terms per
      channel in a different order (FusedBatchNormV3 vs moments; oneDNN or
      Eigen), a relative error of at most log2(n) * u = 14u per stage;
      BN re-normalises, so stages add rather than multiply: 19 * 14u =
      1.6e-5, hence rtol 2e-5 (measured at most 7e-7).
    - the update of each weight tensor (SGD step, momentum included): a
      pre-activation within rounding of zero can pass ReLU in one path and
      not the other, a discrete change in the backward pass that no ulp
      bound covers. Measured worst tensor (norm of the difference over the
      norm of the update): 1e-2 across oneDNN on/off and 1/2 threads; the
      bound is 5x that, and a wrong gradient gives an error of order 1.
    """
    from keras_compact import models

    x = np.random.default_rng(4).normal(size=(32, 32, 32, 3)).astype(
        "float32")
    y = np.random.default_rng(5).integers(0, 10, 32)
    runs, fused_calls = [], []
    for fusable in (True, False):
        keras.utils.set_random_seed(7)
        model = models.build("resnet20", (32, 32, 3), 10)
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                if not fusable:
                    layer._fusable = lambda inputs, mask: False
                layer._fused_call = _counted(layer._fused_call, fused_calls,
                                             fusable)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(True))
        model.optimizer.build(model.trainable_variables)
        runs.append(model)
    fused, plain = runs
    for step in range(6):
        batch = slice(16 * (step % 2), 16 * (step % 2) + 16)
        fused.set_weights(plain.get_weights())
        for a, b in zip(fused.optimizer.variables, plain.optimizer.variables):
            a.assign(b)
        before = {w.path: w.numpy() for w in plain.weights}
        fused_loss = float(fused.train_on_batch(x[batch], y[batch]))
        plain_loss = float(plain.train_on_batch(x[batch], y[batch]))
        np.testing.assert_allclose(fused_loss, plain_loss, rtol=2e-5)
        after = {w.path: w.numpy() for w in plain.weights}
        for variable in fused.weights:
            a, b = variable.numpy(), after[variable.path]
            if variable.path.endswith("moving_mean"):
                # The error of a mean scales with the spread of the data.
                spread = np.sqrt(after[variable.path.replace(
                    "moving_mean", "moving_variance")].max())
                np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * spread)
            elif variable.path.endswith("moving_variance"):
                # A variance doubles its inputs' relative error.
                np.testing.assert_allclose(a, b, rtol=4e-5)
            else:
                update = b - before[variable.path]
                error = np.linalg.norm(a - b) / np.linalg.norm(update)
                assert error < 0.05, (step, variable.path, error)
    # Both paths really ran: only the fused model called the fused kernel.
    assert fused_calls and set(fused_calls) == {True}
