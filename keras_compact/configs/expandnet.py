"""ExpandNets on CIFAR (Guo, Alvarez, Salzmann, NeurIPS 2020, Table 1).

python -m trainers.cifar --method=expandnet --arch=smallnet7 --expand=ck+fc
python -m trainers.cifar --method=expandnet --arch=smallnet3 --expand=cl+fc
python -m trainers.cifar --method=expandnet --arch=smallnet7 --expand=none
python -m trainers.cifar --method=expandnet --teacher=runs/teacher/model.keras

Recipe of the reference code (exp_cifar): SGD lr 0.01, momentum 0.9, no
weight decay, batch 128, 150 epochs, lr /10 at epochs 50 and 100, pad-4
crop + flip, expansion rate r = 4. `--expand=none` trains the compact
SmallNet with this same recipe (the tables' SmallNet row). The trained
model is contracted at the end; the reported accuracy is the contracted
(compact) model's.

Expected CIFAR-10 top-1 (mean of 5 seeds, best epoch on test as in the
reference): SmallNet-7x7 78.63, FC 78.64, CL 78.47, CL+FC 79.11, CK 80.27,
CK+FC 80.31; SmallNet-3x3 73.32, FC 73.78, CL 73.96, CL+FC 74.45.
CIFAR-100: SmallNet-7x7 46.63, CK 48.55, CK+FC 48.62; 3x3 40.40, CL+FC
41.12. ImageNet (--arch=mobilenet_v1|mobilenet_v2 --expand=cl, its own
recipe): MobileNet 66.48 -> 69.40, MobileNetV2 63.75 -> 65.62.
"""

from keras_compact.configs import common


def get_config(arg=None):
    config = common.cifar_recipe("expandnet", arch="smallnet7")
    config.epochs = 150
    config.lr = 0.01
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.decay_epochs = (50, 100)
    config.decay_rate = 0.1
    config.expand = "ck+fc"
    config.expand_rate = 4.0
    return common.parse_arg(config, arg)
