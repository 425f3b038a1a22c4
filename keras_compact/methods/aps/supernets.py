"""The APS supernets: CIFAR ResNets, ResNet-18, MobileNetV2 (spec 1)."""

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact import layers
from keras_compact.layers.aps import projections
from keras_compact.methods.aps.decode import MBV2_STAGES
from keras_compact.methods.aps.decode import decode
from keras_compact.methods.aps.decode import decode_mobilenet_v2
from keras_compact.methods.aps.decode import decode_resnet
from keras_compact.methods.aps.flops import _blocks_per_stage
from keras_compact.methods.aps.flops import _conv_row
from keras_compact.methods.aps.flops import _side
from keras_compact.methods.aps.flops import arch_macs
from keras_compact.methods.aps.flops import macs_table
from keras_compact.models import mobilenet


class _Supernet(keras.Model):
    """What the search needs of a supernet, shared by all of them.

    A subclass builds its layers and sets `num_decisions`,
    `num_candidates`, `layout` (the decision of every table row, `L` / `L +
    1` for a fixed first / last candidate; see `ChannelController`),
    `charged_layout` (the layout the search charges: the reference charges
    the sampled width of a row the forward forces to the largest, spec 6),
    `row_candidates` (the candidate widths of the rows that are widths of
    the decoded net) and `table` (`[R, n, n]` MACs).
    """

    def full(self, arch, layout=None):
        """The index of every table row's width for a decision list."""
        layout = self.layout if layout is None else layout
        arch = ops.cast(arch, "int32")
        fixed = ops.convert_to_tensor([0, self.num_candidates - 1], "int32")
        return ops.take(ops.concatenate([arch, fixed]),
                        ops.convert_to_tensor(layout, "int32"), axis=0)

    def macs(self, arch, charged=False):
        """Table MACs of the architecture the forward runs, or with
        `charged=True` the MACs the search charges for the sampled
        decisions (exact int for an array or list, float32 for a tensor)."""
        layout = self.charged_layout if charged else self.layout
        if isinstance(arch, (list, tuple, np.ndarray)):
            fixed = [0, self.num_candidates - 1]
            full = np.concatenate([np.asarray(arch, "int64"), fixed])
            return arch_macs(self.table, full[layout])
        return arch_macs(self.table, self.full(arch, layout))

    def widths(self, arch):
        """The decoded width list (spec 2.7) of a decision list."""
        full = ops.convert_to_numpy(self.full(arch))
        return [cands[int(a)] for cands, a in zip(self.row_candidates, full)]

    @property
    def searchable_layers(self):
        return self.convs + [self.classifier]

    @property
    def projection_variables(self):
        return [w for layer in self.searchable_layers
                for w in layer.projection_weights]

    @property
    def meta_variables(self):
        projections = {id(v) for v in self.projection_variables}
        return [v for v in self.trainable_variables
                if id(v) not in projections]

    def orthogonality_loss(self):
        """The reference's L1 off-diagonal Gram penalty (spec 3.2) over
        every searchable layer (the CIFAR reference skips stage 2, 7.5)."""
        groups = [g for layer in self.searchable_layers
                  for g in layer.orthogonality_groups()]
        return sum(projections.offdiagonal_l1(g) for g in groups)

    def sharing_level(self):
        """Mean psi over the P- and Q-groups of the block convs (spec 3.2):
        2 sum_{k<l} min(c_k, c_l) for ordinal sharing, 0 independent."""
        total, count = 0.0, 0
        for conv in self.block_convs:
            for weight, cands in conv_groups(conv):
                total += projections.sharing_level(weight, cands)
                count += weight.shape[0]
        return total / count


def conv_groups(conv):
    """(packed projections, their candidates) of a searchable conv."""
    if isinstance(conv, layers.APSDepthwiseConv2D):
        return [(conv.p, conv.candidates)]
    return [(conv.p, conv.candidates_out), (conv.q, conv.candidates_in)]


