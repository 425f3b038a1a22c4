"""Guards of the fast paths: no model takes Keras's slow grouped conv."""

import keras
import pytest

from configs import loader
from keras_compact import methods
from keras_compact import models

# Keras's Conv2D(groups > 1) runs through XLA on TF CPU, ~130x slower than
# layers.GroupedConv2D; nothing in the library may build it.
_SHAPES = ((32, 32, 3), (64, 64, 3), (224, 224, 3))
# APS builds the plain network of searched widths: use a shipped config.
_RECIPE_ARGS = {"aps": "widths=resnet20_20.6M",
                "aps_od": "widths=resnet20_20.6M,students=2"}


def _build(builder):
    errors = []
    for shape in _SHAPES:
        try:
            return builder(shape)
        except ValueError as error:  # an arch made for another input size
            errors.append(str(error))
    raise AssertionError(f"no input size fits: {errors}")


def _slow_grouped_convs(model):
    return [layer.name for layer in model._flatten_layers()
            if type(layer) is keras.layers.Conv2D and layer.groups > 1]


@pytest.mark.slow
@pytest.mark.ci_slow
@pytest.mark.parametrize("arch", models.names())
def test_registered_archs_use_the_fast_grouped_conv(arch):
    model = _build(lambda shape: models.build(arch, shape, 10))
    assert _slow_grouped_convs(model) == []


@pytest.mark.parametrize("name", methods.names())
def test_method_models_use_the_fast_grouped_conv(name):
    method = methods.get(name)
    config = loader.load(name, arg=_RECIPE_ARGS.get(name, ""))
    model = _build(lambda shape: method.build_model(config, shape, 10))
    assert _slow_grouped_convs(model) == []
