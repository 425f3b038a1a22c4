"""The APS search: reward, alternating steps, resumable log, selection."""

import io
import logging
import math
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_compact import distribute
from keras_compact import files
from keras_compact.layers.aps.projections import normalize_columns
from keras_compact.methods.aps.controller import ChannelController


def reward(accuracy, macs, max_macs, alpha=0.0, beta=-0.1):
    """MnasNet-style soft constraint: `acc (F/T)^alpha` or `^beta` if F > T.

    Example: `reward(0.9, 2 * T, T)` is `0.9 * 2 ** -0.1 = 0.8397`.
    """
    ratio = ops.cast(macs, "float32") / max_macs
    exponent = ops.where(ratio <= 1.0, alpha, beta)
    return ops.cast(accuracy, "float32") * ops.power(ratio, exponent)


def _hits(logits, labels):
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(predicted == ops.cast(labels, "int32"), "float32")


def _replica_mean(value):
    """The mean of `value` over the replicas (itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


REWARD_SOURCES = ("held_out", "train")


class ChannelSearchModel(keras.Model):
    """Alternating weight and controller steps in one `train_step`.

    With `reward_source="held_out"` (the CIFAR learner) `fit` takes a
    dataset of `((x_train, y_train), (x_held_out, y_held_out))` pairs. In
    warm-up every step trains the supernet on a uniformly sampled
    architecture. After `start_search()`, each step first samples
    `a ~ pi`, rewards it with `acc(held-out batch) (F/T)^alpha` (`^beta`
    over budget) and takes an Adam step on
    `-logP(a) (R - b) - entropy_coeff H` with a moving-average baseline b;
    then it trains the supernet on a new sample from pi, plus a projected
    SGD step of the projections on the orthogonality loss (the APS-T
    transition from strong to weak sharing). With `reward_source="train"`
    (the ImageNet learner, spec 2.4) `fit` takes plain `(x, y)` batches and
    each step samples one `a ~ pi`, trains the supernet on it and rewards
    the controller with that same forward's training-batch accuracy. Each
    phase is traced once, whatever the architectures sampled.

    Under tf.distribute (MirroredStrategy, multi-worker) every replica
    draws the same architectures (the controller and its seed are
    mirrored), the reward is the replicas' mean accuracy, so the baseline
    and the controller update are the same everywhere, and each gradient
    is averaged over the replicas (BN statistics stay per replica, as
    Keras's BatchNormalization).

    Args:
        supernet: an `APSResNetCifar`, `APSResNet` or `APSMobileNetV2`.
        max_macs: the FLOPs budget T (table MACs).
        controller_hidden: LSTM width of the controller.
        entropy_coeff: entropy bonus weight.
        baseline_decay: gamma of the reward moving average.
        reward_alpha: exponent of F/T under budget (0: no reward for less).
        reward_beta: exponent of F/T over budget.
        orthogonal_weight: weight of the orthogonality loss.
        weight_decay: coupled L2 of the meta-weights and projections.
        arch_weight_decay: coupled L2 of the controller.
        reward_source: `"held_out"` (a second batch per step) or `"train"`
            (the training batch's own forward).
        projection_interval: search steps per projection step (CIFAR 1,
            the reference's ImageNet learner 10: the orthogonality loss of
            the wide ImageNet projections costs as much as a weight step).

    Example:

    >>> from keras_compact.methods.aps.supernets import APSResNetCifar
    >>> supernet = APSResNetCifar(8, (4, 8), input_shape=(8, 8, 3))
    >>> search = ChannelSearchModel(supernet, 5e4)
    >>> search.compile(keras.optimizers.SGD(0.1, momentum=0.9),
    ...                keras.optimizers.SGD(1e-3, momentum=0.9),
    ...                keras.optimizers.Adam(3e-3, beta_1=0.5))

    Then `search.fit(pairs, epochs=2)` warms the supernet up, and after
    `search.start_search()`, `search.fit(pairs, epochs=5, initial_epoch=2)`
    searches (`pairs`: batches of train and validation images).

    Reference: Wang et al., NeurIPS 2020 (spec section 2.4).
    """

    def __init__(self, supernet, max_macs, controller_hidden=100,
                 entropy_coeff=4e-3, baseline_decay=0.99, reward_alpha=0.0,
                 reward_beta=-0.1, orthogonal_weight=5e-3,
                 weight_decay=2e-4, arch_weight_decay=1e-3,
                 reward_source="held_out", projection_interval=1,
                 **kwargs):
        super().__init__(**kwargs)
        distribute.require_tensorflow_backend(self)
        if reward_source not in REWARD_SOURCES:
            raise ValueError(
                f"reward_source must be one of {', '.join(REWARD_SOURCES)}."
                f" Received: '{reward_source}'.")
        self.reward_source = reward_source
        minimum = int(supernet.macs(np.zeros(supernet.num_decisions,
                                             "int32"), charged=True))
        if max_macs < minimum:
            raise ValueError(
                f"max_macs={max_macs:.4g} is below the smallest "
                f"architecture of the search space ({minimum:,} table "
                "MACs). Raise the budget or add smaller candidates.")
        self.supernet = supernet
        self.max_macs = float(max_macs)
        self.controller = ChannelController(
            supernet.num_decisions, supernet.num_candidates,
            supernet.table, max_macs, hidden=controller_hidden,
            layout=supernet.charged_layout, name="controller",
            dtype="float32")  # a policy in float32 under mixed precision
        self.controller.build()
        self.entropy_coeff = entropy_coeff
        self.baseline_decay = baseline_decay
        self.reward_alpha = reward_alpha
        self.reward_beta = reward_beta
        self.orthogonal_weight = orthogonal_weight
        self.weight_decay = weight_decay
        self.arch_weight_decay = arch_weight_decay
        self.baseline = self.add_weight(name="baseline", shape=(),
                                        initializer="zeros",
                                        trainable=False)
        if int(projection_interval) < 1:
            raise ValueError(f"projection_interval must be >= 1. Received: "
                             f"{projection_interval}.")
        self.projection_interval = int(projection_interval)
        self.search_steps = self.add_weight(
            name="search_steps", shape=(), initializer="zeros",
            dtype="int64", trainable=False)
        self.orthogonal_value = self.add_weight(
            name="orthogonal_value", shape=(), initializer="zeros",
            trainable=False)
        self.searching = False
        self.traces = 0
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "accuracy", "reward", "entropy", "macs", "budget",
            "orthogonal")}
        self.uniform_seed = keras.random.SeedGenerator()

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer, projection_optimizer, controller_optimizer,
                **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.projection_optimizer = projection_optimizer
        self.controller_optimizer = controller_optimizer
        optimizer.build(self.supernet.meta_variables)
        projection_optimizer.build(self.supernet.projection_variables)
        controller_optimizer.build(self.controller.trainable_variables)

    def start_search(self):
        """Ends the warm-up: the next `fit` traces the search step."""
        self.searching = True
        self.train_function = None

    def call(self, inputs, training=None):
        return self.supernet(inputs, training=training)

    def _apply(self, optimizer, loss_grads, variables, decay):
        grads = [ops.zeros_like(v) if g is None else g
                 for g, v in zip(loss_grads, variables)]
        # PyTorch's weight_decay is an L2 term added to the gradient. Every
        # loss here is a replica's own mean and the optimizer sums over the
        # replicas: dividing by their number averages the gradient.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grads = [(g + decay * v) / replicas for g, v in zip(grads, variables)]
        optimizer.apply(grads, variables)

    def arch_reward(self, logits, y, arch):
        """The reward of `arch` whose forward gave `logits` (spec 2.2)."""
        return reward(_replica_mean(ops.mean(_hits(logits, y))),
                      self.supernet.macs(arch, charged=True), self.max_macs,
                      self.reward_alpha, self.reward_beta)

    def controller_update(self, tape, log_prob, entropy, value):
        """REINFORCE step on a sample recorded by `tape` (spec 2.3).

        Adam on `-logP (R - b) - entropy_coeff H`, then `b <- gamma b +
        (1 - gamma) R`. `value` is the sample's reward R.

        Example (any reward works, e.g. a synthetic one):

        >>> import tensorflow as tf
        >>> from keras_compact.methods.aps.supernets import APSResNetCifar
        >>> search = ChannelSearchModel(
        ...     APSResNetCifar(8, (4, 8), input_shape=(8, 8, 3)), 5e4)
        >>> search.compile(keras.optimizers.SGD(0.1),
        ...                keras.optimizers.SGD(0.1), keras.optimizers.Adam())
        >>> with tf.GradientTape() as tape:
        ...     arch, log_prob, entropy, _ = search.controller.sample()
        >>> search.controller_update(tape, log_prob, entropy, 1.0)
        """
        variables = self.controller.trainable_variables
        value = ops.convert_to_tensor(value, "float32")
        with tape:  # resumes recording: the loss needs log_prob's graph
            advantage = ops.stop_gradient(value - self.baseline)
            loss = -log_prob * advantage - self.entropy_coeff * entropy
        self._apply(self.controller_optimizer,
                    tape.gradient(loss, variables), variables,
                    self.arch_weight_decay)
        self.baseline.assign(self.baseline_decay * self.baseline
                             + (1.0 - self.baseline_decay) * value)
        self.trackers["reward"].update_state(value)
        self.trackers["entropy"].update_state(entropy)

    def _projection_step(self):
        """Projected SGD of P, Q on the orthogonality loss (APS-T, spec
        2.5): the task loss has no gradient there (P, Q are detached), so
        this is the reference's projection update on its own."""
        projections = self.supernet.projection_variables
        with tf.GradientTape() as tape:
            orthogonal = self.supernet.orthogonality_loss()
            loss = self.orthogonal_weight * orthogonal
        self._apply(self.projection_optimizer,
                    tape.gradient(loss, projections), projections,
                    self.weight_decay)
        for v in projections:
            v.assign(normalize_columns(v))
        self.orthogonal_value.assign(orthogonal)
        return orthogonal

    def train_step(self, data):
        self.traces += 1  # Python side effect: counts traces, not steps
        on_train = self.reward_source == "train"
        if on_train:
            x, y = data
        else:
            (x, y), (x_held_out, y_held_out) = data
        if self.searching:
            with tf.GradientTape() as arch_tape:
                arch, log_prob, entropy, _ = self.controller.sample()
            if not on_train:
                logits = self.supernet((x_held_out, arch), training=True)
                self.controller_update(
                    arch_tape, log_prob, entropy,
                    self.arch_reward(logits, y_held_out, arch))
                arch = self.controller.sample()[0]
        else:
            arch = keras.random.randint(
                (self.supernet.num_decisions,), 0,
                self.supernet.num_candidates, seed=self.uniform_seed,
                dtype="int32")
        meta = self.supernet.meta_variables
        with tf.GradientTape() as tape:
            logits = self.supernet((x, arch), training=True)
            loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                y, ops.cast(logits, "float32"), from_logits=True))
        grads = tape.gradient(loss, meta)
        if self.searching and on_train:
            self.controller_update(
                arch_tape, log_prob, entropy,
                self.arch_reward(ops.stop_gradient(logits), y, arch))
        self._apply(self.optimizer, grads, meta, self.weight_decay)
        orthogonal = ops.zeros(())
        if self.searching:
            if self.projection_interval == 1:
                orthogonal = self._projection_step()
            else:  # the reference's ImageNet `--updt_proj 10`
                due = ops.equal(
                    self.search_steps % self.projection_interval, 0)
                orthogonal = ops.cond(due, self._projection_step,
                                      lambda: ops.convert_to_tensor(
                                          self.orthogonal_value))
            self.search_steps.assign_add(1)
        accuracy = ops.mean(_hits(logits, y))
        self.trackers["loss"].update_state(loss)
        self.trackers["accuracy"].update_state(accuracy)
        macs = self.supernet.macs(arch, charged=True)
        self.trackers["macs"].update_state(macs)
        self.trackers["budget"].update_state(macs / self.max_macs)
        self.trackers["orthogonal"].update_state(orthogonal)
        return {name: t.result() for name, t in self.trackers.items()}

    def checkpoint_variables(self):
        """Everything a resumed search needs, in a fixed order: the seeds
        last (the architectures drawn next), so older files still load."""
        return (list(self.weights) + list(self.optimizer.variables)
                + list(self.projection_optimizer.variables)
                + list(self.controller_optimizer.variables)
                + [self.controller.seed_generator.state,
                   self.uniform_seed.state])


