"""Trains a compact network on ImageNet from TFRecord shards, at scale.

The recipe is `imagenet` (keras_compact/configs/imagenet.py: large batch,
linear LR scaling, warmup, no weight decay on BN and biases) with the
method's options; flags override single fields, as in trainers.cifar.
Examples (or `keras-compact-imagenet ...` where the package is installed):

  python -m trainers.imagenet --method=baseline --arch=resnet50 \\
      --data_dir=/data/imagenet --strategy=mirrored --batch_size=1024 \\
      --mixed_precision=mixed_float16
  python -m trainers.imagenet --method=slimconv --arch=sc_resnet50 \\
      --data_dir=gs://bucket/imagenet --workdir=gs://bucket/runs/sc50 \\
      --strategy=tpu --tpu=my-tpu --mixed_precision=mixed_bfloat16 \\
      --steps_per_execution=100
  TF_CONFIG=... python -m trainers.imagenet --strategy=multi_worker ...
  python -m trainers.imagenet --smoke --data_dir=/tmp/tiny   # CPU check

Started again with the same --workdir, a run resumes from its last finished
epoch; on multi-worker runs only the chief writes the final model and
exports. Results: <workdir>/metrics.json, log.csv, tensorboard/, export/.
"""

import functools
import os

from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_compact import cli  # noqa: E402
from keras_compact.configs import loader  # noqa: E402
from keras_compact.trainers import flags_common  # noqa: E402

FIELDS = flags_common.define({
    "data_dir": "Folder or gs:// path of the ImageNet TFRecord shards "
                "(TFDS imagenet2012 or train-*-of-01024 / "
                "validation-*-of-00128).",
    **flags_common.FIELDS,
    "image_size": "Training and evaluation crop size.",
    "label_smoothing": "Label smoothing of the cross-entropy (e.g. 0.1).",
    "steps_per_execution": "Steps per device loop (TPU: e.g. 100).",
    "schedule": "Learning-rate decay after warmup: step or cosine.",
    "warmup_epochs": "Epochs of linear learning-rate warmup.",
})
flags.adopt_module_key_flags(flags_common)  # list them in --helpshort


def recipe(method, config_file, arg):
    """The `imagenet` recipe (or --config) for `method`, with its options."""
    arg = ",".join(filter(None, (f"method={method}", arg)))
    return loader.load(method, config_file or "imagenet", arg)


def run():
    """The `keras-compact-imagenet` console script."""
    cli.run(functools.partial(flags_common.main, fields=FIELDS,
                              recipe=recipe))


if __name__ == "__main__":
    run()
