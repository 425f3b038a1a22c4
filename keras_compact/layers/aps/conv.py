"""Projected layers of APS: conv, depthwise conv and classifier.

Each holds one max-width meta-weight and serves every candidate width
through the projections of `projections.py`; activations are as wide as
the largest candidate and the channels beyond the chosen width are
exactly zero, so one traced graph serves every architecture (spec
section 8.1.2).

Reference: J. Wang, H. Bai, J. Wu, X. Shi, J. Huang, I. King, M. Lyu,
J. Cheng, "Revisiting Parameter Sharing for Automatic Neural Channel Number
Search", NeurIPS 2020.
"""

import math

import keras
from keras import ops

from keras_compact import api
from keras_compact.layers import conv_args
from keras_compact.layers.aps.projections import _choice
from keras_compact.layers.aps.projections import _PackedColumns
from keras_compact.layers.aps.projections import _projection_init
from keras_compact.layers.aps.projections import _widths

# Keras conv arguments whose value the APS convs fix: name -> (allowed, why).
FIXED_CONV_ARGUMENTS = {
    "padding": (("same",), "it pads k // 2 on every side, as the PyTorch "
                           "reference"),
    "dilation_rate": ((1, (1, 1)), "the reference's convs are not dilated"),
    **conv_args.without_bias("a CandidateBatchNorm follows every conv"),
    **conv_args.CHANNELS_LAST,
}


def kernel_settings(layer, kernel_initializer, kernel_regularizer,
                    kernel_constraint):
    """Stores the meta-kernel's settings on `layer` (None initializer: the
    reference's PyTorch default, set in `build`)."""
    conv_args.set_weight_settings(layer, kernel_initializer, None,
                                  kernel_regularizer, None, kernel_constraint)


