"""Expander-graph convolutions and dense layers (X-Nets).

A layer's channel connectivity is a sparse random bipartite graph between its
input and output channels: each output channel sees only `in / expand_ratio`
input channels, chosen by a seeded construction. Two implementations compute
the same function:

- `impl="masked"`: a dense kernel times a fixed 0/1 mask (the paper's
  reference semantics; the masked weights start at zero, get zero gradient
  and stay zero). Costs as much as the dense layer.
- `impl="gather"`: gathers each output block's input channels and runs one
  grouped convolution (`layers.GroupedConv2D`, TF's fast grouped kernel) or a
  batched matmul (dense), so only the existing connections are computed.

`gathered_model(model)` converts a trained masked model into the gathered
form exactly.

Speed: with one input list per output channel (the paper's graph) the
gathered tensor has `C_out * C_in / ES` channels, so that form is
memory-bound and can be slower than the dense layer on CPU (spec 5). Block
expanders (`groups=G`, and `chunks=C` so that the gather moves contiguous
slabs) keep the density and MACs with a gathered tensor of only
`G * C_in / ES` channels.

Counting convention (`profile()` hooks): params and MACs count only the
connections that exist, i.e. `k * k * nnz(mask)` weights and
`k * k * H_out * W_out * nnz(mask)` MACs (plus bias params), whichever
implementation runs; for rows padded by `regular_side="in"` the padded slots
are not counted. This is the paper's convention (spec section 3.1).

Reference: Prabhu, Varma, Namboodiri, "Deep Expander Networks: Efficient Deep
Networks from Graph Theory", ECCV 2018, https://arxiv.org/abs/1711.08757
"""

import zlib

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact.layers import conv_args
from keras_compact.layers.grouped_conv import GroupedConv2D

IMPLEMENTATIONS = ("masked", "gather")
REGULAR_SIDES = ("out", "in")
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
            inputs uniformly) or `"in"` (each input picks `degree` distinct
            outputs; the 2017 X-MobileNet rule).
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


def singular_value_ratio(mask):
    """sigma_2 / sigma_1 of the biadjacency: lower is a better expander.

    1.0 means the bipartite graph is disconnected (e.g. a grouped conv).
    """
    singular = np.linalg.svd(np.asarray(mask, "float64"), compute_uv=False)
    return float(singular[1] / singular[0])


def layer_seed(seed, name):
    """A stable per-layer seed from a model seed and the layer's name."""
    return zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF


def _check_degree(degree, limit, what):
    if not 1 <= degree <= limit:
        raise ValueError(f"degree must be in [1, {what}={limit}]. Received: "
                         f"degree={degree}; pass a smaller expand_ratio or "
                         f"degree.")


class _Expander(keras.layers.Layer):
    """Connectivity, weights and conversion shared by the expander layers."""

    def __init__(self, units, expand_ratio=2, degree=None,
                 regular_side="out", groups=None, chunks=None,
                 impl="masked", seed=None,
                 use_bias=False, kernel_initializer=None,
                 bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}. "
                             f"Received: impl={impl!r}.")
        if regular_side not in REGULAR_SIDES:
            raise ValueError(f"regular_side must be one of {REGULAR_SIDES}. "
                             f"Received: regular_side={regular_side!r}.")
        if degree is None and not expand_ratio or (expand_ratio or 1) < 1:
            raise ValueError(f"Pass expand_ratio >= 1 (compression factor) "
                             f"or degree. Received: expand_ratio="
                             f"{expand_ratio}, degree={degree}.")
        self.units = units
        self.expand_ratio = expand_ratio
        self.degree = degree
        self.regular_side = regular_side
        self.groups = groups
        self.chunks = chunks
        self.impl = impl
        # A drawn seed is stored in the config, so a reloaded layer rebuilds
        # the same graph (the mask/indices weights are saved as well).
        self.seed = int(np.random.randint(2**31 - 1) if seed is None
                        else seed)
        self.use_bias = use_bias
        conv_args.set_weight_settings(
            self, kernel_initializer or self._default_initializer(),
            bias_initializer, kernel_regularizer, bias_regularizer)

    def connectivity(self, in_channels):
        """The seeded 0/1 mask `(in_channels, units)` of this layer."""
        other = in_channels if self.regular_side == "out" else self.units
        degree = self.degree or max(other // self.expand_ratio, 1)
        return expander_mask(in_channels, self.units, degree,
                             self.regular_side, self.groups, self.chunks,
                             self.seed)

    def build(self, input_shape):
        self.in_channels = input_shape[-1]
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
                regularizer=self.kernel_regularizer)
        else:
            table = mask_indices(mask, self.groups)
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
                regularizer=self.bias_regularizer)

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
        self._chunk = 1
        if not self._pads:
            width = np.gcd(self.in_channels, table.shape[1])
            for size in (s for s in range(width, 1, -1) if width % s == 0):
                runs = table.reshape(table.shape[0], -1, size)
                if ((runs[..., :1] % size == 0).all()
                        and (runs == runs[..., :1] + np.arange(size)).all()):
                    self._chunk = size
                    break

    def _gather(self, inputs):
        if self._pads:
            inputs = ops.concatenate(
                [inputs, ops.zeros_like(inputs[..., :1])], axis=-1)
        if self._identity:
            return inputs
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
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return outputs

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
        layer = type(self).from_config(dict(self.get_config(),
                                            impl="gather"))
        layer.build(input_shape)
        mask = self.get_mask()
        table = mask_indices(mask, self.groups)
        if table.shape != tuple(layer.indices.shape):
            raise ValueError(
                f"The mask of '{self.name}' needs {table.shape} gather "
                f"slots, its seed gives {tuple(layer.indices.shape)}: the "
                "mask was replaced by hand. Set the seed that built it.")
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
            expand_ratio=self.expand_ratio,
            degree=self.degree,
            regular_side=self.regular_side,
            groups=self.groups,
            chunks=self.chunks,
            impl=self.impl,
            seed=self.seed,
            use_bias=self.use_bias,
            **conv_args.weight_settings_config(self),
        )
        return config


