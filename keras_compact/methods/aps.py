"""APS: channel-number search with affine parameter sharing (--method=aps).

The search trains a supernet whose searchable convs share one meta-weight
through per-candidate affine projections (`layers.APSConv2D`), and an LSTM
controller that picks one width per conv under a FLOPs budget, by REINFORCE
on the accuracy of the sampled path (on a held-out batch for CIFAR, on the
training batch for ImageNet, as the reference's learners). Supernets: CIFAR
ResNets, ImageNet ResNet-18 and MobileNetV2 (blockwise). The found widths
are decoded into a plain network that is trained from scratch.

Reference: J. Wang, H. Bai, J. Wu, X. Shi, J. Huang, I. King, M. Lyu,
J. Cheng, "Revisiting Parameter Sharing for Automatic Neural Channel Number
Search", NeurIPS 2020; code haolibai/APS-channel-search. Fixed reference
bugs (spec section 7): the reward FLOPs count the width the forward really
uses for the last block (the largest), the final architecture is chosen on
the held-out split (never the test set) and only among architectures within
the budget, the orthogonality loss covers every stage, and the learning-rate
and warm-up epochs are not shifted by one.
"""

import dataclasses
import json
import os

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact import layers
from keras_compact import profiling
from keras_compact.layers import searchable
from keras_compact.methods.base import Method
from keras_compact.methods.registry import register
from keras_compact.models import blocks
from keras_compact.models import mobilenet
from keras_compact.models import resnet
from keras_compact.registry import Registry

# The searched configurations shipped with the reference
# (scripts/train/start_train_*.sh; spec section 4.3).
SEARCHED_WIDTHS = {
    "resnet20_20.6M": (8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32,
                       64, 64, 64, 64, 64),
    "resnet56_60.3M": (16, 16, 16) + (8,) * 20 + (16,) * 10 + (32,) * 10
    + (64,) * 12,
    "resnet18_1.83G": (48, 64, 64, 64, 48, 160, 128, 96, 96, 320, 256, 256,
                       256, 512, 512, 640, 640),
    "resnet18_1.05G": (32, 48, 48, 48, 64, 96, 64, 96, 96, 192, 192, 192,
                       192, 384, 384, 384, 640),
    "mobilenet_v2_314M": (
        40, 40, 20, 60, 60, 30, 72, 72, 30, 90, 90, 40, 120, 120, 40, 120,
        120, 40, 96, 96, 80, 192, 192, 80, 144, 144, 80, 240, 240, 80, 480,
        480, 120, 432, 432, 120, 576, 576, 120, 432, 432, 200, 1200, 1200,
        200, 960, 960, 200, 1200, 1200, 400, 1600),
    "mobilenet_v2_156M": (
        24, 24, 12, 36, 36, 24, 54, 54, 24, 90, 90, 24, 72, 72, 24, 72, 72,
        24, 72, 72, 64, 192, 192, 64, 96, 96, 64, 96, 96, 64, 192, 192, 48,
        288, 288, 48, 576, 576, 48, 576, 576, 160, 960, 960, 160, 720, 720,
        160, 960, 960, 240, 1280),
}

# -- FLOPs ------------------------------------------------------------------


def cifar_resolutions(depth, input_size):
    """Output side length of every searched conv of a CIFAR ResNet."""
    blocks_per_stage = _blocks_per_stage(depth)
    sizes = [input_size]
    for stage in range(3):
        side = input_size
        for _ in range(stage):
            side = (side + 1) // 2
        sizes += [side] * (2 * blocks_per_stage)
    return sizes


def macs_table(depth, candidates, input_shape):
    """The search-time lookup table of spec section 6, `[L, n, n]` MACs.

    Entry `[l, o, i]` is `k^2 c_i c_o H_l W_l` of searched conv l with
    output candidate o and input candidate i (H_l: its output side); row 0
    (the stem, input = image channels) repeats its value over i. Only the
    3x3 convs of the main path count, as in the reference and the paper's
    "table" FLOPs. The total of an architecture `a` is
    `table[0, a_0, 0] + sum_l table[l, a_l, a_{l-1}]`.
    """
    widths = np.asarray(candidates, "int64")
    sizes = cifar_resolutions(depth, input_shape[0])
    table = np.zeros((len(sizes), len(widths), len(widths)), "int64")
    table[0] = (9 * input_shape[-1] * widths * sizes[0] ** 2)[:, None]
    for layer, side in enumerate(sizes[1:], start=1):
        table[layer] = 9 * np.outer(widths, widths) * side * side
    return table


def table_macs(widths, input_shape=(32, 32, 3)):
    """Table MACs of a decoded CIFAR ResNet `widths` (spec 4.3 "table")."""
    widths = [int(w) for w in widths]
    sizes = cifar_resolutions(len(widths) + 1, input_shape[0])
    inputs = [input_shape[-1]] + widths[:-1]
    return sum(9 * c_in * c_out * side * side
               for c_in, c_out, side in zip(inputs, widths, sizes))


def standard_widths(depth):
    """The width list of the standard ResNet (16-32-64): 40.55M table MACs
    for ResNet-20, 125.49M for ResNet-56."""
    per_stage = 2 * _blocks_per_stage(depth)
    return [16] + [16] * per_stage + [32] * per_stage + [64] * per_stage


def arch_macs(table, arch):
    """Table MACs of a full width-index list (tensor or array `[R]`).

    Row r of the `[R, n, n]` table is indexed `[arch[r], arch[r - 1]]` (row
    0: `[arch[0], 0]`). A NumPy or list `arch` is summed exactly in int64,
    a tensor in float32 (inside the traced search step).
    """
    if isinstance(arch, (list, tuple, np.ndarray)):
        arch = np.asarray(arch, "int64")
        previous = np.concatenate([[0], arch[:-1]])
        rows = np.arange(len(arch))
        return int(np.asarray(table, "int64")[rows, arch, previous].sum())
    table = ops.convert_to_tensor(table, "float32")
    steps, n = table.shape[0], table.shape[1]
    arch = ops.cast(arch, "int32")
    previous = ops.concatenate([ops.zeros((1,), "int32"), arch[:-1]])
    index = ops.arange(steps, dtype="int32") * n * n + arch * n + previous
    return ops.sum(ops.take(ops.reshape(table, (-1,)), index))


def reward(accuracy, macs, max_macs, alpha=0.0, beta=-0.1):
    """MnasNet-style soft constraint: `acc (F/T)^alpha` or `^beta` if F > T.

    Example: `reward(0.9, 2 * T, T)` is `0.9 * 2 ** -0.1 = 0.8397`.
    """
    ratio = ops.cast(macs, "float32") / max_macs
    exponent = ops.where(ratio <= 1.0, alpha, beta)
    return ops.cast(accuracy, "float32") * ops.power(ratio, exponent)


def _hits(logits, labels):
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(predicted == ops.cast(labels, "int32"), "float32")


def _blocks_per_stage(depth):
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 56, ...). "
                         f"Received: depth={depth}.")
    return (depth - 2) // 6


# -- Controller -------------------------------------------------------------


