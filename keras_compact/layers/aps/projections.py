"""Affine parameter sharing: projection init, packing, orthogonality.

The P matrices of all output candidates that share input candidate i are
the columns of one packed `[C_out, sum(c)]` matrix `P[i]` (the reference's
orthogonality P-group), and the Q matrices of output candidate o are the
columns of `Q[o]` (its Q-group), spec sections 1.2 and 3.2.

Reference: J. Wang, H. Bai, J. Wu, X. Shi, J. Huang, I. King, M. Lyu,
J. Cheng, "Revisiting Parameter Sharing for Automatic Neural Channel Number
Search", NeurIPS 2020.
"""

import math

import keras
import numpy as np
from keras import ops


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
        # In the packed matrix's dtype: the compute dtype under a mixed
        # precision policy, where the variables are cast in `call`.
        mask = ops.take(ops.convert_to_tensor(self.mask, packed.dtype), k,
                        axis=0)
        return ops.take(packed, index, axis=-1) * mask
