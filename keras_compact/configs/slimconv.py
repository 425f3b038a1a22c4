"""SlimConv (Qiu et al., IEEE TIP 2021): Sc-ResNets on CIFAR.

python -m trainers.cifar --method=slimconv                  # Sc-ResNet-20
python -m trainers.cifar --method=slimconv --slim_k=8/3
python -m trainers.cifar --method=slimconv --dataset=cifar100 \
    --arch=sc_resnet50_cifar                                # paper's figure
python -m trainers.cifar --method=baseline --dataset=cifar100 \
    --arch=resnet50_cifar                                   # its baseline

Expected (paper, CIFAR-100 compression figure, ResNet-50 with SlimConv,
digitised): baseline 77.13% top-1; k=4/3 78.50% (37% fewer params), k=2
77.61% (51%), k=8/3 78.08% (57%). ImageNet (README, 224x224): Sc-ResNet-50
k=4/3 22.77% top-1 error, 16.76 M params, 2.65 G MACs; k=8/3 24.48%, 12.10 M,
1.88 G; Sc-ResNeXt-101 32x3d k=2 21.18%, 23.70 M, 4.58 G.

The paper's training recipe is not published (spec section 4), so this uses
He et al.'s CIFAR recipe (164 epochs, SGD 0.1, /10 at epochs 82 and 123,
weight decay 1e-4), the same as configs/baseline.py, so Sc-nets and
baselines compare at equal recipe. The default arch is the basic-block
Sc-ResNet-20 (136,226 params vs ResNet-20's 272,474 at k=4/3), cheap enough
for CPU; the paper's CIFAR network is `sc_resnet50_cifar`.
"""

from keras_compact.configs import common


def get_config(arg=None):
    config = common.cifar_recipe("slimconv", arch="sc_resnet20")
    config.slim_k = "4/3"  # the reference code's default
    return common.parse_arg(config, arg)
