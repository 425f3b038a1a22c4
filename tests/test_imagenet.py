"""ImageNet TFRecord input, the ImageNet recipe and trainer, end to end.

The fixture is real JPEG data: Fashion-MNIST images upsampled to 80x64 RGB,
written as TFRecord shards in both supported layouts.
"""

import csv
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import imagenet as imagenet_config
from keras_compact import data
from keras_compact import distribute
from keras_compact import methods
from keras_compact import models
from keras_compact import training
from keras_compact.data import fashion_mnist
from keras_compact.data import imagenet
from tests import testing

NUM_TRAIN, NUM_TEST, SHAPE = 64, 16, (80, 64)

pytestmark = pytest.mark.skipif(
    not os.path.isdir(fashion_mnist.DEFAULT_DIR),
    reason="apt-get install dataset-fashion-mnist")


def _images(source, count, offset=0):
    x = source.x_train[offset:offset + count]
    # Colour the digits differently per channel so RGB order matters.
    rgb = np.concatenate([x, 255 - x, x // 2], axis=-1)
    x = tf.image.resize(rgb, SHAPE).numpy().round().astype(np.uint8)
    return x, source.y_train[offset:offset + count]


@pytest.fixture(scope="module")
def arrays():
    source = data.load("fashion_mnist")
    return (_images(source, NUM_TRAIN),
            _images(source, NUM_TEST, offset=NUM_TRAIN))


def _write(folder, arrays, layout="inception", shards=(4, 2)):
    (x, y), (xt, yt) = arrays
    imagenet.write_shards(x, y, str(folder), "train", shards[0], layout)
    return imagenet.write_shards(xt, yt, str(folder), "validation",
                                 shards[1], layout)


@pytest.fixture(scope="module")
def shards(arrays, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagenet")
    _write(folder, arrays)
    return str(folder)


def _config(data_dir, workdir="", arg=""):
    # SmallNet keeps the default tests fast; the slow multi-worker test
    # trains the smoke recipe's ResNet-18.
    config = imagenet_config.get_config(",".join(filter(None, [
        "method=baseline,smoke,arch=smallnet3", arg])))
    config.data_dir = data_dir
    config.workdir = str(workdir)
    config.num_classes = 10
    config.batch_size = 16
    config.steps_per_epoch = 3
    config.verbose = 0
    return config


def _losses(workdir):
    with tf.io.gfile.GFile(os.path.join(workdir, "log.csv")) as f:
        return [(int(r["epoch"]), float(r["loss"])) for r in csv.DictReader(f)]


# The pipeline --------------------------------------------------------------

def test_pipeline_shapes_dtypes_labels_and_center_crop(shards, arrays):
    splits = imagenet.make_splits(_config(shards), tf.distribute.get_strategy(),
                                  16)
    assert splits.input_shape == (64, 64, 3) and splits.num_classes == 10
    assert splits.train_size == NUM_TRAIN  # counted from the records
    x, y = next(iter(splits.train))
    assert x.shape == (16, 64, 64, 3) and x.dtype == tf.float32
    assert y.shape == (16,) and y.dtype == tf.int32
    assert set(y.numpy()) <= set(range(10))
    # Normalised with ImageNet statistics: roughly zero-centred, unit scale.
    assert -2.2 < float(tf.reduce_min(x)) and float(tf.reduce_max(x)) < 2.7

    test = list(splits.test)
    assert [b[0].shape[0] for b in test] == [16]
    (xt, yt) = arrays[1]
    # Interleaving the shards restores the written order, labels 0-based.
    np.testing.assert_array_equal(test[0][1].numpy(), yt)
    # The central 56x56 square (0.875 of the shorter side 64; offsets 12,
    # 4) resized to 64x64: of all nearby windows of the uncompressed
    # source, that one matches best, up to JPEG error.
    images = test[0][0].numpy() * imagenet.STD + imagenet.MEAN
    errors = {}
    for dy in range(8, 17):
        for dx in range(0, 9):
            window = tf.image.resize(xt[:, dy:dy + 56, dx:dx + 56], (64, 64),
                                     antialias=True).numpy()
            errors[dy, dx] = np.abs(images - window).mean()
    assert min(errors, key=errors.get) == (12, 4)
    assert errors[12, 4] < 6.0
    assert splits.representative(20).shape == (20, 64, 64, 3)


def test_validation_split_holds_out_training_files(shards, arrays):
    config = _config(shards, arg="validation_split=0.25")
    splits = imagenet.make_splits(config, tf.distribute.get_strategy(), 8)
    assert splits.train_size == NUM_TRAIN * 3 // 4  # 3 of the 4 files
    labels = np.concatenate([y for _, y in splits.validation])
    # The first shard, which holds images 0, 4, 8, ...
    np.testing.assert_array_equal(labels, arrays[0][1][0::4])
    with pytest.raises(ValueError, match="between 1 and 3 of the 4"):
        imagenet.make_splits(_config(shards, arg="validation_split=0.9"),
                             tf.distribute.get_strategy(), 8)


def test_training_crops_are_random_resized_and_flipped(shards):
    config = _config(shards, arg="shuffle_buffer=1")
    layout = imagenet.detect_layout(shards)
    files = layout.files(shards, "train")[:1]
    draws = [next(iter(imagenet.train_dataset(files, layout, config, 8,
                                              seed=s)))[0].numpy()
             for s in (1, 2)]
    assert draws[0].shape == (8, 64, 64, 3)
    assert not np.allclose(draws[0], draws[1])


def test_tfds_layout_is_detected_with_zero_based_labels(arrays, tmp_path):
    folder = tmp_path / "imagenet2012" / "5.1.0"
    written = _write(folder, arrays, layout="tfds", shards=(2, 2))
    assert os.path.basename(written[0]) == (
        "imagenet2012-validation.tfrecord-00000-of-00002")
    assert imagenet.detect_layout(str(tmp_path)).name == "tfds"
    splits = imagenet.make_splits(_config(str(tmp_path)),
                                  tf.distribute.get_strategy(), 16)
    np.testing.assert_array_equal(next(iter(splits.test))[1], arrays[1][1])
    record = next(iter(tf.data.TFRecordDataset(written[0]))).numpy()
    stored = tf.train.Example.FromString(record).features.feature["label"]
    assert stored.int64_list.value[0] == arrays[1][1][0]


def test_inception_layout_is_read_one_based(shards, arrays):
    path = os.path.join(shards, "validation-00000-of-00002")
    record = next(iter(tf.data.TFRecordDataset(path))).numpy()
    feature = tf.train.Example.FromString(record).features.feature
    assert feature["image/class/label"].int64_list.value[0] == (
        arrays[1][1][0] + 1)
    assert imagenet.detect_layout(shards).name == "inception"


def test_labels_read_with_the_wrong_base_fail_naming_the_file(shards):
    config = _config(shards, arg="first_label=0")  # files are 1-based
    splits = imagenet.make_splits(config, tf.distribute.get_strategy(), 16)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"validation-0000\d-of-00002: record \d+ has "
                             r"label 10, outside 0..9.*first_label"):
        list(splits.test)


def _corrupt_and_read(folder, arrays, damage):
    _write(folder, arrays)
    path = str(folder / "validation-00001-of-00002")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(damage(raw))
    splits = imagenet.make_splits(_config(str(folder)),
                                  tf.distribute.get_strategy(), 4)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(splits.test)
    return path, str(error.value)


@pytest.mark.parametrize("damage, says", [
    (lambda raw: raw[:-100], "is truncated or corrupted at record 7"),
    (lambda raw: raw[:500] + bytes([raw[500] ^ 0xFF]) + raw[501:],
     "is truncated or corrupted at record 0"),
])
def test_corrupt_file_fails_naming_the_file(arrays, tmp_path, damage, says):
    path, message = _corrupt_and_read(tmp_path, arrays, damage)
    assert f"{path} {says}" in message, message


def test_undecodable_record_fails_naming_file_and_record(arrays, tmp_path):
    _write(tmp_path, arrays)
    path = str(tmp_path / "validation-00000-of-00002")
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    example = tf.train.Example.FromString(records[3])
    jpeg = example.features.feature["image/encoded"].bytes_list.value
    jpeg[0] = jpeg[0][:60]  # a truncated JPEG in a valid record
    records[3] = example.SerializeToString()
    records[5] = b"not a tf.Example"
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    splits = imagenet.make_splits(_config(str(tmp_path)),
                                  tf.distribute.get_strategy(), 4)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=re.escape(f"{path}: record 3 is corrupt")):
        list(splits.test)


def test_missing_data_says_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="needs --data_dir"):
        imagenet.detect_layout("")
    with pytest.raises(FileNotFoundError, match="train-\\*-of-\\*"):
        imagenet.detect_layout(str(tmp_path))


