"""MobileNetV1 and MobileNetV2, built from a pluggable convolution factory.

Every convolution of these backbones (stem, depthwise, pointwise, last) is
made by one call of a *conv factory* with this signature:

    conv(x, filters, kernel_size, *, strides=1, padding="valid", groups=1,
         use_bias=False, kernel_initializer=None, name) -> y

It returns the convolution's output only (BN and activation are added by
the backbone). `groups == x.shape[-1] == filters` asks for a depthwise conv.
The backbone pads explicitly like PyTorch (`ZeroPadding2D(k // 2)` +
`"valid"` for stride 2, `"same"` for stride 1), so a factory never has to
think about TF's asymmetric "same" padding. `conv2d` below is the default;
a method swaps layers by passing its own factory, which may look at
`kernel_size`, `strides`, `groups` and `name` to decide per layer (e.g.
ExpandNets expands the stem and the stride-2 depthwise convs of
MobileNetV2, X-Nets replace the pointwise convs). The residual block and
the stage table (`settings`) are arguments too, for methods that change
widths (channel search) or blocks.

ImageNet shape by default (224x224x3, 1000 classes): MobileNetV1 has
4,231,976 parameters and 568.7 M MACs, MobileNetV2 3,504,872 and 300.8 M
(the reference code's models). Any input size works (CIFAR: 32x32).

References:
    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
    Mobile Vision Applications", https://arxiv.org/abs/1704.04861;
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear
    Bottlenecks", CVPR 2018, https://arxiv.org/abs/1801.04381
"""

import functools

import keras

from keras_compact import layers
from keras_compact.layers.conv_args import fresh_initializer
from keras_compact.layers.expansion import torch_default_bias
from keras_compact.layers.expansion import torch_default_kernel
from keras_compact.models import blocks
from keras_compact.models.registry import register

# (filters, strides) of MobileNetV1's 13 depthwise-separable blocks.
V1_SETTINGS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
               (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2),
               (1024, 1))
# (expand ratio t, channels c, repeats n, first stride s) of MobileNetV2.
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv2d(x, filters, kernel_size, *, strides=1, padding="valid", groups=1,
           use_bias=False, kernel_initializer=None, name):
    """The default conv factory: Conv2D, DepthwiseConv2D or GroupedConv2D.

    Initializers default to PyTorch's (`U(+-1/sqrt(fan_in))`).
    """
    channels = x.shape[-1]
    fan_in = kernel_size * kernel_size * channels // groups
    kwargs = dict(
        strides=strides, padding=padding, use_bias=use_bias, name=name,
        bias_initializer=torch_default_bias(fan_in),
    )
    initializer = (fresh_initializer(kernel_initializer)
                   if kernel_initializer else torch_default_kernel())
    if groups == 1:
        layer = keras.layers.Conv2D(filters, kernel_size,
                                    kernel_initializer=initializer, **kwargs)
    elif groups == channels == filters:
        layer = keras.layers.DepthwiseConv2D(
            kernel_size, depthwise_initializer=initializer, **kwargs)
    else:
        layer = layers.GroupedConv2D(filters, kernel_size, groups=groups,
                                     kernel_initializer=initializer, **kwargs)
    return layer(x)


def padded_conv(x, filters, kernel_size, strides, conv, name, **kwargs):
    """Pads like PyTorch's `padding=k // 2`, then calls the factory."""
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(
            x)
        padding = "valid"
    return conv(x, filters, kernel_size, strides=strides, padding=padding,
                name=name, **kwargs)


def conv_bn_act(x, filters, kernel_size, strides, conv, name, activation,
                groups=1, kernel_initializer=None):
    """conv (from the factory) -> BN -> activation (None: linear)."""
    x = padded_conv(x, filters, kernel_size, strides, conv, f"{name}_conv",
                    groups=groups, kernel_initializer=kernel_initializer)
    x = blocks.batch_norm(x, f"{name}_bn")
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def depthwise_separable(x, filters, strides, conv, name,
                        kernel_initializer=None):
    """MobileNetV1's block: depthwise 3x3 -> BN -> ReLU -> 1x1 -> BN -> ReLU.
    """
    channels = x.shape[-1]
    x = conv_bn_act(x, channels, 3, strides, conv, f"{name}_dw", "relu",
                    groups=channels, kernel_initializer=kernel_initializer)
    return conv_bn_act(x, filters, 1, 1, conv, f"{name}_pw", "relu",
                       kernel_initializer=kernel_initializer)


