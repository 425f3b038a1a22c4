"""X-Nets (Prabhu et al., ECCV 2018): X-DenseNet-BC and X-VGG16 on CIFAR.

python -m trainers.cifar --method=xnet --arch=densenet_bc_40_24 \
    --expand_size=2 --dataset=cifar10

Recipe (reference logs): 300 epochs, batch 64, SGD Nesterov momentum 0.9,
lr 0.1 /10 at epochs 150 and 225, weight decay 1e-4 (coupled L2). The
deployable (evaluated, exported) model is the gathered form.
Expected, best-epoch test top-1 (the paper's protocol; last epoch is up to
~0.9% lower): X-DenseNet-BC-40-{24,36,48,60}-2 CIFAR-10 94.83 / 94.98 /
95.48 / 95.71, CIFAR-100 74.37 / 76.69 / 77.7 / 78.53, at 0.376M / 0.835M /
1.475M / 2.296M params and 157.9M / 354.2M / 628.8M / 981.6M MACs
(connections that exist; dense stem, transitions and classifier).

X-VGG16 (`get_config("vgg")`, arch x_vgg16; expand_size does not apply):
300 epochs, batch 128, lr 0.05 x0.5 every 30 epochs, weight decay 5e-4,
Nesterov. Expected 93.07% CIFAR-10 (dense VGG16-BN 94.00). The reference
floors the lr at 5e-4 (reached at epoch 210); a step schedule cannot floor,
so the halvings stop at epoch 180 (lr 7.8e-4 to the end).
"""

from keras_compact.configs import common


def get_config(arg=None):
    items = [a for a in (arg or "").split(",") if a]
    vgg = "vgg" in items
    config = common.cifar_recipe("xnet", "x_vgg16" if vgg else
                                 "densenet_bc_40_24")
    config.epochs = 300
    config.momentum = 0.9
    config.nesterov = True
    config.decay_rate = 0.1
    if vgg:
        config.batch_size = 128
        config.lr = 0.05
        config.weight_decay = 5e-4
        config.decay_epochs = (30, 60, 90, 120, 150, 180)
        config.decay_rate = 0.5
    else:
        config.batch_size = 64
        config.lr = 0.1
        config.weight_decay = 1e-4
        config.decay_epochs = (150, 225)
    config.expand_size = 2
    config.expander_impl = "masked"
    config.expander_groups = 0
    config.expander_chunks = 0
    return common.parse_arg(config, ",".join(a for a in items if a != "vgg"))
