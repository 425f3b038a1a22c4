"""Expander-graph convolutions and dense layers (X-Nets).

A layer's channel connectivity is a sparse random bipartite graph between its
input and output channels: each output channel sees only a fraction `density`
of the input channels (the paper's compression factor ES is `1 / density`),
chosen by a seeded construction. Two implementations compute
the same function:

- `impl="masked"`: a dense kernel times a fixed 0/1 mask (the paper's
  reference semantics; the masked weights start at zero, get zero gradient
  and stay zero). Costs as much as the dense layer.
- `impl="gather"`: gathers each output block's input channels and runs one
  grouped convolution (`layers.GroupedConv2D`, TF's fast grouped kernel) or a
  batched matmul (dense), so only the existing connections are computed.

`gathered_model(model)` converts a trained masked model into the gathered
form exactly; `deployable_model(model)` gives each layer its fastest exact
LiteRT form instead (`DEPLOY_RULE`), which for the paper's random graphs is
the masked dense conv.

Speed: with one input list per output channel (the paper's graph) the
gathered tensor has `C_out * C_in / ES` channels, so that form is
memory-bound and slower than the dense layer on CPU (spec 5) and in LiteRT
(its GATHER is not delegated to XNNPACK). Block expanders (`groups=G`, and
`chunks=C` so that the gather moves contiguous slabs) keep the density and
MACs with a gathered tensor of only `G * C_in / ES` channels.

Counting convention (`profile()` hooks): params and MACs count only the
connections that exist, i.e. `k * k * nnz(mask)` weights and
`k * k * H_out * W_out * nnz(mask)` MACs (plus bias params), whichever
implementation runs; for rows padded by `regular_side="in"` the padded slots
are not counted. This is the paper's convention (spec section 3.1).

Reference: Prabhu, Varma, Namboodiri, "Deep Expander Networks: Efficient Deep
Networks from Graph Theory", ECCV 2018, https://arxiv.org/abs/1711.08757
"""

import math
import warnings
import zlib

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact.layers import conv_args
from keras_compact.layers.grouped_conv import GroupedConv2D

IMPLEMENTATIONS = ("masked", "gather")
REGULAR_SIDES = ("out", "in", "shuffle")
COUNTING_CONVENTION = (
    "expander layers: params and MACs over existing connections only "
    "(k*k*nnz(mask) weights, k*k*H_out*W_out*nnz(mask) MACs)"
)


