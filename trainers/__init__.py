"""In a clone, `trainers` is also keras_compact.trainers.

`python -m trainers.cifar` keeps working from a clone; the installed package
has the trainers as keras_compact.trainers and the console scripts
keras-compact-cifar and keras-compact-imagenet.
"""

import os

__path__.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "keras_compact", "trainers"))