class _APSResNetBase(_Supernet):
    """Stem, basic blocks and classifier of the ResNet supernets.

    The decision list is expanded to the full width list `[stem, (mid, out)
    per block]` (`full`); block j reads entries 2j (input), 2j + 1, 2j + 2.
    """

    def _build_layers(self, stem_kernel, stem_strides, stem_pool, stages,
                      overlap, noise, classifier_noise):
        """`stages`: per stage `(blocks, candidates, meta width)`; the stem
        has stage 1's candidates and meta width."""
        channels = self.image_shape[-1]
        cands_in, meta_in = stages[0][1], stages[0][2]
        self.stem_pool = stem_pool
        self.stem = layers.APSConv2D(
            cands_in, (channels,), stem_kernel, stem_strides,
            meta_filters=meta_in, meta_channels=channels, overlap=overlap,
            projection_noise=noise, name="stem_conv")
        self.stem_bn = layers.CandidateBatchNorm(len(cands_in), 1,
                                                 name="stem_bn")
        self.stages = []
        for stage, (count, cands, meta) in enumerate(stages):
            for index in range(count):
                self.stages.append(layers.APSBasicBlock(
                    cands, cands_in, 2 if stage and not index else 1,
                    meta_width=meta, meta_width_in=meta_in, overlap=overlap,
                    projection_noise=noise,
                    name=f"stage{stage + 1}_block{index + 1}"))
                cands_in, meta_in = cands, meta
        self.classifier = layers.APSDense(
            self.num_classes, cands_in, meta_in, overlap,
            classifier_noise, name="classifier")

    def build(self, input_shape):
        # Builds every sublayer from the image shape alone (the arch input
        # has no shape to infer), without running a forward pass.
        shape = (None,) + self.image_shape
        self.stem.build(shape)
        shape = self.stem.compute_output_shape(shape)
        self.stem_bn.build(shape)
        if self.stem_pool:
            shape = (None, _side(shape[1], 2), _side(shape[2], 2), shape[3])
        for block in self.stages:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.classifier.build((None, shape[-1]))
        self.built = True

    def call(self, inputs, training=None):
        images, arch = inputs
        full = self.full(arch)
        stem = ops.stack([full[0], ops.zeros((), "int32")])
        x = self.stem(images, choice=stem)
        x = ops.relu(self.stem_bn(x, choice=stem, training=training))
        if self.stem_pool:  # zero padding is exact after the ReLU
            x = ops.max_pool(ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]),
                             3, 2, padding="valid")
        for j, block in enumerate(self.stages):
            x = block(x, choice=full[2 * j:2 * j + 3], training=training)
        return self.classifier(ops.mean(x, axis=(1, 2)))

    @property
    def convs(self):
        return [self.stem] + self.block_convs

    @property
    def block_convs(self):
        return [c for b in self.stages for c in b.convs]

    def _table(self, stem_kernel):
        """Rows of the stem and of every block conv (spec 6): the main
        path only, no shortcuts, no classifier."""
        side = _side(self.image_shape[0], self.stem.strides)
        rows = [_conv_row(stem_kernel, self.stem.candidates_out,
                          (self.image_shape[-1],), side)]
        if self.stem_pool:
            side = _side(side, 2)
        for block in self.stages:
            side = _side(side, block.strides)
            rows.append(_conv_row(3, block.candidates, block.candidates_in,
                                  side))
            rows.append(_conv_row(3, block.candidates, block.candidates,
                                  side))
        return np.stack(rows)

    def plain_path(self, arch, shortcut="supernet"):
        """The plain net of one path with its weights copied in."""
        full = [int(a) for a in ops.convert_to_numpy(self.full(arch))]
        model = self.decoder(self.widths(arch), self.image_shape,
                             self.num_classes, shortcut="supernet")
        model.get_layer("stem_conv").set_weights(
            [self.stem.candidate_kernel(full[0], 0)])
        _copy_bn(model, "stem_bn", self.stem_bn, full[0], 0)
        for j, block in enumerate(self.stages):
            a_in, a_mid, a_out = full[2 * j:2 * j + 3]
            name = block.name
            model.get_layer(f"{name}_conv1").set_weights(
                [block.conv1.candidate_kernel(a_mid, a_in)])
            _copy_bn(model, f"{name}_bn1", block.bn1, a_mid, a_in)
            model.get_layer(f"{name}_conv2").set_weights(
                [block.conv2.candidate_kernel(a_out, a_mid)])
            _copy_bn(model, f"{name}_bn2", block.bn2, a_out, a_mid)
            _copy_shortcut(model, f"{name}_shortcut", block.shortcut,
                           a_out, a_in)
        _copy_classifier(model, self.classifier, full[-1])
        return model


