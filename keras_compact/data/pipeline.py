"""tf.data input pipelines: shuffle, per-image pad-crop and flip, normalise.

Augmentation runs on whole batches but draws a crop offset and a flip for
every image (Keras's `RandomCrop` on a batch crops every image alike), which
is about 2x faster than mapping a per-image function.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from keras_compact.errors import UsageError

PAD = 4


def _augment_batch(images, seed):
    """Pads by 4, crops back at a random offset per image, flips half."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    offsets = tf.random.uniform([2, batch], 0, 2 * PAD + 1, tf.int32,
                                seed=seed)
    rows = offsets[0][:, None] + tf.range(height)[None]
    cols = offsets[1][:, None] + tf.range(width)[None]
    flip = tf.random.uniform([batch], seed=seed) < 0.5
    cols = tf.where(flip[:, None], tf.reverse(cols, [1]), cols)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def make_dataset(images, labels, batch_size, mean, std, training,
                 augment=True, seed=0, drop_remainder=None,
                 input_context=None):
    """Builds the batched dataset of (normalised float32 images, labels).

    Args:
        images: uint8 array (N, H, W, C).
        labels: int array (N,).
        batch_size: global batch size.
        mean, std: per-channel statistics in [0, 255].
        training: shuffle (seeded, reshuffled every epoch), drop the last
            partial batch and augment.
        augment: pad-4 random crop + horizontal flip when training.
        seed: shuffle and augmentation seed.
        drop_remainder: defaults to `training`.
        input_context: a `tf.distribute.InputContext` (multi-host input,
            `distribute.per_host_dataset`): this pipeline reads only its
            1/`num_input_pipelines` share of the images and batches them
            per replica (`batch_size` stays the global one).

    >>> import numpy as np
    >>> context = tf.distribute.InputContext(num_input_pipelines=2,
    ...                                      input_pipeline_id=1,
    ...                                      num_replicas_in_sync=4)
    >>> batches = make_dataset(np.zeros((16, 2, 2, 1), "uint8"),
    ...                        np.arange(16), 8, [0], [1], training=False,
    ...                        input_context=context)
    >>> [batch[1].numpy().tolist() for batch in batches]
    [[1, 3], [5, 7], [9, 11], [13, 15]]
    """
    if len(images) < batch_size and training:
        raise UsageError(f"The training set has {len(images)} images, fewer "
                         f"than one batch of {batch_size}; lower --batch_size "
                         "or raise --train_subset.")
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    augment = augment and training

    def prepare(x, y):
        if augment:
            x = _augment_batch(x, seed)
        x = (tf.cast(x, tf.float32) - mean) / std
        return x, tf.cast(y, tf.int32)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if input_context is not None:
        # Shard before the shuffle, so that every epoch each image is read
        # by exactly one host.
        dataset = dataset.shard(input_context.num_input_pipelines,
                                input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if training:
        dataset = dataset.shuffle(len(images), seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.batch(
        batch_size,
        drop_remainder=training if drop_remainder is None else drop_remainder,
    )
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class Splits:
    """What a method sees of the data (see `Method` in keras_compact.methods).

    `validation` is held out of the training set (for model selection and
    search rewards; never the test set) and is None unless requested.
    """

    train: tf.data.Dataset
    validation: object
    test: tf.data.Dataset
    input_shape: tuple
    num_classes: int
    train_size: int
    x_train: np.ndarray
    mean: tuple
    std: tuple
    # `train_pipeline(input_context=...)` builds `train` for one host of a
    # multi-host strategy (`distribute.per_host_dataset`); None where the
    # data is sharded otherwise (streamed ImageNet shards its files).
    train_pipeline: object = None

    def representative(self, count=200):
        """`count` normalised training images, e.g. for int8 calibration."""
        x = self.x_train[:count].astype("float32")
        return (x - np.asarray(self.mean, "float32")) / np.asarray(
            self.std, "float32")


def make_splits(dataset, batch_size, validation_split=0.0, train_subset=0,
                augment=True, seed=0, eval_drop_remainder=False):
    """Splits an `ImageDataset` into train / validation / test pipelines."""
    x, y = dataset.x_train, dataset.y_train
    if not 0 <= train_subset <= len(x):
        raise UsageError(f"train_subset={train_subset}: must be 0 (all) or "
                         f"at most the {len(x)} training images.")
    if train_subset:
        x, y = x[:train_subset], y[:train_subset]
    validation = None
    if validation_split:
        if not 0.0 < validation_split < 1.0:
            raise UsageError(f"validation_split must be in (0, 1). "
                             f"Received: {validation_split}.")
        order = np.random.default_rng(seed).permutation(len(x))
        held = int(round(len(x) * validation_split))
        x_val, y_val = x[order[:held]], y[order[:held]]
        x, y = x[order[held:]], y[order[held:]]
        validation = make_dataset(x_val, y_val, batch_size, dataset.mean,
                                  dataset.std, training=False,
                                  drop_remainder=eval_drop_remainder)
    common = dict(batch_size=batch_size, mean=dataset.mean, std=dataset.std)
    train_pipeline = functools.partial(make_dataset, x, y, training=True,
                                       augment=augment, seed=seed, **common)
    return Splits(
        train=train_pipeline(),
        train_pipeline=train_pipeline,
        validation=validation,
        test=make_dataset(dataset.x_test, dataset.y_test, training=False,
                          drop_remainder=eval_drop_remainder, **common),
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        train_size=len(x),
        x_train=x,
        mean=dataset.mean,
        std=dataset.std,
    )
