"""Searchable layers of APS: affine parameter sharing over channel numbers.

Every searchable layer serves a whole set of candidate widths from one
max-width meta-weight. The candidate kernel of an (output o, input i) pair is
`W_oi = P_oi^T W Q_oi` (spec section 1.2), with learnable projections P, Q
that are detached from the task loss. One traced graph serves every
candidate: activations are always as wide as the largest candidate and the
channels beyond the chosen width are exactly zero (masked projections and
shortcut weights keep them zero and their gradients zero), so the chosen
widths are a small int tensor, never a Python value (spec section 8.1.2).

Storage is "packed" as in the reference's parameter count: the P matrices of
all output candidates that share input candidate i are the columns of one
`[C_out, sum(c)]` matrix `P[i]` (the reference's orthogonality P-group), and
the Q matrices of output candidate o are the columns of `Q[o]` (its Q-group).

Reference: J. Wang, H. Bai, J. Wu, X. Shi, J. Huang, I. King, M. Lyu,
J. Cheng, "Revisiting Parameter Sharing for Automatic Neural Channel Number
Search", NeurIPS 2020.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_compact import api


def _widths(values, name):
    values = tuple(int(v) for v in values)
    if not values or min(values) < 1 or list(values) != sorted(set(values)):
        raise ValueError(f"{name} must be increasing positive channel "
                         f"numbers, e.g. (4, 8, 16). Received: {values}.")
    return values


def candidate_offsets(candidates, overlap):
    """Row offset of each candidate's identity block in the meta-weight.

    `overlap=1` puts every candidate at offset 0 (ordinal, "first c
    channels", strongest sharing); `overlap=0` gives disjoint blocks
    (independent selection, weakest sharing).
    """
    offsets, total = [], 0
    for width in candidates:
        offsets.append(total)
        total += int(math.floor((1.0 - overlap) * width))
    return offsets


def _gather_tables(candidates):
    """Packed column index and mask of every candidate, padded to the max.

    Candidate k owns packed columns `[start_k, start_k + c_k)`; its padded
    index row repeats column 0 where the mask is 0.
    """
    width = max(candidates)
    index = np.zeros((len(candidates), width), "int32")
    mask = np.zeros((len(candidates), width), "float32")
    start = 0
    for k, c in enumerate(candidates):
        index[k, :c] = np.arange(start, start + c)
        mask[k, :c] = 1.0
        start += c
    return index, mask


def _projection_init(meta, candidates, overlap, noise):
    """Offset identity blocks + N(0, noise^2), columns of unit norm."""
    offsets = candidate_offsets(candidates, overlap)
    if offsets[-1] + candidates[-1] > meta:
        raise ValueError(
            f"overlap={overlap} places candidate {candidates[-1]} at row "
            f"{offsets[-1]}, beyond the meta width {meta}. Raise the meta "
            f"width to at least {offsets[-1] + candidates[-1]} (the sum of "
            "the candidates for overlap 0) or raise the overlap.")
    block = np.zeros((meta, sum(candidates)), "float32")
    start = 0
    for offset, c in zip(offsets, candidates):
        block[offset:offset + c, start:start + c] = np.eye(c)
        start += c

    def initializer(shape, dtype=None):
        value = ops.broadcast_to(ops.convert_to_tensor(block), shape)
        # A fixed input (the RGB image) is not shared: exact identity, as
        # in the reference's stem.
        if noise and not (len(candidates) == 1 and candidates[0] == meta):
            value = value + keras.initializers.RandomNormal(
                stddev=noise)(shape)
        return normalize_columns(value)

    return initializer


def normalize_columns(value):
    """Divides every column (axis -2 holds the rows) by its L2 norm."""
    norm = ops.sqrt(ops.sum(ops.square(value), axis=-2, keepdims=True))
    return value / ops.maximum(norm, 1e-12)


def offdiagonal_l1(groups):
    """Sum over groups of the L1 norm of the off-diagonal Gram entries.

    Args:
        groups: `[g, rows, columns]`; the Gram matrix of each group is over
            its columns.
    """
    gram = ops.abs(ops.einsum("gra,grb->gab", groups, groups))
    diagonal = ops.sum(ops.diagonal(gram, axis1=1, axis2=2))
    return ops.sum(gram) - diagonal


def sharing_level(groups, candidates):
    """psi = sum over k != l of ||A_k^T A_l||_F^2, summed over the groups.

    `A_k` are the columns of candidate k in each packed group (spec 3.2).
    For unit-norm ordinal projections it is `2 sum_{k<l} min(c_k, c_l)`
    per group (208 for 4..64) and 0 for independent selection.
    """
    gram = ops.square(ops.einsum("gra,grb->gab", groups, groups))
    within, start = 0.0, 0
    for c in candidates:
        within += ops.sum(gram[:, start:start + c, start:start + c])
        start += c
    return ops.sum(gram) - within


def _choice(choice, default):
    if choice is None:
        return [ops.convert_to_tensor(d, "int32") for d in default]
    choice = ops.cast(choice, "int32")
    return [choice[k] for k in range(len(default))]


class _PackedColumns:
    """Gathers one candidate's columns of a packed matrix, zero-padded."""

    def __init__(self, candidates):
        index, mask = _gather_tables(candidates)
        self.index = index
        self.mask = mask

    def __call__(self, packed, k):
        index = ops.take(ops.convert_to_tensor(self.index), k, axis=0)
        mask = ops.take(ops.convert_to_tensor(self.mask), k, axis=0)
        return ops.take(packed, index, axis=-1) * mask


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

    Input shape: `(batch, H, W, max(candidates_in))`.
    Output shape: `(batch, H / strides, W / strides, max(candidates_out))`.

    Call arguments:
        choice: int tensor `[o, i]`: candidate indices of the output and the
            input width. Default: the largest of both.

    Example:

    >>> conv = keras_compact.layers.APSConv2D((4, 8), (4, 8))
    >>> y = conv(keras.ops.ones((2, 8, 8, 8)), choice=[0, 1])
    >>> y.shape  # channels 4..7 are zero
    (2, 8, 8, 8)

    Reference: Wang et al., "Revisiting Parameter Sharing for Automatic
    Neural Channel Number Search", NeurIPS 2020.
    """

    def __init__(self, candidates_out, candidates_in, kernel_size=3,
                 strides=1, meta_filters=None, meta_channels=None,
                 overlap=1.0, projection_noise=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.candidates_out = _widths(candidates_out, "candidates_out")
        self.candidates_in = _widths(candidates_in, "candidates_in")
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
            initializer=keras.initializers.RandomUniform(-bound, bound),
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

    Input shape: `(batch, H, W, max(candidates))`.
    Output shape: `(batch, H / strides, W / strides, max(candidates))`.

    Call arguments:
        choice: int scalar, the candidate index (default: the largest).

    Example:

    >>> dw = keras_compact.layers.APSDepthwiseConv2D((4, 8), strides=2)
    >>> dw(keras.ops.ones((2, 8, 8, 8)), choice=0).shape  # 4..7 are zero
    (2, 4, 4, 8)

    Reference: Wang et al., NeurIPS 2020 (`nets/mobilenet_v2_width.py`).
    """

    def __init__(self, candidates, kernel_size=3, strides=1,
                 meta_channels=None, overlap=1.0, projection_noise=1e-2,
                 **kwargs):
        super().__init__(**kwargs)
        self.candidates = _widths(candidates, "candidates")
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
            initializer=keras.initializers.RandomUniform(-bound, bound))
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
        })
        return config


