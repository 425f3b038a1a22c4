"""Backbones built from pluggable blocks, looked up by name."""

from keras_compact.models import blocks
from keras_compact.models import mobilenet
from keras_compact.models import resnet
from keras_compact.models import resnet_cifar
from keras_compact.models import sc_resnet
from keras_compact.models import smallnet
from keras_compact.models.registry import build
from keras_compact.models.registry import names
from keras_compact.models.registry import register
