"""The training run behind the trainers: data -> method -> fit -> export.

`run(config)` is the whole job; the trainers only parse flags into a config.
Every epoch is checkpointed in `<workdir>/backup`, and the same command
started again resumes from the last finished epoch (optimizer included).
"""

import dataclasses
import logging
import math
import os
import sys
import time

import keras
import tensorflow as tf
from keras import ops

from keras_compact import api
from keras_compact import backup
from keras_compact import data as data_lib
from keras_compact import distribute
from keras_compact import evaluation
from keras_compact import export
from keras_compact import files
from keras_compact import methods
from keras_compact import optimizers
from keras_compact import profiling
from keras_compact import qat
from keras_compact import workdir
from keras_compact.errors import UsageError
from keras_compact.methods import knowledge_distillation
from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")


@dataclasses.dataclass
class Context:
    """What a method's hooks see of the run."""

    config: object
    strategy: object
    workdir: str
    data: data_lib.Splits


class NonFiniteLossError(RuntimeError):
    pass


# How far above its starting value the loss may rise before the run is
# stopped as divergent. A cross-entropy L means the true class gets
# probability exp(-L) on average; an untrained classifier sits near
# log(num_classes). 100 x that (230 for 10 classes) needs logit margins of
# hundreds, which no converging run reaches, while a diverging one grows
# geometrically and passes it within a few steps.
DIVERGENCE_FACTOR = 100.0


class StopOnDivergence(keras.callbacks.Callback):
    """Stops the run with a clear error when the loss diverges.

    Divergent means NaN, inf, or above `DIVERGENCE_FACTOR` times the
    starting loss: the first logged loss of this start, but at least
    `log(num_classes)` (a resumed run starts lower, and its bound must not
    tighten below that of a fresh one).

    Args:
        num_classes: classes of the task, for the floor of the bound.
    """

    def __init__(self, num_classes):
        super().__init__()
        self.floor = math.log(max(2, num_classes))
        self.bound = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if self.bound is None and math.isfinite(loss):
            self.bound = DIVERGENCE_FACTOR * max(loss, self.floor)
        finite = math.isfinite(loss)
        if not finite or loss > self.bound:
            why = "" if not finite else (
                f" (divergent: above the bound {self.bound:.4g} = "
                f"{DIVERGENCE_FACTOR:g} x the starting loss)")
            raise NonFiniteLossError(
                f"The loss became {loss:.4g} at epoch {self.epoch + 1}, "
                f"step {batch + 1}{why}. Lower the learning rate (--lr) or "
                "check the inputs; the last finished epoch is kept in the "
                "workdir's backup."
            )


class ThroughputLog(keras.callbacks.Callback):
    """Logs one line per epoch with the metrics and images per second."""

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.train_seconds = 0.0
        self.epochs_run = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.train_seconds += seconds
        self.epochs_run += 1
        metrics = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
        log.info("epoch %d: %s (%.0f images/s)", epoch + 1, metrics,
                     self.images_per_epoch / seconds)

    @property
    def images_per_second(self):
        if not self.epochs_run:
            return 0.0
        return self.images_per_epoch * self.epochs_run / self.train_seconds


def _global_batch(config, strategy):
    replicas = strategy.num_replicas_in_sync
    if config.batch_size < replicas or config.batch_size % replicas:
        raise ValueError(
            f"batch_size={config.batch_size} must be a multiple of the "
            f"{replicas} replicas of --strategy={config.strategy} (each "
            "replica needs at least one image). Use a batch size divisible "
            f"by {replicas}."
        )
    return config.batch_size


def _load_in_memory(config, strategy, batch_size):
    dataset = data_lib.load(config.dataset, config.data_dir)
    return data_lib.make_splits(
        dataset,
        batch_size,
        validation_split=config.validation_split,
        train_subset=config.train_subset,
        augment=config.augment,
        seed=config.seed,
        # An empty per-replica batch crashes oneDNN convs under tf.distribute.
        eval_drop_remainder=strategy.num_replicas_in_sync > 1,
    )


