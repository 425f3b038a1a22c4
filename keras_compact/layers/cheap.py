"""Cheap convolutions: the 3x3 shift and the shift/depthwise/group blocks.

Reference: Xie et al., "Training convolutional neural networks with cheap
convolutions and online distillation", https://arxiv.org/abs/1909.13063,
official code github.com/EthanZhangYC/OD-cheap-convolution
(`model/cifar10/shiftresnet.py` and its CUDA shift kernel).
"""

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact import profiling
from keras_compact.layers import conv_args
from keras_compact.layers.batch_normalization import BatchNormalization
from keras_compact.layers.grouped_conv import GroupedConv2D
from keras_compact.layers.grouped_conv import kaiming_normal

# The reference kernel's "modulo shift": channel c moves by DIRECTIONS[c % 9]
# = (dh, dw) with out[y, x] = in[y + dh, x + dw], zero outside the map.
DIRECTIONS = tuple((d // 3 - 1, d % 3 - 1) for d in range(9))


def shift_directions(channels):
    """The `(dh, dw)` of every channel, as the reference CUDA kernel shifts.

    Channels below `9 * (channels // 9)` follow the interleaved period-9
    pattern of `DIRECTIONS`; the trailing `channels % 9` are not shifted.
    """
    shifted = 9 * (channels // 9)
    return [DIRECTIONS[c % 9] if c < shifted else (0, 0)
            for c in range(channels)]


@api.serializable
class Shift2D(keras.layers.Layer):
    """Parameter-free 3x3 shift: every channel is translated by one pixel.

    Channel `c` (of `C`) is moved by `(dh, dw) = ((c // 3) % 3 - 1,
    c % 3 - 1)`, i.e. `out[:, y, x, c] = in[:, y + dh, x + dw, c]`, with zeros
    where the source falls outside the map. The nine directions are
    interleaved (period 9 in the channel index; every ninth channel, c % 9 ==
    4, is the identity) and the last `C % 9` channels are not shifted, exactly
    as the reference's CUDA kernel. The gradient is the reverse shift.

    The shift runs as a depthwise 3x3 convolution with a constant one-hot
    kernel: exact for finite inputs, a builtin LiteRT `DEPTHWISE_CONV_2D`,
    and on TF CPU 12-20x faster forward+backward than the pad + 9
    channel-strided slices + stack alternative (measured at 32x32x16,
    16x16x32 and 8x8x64, batch 128). Like the paper, `profile()` counts it as
    0 parameters and 0 MACs.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        Same as the input.

    Example:

    >>> shift = keras_compact.layers.Shift2D()
    >>> tuple(shift(keras.ops.ones((2, 8, 8, 16))).shape)
    (2, 8, 8, 16)

    Reference:
        Wu et al., "Shift: A Zero FLOP, Zero Parameter Alternative to Spatial
        Convolutions", https://arxiv.org/abs/1711.08141; the interleaved
        variant of Xie et al., https://arxiv.org/abs/1909.13063.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = conv_args.input_spec(ndim=4)

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, ndim=4)
        channels = input_shape[-1]
        kernel = np.zeros((3, 3, channels, 1), "float32")
        for channel, (dh, dw) in enumerate(shift_directions(channels)):
            # Convolutions are correlations: out[y] = sum_i in[y + i - 1]
            # k[i], so the source offset dh sits at kernel row dh + 1.
            kernel[dh + 1, dw + 1, channel, 0] = 1.0
        self._kernel = kernel

    def call(self, inputs):
        conv_args.check_float_input(self, inputs)
        kernel = ops.convert_to_tensor(self._kernel, dtype=inputs.dtype)
        return ops.depthwise_conv(inputs, kernel, strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return input_shape

    def profile(self, input_shape, output_shape):
        """The shift has no weights and is counted as 0 MACs."""
        del input_shape, output_shape
        return {"params": 0, "macs": 0}


# Keras conv arguments whose value the cheap blocks fix: name -> (allowed,
# why).
_BLOCK_FIXED = {
    "kernel_size": ((3, (3, 3)), "the cheap spatial operations are 3x3"),
    "padding": (("same",), "the spatial operations keep the map size and "
                           "the strided 1x1 convs subsample"),
    "dilation_rate": ((1, (1, 1)), "the reference's operations are not "
                                   "dilated"),
    **conv_args.without_bias("a BatchNormalization follows every 1x1 conv "
                             "and no BN follows the spatial operation"),
    **conv_args.CHANNELS_LAST,
}


class CheapBlock(keras.layers.Layer):
    """The residual block of the OD reference with a cheap spatial operation.

    `h = ReLU(BN1(conv1(spatial1(x))))`, `o = ReLU(BN2(conv2(spatial2(h))))`,
    `y = o + shortcut(x)`: the spatial ops act at the input resolution, the
    1x1 `conv2` carries the stride, BN follows only the 1x1 convs, and there
    is no ReLU after the addition. The shortcut is the identity, or a strided
    1x1 conv + BN when the shape changes. Subclasses define the spatial op
    with two methods: `spatial(channels, name)` returns the cheap 3x3 layer
    on `channels` channels (C -> C), and `spatial_macs(height, width,
    channels)` its MACs on a `height x width x channels` map.

    Args:
        filters: output channels (the reference's expansion is always 1).
        strides: 1, or 2 to halve the resolution (in `conv2`, `shortcut`).
        activation: applied to the block's output `y` (None: none, as the
            reference; a ResNet basic block would take "relu").
        kernel_initializer: of every conv kernel (None: the reference's,
            PyTorch's `kaiming_normal_` for the 1x1 convs).
        kernel_regularizer, kernel_constraint: of every conv kernel, as in
            `keras.layers.Conv2D`.
        **kwargs: base layer arguments (`name`, `dtype`, ...). Keras conv
            arguments that the block fixes (`kernel_size=3`,
            `padding="same"`, `use_bias=False`, ...) are accepted at that
            value and refused with the reason otherwise.
    """

    def __init__(self, filters, strides=1, activation=None,
                 kernel_initializer=None, kernel_regularizer=None,
                 kernel_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs, _BLOCK_FIXED)
        super().__init__(**kwargs)
        self.filters = conv_args.positive_int(filters, "filters")
        if isinstance(strides, bool) or strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2. Received: "
                             f"strides={strides!r}.")
        self.strides = strides
        self.activation = conv_args.activation(activation)
        conv_args.set_weight_settings(self, kernel_initializer, None,
                                      kernel_regularizer, None,
                                      kernel_constraint)
        self.input_spec = conv_args.input_spec(ndim=4)

    @classmethod
    def as_block(cls, **kwargs):
        """`block(x, filters, strides, name)` for `models.resnet_cifar`.

        Example:

        >>> model = keras_compact.models.resnet_cifar.resnet_cifar(
        ...     8, (32, 32, 3), 10,
        ...     block=keras_compact.layers.ShiftBlock.as_block())
        >>> sum(isinstance(layer, keras_compact.layers.ShiftBlock)
        ...     for layer in model.layers)
        3
        """

        def block(x, filters, strides, name):
            return cls(filters, strides=strides, name=name, **kwargs)(x)

        return block

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, ndim=4)
        channels = input_shape[-1]
        self.input_spec = conv_args.input_spec(ndim=4, channels=channels)
        shape = tuple(input_shape)
        self.spatial1 = self.spatial(channels, "1")
        self.conv1 = self._pointwise(self.filters, 1, "conv1")
        self.bn1 = BatchNormalization(name="bn1", dtype=self.dtype_policy)
        self.spatial2 = self.spatial(self.filters, "2")
        self.conv2 = self._pointwise(self.filters, self.strides, "conv2")
        self.bn2 = BatchNormalization(name="bn2", dtype=self.dtype_policy)
        self.spatial1.build(shape)
        self.conv1.build(shape)
        mid = shape[:-1] + (self.filters,)
        self.bn1.build(mid)
        self.spatial2.build(mid)
        self.conv2.build(mid)
        out = self.compute_output_shape(shape)
        self.bn2.build(out)
        self.shortcut_conv = self.shortcut_bn = None
        if self.strides != 1 or channels != self.filters:
            self.shortcut_conv = self._pointwise(self.filters, self.strides,
                                                 "shortcut_conv")
            self.shortcut_bn = BatchNormalization(name="shortcut_bn",
                                                  dtype=self.dtype_policy)
            self.shortcut_conv.build(shape)
            self.shortcut_bn.build(out)

    def _kernel_settings(self, default):
        """The kernel settings of a sublayer, `default` its reference
        initializer (`kernel_initializer` overrides it)."""
        return {"kernel_initializer": conv_args.fresh_initializer(
                    self.kernel_initializer) or default,
                "kernel_regularizer": self.kernel_regularizer,
                "kernel_constraint": self.kernel_constraint}

    def _pointwise(self, filters, strides, name):
        return keras.layers.Conv2D(
            filters, 1, strides=strides, padding="valid", use_bias=False,
            name=name, dtype=self.dtype_policy,
            **self._kernel_settings(kaiming_normal()),
        )

    def call(self, inputs, training=None):
        conv_args.check_float_input(self, inputs)
        x = self.conv1(self.spatial1(inputs))
        x = ops.relu(self.bn1(x, training=training))
        x = self.conv2(self.spatial2(x))
        x = ops.relu(self.bn2(x, training=training))
        shortcut = inputs
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(inputs),
                                        training=training)
        return self.activation(x + shortcut)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def subsample(length):
            return None if length is None else (length - 1) // self.strides + 1

        return (batch, subsample(height), subsample(width), self.filters)

    def profile(self, input_shape, output_shape):
        """Params and MACs: 1x1 convs, shortcut and the spatial ops.

        Both spatial ops run at the input resolution (the stride sits in
        `conv2`), so these are the MACs actually computed; the reference's
        `flops()` counts the second one at the output resolution instead.
        """
        _, height, width, channels = input_shape
        _, out_height, out_width, filters = output_shape
        macs = height * width * channels * filters  # conv1
        macs += out_height * out_width * filters * filters  # conv2
        if self.shortcut_conv is not None:
            macs += out_height * out_width * channels * filters
        macs += self.spatial_macs(height, width, channels)
        macs += self.spatial_macs(height, width, filters)
        return {"params": profiling.trainable_params(self), "macs": macs}

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, strides=self.strides,
            activation=keras.activations.serialize(self.activation),
            **conv_args.weight_settings_config(
                self, conv_args.KERNEL_SETTINGS))
        return config


@api.serializable
class ShiftBlock(CheapBlock):
    """Residual block of shift -> 1x1 conv -> BN -> ReLU, twice.

    The OD reference's `ShiftBlock`: sublayers `shift1, conv1, bn1, shift2,
    conv2, bn2` (+ `shortcut_conv, shortcut_bn`). The shifts are `Shift2D`:
    0 parameters and 0 MACs, so a ResNet-56 of these blocks has 102,106
    parameters and 15,385,216 MACs on 32x32x3 inputs.

    Args:
        filters: output channels.
        strides: 1 or 2 (applied by `conv2` and the shortcut).

    Example:

    >>> block = keras_compact.layers.ShiftBlock(32, strides=2)
    >>> tuple(block(keras.ops.ones((2, 32, 32, 16))).shape)
    (2, 16, 16, 32)

    Reference:
        Xie et al., https://arxiv.org/abs/1909.13063.
    """

    def spatial(self, channels, name):
        return Shift2D(name=f"shift{name}", dtype=self.dtype_policy)

    def spatial_macs(self, height, width, channels):
        return 0


@api.serializable
class DepthwiseBlock(CheapBlock):
    """Residual block of depthwise 3x3 -> 1x1 conv -> BN -> ReLU, twice.

    The OD reference's `DWBlock` (sublayers `dw1, conv1, bn1, dw2, conv2,
    bn2`), no BN between the depthwise and the 1x1 conv. The depthwise kernel
    is initialised like PyTorch's `kaiming_normal_` (fan_in = 9, std
    sqrt(2/9)); Keras would use fan_in = 9 C.

    Args:
        filters: output channels.
        strides: 1 or 2 (applied by `conv2` and the shortcut).

    Example:

    >>> block = keras_compact.layers.DepthwiseBlock(16)
    >>> tuple(block(keras.ops.ones((2, 32, 32, 16))).shape)
    (2, 32, 32, 16)

    Reference:
        Xie et al., https://arxiv.org/abs/1909.13063.
    """

    def spatial(self, channels, name):
        kernel = self._kernel_settings(keras.initializers.RandomNormal(
            stddev=float(np.sqrt(2.0 / 9.0))))
        return keras.layers.DepthwiseConv2D(
            3, padding="same", use_bias=False,
            name=f"dw{name}", dtype=self.dtype_policy,
            **{key.replace("kernel", "depthwise"): value
               for key, value in kernel.items()},
        )

    def spatial_macs(self, height, width, channels):
        return height * width * channels * 9


@api.serializable
class GroupBlock(CheapBlock):
    """Residual block of grouped 3x3 conv -> 1x1 conv -> BN -> ReLU, twice.

    The OD reference's `GroupBlock` (sublayers `group1, conv1, bn1, group2,
    conv2, bn2`): a C -> C grouped 3x3 conv with `groups` contiguous channel
    groups, no channel shuffle, no BN after it. It runs through
    `layers.GroupedConv2D` (Keras's grouped Conv2D is ~130x slower on TF
    CPU). `groups` must divide every stage width (1, 2, 4, 8 or 16 for the
    16-32-64 CIFAR ResNets; 1 is a dense 3x3 conv, the reference's default).

    Args:
        filters: output channels.
        strides: 1 or 2 (applied by `conv2` and the shortcut).
        groups: number of channel groups of the 3x3 convs.

    Example:

    >>> block = keras_compact.layers.GroupBlock(64, strides=2, groups=4)
    >>> tuple(block(keras.ops.ones((2, 16, 16, 32))).shape)
    (2, 8, 8, 64)

    Reference:
        Xie et al., https://arxiv.org/abs/1909.13063.
    """

    def __init__(self, filters, strides=1, groups=4, **kwargs):
        super().__init__(filters, strides=strides, **kwargs)
        if (isinstance(groups, bool) or not isinstance(groups, int)
                or groups < 1 or filters % groups):
            raise ValueError(f"groups must be a positive int dividing "
                             f"filters={filters}. Received: groups={groups!r}.")
        self.groups = groups

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, ndim=4)
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the input channels "
                f"({input_shape[-1]}) of block '{self.name}'; pick a "
                "divisor of every stage width.")
        super().build(input_shape)

    def spatial(self, channels, name):
        return GroupedConv2D(channels, 3, padding="same", groups=self.groups,
                             name=f"group{name}", dtype=self.dtype_policy,
                             **self._kernel_settings(None))

    def spatial_macs(self, height, width, channels):
        return height * width * channels * (channels // self.groups) * 9

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups)
        return config
