"""OD with X-Net expander students (keras_compact.methods.compose).

python -m trainers.cifar --method=od --config=od_expander
python -m trainers.cifar --method=od --student_conv=expander --expand_size=4

The OD recipe (configs/od.py) with `--student_conv=expander`: every 3x3
conv of the students' basic blocks is an `ExpanderConv2D` (each output
channel sees `in / expand_size` inputs, graphs seeded by `--seed` and the
layer name, so all students share them); the best student goes through
X-Nets' deployable transform (`--expander_deploy`, fastest exact LiteRT
form per layer).
"""

from keras_compact.configs import common
from keras_compact.configs import od


def get_config(arg=None):
    config = od.get_config()
    config.student_conv = "expander"
    return common.parse_arg(config, arg)
