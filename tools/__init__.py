"""In a clone, `tools` is also keras_compact.tools (the shipped tools).

`python -m tools.profile` keeps working from a clone; the installed package
has the shipped tools as keras_compact.tools and `keras-compact-<tool>`
console scripts. What is not shipped (install.sh, developer tools) lives
here as files. configs/ and trainers/ use `packaged_alias` the same way.
"""

import importlib
import os


def packaged_alias(name, init_file):
    """`(__path__, __getattr__)` of a repo package that is keras_compact's.

    The path adds `keras_compact/<name>` (for `python -m name.module`); the
    `__getattr__` makes `from name import module` return keras_compact's
    module itself, not a second copy whose classes `isinstance` would not
    recognise.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(init_file)))
    packaged = f"keras_compact.{name}"

    def getattr_(attribute):
        try:
            return importlib.import_module(f"{packaged}.{attribute}")
        except ModuleNotFoundError as error:
            if error.name != f"{packaged}.{attribute}":
                raise
            raise AttributeError(attribute) from None

    return [os.path.dirname(os.path.abspath(init_file)),
            os.path.join(root, "keras_compact", name)], getattr_


__path__, __getattr__ = packaged_alias(__name__, __file__)
