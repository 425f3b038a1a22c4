"""APS search state through tf.io.gfile, the epoch log, divergence."""

import logging
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact.layers import aps as aps_layers
from keras_compact.methods import aps


def _model(search_lr=0.1):
    net = aps.APSResNetCifar(8, (4, 8), num_classes=10,
                             input_shape=(8, 8, 3))
    model = aps.ChannelSearchModel(net, 0.6 * net.macs(np.ones(7, "int32")))
    model.compile(keras.optimizers.SGD(search_lr, momentum=0.9),
                  keras.optimizers.SGD(1e-2, momentum=0.9),
                  keras.optimizers.Adam(1e-3, beta_1=0.5))
    return model


def _pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 10, 32).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return tf.data.Dataset.zip((data, data))


def test_search_state_and_curves_go_through_gfile(caplog):
    workdir = f"ram://aps_{uuid.uuid4().hex}"
    model = _model()
    with caplog.at_level(logging.INFO, logger="keras_compact"):
        aps.run_search(model, _pairs(), epochs=2, warmup_epochs=1,
                       workdir=workdir, verbose=0)
    assert "APS epoch 2 (search): entropy" in caplog.text
    assert "MACs/budget" in caplog.text and "psi" in caplog.text
    assert sorted(tf.io.gfile.listdir(workdir)) == [
        "aps_search.npz", "aps_sharing_level.json"]
    curve = aps.SearchLog(workdir).curve
    assert [row["epoch"] for row in curve] == [1, 2]
    for key in ("entropy", "reward", "budget", "psi", "macs"):
        assert all(np.isfinite(row[key]) for row in curve), key
    search = curve[-1]
    np.testing.assert_allclose(search["budget"],
                               search["macs"] / model.max_macs, rtol=1e-5)
    # Ordinal sharing (overlap 1): psi = 2 min(4, 8) = 8 per group,
    # moved only by one epoch of projection steps.
    assert 7.0 < search["psi"] <= 8.0 + 1e-3
    fresh = _model()
    assert aps.SearchLog(workdir).restore(fresh) == 2
    for saved, loaded in zip(model.checkpoint_variables(),
                             fresh.checkpoint_variables()):
        np.testing.assert_array_equal(loaded, saved)


def test_a_diverging_search_stops_with_a_clear_message():
    with pytest.raises(aps.SearchDiverged, match="Lower --search_lr"):
        aps.run_search(_model(search_lr=1e30), _pairs(), epochs=2,
                       warmup_epochs=1, verbose=0)


def _projection_step_moves(net, groups):
    """Which block convs' P, Q get a gradient from the L1 Gram penalty of
    `groups` (a list of searchable layers)."""
    with tf.GradientTape() as tape:
        loss = sum(aps_layers.offdiagonal_l1(g) for layer in groups
                   for g in layer.orthogonality_groups())
    convs = [c for block in net.stages for c in block.convs]
    grads = tape.gradient(loss, [c.p for c in convs])
    return [g is not None and float(tf.reduce_max(tf.abs(g))) > 0
            for g in grads]


def test_orthogonality_loss_reaches_every_stage_unlike_the_reference():
    # Deliberate fix (docs/aps.md): the CIFAR reference's
    # orthogonal_reg_loss sums stage 1 twice and never stage 2, so the
    # stage-2 projections never de-share and APS-T is ordinal there.
    net = aps.APSResNetCifar(8, (4, 8), num_classes=10,
                             input_shape=(8, 8, 3))
    stages = [block.convs for block in net.stages]  # one block per stage
    reference = [net.stem, *stages[0], *stages[0], *stages[2],
                 net.classifier]
    assert _projection_step_moves(net, reference) == [
        True, True, False, False, True, True]
    assert all(_projection_step_moves(net, net.searchable_layers))


def test_reward_batches_are_reshuffled_and_augmented_like_the_reference():
    from keras_compact.methods.aps import method

    x = np.arange(64 * 4 * 4 * 1, dtype="float32").reshape(64, 4, 4, 1)
    y = np.arange(64, dtype="int32")
    held_out = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    batches = method.reward_batches(held_out, 16)
    epochs = [[b[1].numpy() for b in batches] for _ in range(2)]
    assert [len(b) for b in epochs[0]] == [16] * 4  # the remainder dropped
    first, second = (np.concatenate(e) for e in epochs)
    assert sorted(first) == list(range(64))  # every image once per epoch
    assert not np.array_equal(first, second)  # in a new order each epoch
    images, labels = next(iter(batches))
    # Pad-4 crop and flip: the pixels of an image are moved or zeroed.
    assert not all(np.array_equal(i, x[k]) for i, k in
                   zip(images.numpy(), labels.numpy()))


