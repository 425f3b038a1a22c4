"""APS widths trained as OD students (`--method=aps --then=od`).

python -m trainers.cifar --method=aps --then=od --arch=resnet20
python -m trainers.cifar --method=aps --then=od --phase=train \
    --widths=resnet20_20.6M --students=4

APS's recipe (configs/aps.py: search, then 300 epochs of SGD Nesterov,
cosine) with OD's options (configs/od.py): instead of one net of the
searched widths, `--students` copies of it train together with OD's online
teacher, and the best one on the validation split (APS's held-out half)
is deployed: the plain decoded net (keras_compact.methods.compose).
"""

from keras_compact.configs import aps
from keras_compact.configs import common
from keras_compact.configs import od


def get_config(arg=None):
    config = aps.get_config()
    config.method = "aps_od"
    od.add_od_fields(config)
    if "smoke" in (arg or "").split(","):
        aps.smoke(config)
        config.students = 2
    return common.parse_arg(config, arg)
