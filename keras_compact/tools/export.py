"""Exports a saved `.keras` model to SavedModel and LiteRT files.

  python -m tools.export --model=runs/baseline/deployable.keras \\
      --formats=saved_model,tflite,tflite_int8 --dataset=cifar10

int8 calibration uses 200 training images of --dataset, normalised with
that dataset's statistics (as the trainer does).
"""

import os

from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_compact import cli  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import export  # noqa: E402
from keras_compact.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The .keras model to export.")
flags.DEFINE_string("output_dir", "export", "Where the files go.")
flags.DEFINE_list("formats", ["saved_model", "tflite"],
                  "saved_model, tflite, tflite_float16, tflite_int8.")
flags.DEFINE_string("dataset", "cifar10", "Calibration data for int8.")
flags.DEFINE_string("data_dir", "", "Folder of the calibration dataset.")
flags.mark_flag_as_required("model")

_LITERT = {"tflite": "float32", "tflite_float16": "float16",
           "tflite_int8": "int8"}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    unknown = set(FLAGS.formats) - set(_LITERT) - {"saved_model"}
    if unknown:
        raise UsageError(f"Unknown formats {sorted(unknown)}; valid: "
                             f"saved_model, {', '.join(_LITERT)}.")
    if not os.path.isfile(FLAGS.model):
        raise UsageError(f"--model={FLAGS.model} does not exist; give a "
                         ".keras file, e.g. <workdir>/deployable.keras.")
    model = keras.models.load_model(FLAGS.model)
    for name in FLAGS.formats:
        if name == "saved_model":
            path = export.to_saved_model(
                model, os.path.join(FLAGS.output_dir, "saved_model"))
        else:
            calibration = None
            if _LITERT[name] == "int8":
                dataset = data.load(FLAGS.dataset, FLAGS.data_dir)
                calibration = data.make_splits(dataset, 1).representative()
            path = export.to_litert(
                model, os.path.join(FLAGS.output_dir, f"{name}.tflite"),
                _LITERT[name], calibration)
        print(f"{name}: {path}")


def run():
    """The `keras-compact-export` console script."""
    cli.run(main)


if __name__ == "__main__":
    run()
