"""Doctest setup for `--doctest-modules` over the library (keras_compact/).

Examples see `keras`, `np` and `keras_compact` without importing them. The
command-line modules define absl flags at import, so importing them all in
one process would define some flags twice; they hold no examples. Examples
that build a whole network or read a dataset take seconds: they run in the
slow tier, and in CI's ci_slow tier (`-m ci_slow`, about 2 minutes), the
rest in the default tier.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

collect_ignore = ["keras_compact/tools", "keras_compact/trainers"]

# Examples measured at over 5 s each (2026-12-02, loaded 2-core machine),
# and those building a whole network in 3.5-14 s (2026-12-02 18:30 UTC,
# load ~11 on 2 cores).
SLOW_EXAMPLES = {
    "keras_compact.data.registry.load",
    "keras_compact.export.to_litert",
    "keras_compact.methods.aps.decode.decode",
    "keras_compact.methods.aps.decode.decode_mobilenet_v2",
    "keras_compact.methods.aps.decode.decode_resnet18",
    "keras_compact.methods.aps.search.ChannelSearchModel",
    "keras_compact.methods.aps.search.ChannelSearchModel.controller_update",
    "keras_compact.methods.aps.supernets.APSMobileNetV2",
    "keras_compact.methods.aps.supernets.APSResNet",
    "keras_compact.methods.aps.supernets.APSResNetCifar",
    "keras_compact.methods.expandnet.build_expanded",
    "keras_compact.methods.expandnet.contract",
    "keras_compact.models.densenet.densenet_bc_cifar",
    "keras_compact.models.mobilenet.mobilenet_v1",
    "keras_compact.models.mobilenet.mobilenet_v2",
    "keras_compact.models.registry.build",
    "keras_compact.models.resnet.resnet",
    "keras_compact.models.resnet_cifar.resnet_cifar",
    "keras_compact.models.sc_resnet.sc_resnet",
    "keras_compact.models.vgg.vgg16_cifar",
    "keras_compact.models.x_imagenet.x_mobilenet_v1",
    "keras_compact.models.x_imagenet.x_resnet",
    "keras_compact.profiling.profile",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in (
                SLOW_EXAMPLES):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.ci_slow)


@pytest.fixture(autouse=True)
def _doctest_globals(doctest_namespace):
    import keras
    import numpy as np

    import keras_compact

    doctest_namespace.update(keras=keras, np=np, keras_compact=keras_compact)
    keras.utils.set_random_seed(0)
