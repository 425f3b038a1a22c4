"""X-Nets: expander-graph convolutions (Prabhu et al., ECCV 2018).

Reference: "Deep Expander Networks: Efficient Deep Networks from Graph
Theory", https://arxiv.org/abs/1711.08757. The model is trained with masked
expander layers (the paper's semantics). The deployable model computes the
same function with each expander layer in its fastest exact LiteRT form
(`layers.deployable_model`, rule `layers.expander.DEPLOY_RULE`); the log and
metrics.json (`expander_deploy_forms`) say which form each layer takes and
why.
"""

import inspect
import logging

from keras_compact import layers
from keras_compact import models
from keras_compact.errors import UsageError
from keras_compact.layers.expander import COUNTING_CONVENTION
from keras_compact.layers.expander import DEPLOY_FORMS
from keras_compact.layers.expander import DEPLOY_RULE
from keras_compact.layers.expander import expander_layers
from keras_compact.methods.base import Method
from keras_compact.methods.registry import register
from keras_compact.models import registry as model_registry

log = logging.getLogger("keras_compact")


@register("xnet")
class XNet(Method):
    """Trains an X-Net (`x_densenet_bc_40_24`, `x_vgg16`, ...) masked and
    deploys each expander layer in its fastest exact form.

    `--arch` is a backbone with expander layers: a DenseNet-BC row
    (`densenet_bc_40_24`, made sparse by `--expand_size`), `x_resnet18/34/
    50` and `x_mobilenet_v1_0.5` (ES, resp. G, from `--expand_size`) or
    `x_vgg16` (the paper's per-layer degrees; `--expand_size` does not
    apply).
    """

    options = {
        "expand_size": (2, "X-Nets compression factor ES: each expander "
                        "output channel sees in_channels // ES inputs"),
        "expander_impl": ("masked", "training form of the expander layers: "
                          "masked (the paper's semantics) or gather"),
        "expander_groups": (0, "0: channel-level expander graphs (the "
                            "paper); G: block expanders of G output blocks"),
        "expander_chunks": (0, "0: any input channels; C: block expanders "
                            "pick whole contiguous input chunks of C_in / C "
                            "(fast gather on CPU and LiteRT)"),
        "expander_deploy": ("auto", "deployable form of each expander "
                            "layer: auto (fastest exact form by the LiteRT "
                            "rule), masked or gather (all layers)"),
    }

    def __init__(self):
        self.deploy_report = {}

    def build_model(self, config, input_shape, num_classes):
        forms = config.get("expander_deploy", "auto")
        if forms != "auto" and forms not in DEPLOY_FORMS:
            raise UsageError(
                f"--expander_deploy={forms!r} is not a form; use auto, "
                f"{', '.join(DEPLOY_FORMS)}.")
        builder = model_registry.ARCHITECTURES.get(config.arch)
        parameters = inspect.signature(builder).parameters
        wanted = dict(expander_impl=config.expander_impl,
                      expander_groups=config.expander_groups or None,
                      expander_chunks=config.expander_chunks or None,
                      expander_seed=config.seed,
                      density=1 / config.expand_size)
        kwargs = {k: v for k, v in wanted.items() if k in parameters}
        model = models.build(config.arch, input_shape, num_classes, **kwargs)
        if not expander_layers(model):
            raise ValueError(
                f"Architecture '{config.arch}' has no expander layers. "
                f"X-Net archs: densenet_bc_40_{{24,36,48,60}} (sparse with "
                f"--expand_size), x_densenet_bc_40_*, x_vgg16, "
                f"x_resnet18/34/50, x_mobilenet_v1_0.5.")
        return model

    def deployable(self, model, context):
        """Each expander layer in its fastest exact form (or the one asked)."""
        forms = "auto" if context is None else context.config.get(
            "expander_deploy", "auto")
        deployed, report = layers.deployable_model(model, forms)
        log.info("xnet: deployable forms (%s); %s.", DEPLOY_RULE,
                 COUNTING_CONVENTION)
        for name, choice in report.items():
            log.info("xnet: %s deploys %s: %s", name, choice["form"],
                     choice["reason"])
        self.deploy_report = report
        return deployed

    def deployment_notes(self):
        """metrics.json entries: each expander layer's form and why."""
        counts = {}
        for choice in self.deploy_report.values():
            counts[choice["form"]] = counts.get(choice["form"], 0) + 1
        return {"expander_deploy_rule": DEPLOY_RULE,
                "expander_deploy_counts": counts,
                "expander_deploy_forms": self.deploy_report}
