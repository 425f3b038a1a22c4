"""Dataset loaders and the tf.data pipeline, on real and fixture files."""

import gzip
import os
import pickle
import tarfile

import numpy as np
import pytest

from keras_compact import data
from keras_compact.data import fashion_mnist
from keras_compact.data import pipeline

FASHION_DIR = fashion_mnist.DEFAULT_DIR


def _write_cifar(folder, name="cifar10", per_batch=6, seed=0):
    """Writes a tiny CIFAR in the official pickle layout; returns arrays."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
             if name == "cifar10" else ["train", "test"])
    key = b"labels" if name == "cifar10" else b"fine_labels"
    written = {}
    for f in files:
        images = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(os.path.join(folder, f), "wb") as out:
            pickle.dump({b"data": images, key: labels, b"batch_label": b"x"},
                        out)
        written[f] = (images, labels)
    return written


def test_cifar_folder_matches_the_official_layout(tmp_path):
    written = _write_cifar(str(tmp_path / "cifar-10-batches-py"))
    dataset = data.load("cifar10", str(tmp_path))
    assert dataset.x_train.shape == (30, 32, 32, 3)
    assert dataset.x_test.shape == (6, 32, 32, 3)
    assert dataset.num_classes == 10
    images, labels = written["data_batch_1"]
    # Row-major 3072 bytes = 3 planes of 32x32, converted to NHWC.
    np.testing.assert_array_equal(
        dataset.x_train[0], images[0].reshape(3, 32, 32).transpose(1, 2, 0))
    np.testing.assert_array_equal(dataset.y_train[:6], labels)


def test_cifar100_archive(tmp_path):
    folder = tmp_path / "src" / "cifar-100-python"
    _write_cifar(str(folder), "cifar100")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    dataset = data.load("cifar100", str(tmp_path))
    assert dataset.x_train.shape == (6, 32, 32, 3)
    assert dataset.num_classes == 100


def test_cifar_corrupt_pickle_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(str(folder))
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3 is not a valid"):
        data.load("cifar10", str(tmp_path))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(str(folder))
    with open(folder / "test_batch", "wb") as out:
        pickle.dump({b"data": os.system}, out)
    with pytest.raises(ValueError, match="forbidden global"):
        data.load("cifar10", str(tmp_path))


def test_cifar_missing_files_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        data.load("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load("cifar10", str(tmp_path / "nowhere"))
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(str(folder))
    os.remove(folder / "data_batch_2")
    with pytest.raises(FileNotFoundError, match="lacks data_batch_2"):
        data.load("cifar10", str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_real_files():
    dataset = data.load("fashion_mnist")
    assert dataset.x_train.shape == (60000, 28, 28, 1)
    assert dataset.x_test.shape == (10000, 28, 28, 1)
    assert dataset.x_train.dtype == np.uint8
    assert sorted(np.unique(dataset.y_train)) == list(range(10))
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10
    assert 60 < dataset.mean[0] < 80


def test_fashion_mnist_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load("fashion_mnist", str(tmp_path))
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.load("fashion_mnist", str(tmp_path))


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="Valid datasets: cifar10, cifar100, "
                       "fashion_mnist, synthetic"):
        data.load("imagenet21k")


def test_augmentation_is_a_per_image_crop_and_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 2), dtype=np.uint8)
    import tensorflow as tf

    out = pipeline._augment_batch(tf.constant(images), seed=1).numpy()
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)])
    placements = set()
    for i in range(len(images)):
        found = [(dy, dx, flip) for dy in range(9) for dx in range(9)
                 for flip in (False, True)
                 if np.array_equal(
                     padded[i, dy:dy + 8, dx:dx + 8][:, ::-1] if flip
                     else padded[i, dy:dy + 8, dx:dx + 8], out[i])]
        assert found, f"image {i} is not a crop of its padded original"
        placements.add(found[0])
    # Different images get different offsets and flips.
    assert len(placements) > 20
    assert {p[2] for p in placements} == {False, True}


def test_pipeline_shapes_normalisation_and_splits():
    dataset = data.load("synthetic")
    splits = data.make_splits(dataset, 64, validation_split=0.25, seed=3)
    x, y = next(iter(splits.train))
    assert x.shape == (64, 32, 32, 3) and x.dtype.name == "float32"
    assert y.dtype.name == "int32"
    assert splits.train_size == 1536
    assert sum(b[0].shape[0] for b in splits.validation) == 512
    xt = np.concatenate([b[0] for b in splits.test])
    np.testing.assert_allclose(xt.mean((0, 1, 2)), 0, atol=0.1)
    assert splits.representative(10).shape == (10, 32, 32, 3)


def test_training_order_is_seeded():
    dataset = data.load("synthetic")

    def first_labels(seed):
        splits = data.make_splits(dataset, 32, seed=seed, augment=False)
        return next(iter(splits.train))[1].numpy()

    np.testing.assert_array_equal(first_labels(5), first_labels(5))
    assert not np.array_equal(first_labels(5), first_labels(6))
