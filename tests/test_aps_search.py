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