@api.serializable
class ChannelController(keras.layers.Layer):
    """The ENAS-style LSTM policy over per-layer widths (spec section 2.1).

    A 2-layer LSTM (PyTorch cell layout: gate order i, f, g, o and two
    biases, so weights port one to one) reads at step t the embedding of the
    previous choice, a one-hot of the previous layer and the remaining share
    of the FLOPs budget, and a dense head gives the logits of layer t. All
    weights are U(-0.1, 0.1), the head bias 0. With `hidden=100`, 19
    decisions and 5 candidates it has the reference's 162,585 parameters.

    The budget feature needs the MACs of a partial architecture. The table
    has one row per conv of the full width list (`[R, n, n]`, row r indexed
    by its own width and the previous row's, see `arch_macs`); `layout[r]`
    says which decision sets row r's width (`L`: always the first candidate,
    `L + 1`: always the last). A row counts from the step at which both its
    decisions are known. The default layout `0..L-1` is the CIFAR chain
    (one decision per conv); blockwise ImageNet searches tie several convs
    to one decision (spec 1.1).

    Args:
        num_decisions: L, the number of searched layers.
        num_candidates: n, the candidates per layer.
        table: `[R, n, n]` lookup table of MACs (`macs_table`).
        max_macs: the budget T.
        hidden: LSTM width; the embedding is `hidden - L - 1` wide.
        num_layers: stacked LSTM cells.
        layout: `[R]` decision index of each table row (default `0..L-1`).

    Example:

    >>> table = macs_table(20, (4, 8, 16), (32, 32, 3))
    >>> controller = ChannelController(19, 3, table, 5e6)
    >>> arch, log_prob, entropy, logits = controller.sample()

    Reference: Wang et al., NeurIPS 2020; Pham et al., "Efficient Neural
    Architecture Search via Parameter Sharing", ICML 2018.
    """

    def __init__(self, num_decisions, num_candidates, table, max_macs,
                 hidden=100, num_layers=2, layout=None, **kwargs):
        super().__init__(**kwargs)
        self.num_decisions = int(num_decisions)
        self.num_candidates = int(num_candidates)
        self.table = np.asarray(table, "float64")
        self.layout = (np.arange(num_decisions) if layout is None
                       else np.asarray(layout, "int64"))
        rows = len(self.layout)
        if self.table.shape != (rows, num_candidates, num_candidates):
            raise ValueError(
                f"table must have shape (R, n, n) = ({rows}, "
                f"{num_candidates}, {num_candidates}) (R: rows of the "
                f"layout, L={num_decisions} by default); see macs_table(). "
                f"Received: {self.table.shape}.")
        if self.layout.min() < 0 or self.layout.max() > num_decisions + 1:
            raise ValueError(
                f"layout entries must lie in [0, L + 1] = [0, "
                f"{num_decisions + 1}]. Received: {self.layout.tolist()}.")
        # Row r is known once its own and the previous row's decisions
        # are; fixed entries (L, L + 1) are known from the start.
        self._rows_at = [[] for _ in range(num_decisions)]
        for r in range(rows):
            sources = [self.layout[r]] + ([self.layout[r - 1]] if r else [])
            known = [int(d) for d in sources if d < num_decisions]
            self._rows_at[max(known, default=0)].append(r)
        if hidden - num_decisions - 1 < 1:
            raise ValueError(
                f"hidden={hidden} leaves no room for the choice embedding "
                f"(hidden - L - 1 with L={num_decisions}). Use hidden >= "
                f"{num_decisions + 2}.")
        self.max_macs = float(max_macs)
        self.hidden = int(hidden)
        self.num_layers = int(num_layers)
        self.seed_generator = keras.random.SeedGenerator()

    def build(self, input_shape=None):
        uniform = keras.initializers.RandomUniform(-0.1, 0.1)
        h, n = self.hidden, self.num_candidates
        self.embedding = self.add_weight(
            name="embedding", shape=(n + 1, h - self.num_decisions - 1),
            initializer=uniform)
        self.cells = []
        for k in range(self.num_layers):
            self.cells.append([
                self.add_weight(name=f"lstm{k}_{part}", shape=shape,
                                initializer=uniform)
                for part, shape in (("kernel_ih", (h, 4 * h)),
                                    ("kernel_hh", (h, 4 * h)),
                                    ("bias_ih", (4 * h,)),
                                    ("bias_hh", (4 * h,)))])
        self.head_kernel = self.add_weight(name="head_kernel", shape=(h, n),
                                           initializer=uniform)
        self.head_bias = self.add_weight(name="head_bias", shape=(n,),
                                         initializer="zeros")
        self.built = True

    def _stack(self, x, state):
        new_state = []
        for (w_ih, w_hh, b_ih, b_hh), (h, c) in zip(self.cells, state):
            gates = ops.matmul(x, w_ih) + b_ih + ops.matmul(h, w_hh) + b_hh
            i, f, g, o = ops.split(gates, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            h = ops.sigmoid(o) * ops.tanh(c)
            new_state.append((h, c))
            x = h
        return x, new_state

    def _start(self, batch):
        start = ops.take(self.embedding, self.num_candidates, axis=0)
        x = ops.concatenate([
            ops.tile(start[None], (batch, 1)),
            ops.zeros((batch, self.num_decisions)),
            ops.ones((batch, 1))], axis=-1)
        zeros = ops.zeros((batch, self.hidden))
        state = [(zeros, zeros)] * self.num_layers
        # The reference runs the stack twice on the start token before the
        # first decision, which then reads the start token again.
        for _ in range(2):
            _, state = self._stack(x, state)
        return x, state

    def _next_input(self, action, step, macs):
        batch = ops.shape(action)[0]
        one_hot = ops.one_hot(ops.full((batch,), step, "int32"),
                              self.num_decisions)
        left = (self.max_macs - macs) / self.max_macs
        return ops.concatenate([ops.take(self.embedding, action, axis=0),
                                one_hot, left[:, None]], axis=-1)

    def _step_macs(self, step, actions, constant):
        """MACs of the rows that become known at `step`.

        `actions[d]` are the `[batch]` choices of decision d so far;
        `constant(value)` makes a `[batch]` index of a fixed candidate.
        """
        n, decisions = self.num_candidates, self.num_decisions

        def choice(d):
            return actions[d] if d < decisions else constant(
                0 if d == decisions else n - 1)

        total = 0.0
        for r in self._rows_at[step]:
            previous = choice(self.layout[r - 1]) if r else constant(0)
            row = ops.convert_to_tensor(self.table[r].reshape(-1),
                                        "float32")
            total += ops.take(row, choice(self.layout[r]) * n + previous)
        return total

    def _rollout(self, arch=None, uniform=False):
        x, state = self._start(1)
        macs = ops.zeros((1,))
        actions, log_prob, entropy, all_logits = [], 0.0, 0.0, []

        def constant(value):
            return ops.full((1,), value, "int32")

        for step in range(self.num_decisions):
            h, state = self._stack(x, state)
            logits = ops.matmul(h, self.head_kernel) + self.head_bias
            if uniform:
                logits = ops.zeros_like(logits)
            log_p = ops.log_softmax(logits, axis=-1)
            if arch is None:
                action = ops.cast(keras.random.categorical(
                    logits, 1, seed=self.seed_generator)[:, 0], "int32")
            else:
                action = ops.cast(arch[step], "int32")[None]
            log_prob += ops.take(log_p[0], action[0])
            entropy += -ops.sum(ops.exp(log_p) * log_p)
            actions.append(action)
            macs += self._step_macs(step, actions, constant)
            all_logits.append(logits[0])
            x = self._next_input(action, step, macs)
        return (ops.concatenate(actions), log_prob, entropy,
                ops.stack(all_logits))

    def sample(self, uniform=False):
        """Draws one architecture.

        Returns `(arch [L] int32, log_prob, entropy, logits [L, n])`;
        log_prob and entropy are summed over the layers. `uniform=True`
        replaces the policy by the uniform distribution (warm-up).
        """
        return self._rollout(uniform=uniform)

    def evaluate(self, arch):
        """`(arch, log_prob, entropy, logits)` of a given architecture."""
        return self._rollout(arch=ops.convert_to_tensor(arch, "int32"))

    def beam_search(self, width=8):
        """The `width` most likely architectures, most likely first.

        A beam over the policy (all sequences have length L, so this equals
        ranking by the reference's length-normalised log-probability).
        Returns a list of `(arch tuple, log_prob)`.
        """
        n = self.num_candidates
        x, state = self._start(1)
        scores = np.zeros((1,))
        paths = np.zeros((1, 0), "int64")
        macs = np.zeros((1,))
        for step in range(self.num_decisions):
            h, state = self._stack(x, state)
            logits = ops.matmul(h, self.head_kernel) + self.head_bias
            log_p = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
            total = (scores[:, None] + log_p).reshape(-1)
            keep = np.argsort(-total, kind="stable")[:width]
            beam, action = keep // n, keep % n
            scores, paths = total[keep], np.concatenate(
                [paths[beam], action[:, None]], axis=1)
            macs = macs[beam] + ops.convert_to_numpy(self._step_macs(
                step, [ops.convert_to_tensor(a, "int32") for a in paths.T],
                lambda v: ops.full((len(keep),), v, "int32")))
            state = [(ops.take(h_, beam, axis=0), ops.take(c_, beam, axis=0))
                     for h_, c_ in state]
            x = self._next_input(ops.convert_to_tensor(action, "int32"),
                                 step, ops.convert_to_tensor(macs,
                                                             "float32"))
        return [(tuple(int(a) for a in p), float(s))
                for p, s in zip(paths, scores)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_decisions": self.num_decisions,
            "num_candidates": self.num_candidates,
            "table": self.table.tolist(),
            "max_macs": self.max_macs,
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "layout": self.layout.tolist(),
        })
        return config


