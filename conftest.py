"""Doctest setup for `--doctest-modules` over the library (keras_compact/).

Examples see `keras`, `np` and `keras_compact` without importing them. The
command-line modules define absl flags at import, so importing them all in
one process would define some flags twice; they hold no examples.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

collect_ignore = ["keras_compact/tools", "keras_compact/trainers"]


@pytest.fixture(autouse=True)
def _doctest_globals(doctest_namespace):
    import keras
    import numpy as np

    import keras_compact

    doctest_namespace.update(keras=keras, np=np, keras_compact=keras_compact)
    keras.utils.set_random_seed(0)
