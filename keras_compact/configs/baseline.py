"""Baseline CIFAR ResNet (He et al., 2016, section 4.2).

python -m trainers.cifar --method=baseline --arch=resnet20 --dataset=cifar10

Expected: ResNet-20 91.25% / ResNet-56 93.03% CIFAR-10 top-1 (paper); 164
epochs, SGD 0.1 momentum 0.9, weight decay 1e-4, /10 at epochs 82 and 123.
"""

from keras_compact.configs import common


def get_config(arg=None):
    return common.parse_arg(common.cifar_recipe("baseline"), arg)