# The recipe ----------------------------------------------------------------

def test_recipe_scales_the_learning_rate_with_the_global_batch():
    config = imagenet_config.get_config("method=baseline")
    assert config.batch_size == 1024 and config.lr == pytest.approx(0.4)
    assert config.warmup_epochs == 5 and not config.decay_bn_and_bias
    assert config.train_size == 1_281_167 and config.image_size == 224
    config.batch_size = 256
    assert config.lr == pytest.approx(0.1)
    config = imagenet_config.get_config("method=baseline,batch_size=4096")
    assert config.lr == pytest.approx(1.6)
    config = imagenet_config.get_config("method=baseline,lr=0.3")
    config.batch_size = 64
    assert config.lr == 0.3  # an explicit rate is kept


def test_every_registered_method_has_an_imagenet_config():
    for name in methods.names():
        config = imagenet_config.get_config(f"method={name},smoke")
        assert config.method == name and config.dataset == "imagenet"
        for option, (default, _) in methods.get(name).options.items():
            assert config[option] == default or option in (
                imagenet_config.DEFAULTS.get(name, {}))
    assert imagenet_config.get_config("method=slimconv").arch == "sc_resnet50"


@pytest.mark.slow
def test_every_method_builds_its_imagenet_model():
    # Methods with a `prepare` step (a channel search) build from its
    # result; the others build straight from the recipe.
    plain = [n for n in methods.names()
             if type(methods.get(n)).prepare is methods.Method.prepare]
    assert "baseline" in plain
    for name in plain:
        config = imagenet_config.get_config(f"method={name},smoke")
        model = methods.get(name).build_model(config, (64, 64, 3), 10)
        outputs = keras.tree.flatten(model(np.zeros((1, 64, 64, 3))))
        assert all(o.shape == (1, 10) for o in outputs), name


