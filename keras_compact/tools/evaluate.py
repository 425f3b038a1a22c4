"""Test accuracy of an exported model file, as it ships.

  python -m tools.evaluate --model=runs/baseline/export/model_int8.tflite \\
      --dataset=fashion_mnist
  python -m tools.evaluate --model=runs/baseline/export/model_int8.tflite \\
      --reference=runs/baseline/deployable.keras --dataset=fashion_mnist

--model is a .tflite file (float32, float16 or int8), a .keras file or a
SavedModel folder. Prints top-1 on the test split (and top-5 with 100
classes or more) and, with --reference, the share of test images on which
both models predict the same class. Inputs are given to each file in its
own type and scale (see keras_compact.evaluation).
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_compact import cli  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import evaluation  # noqa: E402
from keras_compact.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The .tflite, .keras or SavedModel to "
                    "evaluate.")
flags.DEFINE_string("reference", None, "Optional model to compare "
                    "predictions with (e.g. the deployable.keras).")
flags.DEFINE_string("dataset", "cifar10", "Test set: "
                    f"{', '.join(data.names())}.")
flags.DEFINE_string("data_dir", "", "Folder of the dataset's files.")
flags.DEFINE_integer("batch_size", 100, "Images per call.", lower_bound=1)
flags.DEFINE_bool("json", False, "Print the result as one JSON line.")
flags.mark_flag_as_required("model")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    runner = evaluation.open_model(FLAGS.model)
    reference = (evaluation.open_model(FLAGS.reference)
                 if FLAGS.reference else None)
    try:
        dataset = data.load(FLAGS.dataset, FLAGS.data_dir)
    except (ValueError, OSError, RuntimeError) as error:  # names the fix
        raise UsageError(f"--dataset={FLAGS.dataset}: {error}") from None
    result = evaluation.evaluate_on(runner, dataset, reference,
                                    FLAGS.batch_size,
                                    progress=sys.stdout.isatty())
    if FLAGS.json:
        print(json.dumps(dict(model=FLAGS.model, dataset=FLAGS.dataset,
                              **result)))
        return
    line = (f"{FLAGS.model} on {FLAGS.dataset} ({result['images']} test "
            f"images): top-1 {result['top1']:.4f}")
    if "top5" in result:
        line += f", top-5 {result['top5']:.4f}"
    if "agreement" in result:
        line += f", same class as {FLAGS.reference} on " \
                f"{result['agreement']:.2%}"
    print(line)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
