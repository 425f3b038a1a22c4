"""The papers' optimizer and learning-rate schedules, serializable.

The reference recipes use `torch.optim.SGD(weight_decay=wd)`: an L2 term
added to the gradient before momentum. Keras's `weight_decay` is decoupled
(applied to the weights after the step), which trains differently with
momentum, so `L2SGD` adds the coupled term instead.
"""

import math

import keras
from keras import ops

from keras_compact import api
from keras_compact.registry import Registry

_NO_DECAY = ("bias", "gamma", "beta")


@api.serializable
class L2SGD(keras.optimizers.SGD):
    """SGD with (Nesterov) momentum and coupled L2 weight decay.

    Args:
        l2: coefficient of the L2 term added to each gradient.
        decay_bn_and_bias: when False, biases and BN scale/offset get no L2
            (as the large-batch ImageNet recipes do).
        **kwargs: `keras.optimizers.SGD` arguments (learning_rate,
            momentum, nesterov, ...).

    Example:

    >>> opt = keras_compact.optimizers.L2SGD(learning_rate=0.1, momentum=0.9,
    ...                                      l2=1e-4)
    """

    def __init__(self, l2=0.0, decay_bn_and_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.l2 = l2
        self.decay_bn_and_bias = decay_bn_and_bias

    def _decays(self, variable):
        return self.l2 and (self.decay_bn_and_bias
                            or variable.name not in _NO_DECAY)

    def update_step(self, gradient, variable, learning_rate):
        if self._decays(variable):
            gradient = gradient + ops.cast(self.l2, gradient.dtype) * (
                ops.cast(variable, gradient.dtype))
        if self._fusable(gradient, variable):
            self._fused_momentum_step(gradient, variable, learning_rate)
        else:
            super().update_step(gradient, variable, learning_rate)

    def _fusable(self, gradient, variable):
        if keras.backend.backend() != "tensorflow" or not self.momentum:
            return False
        import tensorflow as tf

        # Sparse (embedding) gradients keep Keras's scatter updates.
        return (hasattr(variable, "handle")
                and not isinstance(gradient, tf.IndexedSlices))

    def _fused_momentum_step(self, gradient, variable, learning_rate):
        """Keras's SGD update as one TensorFlow kernel per variable.

        `ResourceApplyKerasMomentum` computes what `SGD.update_step` does
        (`m = momentum * m - lr * g`, then `w += m`, or with Nesterov
        `w += momentum * m - lr * g`) in place, instead of five elementwise
        ops and two assignments: a ResNet-56 step has ~170 variables.
        """
        import tensorflow as tf  # the fused kernel is the point

        dtype = variable.dtype
        momentum = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=momentum.handle,
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
            use_locking=False,
            use_nesterov=self.nesterov,
        )

    def get_config(self):
        config = super().get_config()
        config.update(l2=self.l2, decay_bn_and_bias=self.decay_bn_and_bias)
        return config


@api.serializable
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then the rate times `decay_rate` at each boundary.

    Args:
        learning_rate: the rate after warmup.
        boundaries: step numbers where the rate is multiplied by
            `decay_rate`.
        decay_rate: e.g. 0.1.
        warmup_steps: linear ramp from 0 over this many steps.
    """

    def __init__(self, learning_rate, boundaries, decay_rate,
                 warmup_steps=0):
        self.learning_rate = learning_rate
        self.boundaries = list(boundaries)
        self.decay_rate = decay_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = sum(ops.cast(step >= b, "float32") for b in self.boundaries)
        rate = self.learning_rate * ops.power(self.decay_rate, passed)
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, (step + 1) / self.warmup_steps)
        return rate

    def get_config(self):
        return dict(learning_rate=self.learning_rate,
                    boundaries=self.boundaries, decay_rate=self.decay_rate,
                    warmup_steps=self.warmup_steps)


SCHEDULES = Registry("schedule")


@SCHEDULES.register("step")
def _step(config, steps_per_epoch):
    return WarmupStepDecay(
        config.lr, [int(e * steps_per_epoch) for e in config.decay_epochs],
        config.decay_rate, config.warmup_epochs * steps_per_epoch)


@SCHEDULES.register("cosine")
def _cosine(config, steps_per_epoch):
    warmup = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.lr,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
        warmup_target=config.lr if warmup else None,
        warmup_steps=warmup,
    )


OPTIMIZERS = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(config, schedule):
    return L2SGD(learning_rate=schedule, momentum=config.momentum,
                 nesterov=config.nesterov, l2=config.weight_decay,
                 decay_bn_and_bias=config.decay_bn_and_bias)


@OPTIMIZERS.register("adam")
def _adam(config, schedule):
    return keras.optimizers.AdamW(learning_rate=schedule,
                                  weight_decay=config.weight_decay)


def make_optimizer(config, steps_per_epoch):
    """The optimizer of `config.optimizer` with `config.schedule` applied."""
    if steps_per_epoch < 1 or not math.isfinite(steps_per_epoch):
        raise ValueError(f"steps_per_epoch must be >= 1, got "
                         f"{steps_per_epoch}.")
    schedule = SCHEDULES.get(config.schedule)(config, steps_per_epoch)
    return OPTIMIZERS.get(config.optimizer)(config, schedule)
