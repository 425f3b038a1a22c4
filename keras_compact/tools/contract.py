"""Contracts a saved ExpandNet (`.keras`) into the compact model.

python -m tools.contract --input=runs/expandnet/model.keras \
    --output=runs/expandnet/compact.keras

Every `ExpandedConv2D` / `ExpandedDense` becomes the compact layer with the
multiplied-out weights; other weights are copied. The tool checks the two
models on random inputs and prints the params/MACs before and after.
"""

import os

import numpy as np
from absl import flags
from absl import logging

from keras_compact import cli
from keras_compact.errors import UsageError

_INPUT = flags.DEFINE_string("input", None, "expanded model (.keras)")
_OUTPUT = flags.DEFINE_string("output", None, "compact model (.keras)")
_CHECK_BATCH = flags.DEFINE_integer(
    "check_batch", 8, "random inputs for the equivalence check (0: none)")
_TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-5, "max relative error allowed by the check")


def contract_file(input_path, output_path, check_batch=8, tolerance=1e-5):
    """Loads, contracts, checks and saves; returns the relative error."""
    import keras

    from keras_compact import profiling
    from keras_compact.methods import expandnet

    expanded = keras.models.load_model(input_path, compile=False)
    compact = expandnet.contract(expanded)
    error = None
    if check_batch:
        shape = (check_batch, *expanded.input_shape[1:])
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        error = expandnet.max_relative_error(expanded, compact, x)
        if error > tolerance:
            raise ValueError(f"Contracted model differs from the expanded one"
                             f" by {error:.3g} (relative) > {tolerance}.")
    compact.save(output_path)
    before, after = profiling.profile(expanded), profiling.profile(compact)
    logging.info("expanded: %s params, %s MACs; compact: %s params, %s MACs;"
                 " max relative error %s", f"{before.params:,}",
                 f"{before.macs:,}", f"{after.params:,}", f"{after.macs:,}",
                 error)
    return error


def main(argv):
    del argv
    if not os.path.isfile(_INPUT.value):
        raise UsageError(f"--input={_INPUT.value} does not exist; give the "
                         "expanded model, e.g. <workdir>/model.keras.")
    contract_file(_INPUT.value, _OUTPUT.value, _CHECK_BATCH.value,
                  _TOLERANCE.value)


def run():
    """The `keras-compact-contract` console script."""
    flags.mark_flags_as_required(["input", "output"])
    cli.run(main)


if __name__ == "__main__":
    run()
