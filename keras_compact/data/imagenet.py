"""ImageNet from TFRecord shards: streamed, decoded and augmented in tf.data.

Two layouts are recognised by their file names (local folders and `gs://`
paths alike, through `tf.io.gfile`):

- `tfds` (TFDS `imagenet2012`): `imagenet2012-train.tfrecord-*` and
  `imagenet2012-validation.tfrecord-*` in `data_dir`, `data_dir/*/` or
  `data_dir/imagenet2012/*/`; features `image` (JPEG) and `label`, 0..999.
- `inception` (`build_imagenet_data.py`, Cloud TPU `imagenet_to_gcs.py`):
  `train-*-of-*` and `validation-*-of-*`; features `image/encoded` and
  `image/class/label`, **1..1000** (0 is their "background" class).

The first class's label is the layout's (`first_label`) unless the config
sets `first_label` >= 0; every label is checked to lie in
`[0, num_classes)` after the shift, so 0-based shards read as 1-based (or
the reverse) fail at the first label out of range, with a message that
says which setting to use.

Training: random-resized-crop (area 8%-100%, aspect ratio 3/4-4/3) +
horizontal flip. Evaluation: the central square of 0.875 of the shorter
side, resized (torchvision's resize to 256 + center crop 224). Both decode
only their crop window.
Files are sharded per worker, read by a parallel interleave, and prefetched.

Every shard is read with checks, so a bad file fails the run with its name:
a record that does not parse, is not a decodable JPEG or has a label out of
range fails with the file and record index; a truncated or corrupted file
(TFRecord framing) fails because the bytes read fall short of its size.
"""

import dataclasses
import functools
import logging
from concurrent import futures

import numpy as np
import tensorflow as tf

from keras_compact.data.pipeline import Splits
from keras_compact.errors import UsageError
from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")

# torchvision's ImageNet statistics in [0, 255] (the papers' PyTorch code).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
TRAIN_SIZE = 1_281_167  # ImageNet-1k (ILSVRC 2012) training images
EVAL_CROP = 0.875  # center crop 224 of 256

