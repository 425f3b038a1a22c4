"""OD with ExpandNets students (keras_compact.methods.compose).

python -m trainers.cifar --method=od --config=od_expanded
python -m trainers.cifar --method=od --student_conv=expanded --expand=none

The OD recipe (configs/od.py) with `--student_conv=expanded`: every 3x3
conv of the students' basic blocks is trained as ExpandNets' Expand-CL
chain (1x1 -> 3x3 -> 1x1, rate `expand_rate`; CK needs k > 3); after
training the best student on the validation split is contracted by
ExpandNets' own `contract`, so the deployable is the plain ResNet
(`--arch`, e.g. ResNet-56: 855,770 params on 32x32x3). `--expand=none`
trains those plain students with the same recipe, OD's control row.
"""

from keras_compact.configs import common
from keras_compact.configs import od


def get_config(arg=None):
    config = od.get_config()
    config.student_conv = "expanded"
    return common.parse_arg(config, arg)
