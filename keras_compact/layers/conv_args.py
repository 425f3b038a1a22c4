"""Arguments shared by the library's convolution layers.

`GroupedConv2D`, `ExpandedConv2D`, `ExpanderConv2D` and the dense
variants take `keras.layers.Conv2D`'s geometry (kernel size, strides,
padding) and weight settings (initializers, regularizers). They validate,
use and serialize them here, so every layer fails the same way on the same
bad argument and saves the same config keys. The argument and input
checks here serve every public layer of the library: a bad value fails in
`__init__` or `build` with the argument's name, before a TensorFlow kernel
sees it (some, given the wrong rank, abort the process instead of raising).
"""

import math
import numbers

import keras
import numpy as np

PADDINGS = ("valid", "same")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, name):
    """`value` as an int >= 1, else a ValueError naming `name`."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int. Received: "
                         f"{name}={value!r}.")
    return int(value)


def positive_number(value, name):
    """`value` if it is a finite number > 0, else a ValueError."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a positive finite number. Received: "
                         f"{name}={value!r}.")
    return value


def boolean(value, name):
    """`value` as a bool if it is one (NumPy's too), else a ValueError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False. Received: "
                         f"{name}={value!r}.")
    return bool(value)


def one_of(value, name, choices):
    """`value` if it is one of `choices`, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}. "
                         f"Received: {name}={value!r}.")
    return value


def pair(value, name):
    """`value` as a pair of positive ints: `3 -> (3, 3)`."""
    if _is_int(value):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(_is_int(v) and v >= 1 for v in value)):
        raise ValueError(f"{name} must be a positive int or pair. "
                         f"Received: {name}={value!r}.")
    return tuple(int(v) for v in value)


def input_spec(ndim=None, min_ndim=None):
    """The `keras.InputSpec` a layer sets in `__init__`: Keras checks the
    rank on every call, before `build`."""
    return keras.InputSpec(ndim=ndim, min_ndim=min_ndim)


def check_input_shape(layer, input_shape, ndim=None, min_ndim=None):
    """Fails unless `input_shape` has the rank and a known last axis.

    For direct `build(shape)` calls, which skip the `InputSpec`.
    """
    rank = len(input_shape)
    if (ndim is not None and rank != ndim) or (
            min_ndim is not None and rank < min_ndim):
        expected = f"rank {ndim}" if ndim else f"rank >= {min_ndim}"
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' takes inputs of "
            f"{expected}{' (batch, height, width, channels)' * (ndim == 4)}. "
            f"Received: input_shape={tuple(input_shape)}.")
    if input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' needs a known number of "
            f"channels (last axis). Received: input_shape="
            f"{tuple(input_shape)}.")


def check_float_input(layer, inputs):
    """Fails unless `inputs` is a floating-point tensor (called in `call`,
    where the dtype is known; before any kernel runs)."""
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if "float" not in dtype:
        raise TypeError(
            f"{type(layer).__name__} '{layer.name}' takes floating-point "
            f"inputs. Received: inputs.dtype={dtype}; cast first, e.g. "
            "keras.ops.cast(x, 'float32').")


def check_min_size(layer, input_shape):
    """Fails when a "valid" conv's kernel is larger than the input map."""
    if layer.padding != "valid":
        return
    for axis, length, kernel in zip(("height", "width"), input_shape[1:3],
                                    layer.kernel_size):
        if length is not None and length < kernel:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': input {axis} "
                f"{length} is smaller than kernel_size={layer.kernel_size} "
                "with padding='valid'; use padding='same' or a larger "
                f"input. Received: input_shape={tuple(input_shape)}.")


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
    positive_int(groups, "groups")
    positive_int(channels, what)
    if channels % groups:
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
    for name, value, module in (
            ("kernel_initializer", kernel_initializer, keras.initializers),
            ("bias_initializer", bias_initializer, keras.initializers),
            ("kernel_regularizer", kernel_regularizer, keras.regularizers),
            ("bias_regularizer", bias_regularizer, keras.regularizers)):
        setattr(layer, name, keras_object(module, value, name))


def keras_object(module, value, name):
    """`module.get(value)` (initializers, regularizers, activations), with
    an error naming the argument."""
    try:
        return module.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}: {str(error).splitlines()[0]} Received: "
                         f"{name}={value!r}.") from None


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
