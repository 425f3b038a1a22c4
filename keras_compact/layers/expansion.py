"""ExpandNets: linear expansion of convolutions and dense layers.

During training an expanded layer is a chain of linear layers (no BN, no
activation inside) that computes the same family of functions as the compact
layer it stands for; after training `contract()` multiplies the chain back
into that one compact layer, exactly. The algebra (spec section 2):

- dense chain: `W = W1 @ W2 @ W3`, `b = ((b1 @ W2) + b2) @ W3 + b3`;
- conv chain (stride 1, no padding between the layers): the kernels compose
  by full convolution, `K[t] = sum_{u + v = t} K1[u] K2[v]` (size
  `k1 + k2 - 1`), and `b = b2 + sum_v K2[v]^T b1`.

It is exact only if all of the compact layer's padding is applied before
the first layer of the chain (the padded zeros then become the constant `b1`
like every other position) and the stride sits on a layer followed only by
1x1 convolutions. These layers place them so; the arithmetic is done in
float64 NumPy and cast once at the end.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact.layers import conv_args
from keras_compact.layers.grouped_conv import GroupedConv2D

STRATEGIES = ("cl", "ck")


def torch_default_kernel():
    """PyTorch's default conv/linear kernel init: U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def torch_default_bias(fan_in):
    """PyTorch's default conv/linear bias init: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


@api.serializable
class ExpandedConv2D(keras.layers.Layer):
    """A `k x k` convolution trained as a chain of linear convolutions.

    Drop-in for `keras.layers.Conv2D` (or `DepthwiseConv2D` with
    `groups = input channels = filters`): same arguments, same output
    shape, and `to_compact()` gives that layer with the contracted weights.
    With `m` input and `n` output channels and rate `r`:

    - `strategy="cl"` (Expand-CL): 1x1 `m -> r*m`, `k x k` `r*m -> r*n`
      (carries the stride), 1x1 `r*n -> n`.
    - `strategy="ck"` (Expand-CK, odd `k > 3`): `(k - 1) / 2` 3x3 convs
      with widths `r*m, r*n, ..., r*n, n`; the stride is on the last one.

    Every inner conv has `groups` groups (depthwise expansion: `groups = m =
    n`, each channel becomes `r` channels inside its group). All of the
    padding is applied before the first conv (TF's "same" padding,
    asymmetric for stride 2, is reproduced exactly), inner convs are
    "valid". The paper keeps CIFAR's RGB input layer unexpanded
    (`expand_input=False`: the first width is `m`, not `r*m`).

    Args:
        filters: output channels `n`.
        kernel_size: int or pair, the compact layer's kernel.
        strides: int or pair.
        padding: `"valid"` or `"same"`, as the compact Conv2D. For PyTorch's
            symmetric padding with stride 2, put a `ZeroPadding2D` before
            the layer and use `"valid"` (exact as well).
        strategy: `"cl"` or `"ck"`.
        expansion_rate: `r` (the paper uses 4; 0.25 narrows).
        groups: channel groups of every inner conv; divides `m` and `n`.
        expand_input: whether the first width is `r*m` (True) or `m`.
        use_bias: biases on every inner conv (and on the compact one).
        kernel_initializer: of every inner conv; default PyTorch's.
        bias_initializer: default PyTorch's `U(+-1/sqrt(fan_in))` per conv.
        kernel_regularizer, bias_regularizer: applied to every factor
            (weight decay acts on the factors, as in the paper).
        dilation_rate: int or pair, as in Conv2D (strides must be 1): every
            `k x k` (CL) or 3x3 (CK) conv of the chain is dilated, and the
            compact layer is the dilated `k x k` conv, exactly.
        activation: applied to the chain's output (None: linear); the
            compact layer gets it too.
        kernel_constraint, bias_constraint: applied to every factor, as the
            regularizers (the contracted kernel is not constrained).
        **kwargs: base layer arguments (`name`, `dtype`, ...), and
            `data_format="channels_last"` (the only layout).

    Example:

    >>> layer = keras_compact.layers.ExpandedConv2D(16, 7, padding="same",
    ...                                             strategy="ck")
    >>> y = layer(keras.ops.ones((2, 16, 16, 8)))  # three 3x3 convs
    >>> compact = layer.to_compact()
    >>> type(compact).__name__, tuple(compact.kernel.shape)
    ('Conv2D', (7, 7, 8, 16))

    Reference:
        Guo, Alvarez, Salzmann, "ExpandNets: Linear Over-parameterization to
        Train Compact Convolutional Networks", NeurIPS 2020,
        https://arxiv.org/abs/1811.10495
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        strategy="cl",
        expansion_rate=4,
        groups=1,
        expand_input=True,
        use_bias=True,
        kernel_initializer=None,
        bias_initializer=None,
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
        self.filters = conv_args.positive_int(filters, "filters")
        self.kernel_size, self.strides, self.padding = conv_args.geometry(
            kernel_size, strides, padding)
        self.dilation_rate = conv_args.dilation(dilation_rate, self.strides)
        self.activation = conv_args.activation(activation)
        conv_args.one_of(strategy, "strategy", STRATEGIES)
        kh, kw = self.kernel_size
        if strategy == "ck" and not (kh == kw and kh % 2 and kh > 3):
            raise ValueError(
                "Expand-CK replaces an odd k x k kernel with k > 3 by "
                "(k - 1) / 2 3x3 convs; use strategy='cl' for "
                f"kernel_size={kernel_size}."
            )
        self.strategy = strategy
        self.expansion_rate = conv_args.positive_number(expansion_rate,
                                                        "expansion_rate")
        conv_args.check_groups(filters, groups)
        self.groups = groups
        self.expand_input = conv_args.boolean(expand_input, "expand_input")
        self.use_bias = conv_args.boolean(use_bias, "use_bias")
        self.input_spec = conv_args.input_spec(ndim=4)
        # A None bias initializer means PyTorch's, which needs the fan-in.
        conv_args.set_weight_settings(
            self, kernel_initializer or torch_default_kernel(),
            bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint)

    def _plan(self, in_channels):
        """`[(width, kernel, strides, dilation)]` of the chain, in order."""
        rate = self.expansion_rate
        first = _width(rate, in_channels) if self.expand_input else in_channels
        middle = _width(rate, self.filters)
        one = (1, 1)
        if self.strategy == "cl":
            return [(first, one, one, one),
                    (middle, self.kernel_size, self.strides,
                     self.dilation_rate),
                    (self.filters, one, one, one)]
        depth = (self.kernel_size[0] - 1) // 2
        widths = [first] + [middle] * (depth - 2) + [self.filters]
        return [(w, (3, 3), self.strides if i == depth - 1 else one,
                 self.dilation_rate) for i, w in enumerate(widths)]

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, ndim=4)
        conv_args.check_min_size(self, input_shape)
        in_channels = self.input_channels = input_shape[-1]
        plan = self._plan(in_channels)
        self.input_spec = conv_args.input_spec(ndim=4, channels=in_channels)
        for width in (in_channels, *(w for w, *_ in plan)):
            if width % self.groups:
                raise ValueError(
                    f"Every width of the chain must be divisible by groups="
                    f"{self.groups}; got {width} (input channels "
                    f"{in_channels}, rate {self.expansion_rate}).")
        self.pads = self._pads(input_shape)
        shape = _padded_shape(input_shape, self.pads)
        self.convs = []
        for index, (width, kernel, strides, dilation) in enumerate(plan):
            fan_in = kernel[0] * kernel[1] * shape[-1] // self.groups
            conv = GroupedConv2D(
                width, kernel, strides=strides, padding="valid",
                groups=self.groups, use_bias=self.use_bias,
                dilation_rate=dilation,
                kernel_initializer=conv_args.fresh_initializer(self.kernel_initializer),
                bias_initializer=conv_args.fresh_initializer(self.bias_initializer)
                or torch_default_bias(fan_in),
                kernel_regularizer=self.kernel_regularizer,
                bias_regularizer=self.bias_regularizer,
                kernel_constraint=self.kernel_constraint,
                bias_constraint=self.bias_constraint,
                dtype=self.dtype_policy, name=f"conv{index}",
            )
            conv.build(shape)
            self.convs.append(conv)
            shape = conv.compute_output_shape(shape)

    def _pads(self, input_shape):
        if self.padding == "valid":
            return ((0, 0), (0, 0))
        extent = conv_args.effective_kernel(self.kernel_size,
                                            self.dilation_rate)
        return tuple(_same_pads(length, kernel, stride)
                     for length, kernel, stride in zip(
                         input_shape[1:3], extent, self.strides))

    def call(self, inputs):
        conv_args.check_float_input(self, inputs)
        x = ops.pad(inputs, ((0, 0), *self.pads, (0, 0)))
        for conv in self.convs:
            x = conv(x)
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        return conv_args.output_shape(self, input_shape)

    def profile(self, input_shape, output_shape):
        """Params and MACs of the chain as trained (not the compact layer)."""
        del output_shape
        shape = _padded_shape(input_shape, self.pads)
        macs = 0
        for conv in self.convs:
            out = conv.compute_output_shape(shape)
            macs += conv.profile(shape, out)["macs"]
            shape = out
        return {"params": self.count_params(), "macs": macs}

    def contract(self):
        """The compact layer's `(kernel, bias)` as float64 NumPy arrays.

        The kernel has the compact layer's layout: `(kh, kw, m, n)` for
        `groups=1`, `(kh, kw, m, 1)` for depthwise, `(kh, kw, m / groups,
        n)` otherwise. The bias is zeros when `use_bias=False`.
        """
        kernel, bias = None, None
        for conv in self.convs:
            k2 = _split_groups(_numpy(conv.kernel), self.groups)
            b2 = (_numpy(conv.bias) if self.use_bias
                  else np.zeros(conv.filters)).reshape(self.groups, -1)
            if kernel is None:
                kernel, bias = k2, b2
            else:
                kernel, bias = compose_conv(kernel, bias, k2, b2)
        kernel = _merge_groups(kernel)
        if self._is_depthwise():
            kernel = np.transpose(kernel, (0, 1, 3, 2))
        return kernel, bias.reshape(-1)

    def _is_depthwise(self):
        return 1 < self.groups == self.filters == self.input_channels

    def to_compact(self):
        """The compact twin (Conv2D / DepthwiseConv2D / GroupedConv2D),
        named like this layer, built and holding the contracted weights."""
        kwargs = dict(kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias,
                      dilation_rate=self.dilation_rate,
                      activation=self.activation,
                      dtype=self.dtype_policy, name=self.name)
        if self.groups == 1:
            layer = keras.layers.Conv2D(self.filters, **kwargs)
        elif self._is_depthwise():
            layer = keras.layers.DepthwiseConv2D(**kwargs)
        else:
            layer = GroupedConv2D(self.filters, groups=self.groups, **kwargs)
        layer.build((None, None, None, self.input_channels))
        kernel, bias = self.contract()
        layer.set_weights([kernel, bias] if self.use_bias else [kernel])
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            strategy=self.strategy,
            expansion_rate=self.expansion_rate,
            groups=self.groups,
            expand_input=self.expand_input,
            use_bias=self.use_bias,
            dilation_rate=self.dilation_rate,
            activation=keras.activations.serialize(self.activation),
            **conv_args.weight_settings_config(self),
        )
        return config