def _halves():
    """2 training and 2 held-out half batches of 8 images (8x8)."""
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(8, 8, 8, 3)).astype("float32"),
             rng.integers(0, 10, 8).astype("int32")) for _ in range(4)]


def _doubled_pairs(copies):
    """The half batches, each repeated `copies` times in its batch."""
    halves = [(np.concatenate([x] * copies), np.concatenate([y] * copies))
              for x, y in _halves()]
    train, held_out = halves[:2], halves[2:]

    def batches(parts):
        return tf.data.Dataset.from_tensor_slices(
            tuple(np.concatenate(p) for p in zip(*parts))).batch(8 * copies)

    return tf.data.Dataset.zip((batches(train), batches(held_out)))


@pytest.mark.slow
@pytest.mark.ci_slow
def test_mirrored_search_on_identical_halves_equals_one_device():
    """2 replicas, each given the same half batch, vs one device on it.

    Warm-up and search steps (controller sample, held-out reward, baseline,
    REINFORCE update, supernet and projection steps). Every replica then
    runs the single-device kernels on the same values and draws the same
    architectures (mirrored controller and seeds); the cross-replica mean
    of two equal values is exact in binary floating point, so the runs
    are equal to a few ulp (docs/testing.md, "Resume, mirrored"). A
    gradient summed instead of averaged over the replicas doubles the
    controller's, projections' and supernet's updates and fails by far
    (the reward's mean over replicas: the next test). The mirrored
    search's state goes to a `ram://` workdir and resumes on one device.
    """
    from keras_compact import distribute

    one = _model()
    start = [ops_value(v) for v in one.checkpoint_variables()]
    strategy = distribute.get("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = _model()
    for v, value in zip(mirrored.checkpoint_variables(), start):
        v.assign(value)
    workdir = f"ram://aps_mirrored_{uuid.uuid4().hex}"
    histories = [aps.run_search(model, _doubled_pairs(copies), epochs=2,
                                warmup_epochs=1, verbose=0, workdir=path)
                 for model, copies, path in ((one, 1, None),
                                             (mirrored, 2, workdir))]
    assert ops_value(mirrored.search_steps) == ops_value(
        one.search_steps) == 2
    for key in ("loss", "reward", "entropy", "macs"):
        np.testing.assert_allclose(histories[1][key], histories[0][key],
                                   rtol=1e-6, err_msg=key)
    assert float(ops_value(one.baseline)) > 0  # the rewards reached it
    moved = 0
    for a, b, before in zip(one.checkpoint_variables(),
                            mirrored.checkpoint_variables(), start):
        a, b = ops_value(a), ops_value(b)
        moved += not np.array_equal(a, before)
        np.testing.assert_allclose(b, a, rtol=0,
                                   atol=1e-6 * max(np.abs(a).max(), 1e-3))
    assert moved > len(one.controller.trainable_variables)
    fresh = _model()
    assert aps.SearchLog(workdir).restore(fresh) == 2
    for saved, loaded in zip(one.checkpoint_variables(),
                             fresh.checkpoint_variables()):
        a = ops_value(saved)
        np.testing.assert_allclose(ops_value(loaded), a, rtol=0,
                                   atol=1e-6 * max(np.abs(a).max(), 1e-3))


def ops_value(variable):
    return keras.ops.convert_to_numpy(variable)


def test_mirrored_reward_is_the_replicas_mean_accuracy():
    # Replica 0 classifies its batch right, replica 1 wrong: each must see
    # the reward of the global batch (accuracy 0.5), else their baselines
    # and controller updates part ways. The halves test above cannot see
    # this: its replicas have equal accuracies.
    from keras_compact import distribute

    strategy = distribute.get("mirrored")
    with strategy.scope():
        model = _model()
    arch = np.ones(7, "int32")
    labels = np.zeros(4, "int32")

    def logits(context):
        right = context.replica_id_in_sync_group == 0
        return tf.one_hot(tf.fill([4], 0 if right else 1), 10)

    rewards = strategy.run(
        tf.function(lambda x: model.arch_reward(x, labels, arch)),
        args=(strategy.experimental_distribute_values_from_function(
            logits),))
    expected = float(aps.reward(0.5, model.supernet.macs(arch, charged=True),
                                model.max_macs))
    assert [float(r) for r in strategy.experimental_local_results(
        rewards)] == [expected] * 2