@api.serializable
class CandidateBatchNorm(keras.layers.Layer):
    """Non-affine batch norm with running statistics per candidate pair.

    The reference has one `BatchNorm2d(affine=False)` per (o, i) pair of
    every searchable conv; here their running statistics are stacked as
    `[n_out, n_in, channels]` and only the chosen pair's row is updated.
    Zero-padded channels stay exactly zero (their mean and variance are 0).

    Args:
        num_out: number of output candidates.
        num_in: number of input candidates.
        momentum: running-average momentum (Keras convention; PyTorch 0.1).
        epsilon: added to the variance.

    Call arguments:
        choice: int tensor `[o, i]` (default: the last pair).
        training: batch statistics and an update of the pair's statistics
            when True, the pair's running statistics otherwise.

    Example:

    >>> bn = keras_compact.layers.CandidateBatchNorm(2, 3)
    >>> y = bn(keras.ops.ones((2, 4, 4, 8)), choice=[1, 0], training=True)

    Reference: Wang et al., NeurIPS 2020 (spec section 1.3).
    """

    def __init__(self, num_out, num_in, momentum=0.9, epsilon=1e-5,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_out = int(num_out)
        self.num_in = int(num_in)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        shape = (self.num_out, self.num_in, input_shape[-1])
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer="zeros",
            trainable=False)
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer="ones",
            trainable=False)

    def call(self, inputs, choice=None, training=None):
        o, i = _choice(choice, (self.num_out - 1, self.num_in - 1))
        x = ops.cast(inputs, "float32")
        if training:
            mean, variance = ops.moments(x, axes=[0, 1, 2])
            pair = ops.one_hot(o * self.num_in + i,
                               self.num_out * self.num_in)
            pair = ops.reshape(pair, (self.num_out, self.num_in, 1))
            decay = (1.0 - self.momentum) * pair
            self.moving_mean.assign(
                self.moving_mean + decay * (mean - self.moving_mean))
            self.moving_variance.assign(
                self.moving_variance
                + decay * (variance - self.moving_variance))
        else:
            mean = self.moving_mean[o, i]
            variance = self.moving_variance[o, i]
        y = (x - mean) * ops.rsqrt(variance + self.epsilon)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_out": self.num_out, "num_in": self.num_in,
                       "momentum": self.momentum, "epsilon": self.epsilon})
        return config