@api.serializable
class APSConv2D(keras.layers.Layer):
    """A convolution over candidate widths with affine parameter sharing.

    The layer holds one meta-kernel `W` of shape `[k, k, C_in, C_out]` and,
    for every (output candidate o, input candidate i) pair, projections
    `P_oi [C_out, c_o]` and `Q_oi [C_in, c_i]`. The pair's kernel is
    `W_oi = einsum("hwio,ia,ob->hwab", W, Q_oi, P_oi)` (`P^T W Q` in the
    paper's OIHW layout), with P and Q detached from the task gradient: they
    move only through the orthogonality loss and the column normalisation
    (`APSSearchModel` does both). `overlap=1` initialises P, Q as "first c
    channels" blocks (ordinal selection); `overlap=0` as disjoint blocks
    (independent selection). Inputs and outputs are zero-padded to the
    largest candidate; the padding is exact.

    Args:
        candidates_out: increasing output widths, e.g. `(4, 8, 16, 32, 64)`.
        candidates_in: increasing input widths; `(3,)` for an RGB stem.
        kernel_size: odd square kernel size.
        strides: stride; padding is `k // 2` on each side as in PyTorch.
        meta_filters: `C_out`, default `sum(candidates_out)` (124 for
            4..64, the reference's `--max_width`).
        meta_channels: `C_in`, default `sum(candidates_in)` (3 for one
            input candidate 3).
        overlap: 1.0 (ordinal) .. 0.0 (independent), spec section 1.2.
        projection_noise: standard deviation of the N(0, s^2) noise added to
            the identity blocks of P and Q.
        kernel_initializer: of the meta-kernel (None: PyTorch's default
            `kaiming_uniform_(a=sqrt(5))`, as the reference).
        kernel_regularizer, kernel_constraint: of the meta-kernel, as in
            `keras.layers.Conv2D` (not of the projections).
        **kwargs: base layer arguments; Keras conv arguments that APS fixes
            (`padding="same"`, `use_bias=False`, ...) are accepted at that
            value and refused with the reason otherwise.

    Input shape: `(batch, H, W, max(candidates_in))`.
    Output shape: `(batch, H / strides, W / strides, max(candidates_out))`.

    Call arguments:
        choice: int tensor `[o, i]`: candidate indices of the output and the
            input width. Default: the largest of both.

    Example:

    >>> conv = keras_compact.layers.APSConv2D((4, 8), (4, 8))
    >>> y = conv(keras.ops.ones((2, 8, 8, 8)), choice=[0, 1])
    >>> tuple(y.shape)  # channels 4..7 are zero
    (2, 8, 8, 8)

    Reference: Wang et al., "Revisiting Parameter Sharing for Automatic
    Neural Channel Number Search", NeurIPS 2020.
    """

    def __init__(self, candidates_out, candidates_in, kernel_size=3,
                 strides=1, meta_filters=None, meta_channels=None,
                 overlap=1.0, projection_noise=1e-3, kernel_initializer=None,
                 kernel_regularizer=None, kernel_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             FIXED_CONV_ARGUMENTS)
        super().__init__(**kwargs)
        self.candidates_out = _widths(candidates_out, "candidates_out")
        self.candidates_in = _widths(candidates_in, "candidates_in")
        self.input_spec = conv_args.input_spec(
            ndim=4, channels=self.candidates_in[-1])
        kernel_settings(self, kernel_initializer, kernel_regularizer,
                        kernel_constraint)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd. Received: "
                             f"{kernel_size}.")
        if not 0.0 <= overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1]. Received: "
                             f"{overlap}.")
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.meta_filters = int(meta_filters or sum(self.candidates_out))
        self.meta_channels = int(meta_channels or sum(self.candidates_in))
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self._out_columns = _PackedColumns(self.candidates_out)
        self._in_columns = _PackedColumns(self.candidates_in)

    def build(self, input_shape):
        if input_shape[-1] != self.candidates_in[-1]:
            raise ValueError(
                f"{self.name} expects inputs zero-padded to the largest "
                f"input candidate ({self.candidates_in[-1]} channels). "
                f"Received: {input_shape[-1]}.")
        k = self.kernel_size
        bound = 1.0 / math.sqrt(self.meta_channels * k * k)
        # PyTorch's default kaiming_uniform_(a=sqrt(5)) of the meta tensor.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, self.meta_channels, self.meta_filters),
            initializer=self.kernel_initializer
            or keras.initializers.RandomUniform(-bound, bound),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.p = self.add_weight(
            name="p",
            shape=(len(self.candidates_in), self.meta_filters,
                   sum(self.candidates_out)),
            initializer=_projection_init(
                self.meta_filters, self.candidates_out, self.overlap,
                self.projection_noise),
        )
        self.q = self.add_weight(
            name="q",
            shape=(len(self.candidates_out), self.meta_channels,
                   sum(self.candidates_in)),
            initializer=_projection_init(
                self.meta_channels, self.candidates_in, self.overlap,
                self.projection_noise),
        )

    @property
    def projection_weights(self):
        return [self.p, self.q]

    def orthogonality_groups(self):
        """`[g, rows, cols]` groups whose columns should decorrelate.

        Blocks: P-groups per input candidate, Q-groups per output candidate
        (spec 3.2). A single input candidate (the stem) puts all columns of
        all candidates into one Gram matrix, as the reference does.
        """
        if len(self.candidates_in) == 1:
            q = ops.transpose(self.q, (1, 0, 2))
            return [self.p, ops.reshape(q, (1, self.meta_channels, -1))]
        return [self.p, self.q]

    def projected_kernel(self, choice=None):
        """The padded kernel `[k, k, max c_in, max c_out]` of a choice."""
        o, i = _choice(choice, (len(self.candidates_out) - 1,
                                len(self.candidates_in) - 1))
        p = self._out_columns(ops.take(self.p, i, axis=0), o)
        q = self._in_columns(ops.take(self.q, o, axis=0), i)
        return ops.einsum("hwio,ia,ob->hwab", self.kernel,
                          ops.stop_gradient(q), ops.stop_gradient(p))

    def candidate_kernel(self, o, i):
        """The plain kernel `[k, k, c_i, c_o]` of candidate pair (o, i)."""
        kernel = ops.convert_to_numpy(self.projected_kernel([o, i]))
        return kernel[:, :, :self.candidates_in[i], :self.candidates_out[o]]

    def call(self, inputs, choice=None):
        pad = self.kernel_size // 2
        x = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return ops.conv(x, self.projected_kernel(choice),
                        strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else (n - 1) // self.strides + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]),
                self.candidates_out[-1])

    def profile(self, input_shape, output_shape):
        """The largest candidate's MACs; every stored weight as a param."""
        k = self.kernel_size
        positions = math.prod(output_shape[1:-1])
        return {
            "params": sum(math.prod(w.shape) for w in self.trainable_weights),
            "macs": positions * k * k * input_shape[-1] * output_shape[-1],
        }

    def get_config(self):
        config = super().get_config()
        config.update({
            "candidates_out": self.candidates_out,
            "candidates_in": self.candidates_in,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "meta_filters": self.meta_filters,
            "meta_channels": self.meta_channels,
            "overlap": self.overlap,
            "projection_noise": self.projection_noise,
            **conv_args.weight_settings_config(self,
                                               conv_args.KERNEL_SETTINGS),
        })
        return config