# -- Supernets --------------------------------------------------------------


def _side(size, strides):
    return None if size is None else (size - 1) // strides + 1


def _conv_row(kernel, cands_out, cands_in, side, depthwise=False):
    """One `[n, n]` table row: MACs of a conv for every (o, i) pair."""
    c_out = np.asarray(cands_out, "int64")[:, None]
    c_in = 1 if depthwise else np.asarray(cands_in, "int64")[None, :]
    row = kernel * kernel * c_out * c_in * side * side
    return np.broadcast_to(row, (len(cands_out), len(cands_out))).copy()


class _Supernet(keras.Model):
    """What the search needs of a supernet, shared by all of them.

    A subclass builds its layers and sets `num_decisions`,
    `num_candidates`, `layout` (the decision of every table row, `L` / `L +
    1` for a fixed first / last candidate; see `ChannelController`),
    `row_candidates` (the candidate widths of the rows that are widths of
    the decoded net) and `table` (`[R, n, n]` MACs).
    """

    def full(self, arch):
        """The index of every table row's width for a decision list."""
        arch = ops.cast(arch, "int32")
        fixed = ops.convert_to_tensor([0, self.num_candidates - 1], "int32")
        return ops.take(ops.concatenate([arch, fixed]),
                        ops.convert_to_tensor(self.layout, "int32"), axis=0)

    def macs(self, arch):
        """Table MACs of the architecture the forward runs (exact int for
        an array or list, float32 for a tensor)."""
        if isinstance(arch, (list, tuple, np.ndarray)):
            fixed = [0, self.num_candidates - 1]
            full = np.concatenate([np.asarray(arch, "int64"), fixed])
            return arch_macs(self.table, full[self.layout])
        return arch_macs(self.table, self.full(arch))

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
        return sum(searchable.offdiagonal_l1(g) for g in groups)

    def sharing_level(self):
        """Mean psi over the P- and Q-groups of the block convs (spec 3.2):
        2 sum_{k<l} min(c_k, c_l) for ordinal sharing, 0 independent."""
        total, count = 0.0, 0
        for conv in self.block_convs:
            for weight, cands in conv_groups(conv):
                total += searchable.sharing_level(weight, cands)
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

    >>> net = APSResNetCifar(20, (4, 8, 16), num_classes=10)
    >>> logits = net((images, keras.ops.zeros((19,), "int32")))

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
        self.layout = np.arange(self.num_decisions)
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

    >>> net = APSResNet(input_shape=(64, 64, 3), num_classes=10)
    >>> logits = net((images, keras.ops.zeros((13,), "int32")))

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


# (expand ratio t, blocks, stride) of the MobileNetV2 supernet: t = 3 in
# stages 2-4 instead of 6 (nets/mobilenet_v2_width.py, `expansions`).
MBV2_STAGES = ((1, 1, 1), (3, 2, 2), (3, 3, 2), (3, 4, 2), (6, 3, 1),
               (6, 3, 2), (6, 1, 1))
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

    >>> net = APSMobileNetV2(input_shape=(64, 64, 3), num_classes=10)
    >>> logits = net((images, keras.ops.zeros((24,), "int32")))

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


# -- Search -----------------------------------------------------------------

REWARD_SOURCES = ("held_out", "train")


