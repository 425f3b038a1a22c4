"""Cheap convolutions + online distillation (Xie et al., arXiv 1909.13063).

python -m trainers.cifar --method=od --arch=resnet56 --block=shift --students=4

The official code's recipe (EthanZhangYC/OD-cheap-convolution): 4 ResNet-56
students of the chosen cheap block, T = 4, SGD 0.1 momentum 0.9 with coupled
weight decay 2e-4 on every parameter, batch 128, 300 epochs, x0.1 at epochs
150 and 225, pad-4 crop + flip. The best student is picked on a validation
split held out of the training set (10% here; the reference picked it on
the test set). Sizes of one ResNet-56 student (params / MACs, 32x32x3):
shift 102,106 / 15,385,216; dw 119,818 / 20,472,448 (the repo's formula
says 20,140,672); group g=4 311,194 / 50,774,656. The paper's accuracy
tables could not be retrieved (see specs/od_cheap.md section 4); its
abstract claims that OD students beat the same cheap nets trained alone.
`group_num` defaults to 4: the repo's default 1 is a dense 3x3 conv and the
paper's value is unknown.


`--student_conv=slimconv|expander|expanded` builds the students from
another method's layer (keras_compact.methods.compose; recipes od_slimconv,
od_expander, od_expanded).
"""

from keras_compact.configs import common
from keras_compact.methods import compose


def get_config(arg=None):
    config = common.cifar_recipe("od", arch="resnet56")
    config.epochs = 300
    config.decay_epochs = (150, 225)
    config.weight_decay = 2e-4
    config.validation_split = 0.1
    add_od_fields(config)
    return common.parse_arg(config, arg)


def add_od_fields(config):
    """The OD options, and the fields every `--student_conv` reads."""
    config.block = "shift"
    config.student_conv = ""  # "": --block
    config.students = 4
    config.group_num = 4
    config.temperature = 4.0
    for name, default in compose.student_options().items():
        config[name] = default
    return config