_FRAMING_BYTES = 16  # per TFRecord: length (8) + 2 CRCs (4 + 4)
# The dataset functions below use tf ops only; skipping AutoGraph's source
# conversion makes building the pipeline several times faster.
_graph_only = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a TFRecord layout keeps its shards and what its records hold.

    Attributes:
        name: layout name (`LAYOUTS`).
        train, validation: glob patterns relative to `data_dir`.
        image_key, label_key: tf.Example features of the JPEG bytes and
            the integer class.
        first_label: the label of the first class in the files.
    """

    name: str
    train: tuple
    validation: tuple
    image_key: str
    label_key: str
    first_label: int

    def files(self, data_dir, split):
        """The sorted shard paths of `split` ("train" or "validation")."""
        found = set()
        for pattern in getattr(self, split):
            found.update(tf.io.gfile.glob(_join(data_dir, pattern)))
        return sorted(found)


LAYOUTS = Registry("ImageNet TFRecord layout")
_TFDS_DIRS = ("", "*/", "imagenet2012/*/")
LAYOUTS.register("tfds", Layout(
    "tfds",
    tuple(f"{d}imagenet2012-train.tfrecord-*" for d in _TFDS_DIRS),
    tuple(f"{d}imagenet2012-validation.tfrecord-*" for d in _TFDS_DIRS),
    "image", "label", 0))
LAYOUTS.register("inception", Layout(
    "inception", ("train-*-of-*",), ("validation-*-of-*",),
    "image/encoded", "image/class/label", 1))


def _join(directory, name):
    # os.path.join would also do for gs://, but keep "/" on every platform.
    return directory.rstrip("/") + "/" + name


def detect_layout(data_dir):
    """Returns the `Layout` whose training shards are in `data_dir`."""
    if not data_dir:
        raise UsageError(
            "--dataset=imagenet needs --data_dir: a folder or gs:// path "
            "with the ImageNet TFRecord shards (TFDS imagenet2012 or "
            "train-*-of-01024 / validation-*-of-00128).")
    for name in LAYOUTS.names():
        layout = LAYOUTS.get(name)
        if layout.files(data_dir, "train"):
            return layout
    patterns = ", ".join(p for n in LAYOUTS.names()
                         for p in LAYOUTS.get(n).train)
    raise FileNotFoundError(
        f"No ImageNet training shards in {data_dir}. Expected files "
        f"matching one of: {patterns}.")


# Image preprocessing ------------------------------------------------------

def random_resized_crop(encoded, size, seed=None):
    """Decodes a random crop of a JPEG and resizes it to `size` x `size`.

    The Inception / Cloud TPU ResNet recipe (torchvision's RandomResizedCrop
    ranges): a window of 8%-100% of the area and aspect ratio 3/4-4/3, only
    that window is decoded; after 10 failed draws, the whole image.
    """
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, window, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.stack([begin[0], begin[1], window[0], window[1]])
    image = tf.image.decode_and_crop_jpeg(encoded, crop, channels=3)
    image = tf.image.resize(image, [size, size])
    return tf.image.random_flip_left_right(image, seed=seed)


def center_crop(encoded, size):
    """Decodes the central square of a JPEG and resizes it to `size`.

    The square's side is 0.875 of the shorter side: the same window as
    resizing the shorter side to `size / 0.875` and cropping `size` at the
    center (torchvision's 256 -> 224), but only that window is decoded and
    resized.
    """
    shape = tf.image.extract_jpeg_shape(encoded)
    side = tf.cast(tf.math.round(EVAL_CROP * tf.cast(
        tf.reduce_min(shape[:2]), tf.float32)), tf.int32)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    image = tf.image.decode_and_crop_jpeg(
        encoded, tf.stack([top, left, side, side]), channels=3)
    return tf.image.resize(image, [size, size], antialias=True)


# Reading shards with checks -----------------------------------------------

def _assert(ok, *parts):
    """An assertion whose message joins string / integer tensors."""
    message = tf.strings.join([p if isinstance(p, str) or p.dtype == tf.string
                               else tf.strings.as_string(p) for p in parts])
    return tf.debugging.Assert(ok, [message], summarize=1)


def _read_shard(path, size, decode, image_size, layout, first_label,
                num_classes):
    """(uint8 image, int32 label) of one shard, in order; errors name it.

    A record whose parse or decode fails is dropped by `ignore_errors` and
    then detected as a gap in the record indices; a framing error ends the
    reader early, detected by an end marker that compares the bytes read
    with the file's size.
    """
    features = {layout.image_key: tf.io.FixedLenFeature([], tf.string),
                layout.label_key: tf.io.FixedLenFeature([], tf.int64)}
    records = tf.data.TFRecordDataset(path).enumerate()
    end = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64),
                                        tf.constant(b"")))

    @_graph_only
    def count(totals, element):
        index, record = element
        totals = tf.where(index >= 0, totals + tf.stack([
            tf.constant(1, tf.int64),
            tf.cast(tf.strings.length(record), tf.int64) + _FRAMING_BYTES]),
            totals)
        return totals, (index, record, totals)

    @_graph_only
    def parse(index, record, totals):
        def read():
            example = tf.io.parse_single_example(record, features)
            label = tf.cast(example[layout.label_key], tf.int32) - first_label
            return decode(example[layout.image_key]), label

        def marker():
            return tf.zeros([image_size, image_size, 3], tf.uint8), -1

        image, label = tf.cond(index >= 0, read, marker)
        return index, image, label, totals

    @_graph_only
    def check(expected, element):
        index, image, label, totals = element
        is_end = index < 0
        checks = [
            _assert(is_end | tf.equal(index, expected), path, ": record ",
                    expected, " is corrupt (not a tf.Example with '",
                    layout.image_key, "' JPEG bytes and '", layout.label_key,
                    "'). Re-create or remove this file."),
            _assert(~is_end | tf.equal(totals[0], expected), path,
                    ": record ", expected, " is corrupt. Re-create or remove "
                    "this file."),
            _assert(~is_end | tf.equal(totals[1], size), path,
                    " is truncated or corrupted at record ", expected,
                    " (read ", totals[1], " of ", size, " bytes). Re-create "
                    "or download this file again."),
            _assert(is_end | ((label >= 0) & (label < num_classes)), path,
                    ": record ", index, " has label ", label + first_label,
                    f", outside {first_label}..{first_label + num_classes - 1}"
                    f" ({layout.name} layout, num_classes={num_classes}). If "
                    "these shards number classes from 0 (or 1), set "
                    "first_label=0 (or 1) in the config."),
        ]
        with tf.control_dependencies(checks):
            return index + 1, (tf.identity(index), image, label)

    return (records.concatenate(end)
            .scan(tf.zeros([2], tf.int64), count)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .ignore_errors()
            .scan(tf.constant(0, tf.int64), check)
            .filter(_graph_only(lambda index, image, label: index >= 0))
            .map(_graph_only(lambda index, image, label: (image, label))))


def _sizes(files):
    # In parallel: one request per file adds up on gs:// (1,024 shards).
    with futures.ThreadPoolExecutor(32) as pool:
        return list(pool.map(lambda f: tf.io.gfile.stat(f).length, files))


def _read(files, transform, layout, config, training, seed=0):
    """Interleaves the shards `files` into (uint8 image, label) examples.

    `transform(encoded_jpeg, image_size)` returns a float image.
    """
    image_size = config.image_size

    def decode(encoded):
        # uint8 keeps the shuffle buffer 4x smaller; normalised per batch.
        image = transform(encoded, image_size)
        return tf.cast(tf.clip_by_value(tf.math.round(image), 0, 255),
                       tf.uint8)

    first_label = (layout.first_label if config.first_label < 0
                   else config.first_label)
    shards = tf.data.Dataset.from_tensor_slices(
        (files, np.asarray(_sizes(files), np.int64)))
    if training:
        shards = shards.shuffle(len(files), seed=seed,
                                reshuffle_each_iteration=True).repeat()
    return shards.interleave(
        _graph_only(lambda path, size: _read_shard(
            path, size, decode, image_size, layout, first_label,
            config.num_classes)),
        cycle_length=min(16, len(files)), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)


@_graph_only
def normalise(images, labels):
    """uint8 images -> float32, standardised with ImageNet's statistics."""
    images = (tf.cast(images, tf.float32) - MEAN) / STD
    return images, labels


def _finish(dataset, batch_size, drop_remainder):
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Files are sharded per worker by hand (`_worker_shard`).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def train_dataset(files, layout, config, batch_size, seed=0):
    """Endless batches of augmented, normalised training images."""
    dataset = _read(files, lambda e, s: random_resized_crop(e, s, seed),
                    layout, config, training=True, seed=seed)
    if config.train_subset:  # N images per pass instead of all
        dataset = dataset.take(config.train_subset).repeat()
    dataset = dataset.shuffle(config.shuffle_buffer, seed=seed)
    return _finish(dataset, batch_size, drop_remainder=True)


def eval_dataset(files, layout, config, batch_size, drop_remainder=False):
    """One pass of center-cropped, normalised images in file order."""
    dataset = _read(files, center_crop, layout, config, training=False)
    return _finish(dataset, batch_size, drop_remainder)


def count_records(files):
    """Number of records in `files` (reads the framing, not the images)."""
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=16)
    return int(dataset.reduce(np.int64(0),
                              _graph_only(lambda n, _: n + 1)))


