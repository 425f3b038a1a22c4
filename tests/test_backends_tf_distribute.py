"""tf.distribute input: one pipeline per host, each with its own share."""

import numpy as np
import pytest
import tensorflow as tf

from keras_compact import distribute
from keras_compact.data import pipeline


def _labels(dataset):
    return [batch[1].numpy().tolist() for batch in dataset]


@pytest.mark.parametrize("training", [False, True])
def test_each_host_reads_its_own_share_in_per_replica_batches(training):
    images = np.zeros((48, 4, 4, 1), "uint8")
    labels = np.arange(48)
    seen = []
    for host in range(3):
        # 3 hosts with 2 replicas each, global batch 12: 2 images a replica.
        context = tf.distribute.InputContext(
            num_input_pipelines=3, input_pipeline_id=host,
            num_replicas_in_sync=6)
        batches = _labels(pipeline.make_dataset(
            images, labels, 12, [0], [1], training=training, seed=1,
            input_context=context))
        assert {len(batch) for batch in batches} == {2}
        assert len(batches) == 8
        seen.append(sorted(sum(batches, [])))
    assert seen == [list(range(host, 48, 3)) for host in range(3)]


def test_one_host_strategies_keep_the_global_dataset():
    def never(context):
        raise AssertionError("per-host pipeline built on one host")

    assert distribute.per_host_dataset(tf.distribute.get_strategy(),
                                       never) is None
    assert distribute.per_host_dataset(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), never) is None