def expander_mask(in_channels, out_channels, degree, regular_side="out",
                  groups=None, chunks=None, seed=0):
    """The 0/1 biadjacency `(in_channels, out_channels)` of a random expander.

    Args:
        in_channels, out_channels: sizes of the two vertex sets.
        degree: number of neighbours each regular-side vertex picks.
        regular_side: `"out"` (the rule that produced the paper's logs: each
            output channel, or each output block, picks `degree` distinct
            inputs uniformly), `"in"` (each input picks `degree` distinct
            outputs; the 2017 X-MobileNet rule) or `"shuffle"` (a variant,
            not random: a ShuffleNet channel shuffle of G = `groups` groups,
            then G contiguous groups, `degree = in_channels / G`; two such
            layers connect every input to every output when
            `in_channels >= G * G`).
        groups: `None` for the channel-level graph, or G: the outputs are
            split into G contiguous blocks that share one input list
            (block expander, fewer gathered channels). Only with
            `regular_side="out"`.
        chunks: `None`, or C: the inputs are C contiguous chunks and each
            block picks whole chunks (`degree` must be a multiple of
            `in_channels / C`). The gather then moves contiguous slabs,
            which is fast on CPU and in LiteRT; the graph is a random
            chunk-level expander blown up by all-ones blocks.
        seed: int seed of a NumPy `Generator`.

    Returns:
        A float32 array; every output column (`"out"`) or input row (`"in"`)
        sums to `degree`.
    """
    if regular_side not in REGULAR_SIDES:
        raise ValueError(f"regular_side must be one of {REGULAR_SIDES}. "
                         f"Received: regular_side={regular_side!r}.")
    rng = np.random.default_rng(seed)
    mask = np.zeros((in_channels, out_channels), "float32")
    if regular_side == "shuffle":
        if not groups or in_channels % groups or out_channels % groups or (
                degree != in_channels // groups):
            raise ValueError(
                f"A shuffle graph needs groups dividing both channel counts "
                f"and degree = in_channels / groups. Received: in_channels="
                f"{in_channels}, out_channels={out_channels}, groups="
                f"{groups}, degree={degree}.")
        width, depth = out_channels // groups, in_channels // groups
        for g in range(groups):
            inputs = shuffle_order(in_channels, groups)[g * depth:][:depth]
            mask[inputs, g * width:(g + 1) * width] = 1
        return mask
    if regular_side == "in":
        if groups or chunks:
            raise ValueError("Block expanders (groups) are output-regular; "
                             "use regular_side='out' or groups=None.")
        _check_degree(degree, out_channels, "out_channels")
        for i in range(in_channels):
            mask[i, rng.permutation(out_channels)[:degree]] = 1
        return mask
    _check_degree(degree, in_channels, "in_channels")
    balanced = bool(groups) and groups < out_channels
    groups = groups or out_channels
    if out_channels % groups:
        raise ValueError(f"out_channels must be divisible by groups. "
                         f"Received: out_channels={out_channels}, "
                         f"groups={groups}.")
    width = out_channels // groups
    size = 1
    if chunks:
        size = in_channels // chunks
        if in_channels % chunks or degree % size:
            raise ValueError(
                f"chunks must divide in_channels and the degree must be a "
                f"whole number of chunks. Received: in_channels="
                f"{in_channels}, chunks={chunks} (chunk size {size}), "
                f"degree={degree}.")
    rows = _rows(rng, in_channels // size, groups, degree // size, balanced)
    for g, picked in enumerate(rows):
        inputs = (picked[:, None] * size + np.arange(size)).reshape(-1)
        mask[inputs, g * width:(g + 1) * width] = 1
    return mask


def shuffle_order(channels, groups):
    """Channel j after a ShuffleNet shuffle of `groups` is channel order[j].

    The shuffle reshapes the channels to `(groups, channels / groups)` and
    transposes, so consecutive channels come from different groups.
    """
    j = np.arange(channels)
    return (j % groups) * (channels // groups) + j // groups


def _rows(rng, vertices, rows, degree, balanced):
    """`rows` lists of `degree` distinct vertices, each row uniform.

    Channel level (one row per output) draws each row independently, the
    paper's rule. Block expanders (`balanced`) have few, fat rows, which
    can leave inputs unused, so when `rows * degree` is a multiple of
    `vertices` their rows are cut from concatenated random permutations
    (every input used equally often; spec 7.3's balanced sampler), redrawn
    until no row repeats a vertex.
    """
    total = rows * degree
    if balanced and total % vertices == 0:
        for _ in range(1000):
            draw = np.concatenate([rng.permutation(vertices)
                                   for _ in range(total // vertices)])
            draw = draw.reshape(rows, degree)
            if all(len(set(row)) == degree for row in draw):
                return draw
    return np.stack([rng.permutation(vertices)[:degree]
                     for _ in range(rows)])


def mask_indices(mask, groups=None):
    """The gather table `(G, D_max)` of `mask`, padded with `in_channels`.

    Block g lists the inputs of its outputs (they must share one list);
    rows shorter than the longest are padded with the index `in_channels`,
    which the gathered layer maps to an all-zero channel.
    """
    in_channels, out_channels = mask.shape
    groups = groups or out_channels
    width = out_channels // groups
    rows = []
    for g in range(groups):
        block = mask[:, g * width:(g + 1) * width] != 0
        if not (block == block[:, :1]).all():
            raise ValueError(
                f"Output block {g} of the mask does not share one input "
                f"list, so it has no gathered form with groups={groups}.")
        rows.append(np.flatnonzero(block[:, 0]))
    depth = max(1, max(len(r) for r in rows))
    table = np.full((groups, depth), in_channels, "int32")
    for g, row in enumerate(rows):
        table[g, :len(row)] = row
    return table


def block_groups(mask):
    """The fewest output blocks G for which `mask_indices(mask, G)` exists.

    Output channels in one block share their input list, so the gathered
    form runs G groups (the channel-level graph: G = out_channels).
    """
    out_channels = mask.shape[1]
    for groups in range(1, out_channels + 1):
        if out_channels % groups:
            continue
        blocks = mask.reshape(mask.shape[0], groups, -1) != 0
        if (blocks == blocks[..., :1]).all():
            return groups
    return out_channels


def reference_mask(mask):
    """The `(in_channels, out_channels)` mask of an official-code checkpoint.

    The reference stores each X layer's mask beside its weight, shaped like
    it: `(C_out, C_in, k, k)` for `ExpanderConv2d` (constant over `k x k`),
    `(out, in)` for `ExpanderLinear`. Pass the result to `set_mask`.

    Example:

    >>> conv = ExpanderConv2D(4, 3, seed=0)
    >>> _ = conv(keras.ops.ones((1, 5, 5, 6)))
    >>> torch_mask = np.zeros((4, 6, 3, 3), "float32")  # (C_out, C_in, k, k)
    >>> torch_mask[:, :2] = 1  # every output sees inputs 0 and 1
    >>> conv.set_mask(reference_mask(torch_mask))
    >>> conv.get_mask()[:, 0]
    array([1., 1., 0., 0., 0., 0.], dtype=float32)
    """
    mask = np.asarray(mask, "float32")
    if mask.ndim == 4:
        if not (mask == mask[:, :, :1, :1]).all():
            raise ValueError("A reference conv mask is constant over the "
                             "k x k taps; this one is not.")
        mask = mask[:, :, 0, 0]
    if mask.ndim != 2:
        raise ValueError(f"Expected a (C_out, C_in, k, k) or (out, in) "
                         f"mask. Received: shape {mask.shape}.")
    return np.ascontiguousarray(mask.T)


def singular_value_ratio(mask):
    """sigma_2 / sigma_1 of the biadjacency: lower is a better expander.

    1.0 means the bipartite graph is disconnected (e.g. a grouped conv).
    """
    singular = np.linalg.svd(np.asarray(mask, "float64"), compute_uv=False)
    return float(singular[1] / singular[0])


def layer_seed(seed, name):
    """A stable per-layer seed from a model seed and the layer's name."""
    return zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF


def _is_shuffle(flat, channels, groups):
    return bool(flat.size == channels and channels % groups == 0 and (
        flat == shuffle_order(channels, groups)).all())


def _in_shuffle_order(table, channels):
    """`table` with each row in channel-shuffle order, if it is a shuffle.

    A row's order is free (it only orders the compact kernel), so a table
    whose rows hold the shuffle's groups is put in the shuffle's order.
    """
    groups = table.shape[0]
    if table.size != channels or channels % groups:
        return table
    order = shuffle_order(channels, groups).reshape(groups, -1)
    same = (np.sort(order, axis=1) == np.sort(table, axis=1)).all()
    return order.astype(table.dtype) if same else table


def _shuffled(inputs, groups):
    # Static shapes only (batch -1): a dynamic batch adds SHAPE/PACK ops
    # that XNNPACK does not take.
    lead = tuple(inputs.shape[1:-1])
    channels = inputs.shape[-1]
    split = ops.reshape(inputs, (-1, int(np.prod(lead)), groups,
                                 channels // groups))
    return ops.reshape(ops.transpose(split, (0, 1, 3, 2)),
                       (-1, *lead, channels))


def density_of_compression(compression):
    """The density `1 / ES` of the paper's compression factor ES >= 1."""
    conv_args.positive_number(compression, "expand_ratio")
    if compression < 1:
        raise ValueError(f"expand_ratio (the compression factor ES) must be "
                         f">= 1. Received: expand_ratio={compression!r}.")
    return 1 / compression


def deprecated_density(expand_ratio):
    """The density of the deprecated `expand_ratio=ES`, with a
    DeprecationWarning (the keyword goes in the next release)."""
    density = density_of_compression(expand_ratio)
    warnings.warn(f"expand_ratio={expand_ratio!r} is deprecated and will be "
                  f"removed in the next release; use density={density!r} "
                  "(the fraction of connections kept, 1 / ES).",
                  DeprecationWarning, stacklevel=3)
    return density


def compression_factor(density):
    """The paper's ES `1 / density`, an int when it is one (model names).

    Example:

    >>> compression_factor(0.25), compression_factor(0.4)
    (4, 2.5)
    """
    factor = 1 / density
    return round(factor) if abs(factor - round(factor)) < 1e-9 else factor


def inputs_per_output(in_channels, density):
    """`max(floor(in_channels * density), 1)`: with `density = 1 / ES`, the
    paper's `in_channels // ES` (the epsilon absorbs the rounding of 1/ES).

    Example:

    >>> inputs_per_output(48, 1 / 3), inputs_per_output(5, 0.25)
    (16, 1)
    """
    return max(math.floor(in_channels * density + 1e-9), 1)


def _check_degree(degree, limit, what):
    if not 1 <= degree <= limit:
        raise ValueError(f"degree must be in [1, {what}={limit}]. Received: "
                         f"degree={degree}; pass a smaller degree.")


class _Expander(keras.layers.Layer):
    """Connectivity, weights and conversion shared by the expander layers."""

    def __init__(self, units, density=0.5, degree=None,
                 regular_side="out", groups=None, chunks=None,
                 impl="masked", seed=None, gather_slots=None,
                 use_bias=False, kernel_initializer=None,
                 bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activation=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        if "expand_ratio" in kwargs:
            density = deprecated_density(kwargs.pop("expand_ratio"))
        super().__init__(**kwargs)
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}. "
                             f"Received: impl={impl!r}.")
        if regular_side not in REGULAR_SIDES:
            raise ValueError(f"regular_side must be one of {REGULAR_SIDES}. "
                             f"Received: regular_side={regular_side!r}.")
        if degree is None and not (isinstance(density, (int, float))
                                   and 0 < density <= 1):
            raise ValueError(f"Pass density in (0, 1] (the fraction of "
                             f"inputs each output sees) or degree. Received: "
                             f"density={density!r}, degree={degree}.")
        self.units = units
        self.density = density
        self.degree = degree
        self.regular_side = regular_side
        self.groups = groups
        self.chunks = chunks
        self.impl = impl
        # Width of the gather table when it comes from a mask rather than
        # from the seed (`gathered()` of an imported or hand-set mask), so
        # a reloaded layer has weights of the saved shape.
        self.gather_slots = gather_slots
        # A drawn seed is stored in the config, so a reloaded layer rebuilds
        # the same graph (the mask/indices weights are saved as well).
        self.seed = int(np.random.randint(2**31 - 1) if seed is None
                        else seed)
        self.use_bias = use_bias
        self.activation = conv_args.activation(activation)
        self.input_spec = conv_args.input_spec(ndim=self.INPUT_RANK)
        conv_args.set_weight_settings(
            self, kernel_initializer or self._default_initializer(),
            bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint)

    @classmethod
    def from_config(cls, config):
        # Files saved before the rename hold `expand_ratio`: no warning.
        config = dict(config)
        if "expand_ratio" in config:
            config["density"] = density_of_compression(
                config.pop("expand_ratio"))
        return cls(**config)

    def connectivity(self, in_channels):
        """The seeded 0/1 mask `(in_channels, units)` of this layer."""
        other = in_channels if self.regular_side == "out" else self.units
        degree = self.degree or inputs_per_output(other, self.density)
        if self.regular_side == "shuffle":
            degree = in_channels // (self.groups or 1)
        return expander_mask(in_channels, self.units, degree,
                             self.regular_side, self.groups, self.chunks,
                             self.seed)

    def build(self, input_shape):
        self.in_channels = input_shape[-1]
        self.input_spec = conv_args.input_spec(
            ndim=self.INPUT_RANK, channels=self.in_channels)
        mask = self.connectivity(self.in_channels)
        full_shape = self._kernel_shape(self.in_channels)
        if self.impl == "masked":
            self.mask = self.add_weight(
                name="mask", shape=mask.shape, dtype="float32",
                initializer=keras.initializers.Constant(mask),
                trainable=False)
            # Masked entries start at zero: they get zero gradient, so they
            # stay exactly zero under SGD, momentum and (coupled) L2.
            self.kernel = self.add_weight(
                name="kernel", shape=full_shape,
                initializer=lambda shape, dtype: self.kernel_initializer(
                    shape, dtype) * np.reshape(mask, self._mask_shape()),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint)
        else:
            table = mask_indices(mask, self.groups)
            if self.gather_slots not in (None, table.shape[1]):
                # All padding until the real table is assigned or loaded.
                table = np.full((table.shape[0], self.gather_slots),
                                self.in_channels, "int32")
            self.indices = self.add_weight(
                name="indices", shape=table.shape, dtype="int32",
                initializer=keras.initializers.Constant(table),
                trainable=False)
            self._set_table_flags(table)

            # The compact kernel holds the support entries of a dense draw,
            # so both implementations start from the same distribution.
            def initializer(shape, dtype):
                full = self.kernel_initializer(full_shape, dtype)
                return self._compact(ops.convert_to_numpy(full), table)

            self._build_compact(input_shape, table, initializer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint)

    def _set_table_flags(self, table):
        # Static facts of the table, decided at build time so that `call`
        # stays traceable: is a zero channel needed for padded slots, is
        # the gather the identity (nothing to gather), and the longest
        # aligned run of consecutive channels the table is made of (a
        # per-channel gather is slow on CPU and in LiteRT; whole slabs are
        # memcpy).
        flat = np.reshape(table, (-1,))
        self._pads = bool((flat == self.in_channels).any())
        self._identity = bool(flat.size == self.in_channels and (
            flat == np.arange(self.in_channels)).all())
        # A channel shuffle exports as RESHAPE + TRANSPOSE, which XNNPACK
        # runs; a GATHER it does not.
        self._shuffle = not self._identity and _is_shuffle(
            flat, self.in_channels, table.shape[0])
        self._chunk = 1
        if not self._pads:
            width = np.gcd(self.in_channels, table.shape[1])
            for size in (s for s in range(width, 1, -1) if width % s == 0):
                runs = table.reshape(table.shape[0], -1, size)
                if ((runs[..., :1] % size == 0).all()
                        and (runs == runs[..., :1] + np.arange(size)).all()):
                    self._chunk = size
                    break

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.impl == "gather":  # the flags follow the loaded table
            self._set_table_flags(ops.convert_to_numpy(self.indices))

    def _gather(self, inputs):
        if self._pads:
            inputs = ops.concatenate(
                [inputs, ops.zeros_like(inputs[..., :1])], axis=-1)
        if self._identity:
            return inputs
        if self._shuffle:
            return _shuffled(inputs, self.indices.shape[0])
        if self._chunk == 1:
            indices = ops.reshape(self.indices, (-1,))
            if len(inputs.shape) != 4:
                return ops.take(inputs, indices, axis=-1)
            # Channels-first, each gathered channel is one contiguous copy:
            # 2-3x faster on TF CPU than gathering scalars along the last
            # axis, transposes included.
            planes = ops.transpose(inputs, (3, 0, 1, 2))
            return ops.transpose(ops.take(planes, indices, axis=0),
                                 (1, 2, 3, 0))
        size = self._chunk
        lead = tuple(ops.shape(inputs)[:-1])
        slabs = ops.reshape(inputs, lead + (self.in_channels // size, size))
        chunk_ids = ops.reshape(self.indices[:, ::size] // size, (-1,))
        gathered = ops.take(slabs, chunk_ids, axis=-2)
        # A static channel count: LiteRT's converter only maps a grouped
        # Conv2D to CONV_2D when it can check the groups.
        return ops.reshape(gathered, lead + (int(np.prod(
            self.indices.shape)),))

    def _add_bias(self, outputs):
        """The bias (if any) and the activation, after the linear part."""
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs)

    def get_mask(self):
        """The 0/1 mask `(in_channels, units)` as a NumPy array."""
        if self.impl == "masked":
            return ops.convert_to_numpy(self.mask)
        table = ops.convert_to_numpy(self.indices)
        width = self.units // table.shape[0]
        mask = np.zeros((self.in_channels + 1, self.units), "float32")
        for g, row in enumerate(table):
            mask[row, g * width:(g + 1) * width] = 1
        return mask[:-1]

    def set_mask(self, mask):
        """Replaces the graph of a built masked layer by `mask`.

        Args:
            mask: 0/1 array `(in_channels, units)`, e.g. from
                `reference_mask` (a checkpoint of the official code) or
                any other rule. Kernel entries off the new graph are zeroed,
                so they stay zero in training.
        """
        if self.impl != "masked":
            raise ValueError(f"set_mask needs an impl='masked' layer; "
                             f"'{self.name}' is impl={self.impl!r}.")
        mask = np.asarray(mask, "float32")
        if mask.shape != tuple(self.mask.shape) or not np.isin(
                mask, (0, 1)).all():
            raise ValueError(
                f"The mask of '{self.name}' must be 0/1 of shape "
                f"{tuple(self.mask.shape)} (in_channels, units). Received: "
                f"shape {mask.shape}.")
        self.mask.assign(mask)
        self.kernel.assign(ops.convert_to_numpy(self.kernel) * np.reshape(
            mask, self._mask_shape()))

    def connections(self):
        """Number of existing input-output channel connections."""
        return int(self.get_mask().sum())

    def gathered(self, input_shape):
        """A new `impl="gather"` layer computing exactly this masked layer.

        Args:
            input_shape: the shape this layer was built for.
        """
        if self.impl != "masked":
            raise ValueError(f"Layer '{self.name}' is already gathered.")
        mask = self.get_mask()
        groups = block_groups(mask)
        table = _in_shuffle_order(mask_indices(mask, groups), mask.shape[0])
        # The gathered layer's graph is its table; the seed only shapes the
        # placeholder, and block tables are drawn output-regular.
        side = self.regular_side if groups == mask.shape[1] else "out"
        layer = type(self).from_config(dict(
            self.get_config(), impl="gather", regular_side=side,
            groups=None if groups == mask.shape[1] else groups,
            gather_slots=table.shape[1]))
        layer.build(input_shape)
        layer.indices.assign(table)
        layer._set_table_flags(table)
        effective = ops.convert_to_numpy(self.kernel) * np.reshape(
            mask, self._mask_shape())
        layer._compact_kernel().assign(layer._compact(effective, table))
        if self.use_bias:
            layer.bias.assign(self.bias)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            density=self.density,
            degree=self.degree,
            regular_side=self.regular_side,
            groups=self.groups,
            chunks=self.chunks,
            impl=self.impl,
            seed=self.seed,
            gather_slots=self.gather_slots,
            use_bias=self.use_bias,
            activation=keras.activations.serialize(self.activation),
            **conv_args.weight_settings_config(self),
        )
        return config


@api.serializable
class ExpanderConv2D(_Expander):
    """2D convolution whose channel connectivity is a random expander graph.

    Each output channel is connected to a fraction `density` of the input
    channels (or `degree` of them), drawn without replacement by a seeded NumPy
    generator; the full `k x k` spatial kernel is kept for every connection.
    The graph is stored in the layer (`mask` or `indices` weight, and the
    `seed` in the config), so a saved and reloaded model has the same graph.
    No bias by default, and He-normal fan-out init, as the reference code.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        strides: int or pair.
        padding: `"same"` or `"valid"`. For stride 2 with PyTorch padding use
            `expander_conv2d`, which pads explicitly.
        density: the fraction of connections kept, `1 / ES` for the
            paper's compression factor ES; each output sees
            `max(floor(in_channels * density), 1)` inputs
            (`regular_side="in"`: each input feeds `max(floor(filters *
            density), 1)` outputs). `expand_ratio=ES`, its former name, is
            deprecated.
        degree: the number of neighbours directly; overrides density.
        regular_side: `"out"` (paper's logged rule) or `"in"`.
        groups: `None` (channel-level graph) or G output blocks sharing one
            input list each (block expander: a cheaper gather).
        chunks: `None`, or C: block input lists are whole contiguous chunks
            of `in_channels / C` (a gather of slabs; see `expander_mask`).
        impl: `"masked"` (dense kernel times the mask; the reference
            semantics) or `"gather"` (gather + `layers.GroupedConv2D`, only
            the existing connections are computed).
        seed: graph seed; `None` draws one (then stored in the config).
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint, dilation_rate,
        activation: as in `keras.layers.Conv2D` (the kernel constraint acts
            on the stored kernel: the dense one, or the gathered one).
        **kwargs: base layer arguments (`name`, `dtype`, ...), and
            `data_format="channels_last"` (the only layout).

    Example:

    >>> conv = keras_compact.layers.ExpanderConv2D(64, 3, density=1 / 4,
    ...                                            seed=0)
    >>> tuple(conv(keras.ops.ones((2, 16, 16, 32))).shape)
    (2, 16, 16, 64)
    >>> int(conv.get_mask().sum(axis=0)[0])  # inputs per output channel
    8
    >>> fast = conv.gathered((2, 16, 16, 32))  # same function, 1/4 MACs

    Reference:
        Prabhu et al., "Deep Expander Networks", ECCV 2018,
        https://arxiv.org/abs/1711.08757
    """

    INPUT_RANK = 4

    def __init__(self, filters, kernel_size, strides=1, padding="same",
                 dilation_rate=1, **kwargs):
        conv_args.take_fixed(type(self).__name__, kwargs,
                             conv_args.CHANNELS_LAST)
        super().__init__(filters, **kwargs)
        self.filters = filters
        self.kernel_size, self.strides, self.padding = conv_args.geometry(
            kernel_size, strides, padding)
        self.dilation_rate = conv_args.dilation(dilation_rate, self.strides)

    def build(self, input_shape):
        conv_args.check_input_shape(self, input_shape, ndim=4)
        conv_args.positive_int(self.filters, "filters")
        super().build(input_shape)

    @staticmethod
    def _default_initializer():
        # The reference's kaiming_normal(mode='fan_out'), untruncated.
        return keras.initializers.VarianceScaling(
            2.0, "fan_out", "untruncated_normal")

    def _kernel_shape(self, in_channels):
        return (*self.kernel_size, in_channels, self.filters)

    def _mask_shape(self):
        return (1, 1, self.in_channels, self.filters)

    def _compact(self, full, table):
        # K[:, :, j, o] = W[:, :, table[block(o), j], o]; padded slots read
        # an appended zero input row.
        width = self.filters // table.shape[0]
        per_output = table[np.arange(self.filters) // width]
        padded = np.concatenate(
            [full, np.zeros((*full.shape[:2], 1, self.filters), full.dtype)],
            axis=2)
        return padded[:, :, per_output.T, np.arange(self.filters)[None]]

    def _build_compact(self, input_shape, table, initializer):
        self.grouped_conv = GroupedConv2D(
            self.filters, self.kernel_size, strides=self.strides,
            padding=self.padding, groups=table.shape[0],
            dilation_rate=self.dilation_rate,
            kernel_constraint=self.kernel_constraint,
            kernel_initializer=initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy, name="grouped_conv")
        self.grouped_conv.build((*input_shape[:-1], table.size))

    def _compact_kernel(self):
        return self.grouped_conv.kernel

    def call(self, inputs):
        if self.impl == "gather":
            return self._add_bias(self.grouped_conv(self._gather(inputs)))
        kernel = self.kernel * ops.reshape(self.mask, self._mask_shape())
        outputs = ops.conv(inputs, ops.cast(kernel, inputs.dtype),
                           strides=self.strides, padding=self.padding,
                           dilation_rate=self.dilation_rate)
        return self._add_bias(outputs)

    def compute_output_shape(self, input_shape):
        return conv_args.output_shape(self, input_shape)

    def profile(self, input_shape, output_shape):
        """Counts only existing connections (`COUNTING_CONVENTION`)."""
        taps = self.kernel_size[0] * self.kernel_size[1]
        weights = taps * self.connections()
        positions = output_shape[1] * output_shape[2]
        return {"params": weights + self.use_bias * self.filters,
                "macs": positions * weights}

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, padding=self.padding,
                      dilation_rate=self.dilation_rate)
        return config


@api.serializable
class ExpanderDense(_Expander):
    """Dense layer whose input-output connectivity is a random expander.

    Each output unit sees a fraction `density` of the inputs (or
    `degree`), drawn by a seeded generator and stored in the layer. No bias
    by default and He-normal fan-in init, as the reference `ExpanderLinear`.
    `impl="gather"` gathers the inputs of each output block and runs one
    batched matmul over the blocks.

    Args:
        units: output features.
        density, degree, regular_side, groups, impl, seed, use_bias,
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint, activation:
        as in `ExpanderConv2D`.

    Input shape: `(batch, in_features)`. Output shape: `(batch, units)`.

    Example:

    >>> dense = keras_compact.layers.ExpanderDense(512, degree=128, seed=0)
    >>> tuple(dense(keras.ops.ones((2, 512))).shape)
    (2, 512)

    Reference:
        Prabhu et al., "Deep Expander Networks", ECCV 2018,
        https://arxiv.org/abs/1711.08757
    """

    INPUT_RANK = 2

    @staticmethod
    def _default_initializer():
        return keras.initializers.VarianceScaling(
            2.0, "fan_in", "untruncated_normal")

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"ExpanderDense takes (batch, features) inputs; "
                             f"flatten first. Received: input_shape="
                             f"{input_shape}.")
        conv_args.check_input_shape(self, input_shape, ndim=2)
        conv_args.positive_int(self.units, "units")
        super().build(input_shape)

    def _kernel_shape(self, in_channels):
        return (in_channels, self.units)

    def _mask_shape(self):
        return (self.in_channels, self.units)

    def _compact(self, full, table):
        # K[g, j, u] = W[table[g, j], g * width + u].
        groups, depth = table.shape
        width = self.units // groups
        per_output = table[np.arange(self.units) // width]
        padded = np.concatenate([full, np.zeros((1, self.units), full.dtype)])
        taken = padded[per_output.T, np.arange(self.units)[None]]
        return taken.reshape(depth, groups, width).transpose(1, 0, 2)

    def _build_compact(self, input_shape, table, initializer):
        groups, depth = table.shape
        self.compact_kernel = self.add_weight(
            name="kernel", shape=(groups, depth, self.units // groups),
            initializer=initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)

    def _compact_kernel(self):
        return self.compact_kernel

    def call(self, inputs):
        if self.impl == "masked":
            kernel = ops.cast(self.kernel * self.mask, inputs.dtype)
            return self._add_bias(ops.matmul(inputs, kernel))
        groups, depth = self.indices.shape
        gathered = ops.reshape(self._gather(inputs), (-1, groups, depth))
        outputs = ops.einsum("bgd,gdu->bgu", gathered,
                             ops.cast(self.compact_kernel, inputs.dtype))
        return self._add_bias(ops.reshape(outputs, (-1, self.units)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def profile(self, input_shape, output_shape):
        """Counts only existing connections (`COUNTING_CONVENTION`)."""
        weights = self.connections()
        return {"params": weights + self.use_bias * self.units,
                "macs": weights}

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


def expander_layers(model):
    """The expander layers (either implementation) among `model.layers`."""
    return [layer for layer in model.layers if isinstance(layer, _Expander)]


def expander_conv2d(x, filters, kernel_size, strides=1, groups=1,
                    use_bias=False, name=None, expander_groups=None,
                    **expander_kwargs):
    """`models.blocks.conv2d` with an `ExpanderConv2D`: a backbone conv factory.

    Pads like PyTorch's `padding=k // 2` (explicitly for stride > 1), so
    `functools.partial(expander_conv2d, density=0.5, impl="gather")`
    replaces the `conv=` of any backbone block. `groups` is the backbone's
    conv groups (must be 1); `expander_groups` is `ExpanderConv2D`'s
    `groups` (output blocks of a block expander).
    """
    if groups != 1:
        raise ValueError(f"An expander conv replaces a dense conv; it has no "
                         f"groups. Received: groups={groups}.")
    pad = kernel_size // 2
    padding = "same"
    if strides > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    return ExpanderConv2D(filters, kernel_size, strides=strides,
                          padding=padding, use_bias=use_bias, name=name,
                          groups=expander_groups, **expander_kwargs)(x)


def expander_conv_factory(density=0.5, impl="masked",
                          expander_groups=None, seed=0, **layer_kwargs):
    """A backbone conv factory whose every conv is a seeded expander conv.

    Returns `conv(x, filters, kernel_size, strides=1, groups=1, name=...)`
    (the `models.blocks.conv2d` signature, PyTorch padding); each layer's
    graph seed is `layer_seed(seed, name)`, so a model seed fixes every
    graph and no two layers share one. `density` is `ExpanderConv2D`'s
    (`expand_ratio=ES` is its deprecated form).

    Example:

    >>> conv = expander_conv_factory(density=0.5, seed=0)
    >>> y = conv(keras.Input((8, 8, 16)), 32, 3, strides=2, name="conv1")
    >>> tuple(y.shape)
    (None, 4, 4, 32)
    """
    if "expand_ratio" in layer_kwargs:
        density = deprecated_density(layer_kwargs.pop("expand_ratio"))

    def conv(x, filters, kernel_size, strides=1, groups=1, name=None):
        return expander_conv2d(
            x, filters, kernel_size, strides, groups=groups, name=name,
            density=density, impl=impl,
            expander_groups=expander_groups, seed=layer_seed(seed, name),
            **layer_kwargs)

    return conv


# --- deployment: the fastest exact form of each layer ------------------------

# XNNPACK's f32 GEMM kernels compute 16 output channels at once on AVX-512:
# LiteRT conv time follows MACs with output channels rounded up to 16
# (within 3%, benchmarks/latency.md), so the rule counts such "lane MACs".
LANES = 16
DEPLOY_RULE = (
    "LiteRT/XNNPACK rule: a form's cost is its 16-lane MACs (output "
    "channels rounded up to 16 per group), plus 16 per float a channel "
    "shuffle (TRANSPOSE) moves; a form that needs a channel GATHER is never "
    "chosen (XNNPACK does not delegate it: the gathered X-DenseNet "
    "measured 18x the dense net, the slab-gathered block expander 1.24x); "
    "the masked dense conv wins ties")


def _lanes(channels):
    return -(-channels // LANES) * LANES


def _positions(layer, input_shape):
    if isinstance(layer, ExpanderDense):
        return 1, 1
    output_shape = layer.compute_output_shape(input_shape)
    return output_shape[1] * output_shape[2], (layer.kernel_size[0]
                                               * layer.kernel_size[1])


def _masked_cost(layer, input_shape):
    positions, taps = _positions(layer, input_shape)
    cost = positions * taps * layer.in_channels * _lanes(layer.units)
    return cost, "dense conv/matmul with the mask folded into its weights"


def _gather_cost(layer, input_shape):
    mask = layer.get_mask()
    table = _in_shuffle_order(mask_indices(mask, block_groups(mask)),
                              layer.in_channels)
    groups, depth = table.shape
    flat = table.reshape(-1)
    contiguous = table.size == layer.in_channels and (
        flat == np.arange(layer.in_channels)).all()
    shuffle = _is_shuffle(flat, layer.in_channels, groups)
    if not (contiguous or shuffle):
        return None, (f"needs a GATHER of {table.size} channels from "
                      f"{layer.in_channels} (not delegated by XNNPACK)")
    if isinstance(layer, ExpanderDense):
        return None, "a grouped dense layer runs as BATCH_MATMUL, not FC"
    positions, taps = _positions(layer, input_shape)
    cost = positions * taps * depth * groups * _lanes(layer.units // groups)
    note = f"one grouped CONV_2D ({groups} contiguous groups)"
    if shuffle:
        cost += int(np.prod(input_shape[1:])) * LANES
        note = f"a channel shuffle (TRANSPOSE) and {note}"
    return cost, note


def _gathered_copy(layer, input_shape):
    return layer.gathered(input_shape)


def _masked_copy(layer, input_shape):
    del input_shape
    return type(layer).from_config(layer.get_config())


# name -> (cost(layer, input_shape) -> (lane MACs or None, why),
#          convert(layer, input_shape) -> new layer); "masked" first: it
# wins ties.
DEPLOY_FORMS = {
    "masked": (_masked_cost, _masked_copy),
    "gather": (_gather_cost, _gathered_copy),
}


def choose_deploy_form(layer, input_shape):
    """The fastest exact LiteRT form of a built masked expander layer.

    Applies `DEPLOY_RULE` to every form of `DEPLOY_FORMS`.

    Returns:
        A dict: `form` (the chosen name), `reason` (one line), and
        `lane_macs` `{form: cost or None}` (None: not eligible).

    Example:

    >>> conv = ExpanderConv2D(96, 1, density=0.5, seed=0)
    >>> _ = conv(keras.ops.ones((1, 32, 32, 48)))
    >>> choose_deploy_form(conv, (1, 32, 32, 48))["form"]  # needs a GATHER
    'masked'
    """
    costs, notes = {}, {}
    for name, (cost, _) in DEPLOY_FORMS.items():
        costs[name], notes[name] = cost(layer, input_shape)
    eligible = {k: v for k, v in costs.items() if v is not None}
    form = min(eligible, key=eligible.get)  # first (masked) on ties
    others = "; ".join(f"{k}: {notes[k]}" + (
        f", {costs[k]:,} lane MACs" if costs[k] is not None else "")
        for k in costs if k != form)
    reason = (f"{notes[form]}, {costs[form]:,} lane MACs (cheapest); "
              f"{others}")
    return {"form": form, "reason": reason, "lane_macs": costs}


def deployable_model(model, forms="auto"):
    """The deployable copy of `model`: each masked expander layer converted.

    Args:
        model: a functional model with masked expander layers.
        forms: `"auto"` (each layer's `choose_deploy_form`), or a name of
            `DEPLOY_FORMS` applied to every layer (`"gather"`: the reduced-
            MAC form of the paper's graph, slow in LiteRT).

    Returns:
        `(new_model, report)`: the same function (exact up to float32
        summation order) and `{layer name: {form, reason, lane_macs}}`.

    Example:

    >>> inputs = keras.Input((8, 8, 16))
    >>> y = ExpanderConv2D(16, 1, density=0.5, seed=0, name="x")(inputs)
    >>> fast, report = deployable_model(keras.Model(inputs, y))
    >>> report["x"]["form"]  # the paper's graph needs a channel GATHER
    'masked'
    """
    if forms != "auto" and forms not in DEPLOY_FORMS:
        raise ValueError(f"forms must be 'auto' or one of "
                         f"{list(DEPLOY_FORMS)}. Received: forms={forms!r}.")
    report = {}

    def clone(layer):
        if not (isinstance(layer, _Expander) and layer.impl == "masked"):
            return type(layer).from_config(layer.get_config())
        shape = tuple(layer.input.shape)
        if forms == "auto":
            report[layer.name] = choose_deploy_form(layer, shape)
        else:
            report[layer.name] = {"form": forms, "reason": "requested"}
        return DEPLOY_FORMS[report[layer.name]["form"]][1](layer, shape)

    result = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        converted = report.get(layer.name, {}).get("form", "masked")
        if converted == "masked" and layer.weights:
            result.get_layer(layer.name).set_weights(layer.get_weights())
    return result, report


def gathered_model(model):
    """Converts every masked expander layer of `model` to the gathered form.

    Same as `deployable_model(model, "gather")[0]`: only the existing
    connections are computed, but in LiteRT the channel GATHERs make the
    paper's graph slower than the dense net; deploy with
    `deployable_model`.

    Example:

    >>> inputs = keras.Input((8, 8, 16))
    >>> y = ExpanderConv2D(16, 1, density=0.5, seed=0, name="x")(inputs)
    >>> gathered = gathered_model(keras.Model(inputs, y))
    >>> gathered.get_layer("x").impl
    'gather'
    """
    return deployable_model(model, "gather")[0]