@api.serializable
class ExpandedDense(keras.layers.Layer):
    """A dense layer trained as a chain of dense layers (Expand-FC).

    `m -> r*m -> r*n -> n` with biases and no activation in between
    (Arora et al.'s over-parameterisation, the paper's "FC(Arora18)" rows);
    `to_compact()` gives the `Dense(n)` with `W = W1 W2 W3`.

    Args:
        units: output width `n`.
        expansion_rate: `r` of the default hidden widths `(r*m, r*n)`.
        hidden_units: explicit hidden widths (overrides the rate).
        use_bias: biases on every layer of the chain.
        kernel_initializer: default PyTorch's `U(+-1/sqrt(fan_in))`.
        bias_initializer: default PyTorch's, per layer.
        kernel_regularizer, bias_regularizer: applied to every factor.
        activation: applied to the chain's output (None: linear); the
            compact Dense gets it too.
        kernel_constraint, bias_constraint: applied to every factor.

    Example:

    >>> layer = keras_compact.layers.ExpandedDense(8)
    >>> y = layer(keras.ops.ones((2, 16)))   # 16 -> 64 -> 32 -> 8
    >>> [tuple(dense.kernel.shape) for dense in layer.denses]
    [(16, 64), (64, 32), (32, 8)]
    >>> tuple(layer.to_compact().kernel.shape)
    (16, 8)

    Reference:
        Guo, Alvarez, Salzmann, "ExpandNets", NeurIPS 2020,
        https://arxiv.org/abs/1811.10495; Arora, Cohen, Hazan, "On the
        Optimization of Deep Networks: Implicit Acceleration by
        Overparameterization", ICML 2018.
    """

    def __init__(self, units, expansion_rate=4, hidden_units=None,
                 use_bias=True, kernel_initializer=None,
                 bias_initializer=None, kernel_regularizer=None,
                 bias_regularizer=None, activation=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.units = conv_args.positive_int(units, "units")
        self.activation = conv_args.activation(activation)
        self.expansion_rate = conv_args.positive_number(expansion_rate,
                                                        "expansion_rate")
        if hidden_units is not None and (
                not isinstance(hidden_units, (tuple, list))
                or not hidden_units):
            raise ValueError("hidden_units must be None or a non-empty list "
                             f"of positive ints. Received: hidden_units="
                             f"{hidden_units!r}.")
        self.hidden_units = None if hidden_units is None else tuple(
            conv_args.positive_int(w, "hidden_units") for w in hidden_units)
        self.use_bias = conv_args.boolean(use_bias, "use_bias")
        self.input_spec = conv_args.input_spec(min_ndim=2)
        # A None bias initializer means PyTorch's, which needs the fan-in.
        conv_args.set_weight_settings(
            self, kernel_initializer or torch_default_kernel(),
            bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint)

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, min_ndim=2)
        in_units = input_shape[-1]
        self.input_spec = conv_args.input_spec(min_ndim=2, channels=in_units)
        hidden = self.hidden_units or (
            _width(self.expansion_rate, in_units),
            _width(self.expansion_rate, self.units))
        self.denses = []
        shape = tuple(input_shape)
        for index, width in enumerate((*hidden, self.units)):
            dense = keras.layers.Dense(
                width, use_bias=self.use_bias,
                kernel_initializer=conv_args.fresh_initializer(self.kernel_initializer),
                bias_initializer=conv_args.fresh_initializer(self.bias_initializer)
                or torch_default_bias(shape[-1]),
                kernel_regularizer=self.kernel_regularizer,
                bias_regularizer=self.bias_regularizer,
                kernel_constraint=self.kernel_constraint,
                bias_constraint=self.bias_constraint,
                dtype=self.dtype_policy, name=f"dense{index}",
            )
            dense.build(shape)
            self.denses.append(dense)
            shape = (*shape[:-1], width)

    def call(self, inputs):
        conv_args.check_float_input(self, inputs)
        x = inputs
        for dense in self.denses:
            x = dense(x)
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def profile(self, input_shape, output_shape):
        """Params and MACs of the chain as trained."""
        del output_shape
        positions = math.prod(input_shape[1:-1])
        macs = sum(positions * d.kernel.shape[0] * d.kernel.shape[1]
                   for d in self.denses)
        return {"params": self.count_params(), "macs": macs}

    def contract(self):
        """`(kernel (m, n), bias (n,))` of the compact Dense, float64."""
        kernel = np.eye(self.denses[0].kernel.shape[0])
        bias = np.zeros(kernel.shape[0])
        for dense in self.denses:
            w = _numpy(dense.kernel)
            b = _numpy(dense.bias) if self.use_bias else 0.0
            kernel, bias = kernel @ w, bias @ w + b
        return kernel, bias

    def to_compact(self):
        """The built `Dense(units)` with the contracted weights."""
        layer = keras.layers.Dense(self.units, use_bias=self.use_bias,
                                   activation=self.activation,
                                   dtype=self.dtype_policy, name=self.name)
        layer.build((None, self.denses[0].kernel.shape[0]))
        kernel, bias = self.contract()
        layer.set_weights([kernel, bias] if self.use_bias else [kernel])
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            expansion_rate=self.expansion_rate,
            hidden_units=self.hidden_units,
            use_bias=self.use_bias,
            activation=keras.activations.serialize(self.activation),
            **conv_args.weight_settings_config(self),
        )
        return config


