"""APS search state through tf.io.gfile, the epoch log, divergence."""

import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

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


def test_search_state_and_curves_go_through_gfile():
    workdir = f"ram://aps_{uuid.uuid4().hex}"
    model = _model()
    aps.run_search(model, _pairs(), epochs=2, warmup_epochs=1,
                   workdir=workdir, verbose=0)
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
