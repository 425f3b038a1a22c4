"""Arguments shared by the library's convolution layers.

`GroupedConv2D`, `ExpandedConv2D`, `ExpanderConv2D` and the dense
variants take `keras.layers.Conv2D`'s geometry (kernel size, strides,
padding, dilation rate), activation and weight settings (initializers,
regularizers, constraints). They validate, use and serialize them here, so
every layer fails the same way on the same bad argument and saves the same
config keys. Layers whose technique fixes one of these arguments (SlimConv's
3x3 kernels, the APS layers' PyTorch padding) accept the fixed value and
refuse any other with the reason (`take_fixed`). The argument and input
checks here serve every public layer of the library: a bad value fails in
`__init__` or `build` with the argument's name, before a TensorFlow kernel
sees it (some, given the wrong rank, abort the process instead of raising).
"""

import math
import numbers

import keras
import numpy as np

from keras_compact.errors import UsageError

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


def input_spec(ndim=None, min_ndim=None, channels=None):
    """The `keras.InputSpec` a layer sets in `__init__` (rank only) and in
    `build` (`channels`: the last axis too): Keras checks it on every call.
    """
    axes = None if channels is None else {-1: channels}
    return keras.InputSpec(ndim=ndim, min_ndim=min_ndim, axes=axes)


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
    extent = effective_kernel(layer.kernel_size, layer.dilation_rate)
    for axis, length, kernel in zip(("height", "width"), input_shape[1:3],
                                    extent):
        if length is not None and length < kernel:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': input {axis} "
                f"{length} is smaller than the kernel's extent {extent} "
                f"(kernel_size={layer.kernel_size}, dilation_rate="
                f"{layer.dilation_rate}) with padding='valid'; use "
                "padding='same' or a larger input. Received: "
                f"input_shape={tuple(input_shape)}.")


def dilation(dilation_rate, strides):
    """`dilation_rate` as a pair; as in Keras, not together with a stride.

    Example:

    >>> dilation(2, (1, 1))
    (2, 2)
    """
    rate = pair(dilation_rate, "dilation_rate")
    if rate != (1, 1) and tuple(strides) != (1, 1):
        raise UsageError(
            f"dilation_rate > 1 needs strides=1, as in keras.layers.Conv2D. "
            f"Received: dilation_rate={dilation_rate!r}, strides="
            f"{tuple(strides)}.")
    return rate


def effective_kernel(kernel_size, dilation_rate):
    """The spatial extent `(k - 1) * d + 1` of a dilated kernel."""
    return tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation_rate))


def activation(value):
    """`keras.activations.get(value)` (None: linear, as in Keras), with an
    error naming the argument."""
    return keras_object(keras.activations, value, "activation")


# Every layer here computes channels-last (NHWC), TensorFlow's CPU layout.
CHANNELS_LAST = {"data_format": ((None, "channels_last"),
                                 "inputs are channels-last (NHWC)")}


def without_bias(why):
    """The fixed arguments of a layer whose convs have no bias: `use_bias`
    False and no bias settings, refused with `why`."""
    fixed = {"use_bias": ((False,), why)}
    fixed.update({name: ((None,), why) for name in (
        "bias_initializer", "bias_regularizer", "bias_constraint")})
    return fixed


def take_fixed(layer_name, kwargs, fixed):
    """Removes from `kwargs` the Keras arguments a technique fixes.

    `fixed` maps an argument name to `(allowed values, why)`: an allowed
    value (what the technique does anyway) is accepted and dropped; any
    other fails with one line that says why, instead of being ignored.

    Example:

    >>> kwargs = {"use_bias": False, "name": "conv"}
    >>> take_fixed("Conv", kwargs, {"use_bias": ((False,), "BN follows")})
    >>> kwargs
    {'name': 'conv'}
    """
    for name, (allowed, why) in fixed.items():
        if name not in kwargs:
            continue
        value = kwargs.pop(name)
        given = tuple(value) if isinstance(value, list) else value
        if not any(given == a and isinstance(given, bool) == isinstance(
                a, bool) for a in allowed):
            takes = (f"takes {name}=" + " or ".join(map(repr, allowed))
                     + " only") if allowed else f"has no {name}"
            raise UsageError(f"{layer_name} {takes}: {why}. Received: "
                             f"{name}={value!r}.")


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
    `padding`, `dilation_rate` and `filters` attributes."""
    batch, height, width, _ = input_shape
    extent = effective_kernel(layer.kernel_size, layer.dilation_rate)
    return (batch,
            *(output_length(length, kernel, stride, layer.padding)
              for length, kernel, stride in zip(
                  (height, width), extent, layer.strides)),
            layer.filters)


# Keras's weight settings: argument name -> the Keras module of its values.
WEIGHT_SETTINGS = {
    "kernel_initializer": keras.initializers,
    "bias_initializer": keras.initializers,
    "kernel_regularizer": keras.regularizers,
    "bias_regularizer": keras.regularizers,
    "kernel_constraint": keras.constraints,
    "bias_constraint": keras.constraints,
}


# The settings of a layer whose weights have no bias.
KERNEL_SETTINGS = ("kernel_initializer", "kernel_regularizer",
                   "kernel_constraint")


def set_weight_settings(layer, kernel_initializer, bias_initializer,
                        kernel_regularizer, bias_regularizer,
                        kernel_constraint=None, bias_constraint=None):
    """Stores the six settings on `layer` as Keras objects (None stays
    None: each layer documents what a None initializer means for it)."""
    values = (kernel_initializer, bias_initializer, kernel_regularizer,
              bias_regularizer, kernel_constraint, bias_constraint)
    for (name, module), value in zip(WEIGHT_SETTINGS.items(), values):
        setattr(layer, name, keras_object(module, value, name))


def keras_object(module, value, name):
    """`module.get(value)` (initializers, regularizers, activations), with
    an error naming the argument."""
    try:
        return module.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}: {str(error).splitlines()[0]} Received: "
                         f"{name}={value!r}.") from None


def fresh_initializer(initializer):
    """A copy of `initializer` for one more layer.

    Keras repeats the values of an unseeded initializer instance on every
    call, so layers sharing one instance would start identical.
    """
    if initializer is None:
        return None
    return keras.initializers.deserialize(
        keras.initializers.serialize(initializer))


def weight_settings_config(layer, names=tuple(WEIGHT_SETTINGS)):
    """The settings `names` of `layer`, serialized for `get_config`."""
    return {name: WEIGHT_SETTINGS[name].serialize(getattr(layer, name))
            for name in names}

