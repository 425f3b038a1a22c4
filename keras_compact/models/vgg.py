"""VGG16-BN for CIFAR and X-VGG16 (X-Nets).

Reference: Simonyan & Zisserman, https://arxiv.org/abs/1409.1556 (config D),
with BN and a 512-512-classes classifier as in the X-Nets reference code;
X-VGG16 from "Deep Expander Networks", https://arxiv.org/abs/1711.08757.
A conv after the stem becomes an expander conv with `degree` inputs per
output iff its degree is smaller than its input channels (the reference's
rule): with degrees (64, 64, 64, 16 x 9) that makes conv4-conv13 sparse,
and the first classifier layer is an expander dense layer of degree 128.
X-VGG16 then has 809,930 conv/FC weights and biases (818,378 params with
BN) and 88.8M MACs over existing connections, vs 14,982,474 for VGG16.
"""

import functools

import keras

from keras_compact import layers
from keras_compact.layers import expander
from keras_compact.models.densenet import fan_out_normal
from keras_compact.models.registry import register

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M")
# Inputs per output of conv2..conv13 (log name vgg16expander_64*3_16*9_128).
X_VGG16_DEGREES = (64,) * 3 + (16,) * 9
X_VGG16_CLASSIFIER_DEGREE = 128


def _torch_linear(units, name, use_bias=True):
    # PyTorch's default Linear init: U(+-1/sqrt(fan_in)) for both tensors.
    init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
    return keras.layers.Dense(units, use_bias=use_bias, name=name,
                              kernel_initializer=init, bias_initializer=init)


def vgg16_cifar(input_shape, num_classes, expand_cfg=None,
                classifier_degree=None, expander_impl="masked",
                expander_groups=None, expander_seed=0, name=None):
    """VGG16 with BN for 32x32 images; X-VGG16 with `expand_cfg`.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        expand_cfg: None (dense), or the degree (inputs per output) of each
            of the 12 convs after the stem; a conv is an `ExpanderConv2D`
            iff its degree is below its input channels.
        classifier_degree: None (dense) or the degree of the first 512-unit
            classifier layer (an `ExpanderDense`).
        expander_impl, expander_groups, expander_seed: as in
            `densenet_bc_cifar`.

    Example:

    >>> model = keras_compact.models.build("x_vgg16", (32, 32, 3), 10)
    """
    convs = [v for v in VGG16 if v != "M"]
    if expand_cfg is not None and len(expand_cfg) != len(convs) - 1:
        raise ValueError(f"expand_cfg needs one degree per conv after the "
                         f"stem ({len(convs) - 1}). Received: "
                         f"{len(expand_cfg)} degrees.")
    degrees = iter((None,) + tuple(expand_cfg or (None,) * (len(convs) - 1)))
    options = dict(impl=expander_impl, expander_groups=expander_groups)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    index = 0
    for value in VGG16:
        if value == "M":
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
            continue
        index += 1
        name_ = f"conv{index}"
        degree = next(degrees)
        if degree is not None and degree < x.shape[-1]:
            x = layers.expander_conv2d(
                x, value, 3, name=name_, degree=degree,
                seed=expander.layer_seed(expander_seed, name_), **options)
        else:
            x = keras.layers.Conv2D(
                value, 3, padding="same", kernel_initializer=fan_out_normal(),
                name=name_)(x)
        # PyTorch 0.3's BN init (gamma ~ U(0, 1)); the reference has no
        # init loop for BN.
        x = layers.BatchNormalization(
            gamma_initializer=keras.initializers.RandomUniform(0.0, 1.0),
            name=f"{name_}_bn")(x)
        x = keras.layers.ReLU(name=f"{name_}_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if classifier_degree:
        x = layers.ExpanderDense(
            512, degree=classifier_degree, name="fc1",
            seed=expander.layer_seed(expander_seed, "fc1"),
            impl=expander_impl, groups=expander_groups)(x)
    else:
        x = _torch_linear(512, "fc1")(x)
    x = keras.layers.ReLU(name="fc1_relu")(x)
    x = _torch_linear(num_classes, "classifier")(x)
    outputs = keras.layers.Activation("linear", dtype="float32",
                                      name="logits")(x)
    prefix = "x_" if expand_cfg or classifier_degree else ""
    return keras.Model(inputs, outputs, name=name or f"{prefix}vgg16")


register("vgg16", vgg16_cifar)
register("x_vgg16", functools.partial(
    vgg16_cifar, expand_cfg=X_VGG16_DEGREES,
    classifier_degree=X_VGG16_CLASSIFIER_DEGREE))
