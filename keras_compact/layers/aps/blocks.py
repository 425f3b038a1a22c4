"""Searchable blocks of the APS supernets: shortcut, basic, inverted.

Reference: J. Wang, H. Bai, J. Wu, X. Shi, J. Huang, I. King, M. Lyu,
J. Cheng, "Revisiting Parameter Sharing for Automatic Neural Channel Number
Search", NeurIPS 2020.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact.layers import conv_args
from keras_compact.layers.aps.candidate_norm import CandidateBatchNorm
from keras_compact.layers.aps.conv import FIXED_CONV_ARGUMENTS
from keras_compact.layers.aps.conv import APSConv2D
from keras_compact.layers.aps.conv import APSDepthwiseConv2D
from keras_compact.layers.aps.projections import _choice
from keras_compact.layers.aps.projections import _PackedColumns
from keras_compact.layers.aps.projections import _widths

# The weight settings a block passes to its convs and shortcut.
_SHARED = ("kernel_regularizer", "kernel_constraint")


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
        kernel_regularizer, kernel_constraint: of the packed weights, as in
            `keras.layers.Conv2D`.
        **kwargs: base layer arguments; see `APSConv2D` for the Keras conv
            arguments that APS fixes.

    Call arguments:
        choice: int tensor `[o, i]` (default: the largest pair).
        training: as in `CandidateBatchNorm`.

    Example:

    >>> sc = keras_compact.layers.APSShortcut((4, 8), (4, 8), strides=2)
    >>> tuple(sc(keras.ops.ones((2, 8, 8, 8)), choice=[1, 0]).shape)
    (2, 4, 4, 8)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, candidates_out, candidates_in, strides=1,
                 kernel_regularizer=None, kernel_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             FIXED_CONV_ARGUMENTS)
        super().__init__(**kwargs)
        self.candidates_out = _widths(candidates_out, "candidates_out")
        self.candidates_in = _widths(candidates_in, "candidates_in")
        self.input_spec = conv_args.input_spec(
            ndim=4, channels=self.candidates_in[-1])
        self.strides = int(strides)
        conv_args.set_weight_settings(self, None, None, kernel_regularizer,
                                      None, kernel_constraint)
        self._out_columns = _PackedColumns(self.candidates_out)
        self._in_columns = _PackedColumns(self.candidates_in)
        self.norm = CandidateBatchNorm(len(self.candidates_out),
                                       len(self.candidates_in), name="bn",
                                       dtype=self.dtype_policy)

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
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
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
                       "strides": self.strides,
                       **conv_args.weight_settings_config(self, _SHARED)})
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
        kernel_regularizer, kernel_constraint: of every conv's meta-kernel
            and of the shortcut, as in `keras.layers.Conv2D`.
        **kwargs: base layer arguments; see `APSConv2D` for the Keras conv
            arguments that APS fixes.

    Call arguments:
        choice: int tensor `[a_in, a_mid, a_out]` (default: the largest).
        training: BN mode.

    Example:

    >>> block = keras_compact.layers.APSBasicBlock((4, 8))
    >>> tuple(block(keras.ops.ones((2, 8, 8, 8)), choice=[1, 0, 1]).shape)
    (2, 8, 8, 8)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, candidates, candidates_in=None, strides=1,
                 meta_width=None, overlap=1.0, projection_noise=1e-3,
                 meta_width_in=None, kernel_regularizer=None,
                 kernel_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             FIXED_CONV_ARGUMENTS)
        super().__init__(**kwargs)
        self.candidates = _widths(candidates, "candidates")
        self.candidates_in = _widths(candidates_in or candidates,
                                     "candidates_in")
        self.input_spec = conv_args.input_spec(
            ndim=4, channels=self.candidates_in[-1])
        conv_args.set_weight_settings(self, None, None, kernel_regularizer,
                                      None, kernel_constraint)
        kernel = conv_args.weight_settings_config(self, _SHARED)
        self.strides = int(strides)
        self.meta_width = int(meta_width or sum(self.candidates))
        self.meta_width_in = int(meta_width_in or self.meta_width)
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        n, n_in = len(self.candidates), len(self.candidates_in)
        common = dict(meta_filters=self.meta_width, overlap=overlap,
                      projection_noise=projection_noise,
                      dtype=self.dtype_policy, **kernel)
        self.conv1 = APSConv2D(self.candidates, self.candidates_in, 3,
                               strides, meta_channels=self.meta_width_in,
                               name="conv1", **common)
        self.bn1 = CandidateBatchNorm(n, n_in, name="bn1",
                                      dtype=self.dtype_policy)
        self.conv2 = APSConv2D(self.candidates, self.candidates, 3, 1,
                               meta_channels=self.meta_width, name="conv2",
                               **common)
        self.bn2 = CandidateBatchNorm(n, n, name="bn2",
                                      dtype=self.dtype_policy)
        self.shortcut = APSShortcut(self.candidates, self.candidates_in,
                                    strides, name="shortcut",
                                    dtype=self.dtype_policy, **kernel)

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
            **conv_args.weight_settings_config(self, _SHARED),
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
        kernel_regularizer, kernel_constraint, **kwargs: see
            `APSBasicBlock`.

    Call arguments:
        choice: int tensor `[a_in, a_hidden, a_out]` (default: the largest);
            with `expand_ratio == 1` the hidden width is the input width and
            `a_hidden` picks it.
        training: BN mode.

    Example:

    >>> block = keras_compact.layers.APSInvertedResidual((4, 8), (4, 8), 3)
    >>> tuple(block(keras.ops.ones((2, 8, 8, 8)), choice=[1, 0, 1]).shape)
    (2, 8, 8, 8)

    Reference: Wang et al., NeurIPS 2020; Sandler et al., "MobileNetV2:
    Inverted Residuals and Linear Bottlenecks", CVPR 2018.
    """

    def __init__(self, candidates_out, candidates_in, expand_ratio,
                 strides=1, meta_width_out=None, meta_width_in=None,
                 residual=False, overlap=1.0, projection_noise=1e-2,
                 kernel_regularizer=None, kernel_constraint=None, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             FIXED_CONV_ARGUMENTS)
        super().__init__(**kwargs)
        self.candidates_out = _widths(candidates_out, "candidates_out")
        self.candidates_in = _widths(candidates_in, "candidates_in")
        self.input_spec = conv_args.input_spec(
            ndim=4, channels=self.candidates_in[-1])
        conv_args.set_weight_settings(self, None, None, kernel_regularizer,
                                      None, kernel_constraint)
        kernel = conv_args.weight_settings_config(self, _SHARED)
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
        common = dict(overlap=overlap, projection_noise=projection_noise,
                      dtype=self.dtype_policy, **kernel)
        self.expand = None
        if self.expand_ratio != 1:
            self.expand = APSConv2D(
                self.hidden, self.candidates_in, 1, 1,
                meta_filters=meta_hidden, meta_channels=self.meta_width_in,
                name="expand", **common)
            self.bn1 = CandidateBatchNorm(n_hidden, n_in, name="bn1",
                                          dtype=self.dtype_policy)
        self.depthwise = APSDepthwiseConv2D(
            self.hidden, 3, strides, meta_channels=meta_hidden,
            name="depthwise", **common)
        self.bn2 = CandidateBatchNorm(n_hidden, 1, name="bn2",
                                      dtype=self.dtype_policy)
        self.project = APSConv2D(
            self.candidates_out, self.hidden, 1, 1,
            meta_filters=self.meta_width_out, meta_channels=meta_hidden,
            name="project", **common)
        self.bn3 = CandidateBatchNorm(len(self.candidates_out), n_hidden,
                                      name="bn3", dtype=self.dtype_policy)
        self.shortcut = (APSShortcut(self.candidates_out, self.candidates_in,
                                     1, name="shortcut",
                                     dtype=self.dtype_policy, **kernel)
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
            **conv_args.weight_settings_config(self, _SHARED),
        })
        return config
