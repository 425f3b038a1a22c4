"""The large-batch ImageNet recipe, for every registered method.

python -m trainers.imagenet --method=baseline --arch=resnet50 \
    --data_dir=gs://bucket/imagenet --strategy=mirrored --batch_size=1024
python -m trainers.imagenet --method=slimconv --arch=sc_resnet50 ...
python -m trainers.imagenet --method=expandnet --arch=mobilenet_v2 --expand=cl

`get_config("method=NAME,...")`; the method's own options (Method.options)
are added with their defaults and set like any field.

Recipe (Goyal et al., "Accurate, Large Minibatch SGD", arXiv:1706.02677,
and the torchvision reference the papers' code follows): SGD momentum 0.9,
learning rate 0.1 per 256 images scaled linearly with the global batch
(`lr = lr_per_256 * batch_size / 256` unless `--lr` is given), 5 warmup
epochs, then /10 at epochs 30, 60 and 80 of 90 (`--set=schedule=cosine` for
cosine decay), L2 1e-4 not applied to BN scales/offsets and biases, label
smoothing off (`--set=label_smoothing=0.1` turns it on), 224x224 crops.
Accelerators: `--mixed_precision=mixed_float16` on GPU, `mixed_bfloat16` on
TPU with `--steps_per_execution=100` (TPU wants long device loops).

Expected top-1 on ImageNet with this recipe (papers / torchvision):
ResNet-50 76.1%, ResNet-18 69.8%, MobileNetV2 71.9% (300 epochs, cosine).
Sc-ResNet-50 (k=4/3) 77.23%, ExpandNet MobileNetV2 (CL) 65.62% vs 63.75%
(its own shorter recipe); see configs/<method>.py for the papers' rows.
"""

from keras_compact import data
from keras_compact import methods
from keras_compact.configs import common

# Where a method needs another default arch than ResNet-50.
DEFAULTS = {
    "slimconv": {"arch": "sc_resnet50"},
    "expandnet": {"arch": "mobilenet_v2", "expand": "cl"},
    "xnet": {"arch": "x_resnet50"},
    # APS's ResNet-18 search (scripts/search/start_search_resnet_ilsvrc.sh):
    # 160 epochs, 80 of uniform warm-up, SGD 0.1 /10 at 80 and 120, wd
    # 2e-4, projection noise 1e-2, entropy 0.5, a projection step every 10
    # iterations, beam top 8; the reward is the training
    # batch's accuracy and the final architecture is selected on 1% of the
    # training files held out (never the official validation set).
    # Empty candidates / meta width: the arch's reference values (ResNet-18
    # 32,48,64,80 / 128; MobileNetV2 8,12,16,20 / 32).
    "aps": {"arch": "resnet18", "candidates": "", "meta_width": 0,
            "projection_noise": 1e-2,
            "validation_split": 0.01, "search_epochs": 160,
            "search_warmup_epochs": 80, "search_decay_epochs": (80, 120),
            "search_weight_decay": 2e-4, "entropy_coeff": 0.5,
            "beam_width": 8, "num_test_archs": 0, "projection_interval": 10},
}


# Where a method's smoke run needs more than fewer steps: APS searches a
# width-reduced ResNet-18 supernet (candidates 1/8 of the paper's) for one
# warm-up and one search epoch.
SMOKE = {
    "aps": {"candidates": "4,6,8,10", "meta_width": 16, "search_epochs": 2,
            "search_warmup_epochs": 1, "search_decay_epochs": (),
            "beam_width": 2, "validation_split": 0.25},
}


def imagenet_recipe(method):
    """The ImageNet ConfigDict of `method` (fields as `common.cifar_recipe`)."""
    config = common.cifar_recipe(method, arch="resnet50")
    for name, (default, _) in methods.get(method).options.items():
        config[name] = default
    config.dataset = "imagenet"
    config.workdir = f"runs/imagenet_{method}"
    config.image_size = 224
    config.num_classes = 1000
    config.train_size = data.imagenet.TRAIN_SIZE  # 0: count the records
    config.first_label = -1  # -1: the layout's (TFDS 0, train-*-of-* 1)
    config.shuffle_buffer = 10_000  # decoded uint8 images (~1.5 GB)
    config.augment = True  # random-resized-crop + flip (always, here)

    config.batch_size = 1024
    config.lr_per_256 = 0.1
    config.lr = config.get_ref("lr_per_256") * config.get_ref(
        "batch_size") / 256
    config.epochs = 90
    config.schedule = "step"
    config.decay_epochs = (30, 60, 80)
    config.decay_rate = 0.1
    config.warmup_epochs = 5
    config.weight_decay = 1e-4
    config.decay_bn_and_bias = False
    config.label_smoothing = 0.0
    config.steps_per_execution = 1
    config.export = "saved_model,tflite"
    config.update(DEFAULTS.get(method, {}))
    return config


def smoke(config):
    """A few CPU steps at 64x64 with ResNet-18 (needs `data_dir`)."""
    common.smoke(config)
    config.train_subset = 0
    config.train_size = 0
    config.image_size = 64
    config.shuffle_buffer = 256
    config.warmup_epochs = 1
    config.export = ""
    if config.arch == "resnet50":
        config.arch = "resnet18"
    config.update(SMOKE.get(config.method, {}))
    return config


def get_config(arg=None):
    """`arg`: "method=NAME" (default baseline), "smoke", "key=value", ..."""
    items = [s for s in (arg or "").split(",") if s]
    method = "baseline"
    for item in items:
        if item.startswith("method="):
            method = item.partition("=")[2]
    config = imagenet_recipe(method)
    rest = [s for s in items if not s.startswith("method=")]
    if "smoke" in rest:
        smoke(config)
        rest.remove("smoke")
    return common.parse_arg(config, ",".join(rest))