def _worker_shard(strategy):
    """(number of input pipelines, this host's index) for file sharding."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1, 0
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    chiefs = spec.num_tasks("chief") if "chief" in spec.jobs else 0
    offset = chiefs if resolver.task_type == "worker" else 0
    return chiefs + spec.num_tasks("worker"), offset + resolver.task_id


@dataclasses.dataclass
class StreamedSplits(Splits):
    """`Splits` whose representative images are decoded on demand.

    `calibration()` returns batches of normalised evaluation-cropped
    training images.
    """

    calibration: object = None

    def representative(self, count=200):
        batches = self.calibration().unbatch().take(count)
        return np.stack([x for x, _ in batches])


def make_splits(config, strategy, batch_size):
    """The ImageNet `Splits` of `config` for `strategy`.

    Args:
        config: reads `data_dir`, `image_size`, `num_classes`,
            `train_size` (0: count the records), `first_label` (-1: the
            layout's), `shuffle_buffer`, `train_subset`,
            `validation_split` (share of training *files* held out) and
            `seed`.
        strategy: the run's strategy; each worker of a multi-worker run
            reads its own share of the training files.
        batch_size: the global batch size.

    `test` is the official validation split (the papers' reported
    accuracy); `validation`, when requested, is held out of the training
    shards. Every worker evaluates the whole test set, so all of them run
    the same number of steps.
    """
    layout = detect_layout(config.data_dir)
    train_files = layout.files(config.data_dir, "train")
    test_files = layout.files(config.data_dir, "validation")
    if not test_files:
        raise FileNotFoundError(
            f"{config.data_dir} has {layout.name} training shards but no "
            f"validation shards ({', '.join(layout.validation)}).")
    validation = None
    if config.validation_split:
        held = max(1, int(round(len(train_files) * config.validation_split)))
        if not 0.0 < config.validation_split < 1.0 or held >= len(
                train_files):
            raise UsageError(
                f"validation_split={config.validation_split} must hold out "
                f"between 1 and {len(train_files) - 1} of the "
                f"{len(train_files)} training files.")
        validation_files, train_files = train_files[:held], train_files[held:]
    replicas = strategy.num_replicas_in_sync
    if config.validation_split:
        validation = eval_dataset(validation_files, layout, config,
                                  batch_size, drop_remainder=replicas > 1)

    train_size = config.train_size or count_records(train_files)
    if config.train_subset:
        train_size = min(train_size, config.train_subset)
    workers, index = _worker_shard(strategy)
    if len(train_files) < workers:
        raise UsageError(
            f"{len(train_files)} training files cannot be split over "
            f"{workers} workers; write the data in at least {workers} "
            "shards.")
    log.info("ImageNet (%s layout): %d training files (worker %d of %d "
             "reads %d), %d validation files, %d training images",
             layout.name, len(train_files), index, workers,
             len(train_files[index::workers]), len(test_files), train_size)
    size = config.image_size
    return StreamedSplits(
        train=train_dataset(train_files[index::workers], layout, config,
                            batch_size, seed=config.seed + index),
        validation=validation,
        # An empty per-replica batch crashes oneDNN convs (platform facts).
        test=eval_dataset(test_files, layout, config, batch_size,
                          drop_remainder=replicas > 1),
        input_shape=(size, size, 3),
        num_classes=config.num_classes,
        train_size=train_size,
        x_train=None,
        mean=MEAN,
        std=STD,
        calibration=functools.partial(eval_dataset, train_files, layout,
                                      config, 50),
    )


# Writing shards -----------------------------------------------------------

def _feature(value):
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def write_shards(images, labels, data_dir, split, num_shards,
                 layout="inception", quality=90):
    """Writes uint8 RGB images as JPEG TFRecord shards in a layout.

    Handy to turn any labelled images (0-based labels) into input for
    `--dataset=imagenet`, and what the tests and benchmarks use.

    Args:
        images: uint8 array (N, H, W, 3) or a list of (H, W, 3) arrays.
        labels: int array (N,), 0-based; stored shifted by the layout's
            `first_label`.
        data_dir: output folder (created; local or gs://).
        split: "train" or "validation".
        num_shards: number of files.
        layout: a name in `LAYOUTS`.
        quality: JPEG quality.

    Returns:
        The written paths.

    Example:

    >>> import os, tempfile
    >>> images = np.zeros((8, 16, 16, 3), "uint8")
    >>> paths = write_shards(images, np.arange(8), tempfile.mkdtemp(),
    ...                      "train", 4)
    >>> [os.path.basename(path) for path in paths][:2]
    ['train-00000-of-00004', 'train-00001-of-00004']
    """
    spec = LAYOUTS.get(layout)
    pattern = getattr(spec, split)[0]
    tf.io.gfile.makedirs(data_dir)
    paths = []
    for shard in range(num_shards):
        name = pattern.replace("*-of-*", f"{shard:05d}-of-{num_shards:05d}")
        name = name.replace("tfrecord-*",
                            f"tfrecord-{shard:05d}-of-{num_shards:05d}")
        path = _join(data_dir, name)
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard, len(labels), num_shards):
                encoded = tf.io.encode_jpeg(images[i], quality=quality)
                example = tf.train.Example(features=tf.train.Features(
                    feature={
                        spec.image_key: _feature(encoded.numpy()),
                        spec.label_key: _feature(
                            int(labels[i]) + spec.first_label),
                    }))
                writer.write(example.SerializeToString())
        paths.append(path)
    return paths