@api.serializable
class ExpanderConv2D(_Expander):
    """2D convolution whose channel connectivity is a random expander graph.

    Each output channel is connected to `in_channels // expand_ratio` input
    channels (or `degree`), drawn without replacement by a seeded NumPy
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
        expand_ratio: compression factor ES; each output sees
            `max(in_channels // ES, 1)` inputs (`regular_side="in"`: each
            input feeds `max(filters // ES, 1)` outputs).
        degree: the number of neighbours directly; overrides expand_ratio.
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
        bias_regularizer: as in `keras.layers.Conv2D`.

    Example:

    >>> conv = keras_compact.layers.ExpanderConv2D(64, 3, expand_ratio=4,
    ...                                            seed=0)
    >>> conv(keras.ops.ones((2, 16, 16, 32))).shape
    (2, 16, 16, 64)
    >>> int(conv.get_mask().sum(axis=0)[0])  # inputs per output channel
    8
    >>> fast = conv.gathered((2, 16, 16, 32))  # same function, 1/4 MACs

    Reference:
        Prabhu et al., "Deep Expander Networks", ECCV 2018,
        https://arxiv.org/abs/1711.08757
    """

    def __init__(self, filters, kernel_size, strides=1, padding="same",
                 **kwargs):
        super().__init__(filters, **kwargs)
        self.filters = filters
        self.kernel_size, self.strides, self.padding = conv_args.geometry(
            kernel_size, strides, padding)

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
            kernel_initializer=initializer,
            kernel_regularizer=self.kernel_regularizer, name="grouped_conv")
        self.grouped_conv.build((*input_shape[:-1], table.size))

    def _compact_kernel(self):
        return self.grouped_conv.kernel

    def call(self, inputs):
        if self.impl == "gather":
            return self._add_bias(self.grouped_conv(self._gather(inputs)))
        kernel = self.kernel * ops.reshape(self.mask, self._mask_shape())
        outputs = ops.conv(inputs, ops.cast(kernel, inputs.dtype),
                           strides=self.strides, padding=self.padding)
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
                      strides=self.strides, padding=self.padding)
        return config


@api.serializable
class ExpanderDense(_Expander):
    """Dense layer whose input-output connectivity is a random expander.

    Each output unit sees `in_features // expand_ratio` inputs (or
    `degree`), drawn by a seeded generator and stored in the layer. No bias
    by default and He-normal fan-in init, as the reference `ExpanderLinear`.
    `impl="gather"` gathers the inputs of each output block and runs one
    batched matmul over the blocks.

    Args:
        units: output features.
        expand_ratio, degree, regular_side, groups, impl, seed, use_bias,
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer: as in `ExpanderConv2D`.

    Input shape: `(batch, in_features)`. Output shape: `(batch, units)`.

    Example:

    >>> dense = keras_compact.layers.ExpanderDense(512, degree=128, seed=0)
    >>> dense(keras.ops.ones((2, 512))).shape
    (2, 512)

    Reference:
        Prabhu et al., "Deep Expander Networks", ECCV 2018,
        https://arxiv.org/abs/1711.08757
    """

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
            initializer=initializer, regularizer=self.kernel_regularizer)

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
    `functools.partial(expander_conv2d, expand_ratio=2, impl="gather")`
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


def expander_conv_factory(expand_ratio=2, impl="masked",
                          expander_groups=None, seed=0, **layer_kwargs):
    """A backbone conv factory whose every conv is a seeded expander conv.

    Returns `conv(x, filters, kernel_size, strides=1, groups=1, name=...)`
    (the `models.blocks.conv2d` signature, PyTorch padding); each layer's
    graph seed is `layer_seed(seed, name)`, so a model seed fixes every
    graph and no two layers share one.

    Example:

    >>> conv = expander_conv_factory(expand_ratio=2, seed=0)
    >>> block = functools.partial(models.blocks.basic_block, conv=conv)
    """

    def conv(x, filters, kernel_size, strides=1, groups=1, name=None):
        return expander_conv2d(
            x, filters, kernel_size, strides, groups=groups, name=name,
            expand_ratio=expand_ratio, impl=impl,
            expander_groups=expander_groups, seed=layer_seed(seed, name),
            **layer_kwargs)

    return conv


def gathered_model(model):
    """Converts every masked expander layer of `model` to the gathered form.

    Returns a new functional model computing the same function (exactly, up
    to float32 summation order) with only the existing connections; the
    other layers are copies with the same weights.

    Example:

    >>> fast = keras_compact.layers.gathered_model(trained_masked_model)
    """

    def clone(layer):
        if isinstance(layer, _Expander) and layer.impl == "masked":
            return layer.gathered(tuple(layer.input.shape))
        return type(layer).from_config(layer.get_config())

    result = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        copied = not (isinstance(layer, _Expander) and layer.impl == "masked")
        if copied and layer.weights:
            result.get_layer(layer.name).set_weights(layer.get_weights())
    return result