class ChannelSearchModel(keras.Model):
    """Alternating weight and controller steps in one `train_step`.

    With `reward_source="held_out"` (the CIFAR learner) `fit` takes a
    dataset of `((x_train, y_train), (x_held_out, y_held_out))` pairs. In
    warm-up every step trains the supernet on a uniformly sampled
    architecture. After `start_search()`, each step first samples
    `a ~ pi`, rewards it with `acc(held-out batch) (F/T)^alpha` (`^beta`
    over budget) and takes an Adam step on
    `-logP(a) (R - b) - entropy_coeff H` with a moving-average baseline b;
    then it trains the supernet on a new sample from pi, plus a projected
    SGD step of the projections on the orthogonality loss (the APS-T
    transition from strong to weak sharing). With `reward_source="train"`
    (the ImageNet learner, spec 2.4) `fit` takes plain `(x, y)` batches and
    each step samples one `a ~ pi`, trains the supernet on it and rewards
    the controller with that same forward's training-batch accuracy. Each
    phase is traced once, whatever the architectures sampled.

    Args:
        supernet: an `APSResNetCifar`, `APSResNet` or `APSMobileNetV2`.
        max_macs: the FLOPs budget T (table MACs).
        controller_hidden: LSTM width of the controller.
        entropy_coeff: entropy bonus weight.
        baseline_decay: gamma of the reward moving average.
        reward_alpha: exponent of F/T under budget (0: no reward for less).
        reward_beta: exponent of F/T over budget.
        orthogonal_weight: weight of the orthogonality loss.
        weight_decay: coupled L2 of the meta-weights and projections.
        arch_weight_decay: coupled L2 of the controller.
        reward_source: `"held_out"` (a second batch per step) or `"train"`
            (the training batch's own forward).
        projection_interval: search steps per projection step (CIFAR 1,
            the reference's ImageNet learner 10: the orthogonality loss of
            the wide ImageNet projections costs as much as a weight step).

    Example:

    >>> search = ChannelSearchModel(APSResNetCifar(20, (4, 8, 16)), 5e6)
    >>> search.compile(keras.optimizers.SGD(0.1, momentum=0.9),
    ...                keras.optimizers.SGD(1e-3, momentum=0.9),
    ...                keras.optimizers.Adam(3e-3, beta_1=0.5))
    >>> search.fit(pairs, epochs=2)
    >>> search.start_search()
    >>> search.fit(pairs, epochs=5, initial_epoch=2)

    Reference: Wang et al., NeurIPS 2020 (spec section 2.4).
    """

    def __init__(self, supernet, max_macs, controller_hidden=100,
                 entropy_coeff=4e-3, baseline_decay=0.99, reward_alpha=0.0,
                 reward_beta=-0.1, orthogonal_weight=5e-3,
                 weight_decay=2e-4, arch_weight_decay=1e-3,
                 reward_source="held_out", projection_interval=1,
                 **kwargs):
        super().__init__(**kwargs)
        if reward_source not in REWARD_SOURCES:
            raise ValueError(
                f"reward_source must be one of {', '.join(REWARD_SOURCES)}."
                f" Received: '{reward_source}'.")
        self.reward_source = reward_source
        minimum = int(supernet.macs(np.zeros(supernet.num_decisions,
                                             "int32")))
        if max_macs < minimum:
            raise ValueError(
                f"max_macs={max_macs:.4g} is below the smallest "
                f"architecture of the search space ({minimum:,} table "
                "MACs). Raise the budget or add smaller candidates.")
        self.supernet = supernet
        self.max_macs = float(max_macs)
        self.controller = ChannelController(
            supernet.num_decisions, supernet.num_candidates,
            supernet.table, max_macs, hidden=controller_hidden,
            layout=supernet.layout, name="controller")
        self.controller.build()
        self.entropy_coeff = entropy_coeff
        self.baseline_decay = baseline_decay
        self.reward_alpha = reward_alpha
        self.reward_beta = reward_beta
        self.orthogonal_weight = orthogonal_weight
        self.weight_decay = weight_decay
        self.arch_weight_decay = arch_weight_decay
        self.baseline = self.add_weight(name="baseline", shape=(),
                                        initializer="zeros",
                                        trainable=False)
        if int(projection_interval) < 1:
            raise ValueError(f"projection_interval must be >= 1. Received: "
                             f"{projection_interval}.")
        self.projection_interval = int(projection_interval)
        self.search_steps = self.add_weight(
            name="search_steps", shape=(), initializer="zeros",
            dtype="int64", trainable=False)
        self.orthogonal_value = self.add_weight(
            name="orthogonal_value", shape=(), initializer="zeros",
            trainable=False)
        self.searching = False
        self.traces = 0
        self.task_loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "accuracy", "reward", "entropy", "macs", "orthogonal")}
        self.uniform_seed = keras.random.SeedGenerator()

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer, projection_optimizer, controller_optimizer,
                **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.projection_optimizer = projection_optimizer
        self.controller_optimizer = controller_optimizer
        optimizer.build(self.supernet.meta_variables)
        projection_optimizer.build(self.supernet.projection_variables)
        controller_optimizer.build(self.controller.trainable_variables)

    def start_search(self):
        """Ends the warm-up: the next `fit` traces the search step."""
        self.searching = True
        self.train_function = None

    def call(self, inputs, training=None):
        return self.supernet(inputs, training=training)

    def _apply(self, optimizer, loss_grads, variables, decay):
        grads = [ops.zeros_like(v) if g is None else g
                 for g, v in zip(loss_grads, variables)]
        # PyTorch's weight_decay is an L2 term added to the gradient.
        grads = [g + decay * v for g, v in zip(grads, variables)]
        optimizer.apply(grads, variables)

    def _controller_update(self, tape, log_prob, entropy, logits, y,
                           arch):
        """REINFORCE step on a sample recorded by `tape` (spec 2.3)."""
        variables = self.controller.trainable_variables
        with tape:  # resumes recording: the loss needs log_prob's graph
            accuracy = ops.mean(_hits(logits, y))
            value = reward(accuracy, self.supernet.macs(arch), self.max_macs,
                           self.reward_alpha, self.reward_beta)
            advantage = ops.stop_gradient(value - self.baseline)
            loss = -log_prob * advantage - self.entropy_coeff * entropy
        self._apply(self.controller_optimizer,
                    tape.gradient(loss, variables), variables,
                    self.arch_weight_decay)
        self.baseline.assign(self.baseline_decay * self.baseline
                             + (1.0 - self.baseline_decay) * value)
        self.trackers["reward"].update_state(value)
        self.trackers["entropy"].update_state(entropy)

    def _projection_step(self):
        """Projected SGD of P, Q on the orthogonality loss (APS-T, spec
        2.5): the task loss has no gradient there (P, Q are detached), so
        this is the reference's projection update on its own."""
        import tensorflow as tf  # the tape: this step is TF-backend only

        projections = self.supernet.projection_variables
        with tf.GradientTape() as tape:
            orthogonal = self.supernet.orthogonality_loss()
            loss = self.orthogonal_weight * orthogonal
        self._apply(self.projection_optimizer,
                    tape.gradient(loss, projections), projections,
                    self.weight_decay)
        for v in projections:
            v.assign(searchable.normalize_columns(v))
        self.orthogonal_value.assign(orthogonal)
        return orthogonal

    def train_step(self, data):
        import tensorflow as tf  # the tape: this step is TF-backend only

        self.traces += 1  # Python side effect: counts traces, not steps
        on_train = self.reward_source == "train"
        if on_train:
            x, y = data
        else:
            (x, y), (x_held_out, y_held_out) = data
        if self.searching:
            with tf.GradientTape() as arch_tape:
                arch, log_prob, entropy, _ = self.controller.sample()
            if not on_train:
                logits = self.supernet((x_held_out, arch), training=True)
                self._controller_update(arch_tape, log_prob, entropy,
                                        logits, y_held_out, arch)
                arch = self.controller.sample()[0]
        else:
            arch = keras.random.randint(
                (self.supernet.num_decisions,), 0,
                self.supernet.num_candidates, seed=self.uniform_seed,
                dtype="int32")
        meta = self.supernet.meta_variables
        with tf.GradientTape() as tape:
            logits = self.supernet((x, arch), training=True)
            loss = self.task_loss(y, logits)
        grads = tape.gradient(loss, meta)
        if self.searching and on_train:
            self._controller_update(arch_tape, log_prob, entropy,
                                    ops.stop_gradient(logits), y, arch)
        self._apply(self.optimizer, grads, meta, self.weight_decay)
        orthogonal = ops.zeros(())
        if self.searching:
            if self.projection_interval == 1:
                orthogonal = self._projection_step()
            else:  # the reference's ImageNet `--updt_proj 10`
                due = ops.equal(
                    self.search_steps % self.projection_interval, 0)
                orthogonal = ops.cond(due, self._projection_step,
                                      lambda: ops.convert_to_tensor(
                                          self.orthogonal_value))
            self.search_steps.assign_add(1)
        accuracy = ops.mean(_hits(logits, y))
        self.trackers["loss"].update_state(loss)
        self.trackers["accuracy"].update_state(accuracy)
        self.trackers["macs"].update_state(self.supernet.macs(arch))
        self.trackers["orthogonal"].update_state(orthogonal)
        return {name: t.result() for name, t in self.trackers.items()}

    def checkpoint_variables(self):
        """Everything a resumed search needs, in a fixed order."""
        return (list(self.weights) + list(self.optimizer.variables)
                + list(self.projection_optimizer.variables)
                + list(self.controller_optimizer.variables))