def compose_conv(kernel1, bias1, kernel2, bias2):
    """Composes two grouped stride-1 'valid' convs into one, in float64.

    Args:
        kernel1: `(groups, k1h, k1w, c, j)`, first conv of each group.
        bias1: `(groups, j)`.
        kernel2: `(groups, k2h, k2w, j, o)`, applied to the first's output.
        bias2: `(groups, o)`.

    Returns:
        `(kernel (groups, k1h + k2h - 1, k1w + k2w - 1, c, o), bias
        (groups, o))`: the full convolution of the kernels (the layers
        cross-correlate) and the bias `b2 + sum_v K2[v]^T b1`.
    """
    groups, k1h, k1w, channels, _ = kernel1.shape
    _, k2h, k2w, _, outputs = kernel2.shape
    kernel = np.zeros((groups, k1h + k2h - 1, k1w + k2w - 1, channels,
                       outputs))
    for a in range(k2h):
        for b in range(k2w):
            kernel[:, a:a + k1h, b:b + k1w] += np.einsum(
                "ghwcj,gjo->ghwco", kernel1, kernel2[:, a, b])
    bias = bias2 + np.einsum("ghwjo,gj->go", kernel2, bias1)
    return kernel, bias


def _split_groups(kernel, groups):
    """`(kh, kw, c, groups * o)` -> `(groups, kh, kw, c, o)`."""
    kh, kw, channels, outputs = kernel.shape
    return kernel.reshape(kh, kw, channels, groups, outputs // groups
                          ).transpose(3, 0, 1, 2, 4)


def _merge_groups(kernel):
    """Inverse of `_split_groups`."""
    groups, kh, kw, channels, outputs = kernel.shape
    return kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, channels,
                                                   groups * outputs)


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float64")


def _width(rate, channels):
    return max(1, int(round(rate * channels)))


def _same_pads(length, kernel, stride):
    """TF's 'same' padding `(before, after)`; asymmetric when it must be."""
    if stride == 1:
        total = kernel - 1
    elif length is None:
        raise ValueError(
            "padding='same' with strides > 1 depends on the input size, "
            "which is unknown here; give the model a static input shape or "
            "pad explicitly with ZeroPadding2D and use padding='valid'.")
    else:
        total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
    return (total // 2, total - total // 2)


def _padded_shape(shape, pads):
    batch, height, width, channels = shape
    (top, bottom), (left, right) = pads
    return (batch,
            None if height is None else height + top + bottom,
            None if width is None else width + left + right,
            channels)