def _copy_bn(model, name, norm, o, i):
    """A candidate pair's running statistics into a plain affine BN."""
    c = model.get_layer(name).get_weights()[0].shape[0]
    mean = ops.convert_to_numpy(norm.moving_mean)[o, i, :c]
    var = ops.convert_to_numpy(norm.moving_variance)[o, i, :c]
    model.get_layer(name).set_weights([np.ones(c), np.zeros(c), mean, var])


def _copy_shortcut(model, name, shortcut, o, i):
    kernel = ops.convert_to_numpy(shortcut.pair_kernel([o, i]))
    kernel = kernel[:shortcut.candidates_in[i], :shortcut.candidates_out[o]]
    model.get_layer(f"{name}_conv").set_weights([kernel[None, None]])
    _copy_bn(model, f"{name}_bn", shortcut.norm, o, i)


def _copy_classifier(model, classifier, k):
    kernel = ops.convert_to_numpy(classifier.projected_kernel(k))
    model.get_layer("classifier").set_weights(
        [kernel[:classifier.candidates[k]],
         ops.convert_to_numpy(classifier.bias)])


@api.serializable
class APSResNetCifar(_APSResNetBase):
    """The CIFAR ResNet supernet of APS (spec section 1).

    Searches the stem width and both widths of every basic block
    (L = 2 * 3n + 1 decisions: 19 for ResNet-20, 55 for ResNet-56); the
    last block's output is always the largest candidate. Called on
    `(images, arch)` with `arch` an int tensor `[L]` of candidate indices;
    the graph is the same for every architecture.

    Args:
        depth: 6n + 2.
        candidates: widths of every searched layer (reference: 4..64).
        meta_width: meta width C of every conv (default: their sum, 124).
        num_classes: logits.
        input_shape: `(H, W, channels)`.
        overlap: 1.0 (ordinal) .. 0.0 (independent).
        projection_noise: noise on the identity blocks of P and Q.

    Example:

    >>> net = APSResNetCifar(8, (4, 8), num_classes=10, input_shape=(8, 8, 3))
    >>> images = keras.ops.zeros((2, 8, 8, 3))
    >>> tuple(net((images, keras.ops.zeros((7,), "int32"))).shape)
    (2, 10)

    Reference: Wang et al., NeurIPS 2020.
    """

    def __init__(self, depth=20, candidates=(4, 8, 16, 32, 64),
                 meta_width=None, num_classes=10, input_shape=(32, 32, 3),
                 overlap=1.0, projection_noise=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.depth = int(depth)
        self.candidates = tuple(int(c) for c in candidates)
        self.meta_width = int(meta_width or sum(self.candidates))
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(s) for s in input_shape)
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        per_stage = _blocks_per_stage(self.depth)
        self.num_decisions = 6 * per_stage + 1
        self.num_candidates = len(self.candidates)
        self._build_layers(3, 1, False,
                           [(per_stage, self.candidates, self.meta_width)]
                           * 3, overlap, projection_noise,
                           projection_noise)
        # One decision per conv; the last block's output is the largest.
        self.charged_layout = np.arange(self.num_decisions)
        self.layout = self.charged_layout.copy()
        self.layout[-1] = self.num_decisions + 1
        self.row_candidates = [self.candidates] * self.num_decisions
        self.table = macs_table(self.depth, self.candidates,
                                self.image_shape)
        self.build((None,) + self.image_shape)

    def decoder(self, widths, input_shape, num_classes, shortcut):
        return decode(widths, input_shape, num_classes, shortcut)

    def effective(self, arch):
        """The architecture the forward runs: the last width is the max."""
        return self.full(arch)

    def get_config(self):
        return {
            "depth": self.depth, "candidates": self.candidates,
            "meta_width": self.meta_width, "num_classes": self.num_classes,
            "input_shape": self.image_shape, "overlap": self.overlap,
            "projection_noise": self.projection_noise, "name": self.name,
        }