class SearchLog(keras.callbacks.Callback):
    """Writes the sharing-level curve and a resumable checkpoint per epoch.

    `<workdir>/aps_sharing_level.json` gets one row per epoch (psi, the
    orthogonality loss, the policy entropy, mean reward); the variables of
    the search model and its three optimizers go to `aps_search.npz` with
    the epoch, so an interrupted search resumes where it stopped.
    """

    def __init__(self, workdir):
        super().__init__()
        self.workdir = workdir
        self.curve_path = os.path.join(workdir, "aps_sharing_level.json")
        self.state_path = os.path.join(workdir, "aps_search.npz")
        self.curve = []
        if os.path.exists(self.curve_path):
            with open(self.curve_path) as f:
                self.curve = json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        model = self.model
        row = {"epoch": epoch + 1, "searching": model.searching,
               "sharing_level": float(model.supernet.sharing_level()),
               "orthogonality_loss": float(
                   model.supernet.orthogonality_loss())}
        row.update({k: float(v) for k, v in logs.items()})
        self.curve = [r for r in self.curve if r["epoch"] <= epoch] + [row]
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.curve_path, "w") as f:
            json.dump(self.curve, f, indent=1)
        values = [ops.convert_to_numpy(v)
                  for v in model.checkpoint_variables()]
        np.savez(self.state_path + ".tmp.npz", epoch=epoch + 1, *values)
        os.replace(self.state_path + ".tmp.npz", self.state_path)

    def restore(self, model):
        """Loads the last checkpoint into `model`; returns its epoch."""
        if not os.path.exists(self.state_path):
            return 0
        with np.load(self.state_path) as saved:
            variables = model.checkpoint_variables()
            for k, v in enumerate(variables):
                v.assign(saved[f"arr_{k}"])
            return int(saved["epoch"])


def run_search(search_model, pairs, epochs, warmup_epochs,
               steps_per_epoch=None, workdir=None, verbose=1, callbacks=()):
    """Warm-up then search epochs of `fit`, resumable through `workdir`.

    Returns the Keras history rows of all epochs run now.
    """
    callbacks, start = list(callbacks), 0
    if workdir:
        log = SearchLog(workdir)
        start = log.restore(search_model)
        callbacks.append(log)
    history = {}
    for phase_end, searching in ((warmup_epochs, False), (epochs, True)):
        if searching:
            search_model.start_search()
        if start >= phase_end:
            continue
        run = search_model.fit(pairs, epochs=phase_end, initial_epoch=start,
                               steps_per_epoch=steps_per_epoch,
                               callbacks=callbacks, verbose=verbose)
        for key, values in run.history.items():
            history.setdefault(key, []).extend(values)
        start = phase_end
    return history


def evaluate_architecture(supernet, arch, dataset):
    """Top-1 of one path of the supernet (BN running statistics)."""
    correct = total = 0
    arch = ops.convert_to_tensor(arch, "int32")
    for x, y in dataset:
        logits = _eval_path(supernet, x, arch)
        correct += int(ops.sum(_hits(logits, y)))
        total += int(ops.shape(y)[0])
    return correct / max(total, 1)


def _eval_path(supernet, x, arch):
    # One traced function per supernet, reused for every architecture.
    function = getattr(supernet, "_eval_function", None)
    if function is None:
        import tensorflow as tf  # graph mode for the evaluation loop

        function = tf.function(
            lambda x, a: supernet((x, a), training=False))
        supernet._eval_function = function
    return function(x, arch)


def shrink_to_budget(supernet, arch, max_macs):
    """Lowers widths of `arch` until its table MACs fit `max_macs`.

    Greedy: each step narrows by one candidate the decision whose narrowing
    saves the most MACs (a decision the forward ignores, like a forced last
    width, saves nothing and is left alone). Used when no drawn
    architecture is within the budget (the soft reward lets the policy
    drift over it).
    """
    arch = np.array(arch, "int64")
    while supernet.macs(arch) > max_macs:
        savings = []
        for layer in np.flatnonzero(arch):
            narrower = arch.copy()
            narrower[layer] -= 1
            saved = supernet.macs(arch) - supernet.macs(narrower)
            if saved > 0:
                savings.append((saved, layer))
        if not savings:
            raise ValueError(f"max_macs={max_macs:.4g} is below the "
                             "smallest architecture.")
        arch[max(savings)[1]] -= 1
    return tuple(int(a) for a in arch)


def select_architecture(search_model, dataset, num_archs=10, beam_width=0):
    """Picks the best held-out architecture within the budget (spec 2.7).

    Draws `num_archs` architectures from the policy (plus the beam's top
    `beam_width`) and keeps those within the budget; if none is, the most
    likely one drawn is narrowed into the budget (`shrink_to_budget`,
    flagged `"shrunk": True`). Each is evaluated on `dataset` (the held-out
    split, never the test set). Returns a dict with the best `arch`,
    `widths`, `macs`, `accuracy` and every evaluated candidate.
    """
    if num_archs < 1 and beam_width < 1:
        raise ValueError("Nothing to select from: set num_test_archs >= 1 "
                         "or beam_width >= 1.")
    supernet = search_model.supernet
    controller = search_model.controller
    drawn = [tuple(a) for a, _ in controller.beam_search(beam_width)] \
        if beam_width else []
    drawn += [tuple(int(a) for a in ops.convert_to_numpy(
        controller.sample()[0])) for _ in range(num_archs)]
    macs = {a: int(supernet.macs(np.asarray(a, "int32"))) for a in drawn}
    feasible = [a for a in dict.fromkeys(drawn)
                if macs[a] <= search_model.max_macs]
    shrunk = not feasible
    if shrunk:
        likely = max(drawn, key=lambda a: float(
            controller.evaluate(np.asarray(a, "int32"))[1]))
        feasible = [shrink_to_budget(supernet, likely,
                                     search_model.max_macs)]
    candidates = []
    for arch in feasible:
        accuracy = evaluate_architecture(supernet, np.asarray(arch), dataset)
        candidates.append({
            "arch": list(arch),
            "macs": int(supernet.macs(np.asarray(arch, "int32"))),
            "accuracy": accuracy,
            "widths": supernet.widths(np.asarray(arch))})
    best = max(candidates, key=lambda c: (c["accuracy"], -c["macs"]))
    return dict(best, candidates=candidates, shrunk=shrunk)


