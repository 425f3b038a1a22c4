"""Every public layer in one small configuration, for the backend tests.

Each case is (id, class name in keras_compact.layers, constructor kwargs,
input shape, depth): depth counts the chained reductions (conv, matmul,
batch norm) from input to output, for the cross-backend tolerance.
"""

CASES = [
    ("batch_norm", "BatchNormalization", {}, (2, 4, 4, 3), 1),
    ("grouped_conv", "GroupedConv2D",
     {"filters": 8, "kernel_size": 3, "padding": "same", "groups": 4},
     (2, 6, 6, 8), 1),
    ("shift", "Shift2D", {}, (2, 6, 6, 12), 0),
    ("shift_block", "ShiftBlock", {"filters": 16, "strides": 2},
     (2, 8, 8, 8), 4),
    ("depthwise_block", "DepthwiseBlock", {"filters": 16, "strides": 2},
     (2, 8, 8, 8), 4),
    ("group_block", "GroupBlock", {"filters": 16, "strides": 2, "groups": 4},
     (2, 8, 8, 8), 4),
    ("expander_conv_masked", "ExpanderConv2D",
     {"filters": 16, "kernel_size": 3, "strides": 2, "density": 1 / 4,
      "seed": 1, "impl": "masked"}, (2, 8, 8, 8), 1),
    ("expander_conv_gather", "ExpanderConv2D",
     {"filters": 16, "kernel_size": 3, "strides": 2, "density": 1 / 4,
      "seed": 1, "impl": "gather"}, (2, 8, 8, 8), 1),
    ("expander_dense_masked", "ExpanderDense",
     {"units": 12, "degree": 4, "seed": 1, "impl": "masked"}, (3, 20), 1),
    ("expander_dense_gather", "ExpanderDense",
     {"units": 12, "degree": 4, "seed": 1, "impl": "gather"}, (3, 20), 1),
    ("expanded_conv", "ExpandedConv2D",
     {"filters": 6, "kernel_size": 5, "strides": 2, "padding": "same",
      "strategy": "ck", "expansion_rate": 2}, (2, 8, 8, 3), 3),
    ("expanded_dense", "ExpandedDense",
     {"units": 6, "hidden_units": (12, 10)}, (2, 4), 3),
    ("slim_conv", "SlimConv2D", {"k": "4/3", "strides": 2},
     (2, 8, 8, 64), 6),
    ("slim_conv_groups", "SlimConv2D",
     {"k": "2", "groups": 32, "bottom_groups": 16}, (2, 5, 5, 96), 6),
    ("aps_conv", "APSConv2D",
     {"candidates_out": (4, 8), "candidates_in": (4, 8)}, (2, 8, 8, 8), 1),
    ("aps_depthwise", "APSDepthwiseConv2D",
     {"candidates": (4, 8), "strides": 2}, (2, 8, 8, 8), 1),
    ("candidate_bn", "CandidateBatchNorm", {"num_out": 2, "num_in": 3},
     (2, 4, 4, 8), 1),
    ("aps_shortcut", "APSShortcut",
     {"candidates_out": (4, 8), "candidates_in": (2, 4), "strides": 2},
     (2, 8, 8, 4), 2),
    ("aps_basic_block", "APSBasicBlock", {"candidates": (4, 8)},
     (2, 8, 8, 8), 6),
    ("aps_inverted_residual", "APSInvertedResidual",
     {"candidates_out": (4, 8), "candidates_in": (4, 8), "expand_ratio": 3,
      "residual": True}, (2, 8, 8, 8), 6),
    ("aps_dense", "APSDense", {"units": 10, "candidates": (4, 8)}, (2, 8), 1),
]

IDS = [case[0] for case in CASES]


def build_model(case):
    """A functional model around the case's layer (batch dim left free)."""
    import keras

    from keras_compact import layers

    _, name, kwargs, shape, _ = case
    inputs = keras.Input(shape[1:])
    outputs = getattr(layers, name)(**kwargs)(inputs)
    return keras.Model(inputs, outputs, name=case[0])


def inputs_for(case):
    import numpy as np

    shape = case[3]
    return np.random.default_rng(7).uniform(-1, 1, shape).astype("float32")


def tolerance(case, expected):
    """Bound on |backend A - backend B| for the same weights and inputs.

    Each backend's float32 dot product of length n is within n*u*sum|ab|
    of the exact one (u = 2**-24), so two backends differ by at most twice
    that per reduction; the chain of `depth` reductions (Lipschitz ~1 at
    these initialisations) adds up. n = 1024 bounds every reduction of the
    cases (the largest, SlimConv's 3x3 over 96 channels, is 864) and
    max(1, max|y|) stands for sum|ab|. A wrong op or weight gives errors of
    order max|y|, far above this (about 1e-4 at depth 6).
    """
    import numpy as np

    depth = max(case[4], 1)
    scale = max(1.0, float(np.max(np.abs(expected))))
    return 2 * depth * 1024 * 2.0**-24 * scale
