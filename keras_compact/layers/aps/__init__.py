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

from keras_compact.layers.aps.blocks import APSBasicBlock
from keras_compact.layers.aps.blocks import APSInvertedResidual
from keras_compact.layers.aps.blocks import APSShortcut
from keras_compact.layers.aps.candidate_norm import CandidateBatchNorm
from keras_compact.layers.aps.conv import APSConv2D
from keras_compact.layers.aps.conv import APSDense
from keras_compact.layers.aps.conv import APSDepthwiseConv2D
from keras_compact.layers.aps.projections import candidate_offsets
from keras_compact.layers.aps.projections import normalize_columns
from keras_compact.layers.aps.projections import offdiagonal_l1
from keras_compact.layers.aps.projections import sharing_level