def inverted_residual(x, filters, strides, expand_ratio, conv, name,
                      kernel_initializer=None):
    """MobileNetV2's block: 1x1 expand -> depthwise 3x3 -> linear 1x1.

    ReLU6 after the first two, none after the projection; identity
    shortcut when the stride is 1 and the width is unchanged.
    """
    channels = x.shape[-1]
    hidden = int(round(channels * expand_ratio))
    y = x
    if expand_ratio != 1:
        y = conv_bn_act(y, hidden, 1, 1, conv, f"{name}_expand", "relu6",
                        kernel_initializer=kernel_initializer)
    y = conv_bn_act(y, hidden, 3, strides, conv, f"{name}_dw", "relu6",
                    groups=hidden, kernel_initializer=kernel_initializer)
    y = conv_bn_act(y, filters, 1, 1, conv, f"{name}_project", None,
                    kernel_initializer=kernel_initializer)
    if strides == 1 and channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def make_divisible(value, divisor=8):
    """Rounds a width to a multiple of `divisor`, never 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v1(input_shape, num_classes, conv=conv2d,
                 block=depthwise_separable, settings=V1_SETTINGS,
                 width_multiplier=1.0, stem_filters=32, stem_strides=2,
                 name="mobilenet_v1"):
    """Builds MobileNetV1 (Howard et al., 2017).

    Args:
        input_shape: `(height, width, channels)`, e.g. `(224, 224, 3)`.
        num_classes: number of logits.
        conv: the conv factory (module docstring); default `conv2d`.
        block: `block(x, filters, strides, conv, name) -> y`, the
            depthwise-separable block by default.
        settings: `(filters, strides)` per block.
        width_multiplier: scales every width (alpha).
        stem_filters: width of the stem 3x3 conv.
        stem_strides: 2 on ImageNet; 1 keeps CIFAR's 32x32 resolution.
        name: model name.

    Example:

    >>> model = keras_compact.models.build("mobilenet_v1", (224, 224, 3),
    ...                                    1000)
    >>> keras_compact.profiling.profile(model).params
    4231976
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, int(stem_filters * width_multiplier), 3,
                    stem_strides, conv, "stem", "relu")
    for index, (filters, strides) in enumerate(settings):
        x = block(x, int(filters * width_multiplier), strides, conv,
                  f"block{index + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = _logits(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2(input_shape, num_classes, conv=conv2d,
                 block=inverted_residual, settings=V2_SETTINGS,
                 width_multiplier=1.0, stem_strides=2, dropout=0.2,
                 name="mobilenet_v2"):
    """Builds MobileNetV2 (Sandler et al., 2018), torchvision's layout.

    Convs are initialised N(0, 2 / (k * k * out)) (the reference's
    `_initialize_weights`), the classifier N(0, 0.01) with zero bias.

    Args:
        input_shape: `(height, width, channels)`, e.g. `(224, 224, 3)`.
        num_classes: number of logits.
        conv: the conv factory (module docstring); default `conv2d`.
        block: `block(x, filters, strides, expand_ratio, conv, name,
            kernel_initializer) -> y`, the inverted residual by default.
        settings: `(t, c, n, s)` per stage: expand ratio, width, repeats,
            stride of the first block.
        width_multiplier: scales the widths (rounded to multiples of 8).
        stem_strides: 2 on ImageNet; 1 for CIFAR-sized inputs.
        dropout: before the classifier.
        name: model name.

    Example:

    >>> model = keras_compact.models.build("mobilenet_v2", (224, 224, 3),
    ...                                    1000)
    >>> keras_compact.profiling.profile(model).params
    3504872
    """
    initializer = keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal")
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, make_divisible(32 * width_multiplier), 3,
                    stem_strides, conv, "stem", "relu6",
                    kernel_initializer=initializer)
    index = 0
    for expand_ratio, channels, repeats, first_strides in settings:
        filters = make_divisible(channels * width_multiplier)
        for repeat in range(repeats):
            index += 1
            x = block(x, filters, first_strides if repeat == 0 else 1,
                      expand_ratio, conv, f"block{index}",
                      kernel_initializer=initializer)
    x = conv_bn_act(x, make_divisible(1280 * max(1.0, width_multiplier)), 1,
                    1, conv, "last", "relu6", kernel_initializer=initializer)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = _logits(
        x, num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros")
    return keras.Model(inputs, outputs, name=name)


def _logits(x, num_classes, kernel_initializer=None, bias_initializer=None):
    return keras.layers.Dense(
        num_classes, dtype="float32", name="classifier",
        kernel_initializer=kernel_initializer or torch_default_kernel(),
        bias_initializer=bias_initializer or torch_default_bias(x.shape[-1]),
    )(x)


register("mobilenet_v1", mobilenet_v1)
register("mobilenet_v2", mobilenet_v2)
# CIFAR-sized variants keep the stem at full resolution.
register("mobilenet_v1_cifar", functools.partial(mobilenet_v1,
                                                 stem_strides=1))
register("mobilenet_v2_cifar", functools.partial(mobilenet_v2,
                                                 stem_strides=1))
