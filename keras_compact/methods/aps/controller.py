"""The ENAS-style LSTM controller of the APS search (spec section 2.1)."""

import keras
import numpy as np
from keras import ops

from keras_compact import api


@api.serializable
class ChannelController(keras.layers.Layer):
    """The ENAS-style LSTM policy over per-layer widths (spec section 2.1).

    A 2-layer LSTM (PyTorch cell layout: gate order i, f, g, o and two
    biases, so weights port one to one) reads at step t the embedding of the
    previous choice, a one-hot of the previous layer and the remaining share
    of the FLOPs budget, and a dense head on the top cell's state c (the
    reference's readout, see `_stack`) gives the logits of layer t. All
    weights are U(-0.1, 0.1), the head bias 0. With `hidden=100`, 19
    decisions and 5 candidates it has the reference's 162,585 parameters.

    The budget feature needs the MACs of a partial architecture. The table
    has one row per conv of the full width list (`[R, n, n]`, row r indexed
    by its own width and the previous row's, see `arch_macs`); `layout[r]`
    says which decision sets row r's width (`L`: always the first candidate,
    `L + 1`: always the last). A row counts from the step at which both its
    decisions are known. The default layout `0..L-1` is the CIFAR chain
    (one decision per conv); blockwise ImageNet searches tie several convs
    to one decision (spec 1.1).

    Args:
        num_decisions: L, the number of searched layers.
        num_candidates: n, the candidates per layer.
        table: `[R, n, n]` lookup table of MACs (`macs_table`).
        max_macs: the budget T.
        hidden: LSTM width; the embedding is `hidden - L - 1` wide.
        num_layers: stacked LSTM cells.
        layout: `[R]` decision index of each table row (default `0..L-1`).

    Example:

    >>> from keras_compact.methods.aps.flops import macs_table
    >>> table = macs_table(8, (4, 8), (8, 8, 3))  # ResNet-8: 7 decisions
    >>> controller = ChannelController(7, 2, table, 5e4)
    >>> controller.build()
    >>> arch, log_prob, entropy, logits = controller.sample()
    >>> tuple(arch.shape)
    (7,)

    Reference: Wang et al., NeurIPS 2020; Pham et al., "Efficient Neural
    Architecture Search via Parameter Sharing", ICML 2018.
    """

    def __init__(self, num_decisions, num_candidates, table, max_macs,
                 hidden=100, num_layers=2, layout=None, **kwargs):
        super().__init__(**kwargs)
        self.num_decisions = int(num_decisions)
        self.num_candidates = int(num_candidates)
        self.table = np.asarray(table, "float64")
        self.layout = (np.arange(num_decisions) if layout is None
                       else np.asarray(layout, "int64"))
        rows = len(self.layout)
        if self.table.shape != (rows, num_candidates, num_candidates):
            raise ValueError(
                f"table must have shape (R, n, n) = ({rows}, "
                f"{num_candidates}, {num_candidates}) (R: rows of the "
                f"layout, L={num_decisions} by default); see macs_table(). "
                f"Received: {self.table.shape}.")
        if self.layout.min() < 0 or self.layout.max() > num_decisions + 1:
            raise ValueError(
                f"layout entries must lie in [0, L + 1] = [0, "
                f"{num_decisions + 1}]. Received: {self.layout.tolist()}.")
        # Row r is known once its own and the previous row's decisions
        # are; fixed entries (L, L + 1) are known from the start.
        self._rows_at = [[] for _ in range(num_decisions)]
        for r in range(rows):
            sources = [self.layout[r]] + ([self.layout[r - 1]] if r else [])
            known = [int(d) for d in sources if d < num_decisions]
            self._rows_at[max(known, default=0)].append(r)
        if hidden - num_decisions - 1 < 1:
            raise ValueError(
                f"hidden={hidden} leaves no room for the choice embedding "
                f"(hidden - L - 1 with L={num_decisions}). Use hidden >= "
                f"{num_decisions + 2}.")
        self.max_macs = float(max_macs)
        self.hidden = int(hidden)
        self.num_layers = int(num_layers)
        self.seed_generator = keras.random.SeedGenerator()

    def build(self, input_shape=None):
        uniform = keras.initializers.RandomUniform(-0.1, 0.1)
        h, n = self.hidden, self.num_candidates
        self.embedding = self.add_weight(
            name="embedding", shape=(n + 1, h - self.num_decisions - 1),
            initializer=uniform)
        self.cells = []
        for k in range(self.num_layers):
            self.cells.append([
                self.add_weight(name=f"lstm{k}_{part}", shape=shape,
                                initializer=uniform)
                for part, shape in (("kernel_ih", (h, 4 * h)),
                                    ("kernel_hh", (h, 4 * h)),
                                    ("bias_ih", (4 * h,)),
                                    ("bias_hh", (4 * h,)))])
        self.head_kernel = self.add_weight(name="head_kernel", shape=(h, n),
                                           initializer=uniform)
        self.head_bias = self.add_weight(name="head_bias", shape=(n,),
                                         initializer="zeros")
        self.built = True

    def _stack(self, x, state):
        """One step of the stacked cells; returns (readout, new state).

        The reference's `stack_lstm` unpacks PyTorch's `(h, c)` as `(c, h)`:
        its recurrence is the LSTM's, but the next cell's input and the head
        read the cell state c, not h (spec aps_parity item 1). The paper's
        policies were learned with that readout, and with h the policy
        learns about 15x slower at the paper's learning rate, so c it is.
        """
        new_state = []
        for (w_ih, w_hh, b_ih, b_hh), (h, c) in zip(self.cells, state):
            gates = ops.matmul(x, w_ih) + b_ih + ops.matmul(h, w_hh) + b_hh
            i, f, g, o = ops.split(gates, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            h = ops.sigmoid(o) * ops.tanh(c)
            new_state.append((h, c))
            x = c
        return x, new_state

    def _start(self, batch):
        start = ops.take(self.embedding, self.num_candidates, axis=0)
        x = ops.concatenate([
            ops.tile(start[None], (batch, 1)),
            ops.zeros((batch, self.num_decisions)),
            ops.ones((batch, 1))], axis=-1)
        zeros = ops.zeros((batch, self.hidden))
        state = [(zeros, zeros)] * self.num_layers
        # The reference runs the stack twice on the start token before the
        # first decision, which then reads the start token again.
        for _ in range(2):
            _, state = self._stack(x, state)
        return x, state

    def _next_input(self, action, step, macs):
        batch = ops.shape(action)[0]
        one_hot = ops.one_hot(ops.full((batch,), step, "int32"),
                              self.num_decisions)
        left = (self.max_macs - macs) / self.max_macs
        return ops.concatenate([ops.take(self.embedding, action, axis=0),
                                one_hot, left[:, None]], axis=-1)

    def _step_macs(self, step, actions, constant):
        """MACs of the rows that become known at `step`.

        `actions[d]` are the `[batch]` choices of decision d so far;
        `constant(value)` makes a `[batch]` index of a fixed candidate.
        """
        n, decisions = self.num_candidates, self.num_decisions

        def choice(d):
            return actions[d] if d < decisions else constant(
                0 if d == decisions else n - 1)

        total = 0.0
        for r in self._rows_at[step]:
            previous = choice(self.layout[r - 1]) if r else constant(0)
            row = ops.convert_to_tensor(self.table[r].reshape(-1),
                                        "float32")
            total += ops.take(row, choice(self.layout[r]) * n + previous)
        return total

    def _rollout(self, arch=None, uniform=False):
        x, state = self._start(1)
        macs = ops.zeros((1,))
        actions, log_prob, entropy, all_logits = [], 0.0, 0.0, []

        def constant(value):
            return ops.full((1,), value, "int32")

        for step in range(self.num_decisions):
            readout, state = self._stack(x, state)
            logits = ops.matmul(readout, self.head_kernel) + self.head_bias
            if uniform:
                logits = ops.zeros_like(logits)
            log_p = ops.log_softmax(logits, axis=-1)
            if arch is None:
                action = ops.cast(keras.random.categorical(
                    logits, 1, seed=self.seed_generator)[:, 0], "int32")
            else:
                action = ops.cast(arch[step], "int32")[None]
            log_prob += ops.take(log_p[0], action[0])
            entropy += -ops.sum(ops.exp(log_p) * log_p)
            actions.append(action)
            macs += self._step_macs(step, actions, constant)
            all_logits.append(logits[0])
            x = self._next_input(action, step, macs)
        return (ops.concatenate(actions), log_prob, entropy,
                ops.stack(all_logits))

    def remaining_budget(self, arch):
        """The budget feature `(T - F(a_0..a_t)) / T` fed after each
        decision t of `arch` (`[L]`; spec 2.1, partial MACs as
        `_step_macs`)."""
        arch = ops.reshape(ops.convert_to_tensor(arch, "int32"), (-1, 1))
        actions, macs, left = [], 0.0, []
        for step in range(self.num_decisions):
            actions.append(arch[step])
            macs += self._step_macs(
                step, actions, lambda v: ops.full((1,), v, "int32"))
            left.append((self.max_macs - macs) / self.max_macs)
        return ops.concatenate(left)

    def sample(self, uniform=False):
        """Draws one architecture.

        Returns `(arch [L] int32, log_prob, entropy, logits [L, n])`;
        log_prob and entropy are summed over the layers. `uniform=True`
        replaces the policy by the uniform distribution (warm-up).
        """
        return self._rollout(uniform=uniform)

    def evaluate(self, arch):
        """`(arch, log_prob, entropy, logits)` of a given architecture."""
        return self._rollout(arch=ops.convert_to_tensor(arch, "int32"))

    def beam_search(self, width=8):
        """The `width` most likely architectures, most likely first.

        A beam over the policy (all sequences have length L, so this equals
        ranking by the reference's length-normalised log-probability).
        Returns a list of `(arch tuple, log_prob)`.
        """
        n = self.num_candidates
        x, state = self._start(1)
        scores = np.zeros((1,))
        paths = np.zeros((1, 0), "int64")
        macs = np.zeros((1,))
        for step in range(self.num_decisions):
            readout, state = self._stack(x, state)
            logits = ops.matmul(readout, self.head_kernel) + self.head_bias
            log_p = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
            total = (scores[:, None] + log_p).reshape(-1)
            keep = np.argsort(-total, kind="stable")[:width]
            beam, action = keep // n, keep % n
            scores, paths = total[keep], np.concatenate(
                [paths[beam], action[:, None]], axis=1)
            macs = macs[beam] + ops.convert_to_numpy(self._step_macs(
                step, [ops.convert_to_tensor(a, "int32") for a in paths.T],
                lambda v: ops.full((len(keep),), v, "int32")))
            state = [(ops.take(h_, beam, axis=0), ops.take(c_, beam, axis=0))
                     for h_, c_ in state]
            x = self._next_input(ops.convert_to_tensor(action, "int32"),
                                 step, ops.convert_to_tensor(macs,
                                                             "float32"))
        return [(tuple(int(a) for a in p), float(s))
                for p, s in zip(paths, scores)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_decisions": self.num_decisions,
            "num_candidates": self.num_candidates,
            "table": self.table.tolist(),
            "max_macs": self.max_macs,
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "layout": self.layout.tolist(),
        })
        return config
