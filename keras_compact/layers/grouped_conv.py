"""A grouped 2D convolution that takes TensorFlow's fast grouped kernel."""

import keras
from keras import ops

from keras_compact import api
from keras_compact.layers import conv_args


@api.serializable
class GroupedConv2D(keras.layers.Layer):
    """2D convolution with `groups` independent channel groups.

    Same function and weights layout as `keras.layers.Conv2D(groups=...)`
    (kernel `(kh, kw, in_channels // groups, filters)`), but on the
    TensorFlow backend it calls `tf.nn.conv2d` with the grouped filter
    instead of Keras's XLA-compiled grouped path, which is ~130x slower on
    CPU. It exports to a single builtin LiteRT `CONV_2D`. Other backends use
    `keras.ops.conv`.

    Args:
        filters: number of output channels, divisible by `groups`.
        kernel_size: int or pair.
        strides: int or pair.
        padding: `"valid"` or `"same"`. For stride 2 prefer explicit
            `ZeroPadding2D` + `"valid"`, which pads like PyTorch.
        groups: number of channel groups; divides input channels and filters.
        use_bias: whether to add a bias.
        kernel_initializer: defaults to PyTorch's `kaiming_normal_`.
        bias_initializer, kernel_regularizer, bias_regularizer: as in Conv2D.
        dilation_rate: int or pair, as in Conv2D (strides must then be 1).
        activation: applied to the output (None: linear), as in Conv2D.
        kernel_constraint, bias_constraint: as in Conv2D.
        **kwargs: base layer arguments (`name`, `dtype`, ...), and
            `data_format="channels_last"` (the only layout).

    Example:

    >>> conv = keras_compact.layers.GroupedConv2D(64, 3, padding="same",
    ...                                           groups=8)
    >>> tuple(conv(keras.ops.ones((2, 32, 32, 64))).shape)
    (2, 32, 32, 64)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        groups=1,
        use_bias=False,
        kernel_initializer=None,
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        dilation_rate=1,
        activation=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             conv_args.CHANNELS_LAST)
        super().__init__(**kwargs)
        conv_args.check_groups(filters, groups)
        self.filters = filters
        self.kernel_size, self.strides, self.padding = conv_args.geometry(
            kernel_size, strides, padding)
        self.dilation_rate = conv_args.dilation(dilation_rate, self.strides)
        self.groups = groups
        self.use_bias = conv_args.boolean(use_bias, "use_bias")
        self.activation = conv_args.activation(activation)
        self.input_spec = conv_args.input_spec(ndim=4)
        conv_args.set_weight_settings(
            self, kernel_initializer or kaiming_normal(), bias_initializer,
            kernel_regularizer, bias_regularizer, kernel_constraint,
            bias_constraint)

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, ndim=4)
        conv_args.check_min_size(self, input_shape)
        channels = input_shape[-1]
        conv_args.check_groups(channels, self.groups, "input channels")
        self.input_spec = conv_args.input_spec(ndim=4, channels=channels)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def call(self, inputs):
        conv_args.check_float_input(self, inputs)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            outputs = tf.nn.conv2d(
                inputs,
                ops.cast(self.kernel, inputs.dtype),
                strides=self.strides,
                padding=self.padding.upper(),
                dilations=self.dilation_rate,
            )
        else:
            outputs = ops.conv(
                inputs, self.kernel, strides=self.strides, padding=self.padding,
                dilation_rate=self.dilation_rate,
            )
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return conv_args.output_shape(self, input_shape)

    def profile(self, input_shape, output_shape):
        """Params and MACs: each output sees `in_channels / groups` inputs."""
        kh, kw = self.kernel_size
        _, height, width, filters = output_shape
        macs = height * width * filters * kh * kw * (input_shape[-1]
                                                    // self.groups)
        return {"params": self.count_params(), "macs": macs}

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            groups=self.groups,
            use_bias=self.use_bias,
            dilation_rate=self.dilation_rate,
            activation=keras.activations.serialize(self.activation),
            **conv_args.weight_settings_config(self),
        )
        return config


def kaiming_normal():
    """PyTorch's `kaiming_normal_` default: N(0, 2 / fan_in), untruncated."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_in", distribution="untruncated_normal"
    )

