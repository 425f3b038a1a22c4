"""CIFAR-10 and CIFAR-100 from the official Python pickles.

Looked up in this order: a `cifar-10-batches-py` / `cifar-100-python`
folder in (or equal to) `data_dir`; the official `cifar-10-python.tar.gz` /
`cifar-100-python.tar.gz` in `data_dir`; and, when no `data_dir` is given,
Keras's download (needs internet).
"""

import io
import os
import pickle
import tarfile

import numpy as np

from keras_compact.data.registry import ImageDataset
from keras_compact.data.registry import channel_stats
from keras_compact.data.registry import register
from keras_compact.errors import UsageError

_LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "num_classes": 100,
    },
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles only what CIFAR files contain: dicts, lists, bytes, arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def read_batch(stream, source, label_key):
    """Reads one CIFAR pickle; returns uint8 NHWC images and int labels."""
    try:
        batch = _ArraysOnly(stream, encoding="bytes").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v
                 for k, v in batch.items()}
        images = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int32)
        images = images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as error:
        raise UsageError(
            f"{source} is not a valid CIFAR batch ({error}). Delete it and "
            "extract the official archive again."
        ) from error
    if len(images) != len(labels):
        raise UsageError(f"{source} has {len(images)} images but "
                         f"{len(labels)} labels.")
    return images, labels


def _read_split(open_member, names, label_key):
    parts = [read_batch(stream, source, label_key)
             for stream, source in map(open_member, names)]
    return (np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]))


def _from_folder(folder, layout):
    missing = [n for n in layout["train"] + layout["test"]
               if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(
            f"CIFAR folder {folder} lacks {', '.join(missing)}. Expected the "
            f"extracted official archive {layout['archive']}."
        )

    def open_member(name):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            return io.BytesIO(f.read()), path

    return open_member


def _from_archive(path, layout):
    try:
        archive = tarfile.open(path, "r:gz")
        members = {os.path.basename(m.name): m for m in archive.getmembers()
                   if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UsageError(f"{path} is not a readable .tar.gz ({error}). "
                         "Download it again.") from error

    def open_member(name):
        if name not in members:
            raise FileNotFoundError(f"{path} has no member '{name}'; it is "
                                    f"not the official {layout['archive']}.")
        return io.BytesIO(archive.extractfile(members[name]).read()), (
            f"{path}:{name}")

    return open_member


def _locate(data_dir, layout):
    for folder in (os.path.join(data_dir, layout["folder"]), data_dir):
        if all(os.path.isfile(os.path.join(folder, n))
               for n in layout["test"]):
            return _from_folder(folder, layout)
    archive = os.path.join(data_dir, layout["archive"])
    if os.path.isfile(archive):
        return _from_archive(archive, layout)
    if os.path.isdir(os.path.join(data_dir, layout["folder"])):
        return _from_folder(os.path.join(data_dir, layout["folder"]), layout)
    raise FileNotFoundError(
        f"No CIFAR data in {data_dir}: expected a folder "
        f"{layout['folder']}/ (with {', '.join(layout['test'])}, ...) or the "
        f"archive {layout['archive']}. Omit --data_dir to download it."
    )


def _download(name):
    import keras

    loader = getattr(keras.datasets, name)
    try:
        return loader.load_data()
    except Exception as error:
        raise UsageError(
            f"Could not download {name} ({error}). Offline, pass --data_dir "
            f"with the extracted {_LAYOUTS[name]['folder']}/ folder or the "
            f"{_LAYOUTS[name]['archive']} archive, or use "
            "--dataset=fashion_mnist."
        ) from error


def load_cifar(name, data_dir=""):
    """Loads CIFAR-10 or CIFAR-100 (see the module docstring for where)."""
    layout = _LAYOUTS[name]
    if data_dir:
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"--data_dir {data_dir} does not exist.")
        open_member = _locate(data_dir, layout)
        x_train, y_train = _read_split(open_member, layout["train"],
                                       layout["label_key"])
        x_test, y_test = _read_split(open_member, layout["test"],
                                     layout["label_key"])
    else:
        (x_train, y_train), (x_test, y_test) = _download(name)
        y_train = y_train.reshape(-1).astype(np.int32)
        y_test = y_test.reshape(-1).astype(np.int32)
    mean, std = channel_stats(x_train)
    return ImageDataset(x_train, y_train, x_test, y_test,
                        layout["num_classes"], mean, std)


register("cifar10", lambda data_dir: load_cifar("cifar10", data_dir))
register("cifar100", lambda data_dir: load_cifar("cifar100", data_dir))