@api.serializable
class APSResNet(_APSResNetBase):
    """The ImageNet ResNet-18 supernet of APS, blockwise (spec 1.1).

    7x7/2 stem + 3x3/2 max-pool, four stages of basic blocks, candidates
    `base x multiplier^s` per stage s (default {0.5, 0.75, 1, 1.25} x the
    standard widths: 32..80, 64..160, 128..320, 256..640; the stem uses
    stage 1's) and meta widths `max_width x multiplier^s` (128..1024, 2x the
    standard). Blockwise: per stage one decision for each block's mid width
    and one output width shared by the stage's blocks, so
    `1 + sum(blocks) + stages` decisions (13 for ResNet-18), ordered stem,
    then per stage (mid of block 1, output, mids of blocks 2..). The last
    block's output is always the largest candidate. Projection noise is
    1e-2 and the classifier projections are exact identities, as in the
    reference's ImageNet files.

    Args:
        depths: basic blocks per stage, `(2, 2, 2, 2)` for ResNet-18.
        base_widths: stage-1 candidates.
        max_width: stage-1 meta width.
        multiplier: width growth per stage.
        num_classes: logits.
        input_shape: `(H, W, channels)`.
        overlap: 1.0 (ordinal) .. 0.0 (independent).
        projection_noise: noise on the identity blocks of P and Q.

    Example:

    >>> net = APSResNet(depths=(1, 1, 1, 1), input_shape=(32, 32, 3),
    ...                 num_classes=10)
    >>> images = keras.ops.zeros((2, 32, 32, 3))
    >>> tuple(net((images, keras.ops.zeros((net.num_decisions,), "int32"))
    ...           ).shape)
    (2, 10)

    Reference: Wang et al., NeurIPS 2020 (`nets/resnet_18s_width.py`).
    """

    def __init__(self, depths=(2, 2, 2, 2), base_widths=(32, 48, 64, 80),
                 max_width=128, multiplier=2, num_classes=1000,
                 input_shape=(224, 224, 3), overlap=1.0,
                 projection_noise=1e-2, **kwargs):
        super().__init__(**kwargs)
        self.depths = tuple(int(d) for d in depths)
        self.base_widths = tuple(int(w) for w in base_widths)
        self.max_width = int(max_width)
        self.multiplier = int(multiplier)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(s) for s in input_shape)
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self.num_candidates = len(self.base_widths)
        stages = [(blocks, tuple(w * self.multiplier ** s
                                 for w in self.base_widths),
                   self.max_width * self.multiplier ** s)
                  for s, blocks in enumerate(self.depths)]
        self._build_layers(7, 2, True, stages, overlap, projection_noise,
                           0.0)
        layout, rows = [0], [stages[0][1]]
        decision = 1
        for count, cands, _ in stages:
            out = decision + 1
            for index in range(count):
                layout += [decision + (index + 1 if index else 0), out]
                rows += [cands, cands]
            decision += count + 1
        self.num_decisions = decision
        self.charged_layout = np.asarray(layout)
        layout[-1] = self.num_decisions + 1  # the last output: the largest
        self.layout = np.asarray(layout)
        self.row_candidates = rows
        self.table = self._table(7)
        self.build((None,) + self.image_shape)

    def decoder(self, widths, input_shape, num_classes, shortcut):
        return decode_resnet(widths, self.depths, input_shape, num_classes,
                             "imagenet", shortcut)

    def get_config(self):
        return {
            "depths": self.depths, "base_widths": self.base_widths,
            "max_width": self.max_width, "multiplier": self.multiplier,
            "num_classes": self.num_classes,
            "input_shape": self.image_shape, "overlap": self.overlap,
            "projection_noise": self.projection_noise, "name": self.name,
        }


# The reference's stage width multipliers: the stem, then stage by stage.
MBV2_MULTIPLIERS = (2.0, 1.0, 1.5, 1.3333, 2.0, 1.5, 1.6667, 2.0)


def mobilenet_v2_candidates(base_widths=(8, 12, 16, 20), max_width=32):
    """Stem, stage and last-conv (candidates, meta width) of the supernet.

    The reference's rule (`MobileNetV2ChannWidth`): stage s has
    `int(b * m_s)` rounded to even for the cumulative multiplier m_s, and
    meta width `int(max_width * m_s)` rounded to even; the stem doubles
    stage 1, the last conv is 4x stage 7. Defaults: stem {16..40}/64,
    stages {8..20}/32 ... {160..400}/640, last {640..1600}/2560.
    """
    scale, stages = 1.0, []
    for multiplier in MBV2_MULTIPLIERS[1:]:
        scale *= multiplier
        stages.append((tuple(mobilenet.make_divisible(int(b * scale), 2)
                             for b in base_widths),
                       mobilenet.make_divisible(int(max_width * scale), 2)))
    first = MBV2_MULTIPLIERS[0]
    stem = (tuple(mobilenet.make_divisible(c * first, 2)
                  for c in stages[0][0]),
            int(stages[0][1] * first))
    last = (tuple(mobilenet.make_divisible(c * 4, 2) for c in stages[-1][0]),
            4 * stages[-1][1])
    return stem, stages, last


