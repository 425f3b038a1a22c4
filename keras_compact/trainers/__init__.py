"""The CIFAR and ImageNet trainers (absl flags); they need TensorFlow."""

from keras_compact import needs_tensorflow