# -- Decoding ---------------------------------------------------------------

SHORTCUTS = Registry("shortcut")


@SHORTCUTS.register("paper")
def paper_shortcut(x, filters, strides, name):
    """The decoded nets' rule (spec 4.1): identity if the shape is kept;
    1x1 conv + BN if only the width changes; 2x2 average pool + 1x1 conv
    (no BN) at stride 2."""
    if strides > 1:
        x = keras.layers.AveragePooling2D(strides, name=f"{name}_pool")(x)
        return blocks.conv2d(x, filters, 1, name=f"{name}_conv")
    return blocks.projection_shortcut(x, filters, 1, name)


@SHORTCUTS.register("supernet")
def supernet_shortcut(x, filters, strides, name):
    """The supernet's branch: always a strided 1x1 conv + BN (spec 1.4)."""
    x = blocks.conv2d(x, filters, 1, strides, name=f"{name}_conv")
    return blocks.batch_norm(x, f"{name}_bn")


def _decoded_block(x, mid, out, strides, name, shortcut):
    residual = SHORTCUTS.get(shortcut)(x, out, strides, f"{name}_shortcut")
    y = blocks.conv2d(x, mid, 3, strides, name=f"{name}_conv1")
    y = blocks.batch_norm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = blocks.conv2d(y, out, 3, 1, name=f"{name}_conv2")
    y = blocks.batch_norm(y, f"{name}_bn2")
    y = keras.layers.Add(name=f"{name}_add")([y, residual])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def decode_resnet(widths, depths, input_shape, num_classes, stem="cifar",
                  shortcut="paper", name=None):
    """The plain ResNet of a width list `[stem, (mid, out) per block]`.

    Args:
        widths: `1 + 2 * sum(depths)` channel numbers.
        depths: basic blocks per stage; stride 2 opens every stage but the
            first.
        input_shape: `(H, W, channels)`.
        num_classes: logits.
        stem: `"cifar"` (3x3 conv) or `"imagenet"` (7x7/2 conv + 3x3/2
            max-pool), see `models.resnet.STEMS`.
        shortcut: `"paper"` (the reference decoders' rule) or
            `"supernet"` (1x1 conv + BN in every block, to inherit a
            supernet path's weights with `extract_path`).
        name: model name.
    """
    widths = [int(w) for w in widths]
    expected = 1 + 2 * sum(depths)
    if len(widths) != expected or min(widths) < 1:
        raise ValueError(
            f"widths must hold {expected} positive values ([stem, (mid, out)"
            f" per block] for blocks {tuple(depths)}). Received "
            f"{len(widths)}: {widths}.")
    inputs = keras.Input(input_shape, name="image")
    x = resnet.STEMS.get(stem)(inputs, name="stem", filters=widths[0])
    j = 1
    for stage, count in enumerate(depths):
        for index in range(count):
            x = _decoded_block(x, widths[j], widths[j + 1],
                               2 if stage and not index else 1,
                               f"stage{stage + 1}_block{index + 1}",
                               shortcut)
            j += 2
    outputs = blocks.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def decode(widths, input_shape=(32, 32, 3), num_classes=10,
           shortcut="paper", name=None):
    """The plain CIFAR ResNet of a searched width list (spec 4.1).

    Args:
        widths: `[stem, (mid, out) x blocks]`, 6n + 1 values (19 for
            ResNet-20, 55 for ResNet-56), e.g. `SEARCHED_WIDTHS[...]`.
        input_shape: `(H, W, channels)`.
        num_classes: logits.
        shortcut: `"paper"` (the reference decoder's rule) or
            `"supernet"` (the supernet's 1x1 conv + BN in every block, for
            inheriting a supernet path's weights with `extract_path`).

    Example:

    >>> model = decode(SEARCHED_WIDTHS["resnet20_20.6M"])
    >>> keras_compact.profiling.profile(model).params
    205138
    """
    widths = [int(w) for w in widths]
    if (len(widths) - 1) % 6 or len(widths) < 7 or min(widths) < 1:
        raise ValueError(
            f"widths must hold 6n + 1 positive values ([stem, (mid, out) "
            f"per block]; 19 for ResNet-20, 55 for ResNet-56). Received "
            f"{len(widths)}: {widths}.")
    per_stage = (len(widths) - 1) // 6
    return decode_resnet(widths, (per_stage,) * 3, input_shape, num_classes,
                         "cifar", shortcut,
                         name or f"aps_resnet{len(widths) + 1}")


def decode_resnet18(widths, input_shape=(224, 224, 3), num_classes=1000,
                    shortcut="paper", name="aps_resnet18"):
    """The reference's `ResNet18s_Decode` (spec 4.1): 17 widths.

    Example:

    >>> model = decode_resnet18(SEARCHED_WIDTHS["resnet18_1.83G"])
    >>> keras_compact.profiling.profile(model).params
    14109848
    """
    return decode_resnet(widths, (2, 2, 2, 2), input_shape, num_classes,
                         "imagenet", shortcut, name)


def decode_mobilenet_v2(widths, input_shape=(224, 224, 3), num_classes=1000,
                        shortcut="paper", dropout=0.0, name="aps_mobilenet_v2"):
    """The reference's `MobileNetV2_Decode` (spec 4.1): 52 widths.

    Layout: stem, block 1 `(dw, out)` (dw = stem), every other block
    `(pw, dw, out)` with pw = dw, then the last 1x1 conv; the stage
    structure is MobileNetV2's (blocks 1, 2, 3, 4, 3, 3, 1; strides 1, 2, 2,
    2, 1, 2, 1). The non-first blocks of a stage are residual (identity if
    the widths agree, else 1x1 conv + BN; `shortcut="supernet"`: always
    1x1 conv + BN, for `extract_path`). Convs N(0, 2 / fan_out), the
    classifier N(0, 0.01) after `dropout` (the reference trains with 0).

    Example:

    >>> model = decode_mobilenet_v2(SEARCHED_WIDTHS["mobilenet_v2_314M"])
    >>> keras_compact.profiling.profile(model).params
    4530402
    """
    widths = [int(w) for w in widths]
    if len(widths) != 52 or min(widths) < 1 or widths[1] != widths[0] or any(
            widths[j] != widths[j + 1] for j in range(3, 51, 3)):
        raise ValueError(
            "widths must hold 52 positive values: stem, block 1 (dw, out) "
            "with dw = stem, then (pw, dw, out) with pw = dw for blocks "
            f"2..17, then the last conv. Received {len(widths)}: {widths}.")
    initializer = keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal")

    def unit(x, filters, kernel, strides, name, activation, groups=1):
        return mobilenet.conv_bn_act(
            x, filters, kernel, strides, mobilenet.conv2d, name, activation,
            groups=groups, kernel_initializer=initializer)

    inputs = keras.Input(input_shape, name="image")
    x = unit(inputs, widths[0], 3, 2, "stem", "relu6")
    x = unit(x, widths[1], 3, 1, "block1_dw", "relu6", groups=widths[1])
    x = unit(x, widths[2], 1, 1, "block1_project", None)
    j, index = 3, 1
    for _, repeats, strides in MBV2_STAGES[1:]:
        for repeat in range(repeats):
            index += 1
            name = f"block{index}"
            hidden, out = widths[j], widths[j + 2]
            stride = strides if repeat == 0 else 1
            y = unit(x, hidden, 1, 1, f"{name}_expand", "relu6")
            y = unit(y, hidden, 3, stride, f"{name}_dw", "relu6",
                     groups=hidden)
            y = unit(y, out, 1, 1, f"{name}_project", None)
            if repeat:
                residual = SHORTCUTS.get(shortcut)(x, out, 1,
                                                   f"{name}_shortcut")
                y = keras.layers.Add(name=f"{name}_add")([y, residual])
            x, j = y, j + 3
    x = unit(x, widths[51], 1, 1, "last", "relu6")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, dtype="float32", name="classifier",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros")(x)
    return keras.Model(inputs, outputs, name=name)


