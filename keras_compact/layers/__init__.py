"""Layers of the compaction techniques, usable in any Keras model."""

from keras_compact.layers.aps import APSBasicBlock
from keras_compact.layers.aps import APSConv2D
from keras_compact.layers.aps import APSDense
from keras_compact.layers.aps import APSDepthwiseConv2D
from keras_compact.layers.aps import APSInvertedResidual
from keras_compact.layers.aps import APSShortcut
from keras_compact.layers.aps import CandidateBatchNorm
from keras_compact.layers.batch_normalization import BatchNormalization
from keras_compact.layers.cheap import DepthwiseBlock
from keras_compact.layers.cheap import GroupBlock
from keras_compact.layers.cheap import Shift2D
from keras_compact.layers.cheap import ShiftBlock
from keras_compact.layers.expander import ExpanderConv2D
from keras_compact.layers.expander import ExpanderDense
from keras_compact.layers.expander import choose_deploy_form
from keras_compact.layers.expander import deployable_model
from keras_compact.layers.expander import expander_conv2d
from keras_compact.layers.expander import expander_conv_factory
from keras_compact.layers.expander import expander_mask
from keras_compact.layers.expander import gathered_model
from keras_compact.layers.expander import reference_mask
from keras_compact.layers.expansion import ExpandedConv2D
from keras_compact.layers.expansion import ExpandedDense
from keras_compact.layers.grouped_conv import GroupedConv2D
from keras_compact.layers.grouped_conv import kaiming_normal
from keras_compact.layers.slim_conv import SlimConv2D