# Datasets read from files as a stream instead of loaded into memory:
# `name -> make_splits(config, strategy, global_batch_size) -> Splits`.
STREAMED = Registry("streamed dataset")
STREAMED.register("imagenet", data_lib.imagenet.make_splits)


def _training_input(data, strategy, repeat):
    """What `fit` trains on: per-host pipelines on a multi-host strategy."""
    if data.train_pipeline is not None:
        # Shards may differ by an image: repeat, `fit` counts the steps.
        per_host = distribute.per_host_dataset(
            strategy, lambda context: data.train_pipeline(
                input_context=context).repeat())
        if per_host is not None:
            return per_host
    return data.train.repeat() if repeat else data.train


def load_data(config, strategy):
    """The `Splits` of `config.dataset`, streamed or in memory."""
    make_splits = (STREAMED.get(config.dataset) if config.dataset in STREAMED
                   else _load_in_memory)
    return make_splits(config, strategy, _global_batch(config, strategy))


@api.serializable
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against smoothed one-hot targets.

    The target is `(1 - label_smoothing)` on the true class plus
    `label_smoothing / num_classes` on every class (Szegedy et al., 2016),
    as `keras.losses.CategoricalCrossentropy(label_smoothing=...)` but for
    integer labels (Keras's sparse cross-entropy has no smoothing).

    Args:
        label_smoothing: in [0, 1).
        from_logits: whether predictions are logits.
    """

    def __init__(self, label_smoothing=0.1, from_logits=True,
                 name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        targets = ops.one_hot(labels, ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            targets, y_pred, from_logits=self.from_logits,
            label_smoothing=self.label_smoothing)

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing,
                      from_logits=self.from_logits)
        return config


def _smooth_labels(model, config):
    """Recompiles `model` with `SmoothedCrossentropy` in place of its loss.

    Only for methods that compile with the plain sparse cross-entropy; the
    rest of what the method compiled (metrics, jit, steps per execution,
    optimizer) is kept through `get_compile_config`.
    """
    if not isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy):
        raise ValueError(
            f"label_smoothing={config.label_smoothing} needs a method that "
            "trains with the plain sparse cross-entropy; --method="
            f"{config.method} compiles {model.loss!r}. Set label_smoothing=0."
        )
    compile_config = model.get_compile_config()
    compile_config["loss"] = keras.saving.serialize_keras_object(
        SmoothedCrossentropy(config.label_smoothing,
                             from_logits=model.loss.from_logits))
    model.compile_from_config(compile_config)


class _CSVLogger(keras.callbacks.CSVLogger):
    """Keras 3.15's CSVLogger, fixed for gs:// files.

    Its `on_train_end` reads `file.closed`, which `tf.io.gfile.GFile` (what
    Keras opens for remote paths) does not have.
    """

    def on_train_end(self, logs=None):
        if self.csv_file:
            self.csv_file.close()
            self.csv_file = None
        self.writer = None


class LearningRateLog(keras.callbacks.Callback):
    """Adds `lr` to the epoch logs: the learning rate of the epoch's first
    step (the whole epoch's under a step schedule), read before it runs.

    Keras's TensorBoard reads the rate at epoch end, which is already the
    next epoch's; `_TensorBoard` writes this one instead.
    """

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self._lr = float(ops.convert_to_numpy(optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self._lr


class _TensorBoard(keras.callbacks.TensorBoard):
    def _collect_learning_rate(self, logs):
        return logs  # `lr` from LearningRateLog is in the logs already


def _callbacks(context, method, chief, images_per_epoch):
    directory = context.workdir
    # Each task has its own backup: workers must not overwrite the chief's.
    task = 0 if chief else distribute.task_position()
    throughput = ThroughputLog(images_per_epoch)
    callbacks = [
        backup.Backup(os.path.join(directory, backup.directory_name(task))),
        StopOnDivergence(context.data.num_classes),
        throughput,
        LearningRateLog(),  # before the loggers that write `lr`
    ]
    if chief:
        callbacks += [
            _CSVLogger(os.path.join(directory, "log.csv"), append=True),
            _TensorBoard(os.path.join(directory, "tensorboard"),
                         write_graph=False),
        ]
    return callbacks + method.callbacks(context), throughput


def _calibration(model, context):
    data = context.data
    return export.calibration_inputs(model, data.representative(),
                                     data.mean, data.std)


EXPORTS = Registry("export format")
EXPORTS.register("saved_model", lambda model, directory, context:
                 export.to_saved_model(model,
                                       os.path.join(directory,
                                                    "saved_model")))
for _quantization, _file in (("float32", "model.tflite"),
                             ("float16", "model_float16.tflite"),
                             ("int8", "model_int8.tflite")):
    EXPORTS.register(
        "tflite" if _quantization == "float32" else f"tflite_{_quantization}",
        lambda model, directory, context, q=_quantization, f=_file:
        export.to_litert(model, os.path.join(directory, f), q,
                         _calibration(model, context)),
    )


def _save(model, path):
    with files.atomic_write(path) as temporary:
        model.save(temporary)


def _bytes(path):
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(tf.io.gfile.stat(os.path.join(folder, name)).length
               for folder, _, names in tf.io.gfile.walk(path)
               for name in names)


def _record(path, context):
    """What metrics.json keeps of an exported file."""
    data = context.data
    result = evaluation.evaluate(
        evaluation.open_model(path), evaluation.pixel_batches(data),
        data.num_classes, data.input_shape, data.mean, data.std,
        progress=context.config.verbose)
    log.info("exported %s: %s bytes, test accuracy %.4f", path,
             f"{_bytes(path):,}", result["top1"])
    return {"path": path, "bytes": _bytes(path),
            "test_accuracy": result["top1"]}


def _export(model, context):
    """Writes the formats of `config.export`; returns what metrics.json
    records of each: `{format: {path, bytes, test_accuracy}}`."""
    directory = os.path.join(context.workdir, "export")
    return {name: _record(EXPORTS.get(name)(model, directory, context),
                          context)
            for name in filter(None, context.config.export.split(","))}


QAT_FILE = "model_int8_qat.tflite"


def _quantization_aware(deployable, context):
    """A raw-pixel copy of `deployable` fine-tuned for `config.qat_epochs`
    with int8 fake quantization (`keras_compact.qat`), or None (no QAT, or
    a deployable it cannot model: a warning says why).

    Every worker trains (the fit is collective); the chief exports.
    """
    config, data = context.config, context.data
    if not config.get("qat_epochs"):
        return None
    if config.qat_epochs < 0:
        raise UsageError(f"qat_epochs={config.qat_epochs}: must be 0 (no "
                         "quantization-aware training) or positive.")
    mean = tf.constant(data.mean, tf.float32)
    std = tf.constant(data.std, tf.float32)
    pixels = data.train.map(lambda x, y: (x * std + mean, y))
    with context.strategy.scope():
        servable = export.with_raw_input(deployable, data.mean, data.std,
                                         data.input_shape)
        try:
            qat.quantize_model(servable)
        except UsageError as error:  # the trained model is kept regardless
            log.warning("qat_epochs=%d skipped: %s", config.qat_epochs,
                        error)
            return None
        qat.fine_tune(
            servable, pixels.repeat() if config.steps_per_epoch else pixels,
            _calibration(servable, context), epochs=config.qat_epochs,
            steps_per_epoch=config.steps_per_epoch or None,
            verbose=config.verbose)
    return servable


def _evaluate(model, trained, dataset):
    if model is not trained and model.inputs:
        # A transformed copy: compile a view that shares its layers, so
        # that the saved copy carries no optimizer it never used.
        model = keras.Model(model.inputs, model.outputs)
    if model is not trained:
        model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return float(results["loss"]), float(results["accuracy"])


def run(config):
    """Trains `config.method` on `config.dataset`; returns the metrics dict.

    Writes to `config.workdir`: `backup/` (resume), `log.csv`,
    `tensorboard/`, `model.keras` (as trained), `deployable.keras` (after
    the method's transform, taking raw pixels: `export.with_raw_input`),
    `export/` and `metrics.json` (with the input contract and every
    exported file's size and test accuracy).
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    method = methods.get(config.method)
    method.check(config)
    workdir.check_config(config)
    strategy = distribute.get(config.strategy, tpu=config.tpu)
    chief = distribute.is_chief(strategy)
    # tf.io.gfile: the workdir may be a gs:// path (Keras's callbacks and
    # saving handle such paths themselves).
    tf.io.gfile.makedirs(config.workdir)
    data = load_data(config, strategy)
    context = Context(config, strategy, config.workdir, data)
    if not method.prepare(context):
        return {}

    steps_per_epoch = config.steps_per_epoch or (
        data.train_size // config.batch_size)
    with strategy.scope():
        model = knowledge_distillation.with_teacher(method.build_model(
            config, data.input_shape, data.num_classes), config)
        optimizer = optimizers.make_optimizer(config, steps_per_epoch)
        method.compile_model(model, optimizer, config)
        if config.get("label_smoothing"):
            _smooth_labels(model, config)
    callbacks, throughput = _callbacks(
        context, method, chief, steps_per_epoch * config.batch_size)
    train = _training_input(data, strategy, config.steps_per_epoch)
    if chief:
        workdir.record_config(config)
    model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=data.validation or data.test,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles (fit would warn)
        # A progress bar in a log file is thousands of \r updates: there,
        # one line per epoch.
        verbose=(2 if config.verbose == 1 and not sys.stdout.isatty()
                 else config.verbose),
    )

    if chief:
        _save(model, os.path.join(config.workdir, "model.keras"))
    deployable = method.deployable(knowledge_distillation.student_of(model),
                                   context)
    if deployable is not model and deployable.inputs:
        # Keras's clone_model compiles a clone with a new optimizer that
        # never runs; an uncompiled view of the same layers carries none
        # (`input`, not `inputs`: the view keeps the model's input structure).
        deployable = keras.Model(deployable.input, deployable.output,
                                 name=deployable.name)
    loss, accuracy = _evaluate(deployable, model, data.test)
    report = profiling.profile(deployable)
    metrics = {
        "method": config.method,
        "arch": config.arch,
        "dataset": config.dataset,
        "test_accuracy": accuracy,
        "test_loss": loss,
        "params": report.params,
        "macs": report.macs,
        "profile_convention": report.convention,
        "epochs": config.epochs,
        "train_images_per_second": throughput.images_per_second,
        "wall_seconds": time.perf_counter() - start,
        **method.deployment_notes(),
    }
    qat_servable = _quantization_aware(deployable, context)
    if chief:
        # What ships takes raw pixels; the trained maths is unchanged.
        servable = export.with_raw_input(deployable, data.mean, data.std,
                                         data.input_shape)
        _save(servable, os.path.join(config.workdir, "deployable.keras"))
        metrics["input"] = export.input_contract(servable)
        metrics["exports"] = _export(servable, context)
        if qat_servable is not None:
            path = export.to_litert(
                qat_servable, os.path.join(config.workdir, "export",
                                           QAT_FILE), "int8",
                _calibration(qat_servable, context))
            metrics["exports"]["tflite_int8_qat"] = _record(path, context)
        files.write_json(os.path.join(config.workdir, "metrics.json"),
                         metrics)
    log.info("test accuracy %.4f, %s params, %s MACs", accuracy,
                 f"{report.params:,}", f"{report.macs:,}")
    return metrics