def extract_path(supernet, arch):
    """The plain network of one supernet path with its weights copied in.

    Kernels are the projected `P^T W Q` of the path's pairs, the BNs get the
    pairs' running statistics (gamma 1, beta 0), the classifier the
    projected `kernel . Q_k`; in inference mode the result computes the
    same function as `supernet((x, arch), training=False)`.
    """
    return supernet.plain_path(arch)


def parse_widths(value):
    """Widths from a shipped name, a JSON file or a comma-separated list.

    A JSON file holds a list or a dict with "widths" (what the search
    writes).
    """
    if isinstance(value, (list, tuple)):
        return [int(w) for w in value]
    text = str(value).strip()
    if text in SEARCHED_WIDTHS:
        return list(SEARCHED_WIDTHS[text])
    if os.path.exists(text):
        with open(text) as f:
            data = json.load(f)
        return [int(w) for w in (data["widths"] if isinstance(data, dict)
                                 else data)]
    try:
        return [int(float(w)) for w in text.replace(";", ",").split(",")
                if w.strip()]
    except ValueError:
        raise ValueError(
            f"widths='{text}' is neither a shipped config ("
            f"{', '.join(SEARCHED_WIDTHS)}), an existing JSON file nor a "
            "comma-separated list of channel numbers.") from None


# -- Method -----------------------------------------------------------------

PHASES = ("search", "train", "both")


def _depth(arch):
    prefix = "resnet"
    if not arch.startswith(prefix) or not arch[len(prefix):].isdigit():
        raise ValueError(
            f"APS searches {', '.join(FAMILIES.names())} or CIFAR ResNets "
            f"(resnet20, resnet56, ...). Received: arch='{arch}'.")
    return int(arch[len(prefix):])


def _ints(text):
    return tuple(int(c) for c in str(text).replace(";", ",").split(",")
                 if c.strip())


@dataclasses.dataclass(frozen=True)
class Family:
    """How APS searches and decodes one kind of network.

    Attributes:
        supernet: `supernet(arch, config, input_shape, num_classes)`.
        decode: `decode(widths, input_shape, num_classes, shortcut)`.
        num_widths: `num_widths(arch)`, the length of a width list.
        budget: `budget(arch, input_shape)`, the default `max_macs`.
        reward_source: `"held_out"` (CIFAR) or `"train"` (ImageNet).
    """

    supernet: object
    decode: object
    num_widths: object
    budget: object
    reward_source: str


FAMILIES = Registry("APS architecture")


def _cifar_supernet(arch, config, input_shape, num_classes):
    return APSResNetCifar(
        _depth(arch), _ints(config.candidates) or (4, 8, 16, 32, 64),
        config.meta_width or None, num_classes, tuple(input_shape),
        config.overlap, config.projection_noise, name="supernet")


FAMILIES.register("resnet_cifar", Family(
    _cifar_supernet,
    lambda widths, shape, classes, shortcut: decode(widths, shape, classes,
                                                    shortcut),
    lambda arch: _depth(arch) - 1,
    lambda arch, shape: 0.5 * table_macs(standard_widths(_depth(arch)),
                                         shape),
    "held_out"))
FAMILIES.register("resnet18", Family(
    lambda arch, config, shape, classes: APSResNet(
        (2, 2, 2, 2), _ints(config.candidates) or (32, 48, 64, 80),
        config.meta_width or 128, 2, classes, tuple(shape), config.overlap,
        config.projection_noise, name="supernet"),
    lambda widths, shape, classes, shortcut: decode_resnet18(
        widths, shape, classes, shortcut),
    lambda arch: 17,
    lambda arch, shape: 1.9e9,  # scripts/search/..._resnet_ilsvrc.sh
    "train"))
FAMILIES.register("mobilenet_v2", Family(
    lambda arch, config, shape, classes: APSMobileNetV2(
        _ints(config.candidates) or (8, 12, 16, 20), config.meta_width or 32,
        classes, tuple(shape), config.overlap, config.projection_noise,
        name="supernet"),
    lambda widths, shape, classes, shortcut: decode_mobilenet_v2(
        widths, shape, classes, shortcut),
    lambda arch: 52,
    lambda arch, shape: 3.2e8,  # scripts/search/..._mbnetv2_ilsvrc.sh
    "train"))


def family(arch):
    """The `Family` of `arch`: "resnet18", "mobilenet_v2" or "resnet<6n+2>"
    (CIFAR)."""
    if arch in FAMILIES.names():
        return FAMILIES.get(arch)
    _depth(arch)  # fails with the list of valid names
    return FAMILIES.get("resnet_cifar")


def search_from_config(config, data, workdir, verbose=1):
    """Builds the supernet and controller from `config`, searches, selects.

    `data` needs `.train`, `.validation` (held out of train), `.input_shape`
    and `.num_classes`. Returns the selection dict of
    `select_architecture` plus the budget.
    """
    if data.validation is None:
        raise ValueError(
            "APS selects the final architecture (and on CIFAR rewards the "
            "controller) on data held out of the training set, never the "
            "test set: set validation_split > 0 (the CIFAR reference holds "
            "out 0.5).")
    kind = family(config.arch)
    source = config.get("reward_source") or kind.reward_source
    supernet = kind.supernet(config.arch, config, data.input_shape,
                             data.num_classes)
    max_macs = config.max_macs or kind.budget(config.arch, data.input_shape)
    model = ChannelSearchModel(
        supernet, max_macs, config.controller_hidden, config.entropy_coeff,
        config.baseline_decay, config.reward_alpha, config.reward_beta,
        config.orthogonal_weight, config.search_weight_decay,
        config.arch_weight_decay, source,
        config.get("projection_interval") or 1)
    cardinality = int(data.train.cardinality())
    # A streamed (endless) training set has no length: use train_size.
    steps = config.steps_per_epoch or (
        cardinality if cardinality > 0
        else data.train_size // config.batch_size)
    if steps <= 0:
        raise ValueError("The training set has unknown size: set "
                         "steps_per_epoch.")
    fixed_steps = bool(config.steps_per_epoch) or cardinality < 0
    boundaries = [int(e) * steps for e in config.search_decay_epochs]
    values = [config.search_lr * 0.1 ** k
              for k in range(len(boundaries) + 1)]
    weights_lr = (keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, values) if boundaries else config.search_lr)
    model.compile(
        keras.optimizers.SGD(weights_lr, momentum=0.9),
        keras.optimizers.SGD(config.projection_lr, momentum=0.9),
        keras.optimizers.Adam(config.arch_lr, beta_1=0.5, beta_2=0.999,
                              epsilon=1e-8))
    import tensorflow as tf  # tf.data: pair train batches with held-out

    train = data.train.repeat() if fixed_steps else data.train
    pairs = (train if source == "train" else
             tf.data.Dataset.zip((train, data.validation.repeat())))
    run_search(model, pairs, config.search_epochs,
               config.search_warmup_epochs,
               steps if fixed_steps else None, workdir, verbose)
    result = select_architecture(model, data.validation,
                                 config.num_test_archs, config.beam_width)
    result["max_macs"] = max_macs
    return result


