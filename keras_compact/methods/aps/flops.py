"""MACs lookup tables of the APS search (spec section 6)."""

import numpy as np
from keras import ops


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


def _blocks_per_stage(depth):
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 56, ...). "
                         f"Received: depth={depth}.")
    return (depth - 2) // 6


def _side(size, strides):
    return None if size is None else (size - 1) // strides + 1


def _conv_row(kernel, cands_out, cands_in, side, depthwise=False):
    """One `[n, n]` table row: MACs of a conv for every (o, i) pair."""
    c_out = np.asarray(cands_out, "int64")[:, None]
    c_in = 1 if depthwise else np.asarray(cands_in, "int64")[None, :]
    row = kernel * kernel * c_out * c_in * side * side
    return np.broadcast_to(row, (len(cands_out), len(cands_out))).copy()
