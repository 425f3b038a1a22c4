"""The public layers follow Keras's layer conventions: dtype policies reach
every sublayer, Keras's argument names work, and names mean one thing."""

import inspect

import keras
import pytest

from keras_compact import layers
from tests import testing

# Every public layer class, with small arguments and an input shape.
PUBLIC_LAYERS = {
    "APSBasicBlock": ({"candidates": (4, 8)}, (2, 6, 6, 8)),
    "APSConv2D": ({"candidates_out": (4, 8), "candidates_in": (4, 8)},
                  (2, 6, 6, 8)),
    "APSDense": ({"units": 5, "candidates": (4, 8)}, (2, 8)),
    "APSDepthwiseConv2D": ({"candidates": (4, 8)}, (2, 6, 6, 8)),
    "APSInvertedResidual": ({"candidates_out": (4, 8),
                             "candidates_in": (4, 8), "expand_ratio": 2,
                             "residual": True}, (2, 6, 6, 8)),
    "APSShortcut": ({"candidates_out": (4, 8), "candidates_in": (4, 8)},
                    (2, 6, 6, 8)),
    "CandidateBatchNorm": ({"num_out": 2, "num_in": 2}, (2, 6, 6, 8)),
    "BatchNormalization": ({}, (2, 6, 6, 8)),
    "DepthwiseBlock": ({"filters": 8, "strides": 2}, (2, 6, 6, 4)),
    "GroupBlock": ({"filters": 8, "strides": 2, "groups": 2}, (2, 6, 6, 4)),
    "Shift2D": ({}, (2, 6, 6, 8)),
    "ShiftBlock": ({"filters": 8, "strides": 2}, (2, 6, 6, 4)),
    "ExpanderConv2D": ({"filters": 8, "kernel_size": 3, "degree": 2,
                        "seed": 0}, (2, 6, 6, 8)),
    "ExpanderConv2D-gather": ({"filters": 8, "kernel_size": 3, "degree": 2,
                               "seed": 0, "impl": "gather"}, (2, 6, 6, 8)),
    "ExpanderDense": ({"units": 8, "degree": 2, "seed": 0}, (2, 8)),
    "ExpanderDense-gather": ({"units": 8, "degree": 2, "seed": 0,
                              "impl": "gather"}, (2, 8)),
    "ExpandedConv2D": ({"filters": 8, "kernel_size": 3, "padding": "same"},
                       (2, 6, 6, 4)),
    "ExpandedDense": ({"units": 8}, (2, 4)),
    "GroupedConv2D": ({"filters": 8, "kernel_size": 3, "groups": 2},
                      (2, 6, 6, 4)),
    "SlimConv2D": ({"k": "4/3", "reduction": 8, "strides": 2},
                   (2, 6, 6, 16)),
}


def _layer_class(case):
    return getattr(layers, case.split("-")[0])


def test_every_public_layer_is_covered():
    public = {name for name, value in vars(layers).items()
              if inspect.isclass(value)
              and issubclass(value, keras.layers.Layer)}
    assert public == {case.split("-")[0] for case in PUBLIC_LAYERS}


@pytest.mark.parametrize("case", sorted(PUBLIC_LAYERS))
def test_every_sublayer_takes_the_per_layer_mixed_policy(case):
    kwargs, shape = PUBLIC_LAYERS[case]
    testing.run_precision_test(_layer_class(case), kwargs, shape)