@register("aps")
class APS(Method):
    """Searches channel numbers, then trains the decoded net from scratch.

    `--phase=search` runs the search and writes `aps_widths.json` (widths,
    table MACs, held-out accuracy of the path) and `aps_sharing_level.json`
    to the workdir; `--phase=train` trains `--widths` (a shipped name such
    as `resnet20_20.6M` or `resnet18_1.83G`, a JSON file or a list);
    `--phase=both` does both. `--arch` picks the family (`FAMILIES`):
    CIFAR ResNets (`resnet20`, `resnet56`, ...; reward on a held-out
    split), `resnet18` or `mobilenet_v2` (ImageNet supernets; reward on the
    training batch). The final architecture is always selected on data held
    out of the training set.
    """

    options = {
        "phase": ("both", "search | train | both"),
        "max_macs": (0.0, "FLOPs budget in table MACs (spec 6); 0: half of "
                          "the standard CIFAR ResNet's, ResNet-18 1.9e9, "
                          "MobileNetV2 3.2e8"),
        "widths": ("", "widths to train: shipped name, JSON file or list"),
        "candidates": ("", "CIFAR: widths of every layer (4,8,16,32,64); "
                           "ImageNet: stage-1 widths (32,48,64,80 / "
                           "8,12,16,20); empty: those"),
        "meta_width": (0, "meta width C (stage 1 on ImageNet); 0: the sum "
                          "of the candidates / 128 / 32"),
        "reward_source": ("", "held_out | train (empty: CIFAR held_out, "
                              "ImageNet train)"),
        "overlap": (1.0, "1: ordinal (strong) .. 0: independent sharing"),
        "projection_noise": (1e-3, "noise on the identity init of P, Q"),
        "shortcut": ("paper", "decoded shortcuts: paper | supernet"),
        "search_epochs": (600, "search epochs, warm-up included"),
        "search_warmup_epochs": (200, "uniform-sampling warm-up epochs"),
        "search_lr": (0.1, "supernet SGD learning rate"),
        "search_weight_decay": (2e-4, "coupled L2 of supernet weights"),
        "search_decay_epochs": ((300, 450), "x0.1 supernet lr at these"),
        "projection_lr": (1e-3, "SGD lr of P, Q after the warm-up"),
        "orthogonal_weight": (5e-3, "weight of the orthogonality loss"),
        "projection_interval": (1, "search steps per projection step "
                                   "(ImageNet reference: 10)"),
        "arch_lr": (1.6e-4, "controller Adam learning rate"),
        "arch_weight_decay": (1e-3, "controller coupled L2"),
        "entropy_coeff": (4e-3, "controller entropy bonus"),
        "baseline_decay": (0.99, "reward moving-average decay"),
        "reward_alpha": (0.0, "reward exponent of F/T within budget"),
        "reward_beta": (-0.1, "reward exponent of F/T over budget"),
        "controller_hidden": (100, "controller LSTM width"),
        "num_test_archs": (10, "policy samples evaluated at the end"),
        "beam_width": (0, "also evaluate the beam's top-k (0: off)"),
    }

    def prepare(self, context):
        config = context.config
        if config.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}. "
                             f"Received: '{config.phase}'.")
        if config.phase == "train":
            if not config.widths:
                raise ValueError("phase=train needs --widths (a shipped "
                                 f"name: {', '.join(SEARCHED_WIDTHS)}; a "
                                 "JSON file; or a list).")
            config.widths = ",".join(map(str, parse_widths(config.widths)))
            return True
        path = os.path.join(context.workdir, "aps_widths.json")
        if os.path.exists(path):  # the search finished before: resume
            with open(path) as f:
                result = json.load(f)
        else:
            if context.strategy.num_replicas_in_sync > 1:
                raise ValueError(
                    "The APS search runs on one device (its controller step "
                    "and reward baseline are not replicated). Run "
                    "--phase=search with --strategy=default, then "
                    "--phase=train with any strategy.")
            with context.strategy.scope():
                result = search_from_config(config, context.data,
                                            context.workdir,
                                            config.get("verbose", 1))
            model = family(config.arch).decode(
                result["widths"], context.data.input_shape,
                context.data.num_classes, config.shortcut)
            counts = profiling.profile(model)
            result.update(params=counts.params, profiled_macs=counts.macs)
            os.makedirs(context.workdir, exist_ok=True)
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
        config.widths = ",".join(map(str, result["widths"]))
        return config.phase == "both"

    def build_model(self, config, input_shape, num_classes):
        widths = parse_widths(config.widths) if config.widths else []
        if not widths:
            raise ValueError("No widths to train: run --phase=search or "
                             "both, or pass --widths.")
        kind = family(config.arch)
        if len(widths) != kind.num_widths(config.arch):
            owner = {17: "resnet18", 52: "mobilenet_v2"}.get(
                len(widths), f"resnet{len(widths) + 1}")
            raise ValueError(
                f"arch={config.arch} decodes {kind.num_widths(config.arch)} "
                f"widths, but {len(widths)} were given. Pass --arch={owner}"
                " (19 widths: resnet20, 55: resnet56, 17: resnet18, 52: "
                "mobilenet_v2).")
        return kind.decode(widths, input_shape, num_classes, config.shortcut)


def width_profile(widths, input_shape=(32, 32, 3), num_classes=10):
    """`{"table_macs", "macs", "params"}` of a decoded width list."""
    counts = profiling.profile(decode(widths, input_shape, num_classes))
    return {"table_macs": table_macs(widths, input_shape),
            "macs": counts.macs, "params": counts.params}


__all__ = ["APS", "APSMobileNetV2", "APSResNet", "APSResNetCifar",
           "ChannelController", "ChannelSearchModel", "FAMILIES",
           "SEARCHED_WIDTHS", "decode", "decode_mobilenet_v2",
           "decode_resnet", "decode_resnet18", "extract_path", "family",
           "macs_table", "mobilenet_v2_candidates", "reward", "table_macs"]