@api.serializable
class APSMobileNetV2(_Supernet):
    """The ImageNet MobileNetV2 supernet of APS, blockwise (spec 1.1).

    A searchable stem (3x3/2), 17 inverted residuals (`APSInvertedResidual`
    with searchable 1x1 and depthwise convs, expansions
    `t = 1, 3, 3, 3, 6, 6, 6` per stage) and a searchable last 1x1 conv,
    candidates {0.5, 0.75, 1, 1.25} x the standard widths
    (`mobilenet_v2_candidates`). 24 decisions: one for the stem (which
    also sets block 1's width), then per stage 2..7 one output width shared
    by its blocks followed by one hidden width per block, then the last
    conv. The non-first blocks of a stage add a per-pair 1x1 conv + BN
    shortcut. Unlike the ResNets, the last width is searched and the
    classifier uses it. Its MAC table has 53 rows: the 52 convs of the
    decoded width list (depthwise as k^2 c per output pixel) and the
    classifier with its bias adds (spec 6).

    Args:
        base_widths: stage-1 output candidates.
        max_width: stage-1 output meta width.
        num_classes: logits.
        input_shape: `(H, W, channels)`.
        overlap: 1.0 (ordinal) .. 0.0 (independent).
        projection_noise: noise on the identity blocks of P and Q.

    Example:

    >>> net = APSMobileNetV2(input_shape=(32, 32, 3), num_classes=10)
    >>> images = keras.ops.zeros((2, 32, 32, 3))
    >>> tuple(net((images, keras.ops.zeros((24,), "int32"))).shape)
    (2, 10)

    Reference: Wang et al., NeurIPS 2020 (`nets/mobilenet_v2_width.py`).
    """

    def __init__(self, base_widths=(8, 12, 16, 20), max_width=32,
                 num_classes=1000, input_shape=(224, 224, 3), overlap=1.0,
                 projection_noise=1e-2, **kwargs):
        super().__init__(**kwargs)
        self.base_widths = tuple(int(w) for w in base_widths)
        self.max_width = int(max_width)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(s) for s in input_shape)
        self.overlap = float(overlap)
        self.projection_noise = float(projection_noise)
        self.num_candidates = len(self.base_widths)
        (stem_cands, stem_meta), stages, (last_cands, last_meta) = \
            mobilenet_v2_candidates(self.base_widths, self.max_width)
        common = dict(overlap=overlap, projection_noise=projection_noise)
        self.stem = layers.APSConv2D(
            stem_cands, (self.image_shape[-1],), 3, 2,
            meta_filters=stem_meta, meta_channels=self.image_shape[-1],
            name="stem_conv", **common)
        self.stem_bn = layers.CandidateBatchNorm(len(stem_cands), 1,
                                                 name="stem_bn")
        # Decision 0: the stem and block 1 (t = 1: hidden = input).
        self.blocks, layout, rows = [], [0, 0, 0], [stem_cands, stem_cands]
        self.block_rows = [(0, 1, 2)]  # (input, hidden, output) rows
        cands_in, meta_in, decision = stem_cands, stem_meta, 1
        for stage, ((t, repeats, strides), (cands, meta)) in enumerate(
                zip(MBV2_STAGES, stages)):
            out = 0 if stage == 0 else decision
            for index in range(repeats):
                block = layers.APSInvertedResidual(
                    cands, cands_in, t, strides if index == 0 else 1,
                    meta, meta_in, residual=index > 0 and meta == meta_in,
                    name=f"block{len(self.blocks) + 1}", **common)
                self.blocks.append(block)
                if stage:
                    hidden = decision + 1 + index
                    first = len(layout)
                    self.block_rows.append((first - 1, first, first + 2))
                    layout += [hidden, hidden, out]
                    rows += [block.hidden, block.hidden]
                rows.append(cands)
                cands_in, meta_in = cands, meta
            if stage:
                decision += repeats + 1
        self.last = layers.APSConv2D(
            last_cands, cands_in, 1, 1, meta_filters=last_meta,
            meta_channels=meta_in, name="last_conv", **common)
        self.last_bn = layers.CandidateBatchNorm(
            len(last_cands), len(cands_in), name="last_bn")
        self.classifier = layers.APSDense(
            self.num_classes, last_cands, last_meta, overlap, 0.0,
            name="classifier")
        self.num_decisions = decision + 1
        # The classifier's row depends only on the last conv's width.
        self.layout = np.asarray(layout + [decision, self.num_decisions])
        self.charged_layout = self.layout
        self.row_candidates = rows + [last_cands]
        self.table = self._table()
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        shape = (None,) + self.image_shape
        self.stem.build(shape)
        shape = self.stem.compute_output_shape(shape)
        self.stem_bn.build(shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.last.build(shape)
        shape = self.last.compute_output_shape(shape)
        self.last_bn.build(shape)
        self.classifier.build((None, shape[-1]))
        self.built = True

    def call(self, inputs, training=None):
        images, arch = inputs
        full = self.full(arch)
        stem = ops.stack([full[0], ops.zeros((), "int32")])
        x = self.stem(images, choice=stem)
        x = ops.relu6(self.stem_bn(x, choice=stem, training=training))
        for block, rows in zip(self.blocks, self.block_rows):
            x = block(x, choice=ops.take(full, list(rows)),
                      training=training)
        last = ops.stack([full[-2], full[-3]])
        x = self.last(x, choice=last)
        x = ops.relu6(self.last_bn(x, choice=last, training=training))
        return self.classifier(ops.mean(x, axis=(1, 2)), choice=full[-2])

    @property
    def convs(self):
        return [self.stem] + self.block_convs + [self.last]

    @property
    def block_convs(self):
        return [c for b in self.blocks for c in b.convs]

    def _table(self):
        side = _side(self.image_shape[0], 2)
        rows = [_conv_row(3, self.stem.candidates_out,
                          (self.image_shape[-1],), side)]
        for block in self.blocks:
            if block.expand is not None:
                rows.append(_conv_row(1, block.hidden, block.candidates_in,
                                      side))
            side = _side(side, block.strides)
            rows.append(_conv_row(3, block.hidden, None, side, True))
            rows.append(_conv_row(1, block.candidates_out, block.hidden,
                                  side))
        rows.append(_conv_row(1, self.last.candidates_out,
                              self.last.candidates_in, side))
        fc = np.asarray(self.last.candidates_out, "int64") + 1
        rows.append(np.broadcast_to(fc[None, :] * self.num_classes,
                                    rows[-1].shape).copy())
        return np.stack(rows)

    def plain_path(self, arch, shortcut="supernet"):
        """The plain net of one path with its weights copied in."""
        full = [int(a) for a in ops.convert_to_numpy(self.full(arch))]
        model = decode_mobilenet_v2(self.widths(arch), self.image_shape,
                                    self.num_classes, shortcut="supernet")
        model.get_layer("stem_conv").set_weights(
            [self.stem.candidate_kernel(full[0], 0)])
        _copy_bn(model, "stem_bn", self.stem_bn, full[0], 0)
        for block, (a_in, a_hidden, a_out) in zip(
                self.blocks, (tuple(full[r] for r in rows)
                              for rows in self.block_rows)):
            name = block.name
            if block.expand is not None:
                model.get_layer(f"{name}_expand_conv").set_weights(
                    [block.expand.candidate_kernel(a_hidden, a_in)])
                _copy_bn(model, f"{name}_expand_bn", block.bn1, a_hidden,
                         a_in)
            model.get_layer(f"{name}_dw_conv").set_weights(
                [block.depthwise.candidate_kernel(a_hidden)])
            _copy_bn(model, f"{name}_dw_bn", block.bn2, a_hidden, 0)
            model.get_layer(f"{name}_project_conv").set_weights(
                [block.project.candidate_kernel(a_out, a_hidden)])
            _copy_bn(model, f"{name}_project_bn", block.bn3, a_out, a_hidden)
            if block.shortcut is not None:
                _copy_shortcut(model, f"{name}_shortcut", block.shortcut,
                               a_out, a_in)
        model.get_layer("last_conv").set_weights(
            [self.last.candidate_kernel(full[-2], full[-3])])
        _copy_bn(model, "last_bn", self.last_bn, full[-2], full[-3])
        _copy_classifier(model, self.classifier, full[-2])
        return model

    def get_config(self):
        return {
            "base_widths": self.base_widths, "max_width": self.max_width,
            "num_classes": self.num_classes,
            "input_shape": self.image_shape, "overlap": self.overlap,
            "projection_noise": self.projection_noise, "name": self.name,
        }