@api.serializable
class APSDepthwiseConv2D(keras.layers.Layer):
    """A depthwise convolution over candidate widths with shared weights.

    MobileNetV2's searchable depthwise conv (spec 1.2, "P selects the hidden
    channels"): one meta-kernel `W [k, k, C, 1]` and, per candidate width c,
    a projection `P_c [C, c]` (packed `[1, C, sum(c)]`, detached from the
    task loss); candidate c's depthwise kernel is channel-mixed from the
    meta channels, `W_c[:, :, j] = sum_m W[:, :, m] P_c[m, j]`. The
    reference's input projection is a fixed 1x1 identity, so there is none.
    Inputs and outputs are zero-padded to the largest candidate.

    Args:
        candidates: increasing channel widths.
        kernel_size: odd square kernel size.
        strides: stride; padding is `k // 2` on each side as in PyTorch.
        meta_channels: `C`, default `sum(candidates)`.
        overlap: see `APSConv2D`.
        projection_noise: see `APSConv2D`.
        kernel_initializer, kernel_regularizer, kernel_constraint,
        **kwargs: see `APSConv2D`.

    Input shape: `(batch, H, W, max(candidates))`.
    Output shape: `(batch, H / strides, W / strides, max(candidates))`.

    Call arguments:
        choice: int scalar, the candidate index (default: the largest).

    Example:

    >>> dw = keras_compact.layers.APSDepthwiseConv2D((4, 8), strides=2)
    >>> y = dw(keras.ops.ones((2, 8, 8, 8)), choice=0)  # channels 4..7: 0
    >>> tuple(y.shape)
    (2, 4, 4, 8)

    Reference: Wang et al., NeurIPS 2020 (`nets/mobilenet_v2_width.py`).
    """

    def __init__(self, candidates, kernel_size=3, strides=1,
                 meta_channels=None, overlap=1.0, projection_noise=1e-2,
                 kernel_initializer=None, kernel_regularizer=None,
                 kernel_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             FIXED_CONV_ARGUMENTS)
        super().__init__(**kwargs)
        self.candidates = _widths(candidates, "candidates")
        self.input_spec = conv_args.input_spec(
            ndim=4, channels=self.candidates[-1])
        kernel_settings(self, kernel_initializer, kernel_regularizer,
                        kernel_constraint)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd. Received: "
                             f"{kernel_size}.")
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.meta_channels = int(meta_channels or sum(self.candidates))
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self._columns = _PackedColumns(self.candidates)

    def build(self, input_shape):
        if input_shape[-1] != self.candidates[-1]:
            raise ValueError(
                f"{self.name} expects inputs zero-padded to the largest "
                f"candidate ({self.candidates[-1]} channels). Received: "
                f"{input_shape[-1]}.")
        k = self.kernel_size
        bound = 1.0 / k  # kaiming_uniform_(a=sqrt(5)), fan_in = k * k
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, self.meta_channels, 1),
            initializer=self.kernel_initializer
            or keras.initializers.RandomUniform(-bound, bound),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.p = self.add_weight(
            name="p", shape=(1, self.meta_channels, sum(self.candidates)),
            initializer=_projection_init(
                self.meta_channels, self.candidates, self.overlap,
                self.projection_noise))

    @property
    def projection_weights(self):
        return [self.p]

    def orthogonality_groups(self):
        """One group: all candidates' columns (no cross pairs, spec 3.2)."""
        return [self.p]

    def projected_kernel(self, choice=None):
        """The padded depthwise kernel `[k, k, max c, 1]` of a choice."""
        k = len(self.candidates) - 1 if choice is None else choice
        p = self._columns(self.p[0], ops.cast(k, "int32"))
        kernel = ops.einsum("hwm,mc->hwc", self.kernel[..., 0],
                            ops.stop_gradient(p))
        return kernel[..., None]

    def candidate_kernel(self, k):
        """The plain depthwise kernel `[k, k, c_k, 1]` of candidate k."""
        kernel = ops.convert_to_numpy(self.projected_kernel(k))
        return kernel[:, :, :self.candidates[k]]

    def call(self, inputs, choice=None):
        pad = self.kernel_size // 2
        x = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return ops.depthwise_conv(x, self.projected_kernel(choice),
                                  strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else (n - 1) // self.strides + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]),
                self.candidates[-1])

    def profile(self, input_shape, output_shape):
        """The largest candidate's MACs; every stored weight as a param."""
        return {
            "params": sum(math.prod(w.shape) for w in self.trainable_weights),
            "macs": math.prod(output_shape[1:]) * self.kernel_size ** 2,
        }

    def get_config(self):
        config = super().get_config()
        config.update({
            "candidates": self.candidates,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "meta_channels": self.meta_channels,
            "overlap": self.overlap,
            "projection_noise": self.projection_noise,
            **conv_args.weight_settings_config(self,
                                               conv_args.KERNEL_SETTINGS),
        })
        return config


