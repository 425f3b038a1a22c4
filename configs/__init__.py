"""In a clone, `configs` is also keras_compact.configs (the recipes).

`from configs import aps` and `--config=configs/aps.py` keep working from a
clone; the installed package has the recipes only in keras_compact.configs
(found by name: `--config=aps:smoke`).
"""

from tools import packaged_alias

__path__, __getattr__ = packaged_alias(__name__, __file__)
