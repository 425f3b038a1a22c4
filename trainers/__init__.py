"""In a clone, `trainers` is also keras_compact.trainers.

`python -m trainers.cifar` keeps working from a clone; the installed package
has the trainers as keras_compact.trainers and the console scripts
keras-compact-cifar and keras-compact-imagenet.
"""

from tools import packaged_alias

__path__, __getattr__ = packaged_alias(__name__, __file__)
