"""In a clone, `configs` is also keras_compact.configs (the recipes).

`from configs import aps` and `--config=configs/aps.py` keep working from a
clone; the installed package has the recipes only in keras_compact.configs
(found by name: `--config=aps:smoke`).
"""

import os

__path__.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "keras_compact", "configs"))
