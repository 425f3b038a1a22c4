"""SlimConv: train an Sc-ResNet whose 3x3 convs are SlimConv2D."""

from keras_compact import models
from keras_compact.errors import UsageError
from keras_compact.layers.slim_conv import fold_factor
from keras_compact.methods.base import Method
from keras_compact.methods.registry import register
from keras_compact.models import sc_resnet


@register("slimconv")
class SlimConv(Method):
    """Builds `config.arch` (an Sc arch) with SlimConv's `k = slim_k`.

    SlimConv changes only the architecture: the model trains with the plain
    recipe and is its own deployable form (no transform after training).
    The uncompressed baselines (`resnet20`, `resnet50_cifar`, ...) train
    with `--method=baseline`.

    Reference: Qiu et al., "SlimConv: Reducing Channel Redundancy in
    Convolutional Neural Networks by Features Recombining", IEEE TIP 2021,
    https://arxiv.org/abs/2003.07469.
    """

    options = {
        "slim_k": ("4/3", "SlimConv compression k = C_in / C_out = 2n/3: "
                          "4/3, 2, 8/3, 10/3, ... (a fraction string)."),
    }

    archs = sc_resnet.SC_ARCHS
    arch_kind = "an Sc arch"
    arch_hint = " Train the uncompressed baseline with --method=baseline."

    def check(self, config):
        super().check(config)
        try:
            fold_factor(config.slim_k)
        except ValueError as error:
            raise UsageError(f"--slim_k: {error}") from None

    def build_model(self, config, input_shape, num_classes):
        self.check(config)
        return models.build(config.arch, input_shape, num_classes,
                            k=config.slim_k)
