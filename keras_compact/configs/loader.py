"""Finds and loads a recipe: `configs/<method>.py` or a given file."""

import importlib
import importlib.util
import os

from configs import common


def load(method, config_file="", arg=""):
    """Returns the ConfigDict of `config_file` (or the method's recipe).

    Args:
        method: a registered method; its recipe is `configs/<method>.py`.
        config_file: optional path of another recipe, `path.py[:arg]`.
        arg: the recipe argument, e.g. `"smoke"` or `"arch=resnet56"`.
    """
    if config_file:
        path, _, file_arg = config_file.partition(":")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--config file {path} does not exist.")
        spec = importlib.util.spec_from_file_location("recipe", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        arg = ",".join(filter(None, (file_arg, arg)))
    else:
        try:
            module = importlib.import_module(f"configs.{method}")
        except ModuleNotFoundError as error:
            raise ValueError(f"No recipe configs/{method}.py for method "
                             f"'{method}'; pass --config=FILE.") from error
    config = module.get_config(arg)
    if config.method != method:
        common.set_field(config, "method", method)
    return config
