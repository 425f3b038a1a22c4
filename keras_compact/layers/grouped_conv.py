"""A grouped 2D convolution that takes TensorFlow's fast grouped kernel."""

import contextlib
import contextvars
import functools

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
    CPU. It exports to a single builtin LiteRT `CONV_2D`. Where TF's CPU
    kernels lack grouped gradients (no oneDNN), it runs one conv per group.
    Other backends use `keras.ops.conv`.

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
            outputs = tf_grouped_conv2d(
                inputs, ops.cast(self.kernel, inputs.dtype), self.strides,
                self.padding.upper(), self.dilation_rate)
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


def tf_grouped_conv2d(inputs, kernel, strides, padding, dilations):
    """`tf.nn.conv2d` with a grouped kernel, split per group where needed.

    The single grouped op where TF's CPU kernels differentiate it or the
    graph is only run forward (`forward_only`), else `_split_grouped_conv`;
    `padding` is TF's `"SAME"` or `"VALID"`.
    """
    import tensorflow as tf

    conv = tf.nn.conv2d
    if (kernel.shape[2] != inputs.shape[-1] and not _FORWARD_ONLY.get()
            and not grouped_gradients_work()):
        conv = _split_grouped_conv
    return conv(inputs, kernel, strides=strides, padding=padding,
                dilations=dilations)


_FORWARD_ONLY = contextvars.ContextVar("forward_only", default=False)


@contextlib.contextmanager
def forward_only():
    """Traces grouped convs as one grouped op, with or without oneDNN.

    For graphs that are converted, not trained or run by TF's kernels:
    the LiteRT converter then writes one grouped `CONV_2D` whose BN the
    converter folds, where the split form leaves a `SPLIT`, a `CONV_2D` per
    group, a `CONCATENATION` and BN as a quantized `MUL` and `ADD`
    (`export.to_litert` uses it).
    """
    token = _FORWARD_ONLY.set(True)
    try:
        yield
    finally:
        _FORWARD_ONLY.reset(token)


@functools.cache
def grouped_gradients_work():
    """Whether TensorFlow's CPU kernels differentiate a grouped `conv2d`.

    Without oneDNN (`TF_ENABLE_ONEDNN_OPTS=0`, or a build without it) the
    CPU forward kernel handles groups, but both backprop kernels and the
    fused conv kernels of graph optimisation refuse them. A one-time probe
    of the backprop kernels themselves, not the environment variable: the
    default differs by build and platform, and TF has no public query.
    """
    import tensorflow as tf

    # Eager even while `call` is traced (init_scope); the kernels are called
    # directly, since init_scope pauses every gradient tape.
    with tf.init_scope(), tf.device("CPU:0"):
        inputs, kernel = tf.ones((1, 3, 3, 4)), tf.ones((3, 3, 2, 2))
        geometry = dict(out_backprop=tf.ones((1, 3, 3, 2)),
                        strides=(1, 1, 1, 1), padding="SAME")
        try:
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(inputs), filter=kernel, **geometry)
            tf.raw_ops.Conv2DBackpropFilter(
                input=inputs, filter_sizes=tf.shape(kernel), **geometry)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def _split_grouped_conv(inputs, kernel, strides, padding, dilations):
    """A grouped `tf.nn.conv2d` as one plain conv per group, concatenated.

    For CPUs without oneDNN, whose kernels lack grouped backprops and whose
    graph optimizer fuses a grouped conv with its bias, batch norm or ReLU
    into a kernel that refuses groups. Splitting was the fastest of the
    measured forms (TF 2.21, oneDNN off, batch 32, forward + backward):
    58 ms against 119 ms for a block-diagonal dense kernel and 332 ms for
    depthwise + sum at 32x32, 64->64, groups 8; at 16x16, 2048->64,
    groups 64: 241, 2070 and 349 ms.
    """
    import tensorflow as tf

    groups = inputs.shape[-1] // kernel.shape[2]
    return tf.concat([
        tf.nn.conv2d(piece, piece_kernel, strides, padding,
                     dilations=dilations)
        for piece, piece_kernel in zip(tf.split(inputs, groups, axis=-1),
                                       tf.split(kernel, groups, axis=-1))
    ], axis=-1)