@api.serializable
class APSDense(keras.layers.Layer):
    """The supernet classifier: `W_fc = kernel . Q_k` of the chosen width.

    Holds a `[C, units]` kernel, a bias and one projection `Q_k [C, c_k]`
    per candidate (packed `[1, C, sum(c)]`, detached like P, Q); the
    reference always uses the largest candidate, because the last block's
    output width is not searched.

    Args:
        units: number of logits.
        candidates: widths of the (pooled) input.
        meta_channels: `C`, default the sum of the candidates.
        overlap: see `APSConv2D`.
        projection_noise: see `APSConv2D`.
        kernel_initializer, bias_initializer: None: the reference's
            `U(+-1/sqrt(C))`.
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Dense` (the kernel's act on
            the meta-kernel, not on the projection).

    Call arguments:
        choice: int scalar, the input candidate (default: the largest).

    Example:

    >>> fc = keras_compact.layers.APSDense(10, (4, 8))
    >>> tuple(fc(keras.ops.ones((2, 8))).shape)
    (2, 10)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, units, candidates, meta_channels=None, overlap=1.0,
                 projection_noise=1e-3, kernel_initializer=None,
                 bias_initializer=None, kernel_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs, {
            "use_bias": ((True,), "the reference's classifier has a bias")})
        super().__init__(**kwargs)
        self.units = int(units)
        self.candidates = _widths(candidates, "candidates")
        self.input_spec = conv_args.input_spec(
            min_ndim=2, channels=self.candidates[-1])
        conv_args.set_weight_settings(
            self, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint)
        self.meta_channels = int(meta_channels or sum(self.candidates))
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self._columns = _PackedColumns(self.candidates)

    def build(self, input_shape):
        bound = 1.0 / math.sqrt(self.meta_channels)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.kernel = self.add_weight(
            name="kernel", shape=(self.meta_channels, self.units),
            initializer=self.kernel_initializer or uniform,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.bias = self.add_weight(
            name="bias", shape=(self.units,),
            initializer=self.bias_initializer or uniform,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint)
        self.q = self.add_weight(
            name="q", shape=(1, self.meta_channels, sum(self.candidates)),
            initializer=_projection_init(
                self.meta_channels, self.candidates, self.overlap,
                self.projection_noise))

    @property
    def projection_weights(self):
        return [self.q]

    def orthogonality_groups(self):
        return [self.q]

    def projected_kernel(self, choice=None):
        """The padded `[max c, units]` kernel of input candidate `choice`."""
        k = len(self.candidates) - 1 if choice is None else choice
        q = self._columns(self.q[0], ops.cast(k, "int32"))
        return ops.matmul(ops.transpose(ops.stop_gradient(q)), self.kernel)

    def call(self, inputs, choice=None):
        return ops.matmul(inputs, self.projected_kernel(choice)) + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "candidates": self.candidates,
            "meta_channels": self.meta_channels,
            "overlap": self.overlap,
            "projection_noise": self.projection_noise,
            **conv_args.weight_settings_config(self),
        })
        return config
