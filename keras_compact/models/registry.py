"""The architecture registry: `models.build("resnet20", ...)`."""

from keras_compact.registry import Registry

ARCHITECTURES = Registry("arch")
register = ARCHITECTURES.register


def build(arch, input_shape, num_classes, **kwargs):
    """Builds the registered architecture `arch`.

    Args:
        arch: a registered arch, e.g. `"resnet20"`; `names()` lists them.
        input_shape: `(height, width, channels)` of one image.
        num_classes: size of the classifier output (logits).
        **kwargs: forwarded to the builder, e.g. `block=` for the ResNets.

    Example:

    >>> model = keras_compact.models.build("resnet20", (32, 32, 3), 10)
    """
    return ARCHITECTURES.get(arch)(
        input_shape=input_shape, num_classes=num_classes, **kwargs
    )


def names():
    return ARCHITECTURES.names()
