"""Arguments shared by the library's convolution layers.

`GroupedConv2D`, `ExpandedConv2D`, `ExpanderConv2D` and the dense
variants take `keras.layers.Conv2D`'s geometry (kernel size, strides,
padding) and weight settings (initializers, regularizers). They validate,
use and serialize them here, so every layer fails the same way on the same
bad argument and saves the same config keys.
"""

import keras

PADDINGS = ("valid", "same")


def pair(value, name):
    """`value` as a pair of positive ints: `3 -> (3, 3)`."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or pair. "
                         f"Received: {name}={value}.")
    return pair


def geometry(kernel_size, strides, padding):
    """Validated `(kernel_size, strides, padding)` of a 2D conv.

    Example:

    >>> geometry(3, 2, "valid")
    ((3, 3), (2, 2), 'valid')
    """
    if padding not in PADDINGS:
        raise ValueError(
            f"padding must be one of {PADDINGS}; for PyTorch-style explicit "
            "pads put a ZeroPadding2D before the layer and use 'valid'. "
            f"Received: padding={padding!r}.")
    return pair(kernel_size, "kernel_size"), pair(strides, "strides"), padding


def check_groups(channels, groups, what="filters"):
    """Fails unless `groups >= 1` divides `channels`."""
    if groups < 1 or channels % groups:
        raise ValueError(f"{what} must be divisible by groups. Received: "
                         f"{what}={channels}, groups={groups}.")


def output_length(length, kernel, stride, padding):
    """Output length of one spatial axis (None stays None)."""
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - kernel) // stride + 1


def output_shape(layer, input_shape):
    """NHWC output shape of a conv layer with `kernel_size`, `strides`,
    `padding` and `filters` attributes."""
    batch, height, width, _ = input_shape
    return (batch,
            *(output_length(length, kernel, stride, layer.padding)
              for length, kernel, stride in zip(
                  (height, width), layer.kernel_size, layer.strides)),
            layer.filters)


def set_weight_settings(layer, kernel_initializer, bias_initializer,
                        kernel_regularizer, bias_regularizer):
    """Stores the four settings on `layer` as Keras objects (None stays
    None: each layer documents what a None initializer means for it)."""
    layer.kernel_initializer = keras.initializers.get(kernel_initializer)
    layer.bias_initializer = keras.initializers.get(bias_initializer)
    layer.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    layer.bias_regularizer = keras.regularizers.get(bias_regularizer)


def weight_settings_config(layer):
    """The four settings of `layer`, serialized for `get_config`."""
    return dict(
        kernel_initializer=keras.initializers.serialize(
            layer.kernel_initializer),
        bias_initializer=keras.initializers.serialize(layer.bias_initializer),
        kernel_regularizer=keras.regularizers.serialize(
            layer.kernel_regularizer),
        bias_regularizer=keras.regularizers.serialize(layer.bias_regularizer),
    )
