"""Fashion-MNIST from its four IDX files, in any folder.

The default folder is Debian's dataset-fashion-mnist package; elsewhere
pass `--data_dir` with the four files (gzipped `*-ubyte.gz`, as the
Fashion-MNIST release ships them, or unpacked `*-ubyte`).
"""

import gzip
import os

import numpy as np

from keras_compact.data.registry import ImageDataset
from keras_compact.data.registry import channel_stats
from keras_compact.data.registry import register
from keras_compact.errors import UsageError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_MAGIC = {3: 2051, 1: 2049}  # IDX magic numbers of uint8 images / labels


def read_idx(path, ndim):
    """Reads an IDX file (gzipped if `.gz`) of uint8 `ndim`-D values."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise UsageError(f"{path} is not a readable gzip file ({error}).")
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big")
    if len(raw) < header or magic != _MAGIC[ndim]:
        raise UsageError(f"{path} is not an IDX file of {ndim}-D uint8 data "
                         f"(magic {magic}, expected {_MAGIC[ndim]}).")
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
             for i in range(ndim)]
    if len(raw) - header != np.prod(shape):
        raise UsageError(f"{path} is truncated: header says {shape}.")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(data_dir=""):
    """Loads Fashion-MNIST as (N, 28, 28, 1) uint8 images, 10 classes."""
    folder = data_dir or DEFAULT_DIR
    paths = {k: _find(folder, f) for k, f in _FILES.items()}
    missing = [f for k, f in _FILES.items() if paths[k] is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing in {folder}: {', '.join(missing)}. "
            "Install them with `apt-get install dataset-fashion-mnist` (Debian"
            ", Ubuntu), or download the four IDX files of the Fashion-MNIST "
            "release (zalandoresearch/fashion-mnist) into a folder and pass "
            "--data_dir=FOLDER."
        )
    arrays = {k: read_idx(path, 3 if k[0] == "x" else 1)
              for k, path in paths.items()}
    x_train = arrays["x_train"][..., None]
    mean, std = channel_stats(x_train)
    return ImageDataset(
        x_train, arrays["y_train"].astype(np.int32),
        arrays["x_test"][..., None], arrays["y_test"].astype(np.int32),
        10, mean, std,
    )


def _find(folder, name):
    for candidate in (name, name[:-len(".gz")]):
        if os.path.isfile(os.path.join(folder, candidate)):
            return os.path.join(folder, candidate)
    return None


register("fashion_mnist", load_fashion_mnist)