@api.serializable
class APSShortcut(keras.layers.Layer):
    """The supernet's residual branch: 1x1 conv + non-affine BN per pair.

    The reference adds a learned shortcut separate for every (block output
    o, block input i) pair, also at stride 1 with equal widths (spec 1.4);
    its weights are ordinary, not projected. They are packed into one
    `[sum(c_in), sum(c_out)]` matrix whose (i, o) block is the pair's
    weight, so the stored count is the reference's.

    Args:
        candidates_out: block output widths.
        candidates_in: block input widths.
        strides: the block's stride.

    Call arguments:
        choice: int tensor `[o, i]` (default: the largest pair).
        training: as in `CandidateBatchNorm`.

    Example:

    >>> sc = keras_compact.layers.APSShortcut((4, 8), (4, 8), strides=2)
    >>> sc(keras.ops.ones((2, 8, 8, 8)), choice=[1, 0]).shape
    (2, 4, 4, 8)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, candidates_out, candidates_in, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.candidates_out = _widths(candidates_out, "candidates_out")
        self.candidates_in = _widths(candidates_in, "candidates_in")
        self.strides = int(strides)
        self._out_columns = _PackedColumns(self.candidates_out)
        self._in_columns = _PackedColumns(self.candidates_in)
        self.norm = CandidateBatchNorm(len(self.candidates_out),
                                       len(self.candidates_in), name="bn")

    def build(self, input_shape):
        # PyTorch's default conv init per pair: U(+-1/sqrt(c_i)).
        scale = np.concatenate([np.full((c, 1), 1.0 / math.sqrt(c))
                                for c in self.candidates_in]).astype(
                                    "float32")

        def initializer(shape, dtype=None):
            return keras.initializers.RandomUniform(-1.0, 1.0)(shape) * scale

        self.kernel = self.add_weight(
            name="kernel",
            shape=(sum(self.candidates_in), sum(self.candidates_out)),
            initializer=initializer,
        )
        self.norm.build(self.compute_output_shape(input_shape))

    def pair_kernel(self, choice=None):
        """The padded `[max c_in, max c_out]` weight of a pair."""
        o, i = _choice(choice, (len(self.candidates_out) - 1,
                                len(self.candidates_in) - 1))
        w = self._out_columns(self.kernel, o)
        return ops.transpose(self._in_columns(ops.transpose(w), i))

    def call(self, inputs, choice=None, training=None):
        w = self.pair_kernel(choice)
        x = inputs[:, ::self.strides, ::self.strides, :]
        return self.norm(ops.einsum("bhwi,io->bhwo", x, w), choice=choice,
                         training=training)

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else (n - 1) // self.strides + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]),
                self.candidates_out[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"candidates_out": self.candidates_out,
                       "candidates_in": self.candidates_in,
                       "strides": self.strides})
        return config


@api.serializable
class APSBasicBlock(keras.layers.Layer):
    """The supernet's residual block with searchable mid and output widths.

    `relu(BN2(conv2(relu(BN1(conv1(x))))) + shortcut(x))` where conv1 maps
    input candidate `a_in` to `a_mid`, conv2 maps `a_mid` to `a_out`, the
    BNs and the shortcut are per pair (spec 1.4).

    Args:
        candidates: mid and output widths.
        candidates_in: input widths (default: `candidates`).
        strides: stride of conv1 and of the shortcut.
        meta_width: the meta width `C` of both convs (default: the sum of
            the candidates).
        meta_width_in: the meta width of the input side of conv1 (default
            `meta_width`); ImageNet stride-2 blocks take the previous
            stage's, half as wide.
        overlap: see `APSConv2D`.
        projection_noise: see `APSConv2D`.

    Call arguments:
        choice: int tensor `[a_in, a_mid, a_out]` (default: the largest).
        training: BN mode.

    Example:

    >>> block = keras_compact.layers.APSBasicBlock((4, 8))
    >>> block(keras.ops.ones((2, 8, 8, 8)), choice=[1, 0, 1]).shape
    (2, 8, 8, 8)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, candidates, candidates_in=None, strides=1,
                 meta_width=None, overlap=1.0, projection_noise=1e-3,
                 meta_width_in=None, **kwargs):
        super().__init__(**kwargs)
        self.candidates = _widths(candidates, "candidates")
        self.candidates_in = _widths(candidates_in or candidates,
                                     "candidates_in")
        self.strides = int(strides)
        self.meta_width = int(meta_width or sum(self.candidates))
        self.meta_width_in = int(meta_width_in or self.meta_width)
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        n, n_in = len(self.candidates), len(self.candidates_in)
        common = dict(meta_filters=self.meta_width, overlap=overlap,
                      projection_noise=projection_noise)
        self.conv1 = APSConv2D(self.candidates, self.candidates_in, 3,
                               strides, meta_channels=self.meta_width_in,
                               name="conv1", **common)
        self.bn1 = CandidateBatchNorm(n, n_in, name="bn1")
        self.conv2 = APSConv2D(self.candidates, self.candidates, 3, 1,
                               meta_channels=self.meta_width, name="conv2",
                               **common)
        self.bn2 = CandidateBatchNorm(n, n, name="bn2")
        self.shortcut = APSShortcut(self.candidates, self.candidates_in,
                                    strides, name="shortcut")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(mid_shape)
        self.conv2.build(mid_shape)
        self.bn2.build(mid_shape)
        self.shortcut.build(input_shape)

    @property
    def convs(self):
        return [self.conv1, self.conv2]

    def call(self, inputs, choice=None, training=None):
        if choice is None:
            choice = [len(self.candidates_in) - 1] + [len(self.candidates)
                                                      - 1] * 2
        choice = ops.cast(choice, "int32")
        a_in, a_mid, a_out = choice[0], choice[1], choice[2]
        first = ops.stack([a_mid, a_in])
        second = ops.stack([a_out, a_mid])
        through_out = ops.stack([a_out, a_in])
        y = self.conv1(inputs, choice=first)
        y = ops.relu(self.bn1(y, choice=first, training=training))
        y = self.conv2(y, choice=second)
        y = self.bn2(y, choice=second, training=training)
        shortcut = self.shortcut(inputs, choice=through_out,
                                 training=training)
        return ops.relu(y + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "candidates": self.candidates,
            "candidates_in": self.candidates_in,
            "strides": self.strides,
            "meta_width": self.meta_width,
            "meta_width_in": self.meta_width_in,
            "overlap": self.overlap,
            "projection_noise": self.projection_noise,
        })
        return config


