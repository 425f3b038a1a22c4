"""APS controller: the reference's readout and budget feature, REINFORCE."""

import keras
import numpy as np
import tensorflow as tf

from keras_compact.methods import aps


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference_logits(controller, arch, table, max_macs):
    """The reference's ArchMaster in float64 NumPy: `stack_lstm` feeds the
    cell state c to the next cell and to the head, and the budget feature
    after step t is `(T - sum_{l<=t} table[l, a_l, a_{l-1}]) / T`."""
    weights = [np.asarray(w, "float64") for w in controller.weights]
    embedding, cells = weights[0], [weights[1 + 4 * k:5 + 4 * k]
                                    for k in range(controller.num_layers)]
    head_kernel, head_bias = weights[-2], weights[-1]
    hidden, steps = controller.hidden, controller.num_decisions
    state = [(np.zeros(hidden), np.zeros(hidden))] * controller.num_layers

    def stack(x, state):
        new = []
        for (w_ih, w_hh, b_ih, b_hh), (h, c) in zip(cells, state):
            i, f, g, o = np.split(x @ w_ih + b_ih + h @ w_hh + b_hh, 4)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            new.append((h, c))
            x = c
        return x, new

    x = np.concatenate([embedding[controller.num_candidates],
                        np.zeros(steps), [1.0]])
    for _ in range(2):
        _, state = stack(x, state)
    logits, macs = [], 0.0
    for t in range(steps):
        readout, state = stack(x, state)
        logits.append(readout @ head_kernel + head_bias)
        macs += table[t, arch[t], arch[t - 1] if t else 0]
        x = np.concatenate([embedding[arch[t]], np.eye(steps)[t],
                            [(max_macs - macs) / max_macs]])
    return np.stack(logits)


def test_controller_reads_the_cell_state_like_the_reference():
    keras.utils.set_random_seed(3)
    table = aps.macs_table(20, (4, 8, 16), (32, 32, 3))
    controller = aps.ChannelController(19, 3, table, 9.5e6)
    controller.build()
    arch = np.random.default_rng(0).integers(0, 3, 19)
    logits = controller.evaluate(arch)[3]
    expected = _reference_logits(controller, arch, table, 9.5e6)
    # Logits are ~0.1; a float32 gate is a 200-term dot product of terms
    # below 0.1 (error ~ sqrt(200) * 2^-24 * 20 = 2e-5, contracted by the
    # sigmoid / tanh and not amplified by the forget gate over 21 steps).
    # An h readout instead of c moves them by ~5e-2.
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert np.abs(expected).max() > 1e-2  # the comparison is not vacuous


def test_budget_feature_equals_hand_computed_values():
    # 3 decisions, 2 candidates; row l is indexed [a_l, a_{l-1}].
    table = np.array([[[10, 10], [20, 20]],
                      [[1, 2], [3, 4]],
                      [[100, 200], [300, 400]]], "float64")
    controller = aps.ChannelController(3, 2, table, 500.0, hidden=10)
    controller.build()
    left = controller.remaining_budget([1, 0, 1])
    # 20 (row 0, a=1), + 2 (row 1: a_1=0, a_0=1), + 300 (row 2: 1, 0).
    np.testing.assert_allclose(left, [480 / 500, 478 / 500, 178 / 500],
                               rtol=1e-6)


def test_search_charges_the_sampled_last_width_like_the_reference():
    # The forward forces the last block's output to the largest candidate;
    # the reward and the budget feature charge the sampled one (spec 6).
    net = aps.APSResNetCifar(8, (4, 8), num_classes=10,
                             input_shape=(8, 8, 3))
    table = net.table
    arch = np.array([1, 1, 1, 1, 1, 1, 0])
    sampled = sum(table[t, arch[t], arch[t - 1] if t else 0]
                  for t in range(7))
    forced = sampled - table[6, 0, 1] + table[6, 1, 1]
    assert net.macs(arch, charged=True) == sampled
    assert net.macs(arch) == forced > sampled
    search = aps.ChannelSearchModel(net, 2 * forced)
    left = search.controller.remaining_budget(arch)
    np.testing.assert_allclose(float(left[-1]), 1 - sampled / (2 * forced),
                               rtol=1e-6)


def _search_model():
    net = aps.APSResNetCifar(8, (4, 8), num_classes=10,
                             input_shape=(8, 8, 3))
    model = aps.ChannelSearchModel(net, 1e9, entropy_coeff=0.0)
    model.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.0),
                  keras.optimizers.Adam(1e-3, beta_1=0.5))
    return model


def test_reinforce_raises_the_probability_of_the_rewarded_architecture():
    keras.utils.set_random_seed(0)
    model = _search_model()
    target = np.ones(7, "int64")  # the widest everywhere

    def log_prob_of_target():
        return float(model.controller.evaluate(target)[1])

    # The baseline starts at the uniform policy's mean reward (0.5), so the
    # advantage has both signs from the first step.
    model.baseline.assign(0.5)
    before = log_prob_of_target()
    for _ in range(30):
        with tf.GradientTape() as tape:
            arch, log_prob, entropy, _ = model.controller.sample()
        # A fixed synthetic reward: the share of decisions equal to target.
        value = np.mean(arch.numpy() == target)
        model.controller_update(tape, log_prob, entropy, value)
    after = log_prob_of_target()
    # At init every decision is ~50/50 (log P = 7 ln 0.5 = -4.85). 30 Adam
    # steps at lr 1e-3 on this reward lift it by ~5 nats (to P ~ 1) for
    # seeds 0-2; with the sign of the policy loss flipped it falls by 13 to
    # 65 nats.
    assert after - before > 2.0, (before, after)
    assert 0.5 < float(model.baseline) < 1.0  # the EMA followed R up
