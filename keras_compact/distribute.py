"""The tf.distribute strategy factory: `--strategy=NAME`.

| name | strategy |
|---|---|
| default | no distribution (the default strategy) |
| one_device | the first GPU, else the CPU |
| mirrored | all local GPUs, else all logical CPUs (tests) |
| multi_worker | MultiWorkerMirroredStrategy over TF_CONFIG's cluster |
| tpu | TPUStrategy on `--tpu=ADDRESS` (or the TPU VM's local TPU) |
"""

import json
import os

import keras
import tensorflow as tf

from keras_compact.errors import UsageError
from keras_compact.registry import Registry

STRATEGIES = Registry("strategy")


@STRATEGIES.register("default")
def _default(tpu=""):
    del tpu
    return tf.distribute.get_strategy()


@STRATEGIES.register("one_device")
def _one_device(tpu=""):
    del tpu
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else
                                           "/cpu:0")


@STRATEGIES.register("mirrored")
def _mirrored(tpu=""):
    del tpu
    devices = tf.config.list_logical_devices("GPU") or (
        tf.config.list_logical_devices("CPU"))
    return tf.distribute.MirroredStrategy([d.name for d in devices])


@STRATEGIES.register("multi_worker")
def _multi_worker(tpu=""):
    del tpu
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "--strategy=multi_worker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}} on each host.'
        )
    _patch_keras_for_multi_worker()
    return tf.distribute.MultiWorkerMirroredStrategy()


@STRATEGIES.register("tpu")
def _tpu(tpu=""):
    # An empty name would make TF ask the GCE metadata server; a TPU VM's own
    # chips are "local".
    tpu = tpu or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    # OSError: a TPU name is looked up through the GCE metadata server,
    # which off Google Cloud is a URLError.
    except (ValueError, OSError, tf.errors.OpError, RuntimeError) as error:
        raise UsageError(
            f"No TPU reachable at --tpu={tpu!r} "
            f"({str(error).strip().splitlines()[0]}). On a Cloud TPU VM "
            "leave --tpu empty or pass 'local'; on a TPU node pass its name "
            "or grpc:// address."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def get(name, tpu=""):
    """Returns the strategy registered as `name` (see the module table)."""
    return STRATEGIES.get(name)(tpu=tpu)


def names():
    return STRATEGIES.names()


def is_chief(strategy):
    """True where final checkpoints and exports are written.

    Only one worker of a multi-worker run writes them: the `chief` task, or
    worker 0 when the cluster has no chief.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return task_position() == 0


def per_host_dataset(strategy, pipeline):
    """`pipeline(input_context)` run on every host, or None on one host.

    MultiWorkerMirroredStrategy and TPUStrategy (pods: one input pipeline
    per host) get `distribute_datasets_from_function`: each host builds its
    own pipeline from the `tf.distribute.InputContext`, so that it reads
    only its share of the data, batched per replica. Other strategies keep
    Keras's own `experimental_distribute_dataset` of the global dataset.
    """
    if not isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                                 tf.distribute.TPUStrategy)):
        return None
    return strategy.distribute_datasets_from_function(pipeline)


def require_tensorflow_backend(model):
    """Stops a model whose train step is TensorFlow's on any other backend.

    OD, KD and the APS search write `train_step` with `tf.GradientTape`
    and tf.distribute's loss scaling; Keras's JAX trainer calls
    `train_step(state, data)` instead and torch's has no tape, so they
    would fail deep inside `fit`. Their layers and the deployable models
    they produce run on every backend.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UsageError(
            f"{type(model).__name__} trains on the TensorFlow backend only "
            f"(its train_step uses tf.GradientTape); KERAS_BACKEND is "
            f"{backend!r}. Set KERAS_BACKEND=tensorflow to train it; the "
            "model it exports runs on any backend.")


def num_replicas():
    """Replicas of the strategy in scope (1 outside any strategy).

    Keras losses divide by it under tf.distribute; a hand-made loss term
    does the same, and logging multiplies it back.
    """
    return tf.distribute.get_strategy().num_replicas_in_sync


def _cluster():
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return config.get("cluster", {}), config.get("task", {})


def num_tasks():
    """The chief and workers of TF_CONFIG's cluster (1 without one)."""
    cluster, _ = _cluster()
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker",
                                                                  [])))


def task_position():
    """This process's place among `num_tasks()`: 0 is the chief.

    Worker `i` is at `i` in a cluster without a chief (worker 0 is then the
    chief) and at `i + 1` in one with a chief.
    """
    cluster, task = _cluster()
    if task.get("type") == "chief":
        return 0
    return int(task.get("index", 0)) + ("chief" in cluster)


_PATCHED_KERAS = "3.15"


def _patch_keras_for_multi_worker():
    """Fixes Keras 3.15's `fit` under MultiWorkerMirroredStrategy.

    Two upstream bugs stop it before the first step: the symbolic build
    reduces a per-replica batch eagerly (keras-team/keras#20585), and the
    logs are reduced over axis 0 although they are scalars. Both functions
    are replaced by versions that take one replica's batch and reduce
    scalars over no axis. Pinned to Keras 3.15: other versions fail loudly
    here rather than train wrongly.
    """
    if not keras.__version__.startswith(_PATCHED_KERAS):
        raise RuntimeError(
            f"The multi-worker fix is written for Keras {_PATCHED_KERAS}.x; "
            f"this is Keras {keras.__version__}. Install keras=="
            f"{_PATCHED_KERAS}.* or check whether keras#20585 is fixed."
        )
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_keras_compact_patched", False):
        return
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = trainer.reduce_per_replica

    def symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or self._distribute_strategy is None:
            return original_build(self, iterator=iterator,
                                  data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        batch = tf.nest.map_structure(
            lambda v: self.distribute_strategy.experimental_local_results(
                v)[0] if isinstance(v, tf.distribute.DistributedValues)
            else v, batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=batch)

    def reduce_per_replica(values, strategy, reduction="auto"):
        if trainer._collective_all_reduce_multi_worker(strategy) and (
                reduction in ("auto", "mean")):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer._keras_compact_patched = True
