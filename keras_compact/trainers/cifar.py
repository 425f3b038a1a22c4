"""Trains a compact network on CIFAR-10/100, Fashion-MNIST or synthetic data.

The recipe is the method's packaged one (keras_compact/configs/<method>.py,
the paper's) or `--config=NAME[:ARG]` / `--config=FILE.py[:ARG]`; flags
override single fields. Examples (or `keras-compact-cifar ...` where the
package is installed):

  python -m trainers.cifar --method=baseline --arch=resnet20
  python -m trainers.cifar --method=baseline --dataset=fashion_mnist --epochs=3
  python -m trainers.cifar --method=baseline --smoke --dataset=synthetic
  python -m trainers.cifar --method=baseline --set=nesterov=true,lr=0.05
  python -m trainers.cifar --method=xnet --config=xnet:vgg
  python -m trainers.cifar --method=od --student_conv=expanded
  python -m trainers.cifar --method=aps --then=od --arch=resnet20

A user error (bad flag or value) prints one line and exits with status 2;
`--verbosity=1` adds its traceback.

Started again with the same --workdir, a run resumes from its last finished
epoch. Results: <workdir>/metrics.json, log.csv, tensorboard/, export/.
"""

import functools
import os

from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_compact import cli  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact.configs import loader  # noqa: E402
from keras_compact.trainers import flags_common  # noqa: E402

FIELDS = flags_common.define({
    "dataset": f"Dataset: {', '.join(data.names())}.",
    "data_dir": "Dataset folder (CIFAR: cifar-10-batches-py / the "
                ".tar.gz; Fashion-MNIST: the IDX .gz files).",
    **flags_common.FIELDS,
})
flags.adopt_module_key_flags(flags_common)  # list them in --helpshort


def run():
    """The `keras-compact-cifar` console script."""
    cli.run(functools.partial(flags_common.main, fields=FIELDS,
                              recipe=loader.load))


if __name__ == "__main__":
    run()
