"""The uncompressed network, trained with the same recipe as the methods."""

from keras_compact.methods.base import Method
from keras_compact.methods.registry import register


@register("baseline")
class Baseline(Method):
    """Trains `config.arch` as it is; the reference row of every table."""
