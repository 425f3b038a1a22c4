"""APS channel-number search on CIFAR-10 (Wang et al., NeurIPS 2020).

Search ResNet-20 widths under 20.6M table MACs (about 50%), then train the
decoded net from scratch:

    python -m trainers.cifar --method=aps --arch=resnet20 --max_macs=20.6e6

Only the search (writes aps_widths.json and aps_sharing_level.json):

    python -m trainers.cifar --method=aps --arch=resnet20 --phase=search

Train the searched configurations shipped with the reference from scratch
(use the whole training set: no held-out split is needed):

    python -m trainers.cifar --method=aps --arch=resnet20 --phase=train \
        --widths=resnet20_20.6M --validation_split=0
    python -m trainers.cifar --method=aps --arch=resnet56 --phase=train \
        --widths=resnet56_60.3M --validation_split=0

ImageNet (ResNet-18, MobileNetV2) uses configs/imagenet.py with its `aps`
defaults: `python -m trainers.imagenet --method=aps --arch=resnet18
--max_macs=1.83e9 --data_dir=...` (docs/aps.md).

Expected (spec sections 4.3 and 6; the paper's accuracy table was not
available, so no accuracy is quoted here): resnet20_20.6M = 20.57M table
MACs (3x3 convs), 20.87M conv+fc MACs, 0.205M params; resnet56_60.3M =
60.31M / 60.82M / 0.558M; the standard ResNet-20 is 40.55M / 40.81M /
0.272M. Search recipe (scripts/search/start_search_resnet_cifar.sh): 600
epochs with 200 of uniform warm-up, SGD 0.1 wd 2e-4 /10 at 300 and 450,
candidates 4..64 (meta width 124), controller Adam 1.6e-4 (0.5, 0.999) wd
1e-3, entropy 4e-3, baseline 0.99, reward exponents (0, -0.1), projections
lr 1e-3 with orthogonality weight 5e-3, 25k/25k split (the reference's
search batch is 256; here the recipe's batch serves both phases). Train
recipe (scripts/train/start_train_resnet_cifar.sh): 300 epochs, SGD 0.1
Nesterov, wd 5e-4, cosine to 0, batch 128.
"""

from keras_compact.configs import common
from keras_compact.methods import aps


def get_config(arg=None):
    config = common.cifar_recipe("aps")
    config.epochs = 300
    config.nesterov = True
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.decay_epochs = ()
    config.validation_split = 0.5  # the reference's 25k/25k search split
    for name, (default, _) in aps.APS.options.items():
        config[name] = default
    config.max_macs = 2.05e7  # the search script's --max_flops
    if "smoke" in (arg or "").split(","):
        smoke(config)
    return common.parse_arg(config, arg)


def smoke(config):
    """A search of a few CPU steps on candidates 4, 8, 16 (spec 8.2)."""
    config.candidates = "4,8,16"
    config.max_macs = 9.5e6  # half of the all-16 ResNet-20's table MACs
    config.search_epochs = 2
    config.search_warmup_epochs = 1
    config.search_decay_epochs = ()
    config.projection_lr = 1e-2
    config.arch_lr = 3e-3
    config.num_test_archs = 2
    return config
