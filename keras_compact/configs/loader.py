"""Finds and loads a recipe: by name (`xnet:vgg`) or from a file.

The packaged recipes are the modules of `keras_compact.configs` that have a
`get_config(arg)` (`names()`); they are found wherever the package is
installed. A file `path.py[:arg]` is any other recipe of that form.

Example:

>>> from keras_compact.configs import loader
>>> loader.load("xnet", "xnet:vgg").arch
'x_vgg16'
"""

import importlib
import importlib.util
import os
import pkgutil

from keras_compact import methods
from keras_compact.configs import common
from keras_compact.errors import UsageError

_PACKAGE = "keras_compact.configs"
_HELPERS = {"common", "loader"}  # modules of the package that are no recipe


def names():
    """The packaged recipes, e.g. `["aps", "baseline", ..., "xnet"]`."""
    folder = os.path.dirname(os.path.abspath(__file__))
    return sorted(m.name for m in pkgutil.iter_modules([folder])
                  if m.name not in _HELPERS)


def load(method, config="", arg=""):
    """Returns the ConfigDict of `config` (or the method's recipe).

    Args:
        method: a registered method; its recipe is the packaged one of the
            same name unless `config` is given.
        config: `NAME[:ARG]` (a packaged recipe, see `names()`) or
            `path.py[:ARG]` (a recipe file).
        arg: more of the recipe argument, e.g. `"smoke"` or `"arch=x"`.
    """
    methods.get(method)  # fails listing the valid methods
    spec, _, config_arg = config.partition(":")
    module = _module(spec) if spec else _packaged(
        method, f"No packaged recipe for --method={method}")
    config = module.get_config(",".join(filter(None, (config_arg, arg))))
    if config.method != method:
        common.set_field(config, "method", method)
    return config


def _module(spec):
    if not spec.endswith(".py"):
        return _packaged(spec, f"Unknown recipe --config={spec}")
    if os.path.isfile(spec):
        module_spec = importlib.util.spec_from_file_location("recipe", spec)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    folder, name = os.path.split(spec[:-len(".py")])
    if os.path.basename(folder) == "configs" and name in names():
        return _packaged(name, "")  # the clone's old configs/NAME.py
    raise UsageError(f"--config file {spec} does not exist; give a recipe "
                     f"file or a packaged recipe: {', '.join(names())}.")


def _packaged(name, failure):
    if name not in names():
        raise UsageError(f"{failure}; packaged recipes: {', '.join(names())}"
                         "; or pass --config=FILE.py[:ARG].")
    return importlib.import_module(f"{_PACKAGE}.{name}")