def test_smoothed_crossentropy_matches_the_formula():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], "float32")
    labels = np.array([0, 2])
    loss = training.SmoothedCrossentropy(0.1)(labels, logits)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = np.full((2, 3), 0.1 / 3) + 0.9 * np.eye(3)[labels]
    np.testing.assert_allclose(float(loss), -(targets * log_p).sum(1).mean(),
                               rtol=1e-6)
    unsmoothed = training.SmoothedCrossentropy(0.0)(labels, logits)
    np.testing.assert_allclose(float(unsmoothed), float(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            labels, logits)), rtol=1e-6)


# Training ------------------------------------------------------------------

class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated preemption")


def test_default_strategy_trains_and_resumes(shards, tmp_path, monkeypatch):
    config = _config(shards, tmp_path, arg="epochs=2")
    monkeypatch.setattr(methods.get("baseline"), "callbacks",
                        lambda context: [_Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        training.run(config)
    assert [e for e, _ in _losses(tmp_path)] == [0]
    monkeypatch.undo()
    metrics = training.run(config)
    # Epoch 0 is not trained again; the optimizer counted every step once.
    assert [e for e, _ in _losses(tmp_path)] == [0, 1]
    model = keras.models.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations) == 2 * config.steps_per_epoch
    assert metrics["dataset"] == "imagenet"
    # SmallNet-3x3 on 64x64x3: 6x6x32 features into fc1.
    assert metrics["params"] == 15_050 - 128 * 64 + 1152 * 64
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_mirrored_trains_with_label_smoothing_to_a_remote_workdir(
        shards, tmp_path):
    # ram:// goes through tf.io.gfile and Keras's remote-path code, as gs://.
    workdir = f"ram://{tmp_path}"
    config = _config(shards, workdir,
                     arg="strategy=mirrored,label_smoothing=0.1,epochs=1")
    metrics = training.run(config)
    assert not os.path.exists("ram:")  # nothing written locally by mistake
    assert distribute.get("mirrored").num_replicas_in_sync == 2
    losses = [loss for _, loss in _losses(workdir)]
    assert len(losses) == 1 and all(np.isfinite(losses))
    # Smoothing puts a floor under the loss: 0.1 of the mass is uniform.
    assert min(losses) > 0.1
    assert tf.io.gfile.exists(f"{workdir}/backup")
    with tf.io.gfile.GFile(f"{workdir}/metrics.json") as f:
        assert json.load(f)["test_loss"] == metrics["test_loss"]
    model = keras.models.load_model(f"{workdir}/model.keras")
    assert isinstance(model.loss, training.SmoothedCrossentropy)
    assert model.loss.label_smoothing == 0.1
    assert np.isfinite(metrics["test_loss"])


def _run_workers(workdir, shards, epochs):
    testing.run_local_workers(
        ["trainers.imagenet", "--method=baseline", "--smoke",
         f"--data_dir={shards}", "--strategy=multi_worker",
         f"--workdir={workdir}", "--batch_size=16", f"--epochs={epochs}",
         "--steps_per_epoch=3", "--set=verbose=0,num_classes=10"])


@pytest.mark.slow
@pytest.mark.ci_slow
def test_two_workers_train_resume_and_agree(shards, tmp_path):
    _run_workers(tmp_path, shards, epochs=1)
    assert [e for e, _ in _losses(tmp_path)] == [0]
    # Started again with more epochs, both workers resume after epoch 0.
    _run_workers(tmp_path, shards, epochs=2)
    assert [e for e, _ in _losses(tmp_path)] == [0, 1]
    testing.assert_workers_agree(
        str(tmp_path), lambda: models.build("resnet18", (64, 64, 3), 10))
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["dataset"] == "imagenet"
    assert not os.path.isdir(tmp_path / "backup_worker0")
