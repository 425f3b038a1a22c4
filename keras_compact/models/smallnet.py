"""SmallNet: the compact CIFAR network of the ExpandNets paper.

Three `k x k` convs (8, 16, 32 channels, each with bias, BN, ReLU and 2x2
max-pooling), then `fc1` (64, ReLU) and the logits `fc2`. `k = 3` has no
padding (fc1 sees 2x2x32 = 128 features on 32x32 inputs), `k = 7` pads 3
("same"; 4x4x32 = 512). On CIFAR-10: 15,050 params / 0.472 M MACs for
`k = 3`, 66,186 / 4.45 M for `k = 7` (spec table 4.3).

Convs come from a conv factory (`keras_compact.models.mobilenet.conv2d`'s
signature) and fc1 from a dense factory `dense(x, units, *, name) -> y`, so
ExpandNets builds its expanded SmallNets from this same function.

Reference: Guo, Alvarez, Salzmann, "ExpandNets", NeurIPS 2020,
https://arxiv.org/abs/1811.10495 (section 4.1; the reference code's
`cifar_tiny_{3,7}.py`).
"""

import functools

import keras

from keras_compact.layers.expansion import torch_default_bias
from keras_compact.layers.expansion import torch_default_kernel
from keras_compact.models import blocks
from keras_compact.models.mobilenet import conv2d
from keras_compact.models.registry import register


def dense(x, units, *, name):
    """The default dense factory: `keras.layers.Dense`, PyTorch's init."""
    return keras.layers.Dense(
        units, kernel_initializer=torch_default_kernel(),
        bias_initializer=torch_default_bias(x.shape[-1]), name=name)(x)


def smallnet(kernel_size, input_shape, num_classes, padding="valid",
             conv=conv2d, dense=dense, widths=(8, 16, 32), hidden_units=64,
             name=None):
    """Builds SmallNet with `kernel_size x kernel_size` convolutions.

    Args:
        kernel_size: 3 or 7 in the paper (any odd size works).
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        padding: `"valid"` (paper's 3x3) or `"same"` (paper's 7x7, pad 3).
        conv: conv factory, `conv(x, filters, kernel_size, *, strides,
            padding, groups, use_bias, kernel_initializer, name)`.
        dense: dense factory for fc1, `dense(x, units, *, name)`.
        widths: channels of the three convs.
        hidden_units: width of fc1.
        name: model name; default `smallnet{kernel_size}`.

    Example:

    >>> model = keras_compact.models.build("smallnet7", (32, 32, 3), 10)
    >>> keras_compact.profiling.profile(model).params
    66186
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for index, filters in enumerate(widths, start=1):
        x = conv(x, filters, kernel_size, padding=padding, use_bias=True,
                 name=f"conv{index}")
        x = blocks.batch_norm(x, f"bn{index}")
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = dense(x, hidden_units, name="fc1")
    x = keras.layers.ReLU(name="fc1_relu")(x)
    outputs = keras.layers.Dense(
        num_classes, dtype="float32", name="fc2",
        kernel_initializer=torch_default_kernel(),
        bias_initializer=torch_default_bias(hidden_units))(x)
    return keras.Model(inputs, outputs, name=name or f"smallnet{kernel_size}")


register("smallnet3", functools.partial(smallnet, 3, padding="valid"))
register("smallnet7", functools.partial(smallnet, 7, padding="same"))
