"""OD with SlimConv students (keras_compact.methods.compose).

python -m trainers.cifar --method=od --config=od_slimconv
python -m trainers.cifar --method=od --student_conv=slimconv --slim_k=2

The OD recipe (configs/od.py) with `--student_conv=slimconv`: every
student is an Sc-ResNet (`--arch`'s depth, SlimConv2D + ReLU as the first
3x3 unit of each basic block, k = `slim_k`), trained with the online
teacher; the best student on the validation split is deployed as it is
(SlimConv has no transform). Sc-ResNet-56 at k = 4/3: no accuracy is
quoted (benchmarks/combined.md measures the Fashion-MNIST rows).
"""

from keras_compact.configs import common
from keras_compact.configs import od


def get_config(arg=None):
    config = od.get_config()
    config.student_conv = "slimconv"
    return common.parse_arg(config, arg)