log = logging.getLogger("keras_compact")


class SearchDiverged(RuntimeError):
    """The search's loss or reward stopped being finite or blew up."""


class SearchLog(keras.callbacks.Callback):
    """Writes the search curves and a resumable checkpoint per epoch.

    `<workdir>/aps_sharing_level.json` gets one row per epoch (psi, the
    orthogonality loss, the policy entropy, mean reward, mean charged MACs
    and their share of the budget); the variables of the search model and
    its three optimizers go to `aps_search.npz` with the epoch, so an
    interrupted search resumes where it stopped. Both go through
    `tf.io.gfile`, written atomically (`gs://`, `ram://` work). psi is
    added to the epoch's logs, so a TensorBoard callback after this one
    records it with the other curves; one log line per epoch shows them.
    A step whose loss is not finite, or above 100x the loss of a uniform
    guess, stops the search with `SearchDiverged`. With `writes=False`
    (a multi-worker run's other workers) it reads `workdir` but writes
    nothing there.

    Usage (a supernet search; not run as a doctest)::

        run_search(search, pairs, 10, 4, workdir="ram://search")
    """

    def __init__(self, workdir=None, writes=True):
        super().__init__()
        self.workdir = workdir
        self.writes = writes
        self.curve = []
        if workdir:
            self.curve_path = os.path.join(workdir, "aps_sharing_level.json")
            self.state_path = os.path.join(workdir, "aps_search.npz")
            if tf.io.gfile.exists(self.curve_path):
                self.curve = files.read_json(self.curve_path)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        limit = 100 * math.log(self.model.supernet.num_classes)
        if not math.isfinite(loss) or loss > limit:
            raise SearchDiverged(
                f"The APS search diverged: the supernet loss is {loss:.4g} "
                f"(limit {limit:.3g}, 100x a uniform guess) at epoch "
                f"{self.epoch + 1}, step {batch + 1}. Lower --search_lr; "
                "the last finished epoch is kept in the workdir.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        model = self.model
        psi = float(model.supernet.sharing_level())
        logs["psi"] = psi
        row = {"epoch": epoch + 1, "searching": model.searching,
               "sharing_level": psi,
               "orthogonality_loss": float(
                   model.supernet.orthogonality_loss())}
        row.update({k: float(v) for k, v in logs.items()})
        log.info(
            "APS epoch %d (%s): entropy %.4g, reward %.4g, MACs/budget "
            "%.3f, psi %.4g, loss %.4g", epoch + 1,
            "search" if model.searching else "warm-up",
            row.get("entropy", 0.0), row.get("reward", 0.0),
            row.get("budget", 0.0), psi, row.get("loss", 0.0))
        self.curve = [r for r in self.curve if r["epoch"] <= epoch] + [row]
        if not (self.workdir and self.writes):
            return
        tf.io.gfile.makedirs(self.workdir)
        files.write_json(self.curve_path, self.curve)
        values = [ops.convert_to_numpy(v)
                  for v in model.checkpoint_variables()]
        buffer = io.BytesIO()  # np.savez needs a seekable file
        np.savez(buffer, *values, epoch=epoch + 1)
        with files.atomic_write(self.state_path) as temporary:
            with tf.io.gfile.GFile(temporary, "wb") as f:
                f.write(buffer.getvalue())

    def restore(self, model):
        """Loads the last checkpoint into `model`; returns its epoch."""
        if not self.workdir or not tf.io.gfile.exists(self.state_path):
            return 0
        with tf.io.gfile.GFile(self.state_path, "rb") as f:
            saved = np.load(io.BytesIO(f.read()))
        for k, v in enumerate(model.checkpoint_variables()):
            if f"arr_{k}" in saved:  # files older than the saved seeds
                v.assign(saved[f"arr_{k}"])
        return int(saved["epoch"])


def run_search(search_model, pairs, epochs, warmup_epochs,
               steps_per_epoch=None, workdir=None, verbose=1, callbacks=(),
               writes=True):
    """Warm-up then search epochs of `fit`, resumable through `workdir`
    (written only if `writes`).

    Returns the Keras history rows of all epochs run now.
    """
    log = SearchLog(workdir, writes)
    start = log.restore(search_model)
    callbacks = [log] + list(callbacks)  # first: it adds psi to the logs
    history = {}
    for phase_end, searching in ((warmup_epochs, False), (epochs, True)):
        if searching:
            search_model.start_search()
        if start >= phase_end:
            continue
        run = search_model.fit(pairs, epochs=phase_end, initial_epoch=start,
                               steps_per_epoch=steps_per_epoch,
                               callbacks=callbacks, shuffle=False,
                               verbose=verbose)
        for key, values in run.history.items():
            history.setdefault(key, []).extend(values)
        start = phase_end
    return history


def evaluate_architecture(supernet, arch, dataset):
    """Top-1 of one path of the supernet (BN running statistics)."""
    correct = total = 0
    arch = ops.convert_to_tensor(arch, "int32")
    for x, y in dataset:
        logits = _eval_path(supernet, x, arch)
        correct += int(ops.sum(_hits(logits, y)))
        total += int(ops.shape(y)[0])
    return correct / max(total, 1)


def _eval_path(supernet, x, arch):
    # One traced function per supernet, reused for every architecture.
    function = getattr(supernet, "_eval_function", None)
    if function is None:
        function = tf.function(
            lambda x, a: supernet((x, a), training=False))
        supernet._eval_function = function
    return function(x, arch)


def shrink_to_budget(supernet, arch, max_macs):
    """Lowers widths of `arch` until its charged MACs fit `max_macs`.

    Greedy: each step narrows by one candidate the decision whose narrowing
    saves the most charged MACs (see `select_architecture`). Used when no
    drawn architecture is within the budget (the soft reward lets the
    policy drift over it).
    """
    arch = np.array(arch, "int64")
    while supernet.macs(arch, charged=True) > max_macs:
        savings = []
        for layer in np.flatnonzero(arch):
            narrower = arch.copy()
            narrower[layer] -= 1
            saved = (supernet.macs(arch, charged=True)
                     - supernet.macs(narrower, charged=True))
            if saved > 0:
                savings.append((saved, layer))
        if not savings:
            raise ValueError(f"max_macs={max_macs:.4g} is below the "
                             "smallest architecture.")
        arch[max(savings)[1]] -= 1
    return tuple(int(a) for a in arch)


def select_architecture(search_model, dataset, num_archs=10, beam_width=0):
    """Picks the best held-out architecture within the budget (spec 2.7).

    Draws `num_archs` architectures from the policy (plus the beam's top
    `beam_width`) and keeps those within the budget; if none is, the most
    likely one drawn is narrowed into the budget (`shrink_to_budget`,
    flagged `"shrunk": True`). Each is evaluated on `dataset` (the held-out
    split, never the test set). The budget is checked on the MACs the
    search charged (`charged_macs`: the sampled widths, as the reference);
    `macs` are the decoded net's, whose last block is the largest candidate
    (the reference's 20.6M ResNet-20 was searched under a 20.5M budget).
    Returns a dict with the best `arch`, `widths`, `macs`, `charged_macs`,
    `accuracy` and every evaluated candidate.
    """
    if num_archs < 1 and beam_width < 1:
        raise ValueError("Nothing to select from: set num_test_archs >= 1 "
                         "or beam_width >= 1.")
    supernet = search_model.supernet
    controller = search_model.controller
    drawn = [tuple(a) for a, _ in controller.beam_search(beam_width)] \
        if beam_width else []
    drawn += [tuple(int(a) for a in ops.convert_to_numpy(
        controller.sample()[0])) for _ in range(num_archs)]
    macs = {a: int(supernet.macs(np.asarray(a, "int32"), charged=True))
            for a in drawn}
    feasible = [a for a in dict.fromkeys(drawn)
                if macs[a] <= search_model.max_macs]
    shrunk = not feasible
    if shrunk:
        likely = max(drawn, key=lambda a: float(
            controller.evaluate(np.asarray(a, "int32"))[1]))
        feasible = [shrink_to_budget(supernet, likely,
                                     search_model.max_macs)]
    candidates = []
    for arch in feasible:
        accuracy = evaluate_architecture(supernet, np.asarray(arch), dataset)
        candidates.append({
            "arch": list(arch),
            "macs": int(supernet.macs(np.asarray(arch, "int32"))),
            "charged_macs": macs.get(arch) or int(supernet.macs(
                np.asarray(arch, "int32"), charged=True)),
            "accuracy": accuracy,
            "widths": supernet.widths(np.asarray(arch))})
    best = max(candidates, key=lambda c: (c["accuracy"], -c["macs"]))
    return dict(best, candidates=candidates, shrunk=shrunk)
