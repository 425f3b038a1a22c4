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
Search", NeurIPS 2020; code haolibai/APS-channel-search. The search step
matches the official one (benchmarks/aps_parity.py): the controller reads
the LSTM cell state, the reward charges the sampled widths. Fixed reference
bugs (spec section 7): the final architecture is chosen on the held-out
split (never the test set) and only among architectures within the budget,
and the orthogonality loss covers every stage.
"""

from keras_compact.methods.aps.controller import ChannelController
from keras_compact.methods.aps.decode import MBV2_STAGES
from keras_compact.methods.aps.decode import SEARCHED_WIDTHS
from keras_compact.methods.aps.decode import SHORTCUTS
from keras_compact.methods.aps.decode import decode
from keras_compact.methods.aps.decode import decode_mobilenet_v2
from keras_compact.methods.aps.decode import decode_resnet
from keras_compact.methods.aps.decode import decode_resnet18
from keras_compact.methods.aps.decode import extract_path
from keras_compact.methods.aps.decode import paper_shortcut
from keras_compact.methods.aps.decode import parse_widths
from keras_compact.methods.aps.decode import supernet_shortcut
from keras_compact.methods.aps.decode import width_profile
from keras_compact.methods.aps.flops import arch_macs
from keras_compact.methods.aps.flops import cifar_resolutions
from keras_compact.methods.aps.flops import macs_table
from keras_compact.methods.aps.flops import standard_widths
from keras_compact.methods.aps.flops import table_macs
from keras_compact.methods.aps.method import APS
from keras_compact.methods.aps.method import FAMILIES
from keras_compact.methods.aps.method import PHASES
from keras_compact.methods.aps.method import Family
from keras_compact.methods.aps.method import build_search
from keras_compact.methods.aps.method import family
from keras_compact.methods.aps.method import search_from_config
from keras_compact.methods.aps.search import REWARD_SOURCES
from keras_compact.methods.aps.search import ChannelSearchModel
from keras_compact.methods.aps.search import SearchDiverged
from keras_compact.methods.aps.search import SearchLog
from keras_compact.methods.aps.search import evaluate_architecture
from keras_compact.methods.aps.search import reward
from keras_compact.methods.aps.search import run_search
from keras_compact.methods.aps.search import select_architecture
from keras_compact.methods.aps.search import shrink_to_budget
from keras_compact.methods.aps.supernets import MBV2_MULTIPLIERS
from keras_compact.methods.aps.supernets import APSMobileNetV2
from keras_compact.methods.aps.supernets import APSResNet
from keras_compact.methods.aps.supernets import APSResNetCifar
from keras_compact.methods.aps.supernets import conv_groups
from keras_compact.methods.aps.supernets import mobilenet_v2_candidates

__all__ = [
    "APS",
    "APSMobileNetV2",
    "APSResNet",
    "APSResNetCifar",
    "ChannelController",
    "ChannelSearchModel",
    "FAMILIES",
    "Family",
    "MBV2_MULTIPLIERS",
    "MBV2_STAGES",
    "PHASES",
    "REWARD_SOURCES",
    "SEARCHED_WIDTHS",
    "SHORTCUTS",
    "SearchDiverged",
    "SearchLog",
    "arch_macs",
    "build_search",
    "cifar_resolutions",
    "conv_groups",
    "decode",
    "decode_mobilenet_v2",
    "decode_resnet",
    "decode_resnet18",
    "evaluate_architecture",
    "extract_path",
    "family",
    "macs_table",
    "mobilenet_v2_candidates",
    "paper_shortcut",
    "parse_widths",
    "reward",
    "run_search",
    "search_from_config",
    "select_architecture",
    "shrink_to_budget",
    "standard_widths",
    "supernet_shortcut",
    "table_macs",
    "width_profile",
]