@api.serializable
class APSInvertedResidual(keras.layers.Layer):
    """MobileNetV2's inverted residual with searchable widths (spec 1.5).

    1x1 expand (`APSConv2D`, skipped when `expand_ratio == 1`) -> BN ->
    ReLU6 -> depthwise 3x3 (`APSDepthwiseConv2D`) -> BN -> ReLU6 -> 1x1
    project (`APSConv2D`) -> BN, all BNs non-affine per candidate pair. The
    hidden candidates are the input candidates times the expand ratio, and
    the hidden meta width is the input meta width times it. `residual=True`
    adds the per-pair 1x1 conv + BN shortcut (`APSShortcut`) the reference
    uses when the stride is 1 and the meta widths match.

    Args:
        candidates_out: output widths.
        candidates_in: input widths.
        expand_ratio: t (an int).
        strides: stride of the depthwise conv.
        meta_width_out: output meta width (default: sum of the candidates).
        meta_width_in: input meta width (default: sum of the candidates).
        residual: whether to add the shortcut.
        overlap: see `APSConv2D`.
        projection_noise: see `APSConv2D`.

    Call arguments:
        choice: int tensor `[a_in, a_hidden, a_out]` (default: the largest);
            with `expand_ratio == 1` the hidden width is the input width and
            `a_hidden` picks it.
        training: BN mode.

    Example:

    >>> block = keras_compact.layers.APSInvertedResidual((4, 8), (4, 8), 3)
    >>> block(keras.ops.ones((2, 8, 8, 8)), choice=[1, 0, 1]).shape
    (2, 8, 8, 8)

    Reference: Wang et al., NeurIPS 2020; Sandler et al., "MobileNetV2:
    Inverted Residuals and Linear Bottlenecks", CVPR 2018.
    """

    def __init__(self, candidates_out, candidates_in, expand_ratio,
                 strides=1, meta_width_out=None, meta_width_in=None,
                 residual=False, overlap=1.0, projection_noise=1e-2,
                 **kwargs):
        super().__init__(**kwargs)
        self.candidates_out = _widths(candidates_out, "candidates_out")
        self.candidates_in = _widths(candidates_in, "candidates_in")
        self.expand_ratio = int(expand_ratio)
        self.strides = int(strides)
        self.meta_width_out = int(meta_width_out
                                  or sum(self.candidates_out))
        self.meta_width_in = int(meta_width_in or sum(self.candidates_in))
        self.residual = bool(residual)
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self.hidden = tuple(int(round(c * self.expand_ratio))
                            for c in self.candidates_in)
        meta_hidden = self.meta_width_in * self.expand_ratio
        n_in, n_hidden = len(self.candidates_in), len(self.hidden)
        common = dict(overlap=overlap, projection_noise=projection_noise)
        self.expand = None
        if self.expand_ratio != 1:
            self.expand = APSConv2D(
                self.hidden, self.candidates_in, 1, 1,
                meta_filters=meta_hidden, meta_channels=self.meta_width_in,
                name="expand", **common)
            self.bn1 = CandidateBatchNorm(n_hidden, n_in, name="bn1")
        self.depthwise = APSDepthwiseConv2D(
            self.hidden, 3, strides, meta_channels=meta_hidden,
            name="depthwise", **common)
        self.bn2 = CandidateBatchNorm(n_hidden, 1, name="bn2")
        self.project = APSConv2D(
            self.candidates_out, self.hidden, 1, 1,
            meta_filters=self.meta_width_out, meta_channels=meta_hidden,
            name="project", **common)
        self.bn3 = CandidateBatchNorm(len(self.candidates_out), n_hidden,
                                      name="bn3")
        self.shortcut = (APSShortcut(self.candidates_out, self.candidates_in,
                                     1, name="shortcut")
                         if self.residual else None)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.expand is not None:
            self.expand.build(shape)
            shape = self.expand.compute_output_shape(shape)
            self.bn1.build(shape)
        self.depthwise.build(shape)
        shape = self.depthwise.compute_output_shape(shape)
        self.bn2.build(shape)
        self.project.build(shape)
        self.bn3.build(self.project.compute_output_shape(shape))
        if self.shortcut is not None:
            self.shortcut.build(input_shape)

    @property
    def convs(self):
        convs = [self.expand] if self.expand is not None else []
        return convs + [self.depthwise, self.project]

    def call(self, inputs, choice=None, training=None):
        if choice is None:
            choice = [len(self.candidates_in) - 1, len(self.hidden) - 1,
                      len(self.candidates_out) - 1]
        choice = ops.cast(choice, "int32")
        a_in, a_hidden, a_out = choice[0], choice[1], choice[2]
        y = inputs
        if self.expand is not None:
            pair = ops.stack([a_hidden, a_in])
            y = self.expand(y, choice=pair)
            y = ops.relu6(self.bn1(y, choice=pair, training=training))
        y = self.depthwise(y, choice=a_hidden)
        y = self.bn2(y, choice=ops.stack([a_hidden, ops.zeros((), "int32")]),
                     training=training)
        y = ops.relu6(y)
        pair = ops.stack([a_out, a_hidden])
        y = self.bn3(self.project(y, choice=pair), choice=pair,
                     training=training)
        if self.shortcut is not None:
            y = y + self.shortcut(inputs, choice=ops.stack([a_out, a_in]),
                                  training=training)
        return y

    def compute_output_shape(self, input_shape):
        shape = self.depthwise.compute_output_shape(input_shape)
        return tuple(shape[:-1]) + (self.candidates_out[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({
            "candidates_out": self.candidates_out,
            "candidates_in": self.candidates_in,
            "expand_ratio": self.expand_ratio,
            "strides": self.strides,
            "meta_width_out": self.meta_width_out,
            "meta_width_in": self.meta_width_in,
            "residual": self.residual,
            "overlap": self.overlap,
            "projection_noise": self.projection_noise,
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

    Call arguments:
        choice: int scalar, the input candidate (default: the largest).

    Example:

    >>> fc = keras_compact.layers.APSDense(10, (4, 8))
    >>> fc(keras.ops.ones((2, 8))).shape
    (2, 10)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, units, candidates, meta_channels=None, overlap=1.0,
                 projection_noise=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.candidates = _widths(candidates, "candidates")
        self.meta_channels = int(meta_channels or sum(self.candidates))
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self._columns = _PackedColumns(self.candidates)

    def build(self, input_shape):
        bound = 1.0 / math.sqrt(self.meta_channels)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.kernel = self.add_weight(
            name="kernel", shape=(self.meta_channels, self.units),
            initializer=uniform)
        self.bias = self.add_weight(name="bias", shape=(self.units,),
                                    initializer=uniform)
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
        })
        return config
