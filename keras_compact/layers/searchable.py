"""The former home of the APS layers, now `keras_compact.layers.aps`."""

from keras_compact.layers.aps import APSBasicBlock
from keras_compact.layers.aps import APSConv2D
from keras_compact.layers.aps import APSDense
from keras_compact.layers.aps import APSDepthwiseConv2D
from keras_compact.layers.aps import APSInvertedResidual
from keras_compact.layers.aps import APSShortcut
from keras_compact.layers.aps import CandidateBatchNorm
from keras_compact.layers.aps import candidate_offsets
from keras_compact.layers.aps import normalize_columns
from keras_compact.layers.aps import offdiagonal_l1
from keras_compact.layers.aps import sharing_level

__all__ = [
    "APSBasicBlock",
    "APSConv2D",
    "APSDense",
    "APSDepthwiseConv2D",
    "APSInvertedResidual",
    "APSShortcut",
    "CandidateBatchNorm",
    "candidate_offsets",
    "normalize_columns",
    "offdiagonal_l1",
    "sharing_level",
]
