"""Non-affine batch norm with running statistics per candidate pair."""

import keras
from keras import ops

from keras_compact import api
from keras_compact.layers.aps.projections import _choice


@api.serializable
class CandidateBatchNorm(keras.layers.Layer):
    """Non-affine batch norm with running statistics per candidate pair.

    The reference has one `BatchNorm2d(affine=False)` per (o, i) pair of
    every searchable conv; here their running statistics are stacked as
    `[n_out, n_in, channels]` and only the chosen pair's row is updated.
    Zero-padded channels stay exactly zero (their mean and variance are 0).

    Args:
        num_out: number of output candidates.
        num_in: number of input candidates.
        momentum: running-average momentum (Keras convention; PyTorch 0.1).
        epsilon: added to the variance.

    Call arguments:
        choice: int tensor `[o, i]` (default: the last pair).
        training: batch statistics and an update of the pair's statistics
            when True, the pair's running statistics otherwise.

    Example:

    >>> bn = keras_compact.layers.CandidateBatchNorm(2, 3)
    >>> y = bn(keras.ops.ones((2, 4, 4, 8)), choice=[1, 0], training=True)

    Reference: Wang et al., NeurIPS 2020 (spec section 1.3).
    """

    def __init__(self, num_out, num_in, momentum=0.9, epsilon=1e-5,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_out = int(num_out)
        self.num_in = int(num_in)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        shape = (self.num_out, self.num_in, input_shape[-1])
        # float32 statistics under mixed precision, as Keras's own BN.
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer="zeros",
            trainable=False, autocast=False)
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer="ones",
            trainable=False, autocast=False)

    def call(self, inputs, choice=None, training=None):
        o, i = _choice(choice, (self.num_out - 1, self.num_in - 1))
        x = ops.cast(inputs, "float32")
        if training:
            mean, variance = ops.moments(x, axes=[0, 1, 2])
            pair = ops.one_hot(o * self.num_in + i,
                               self.num_out * self.num_in)
            pair = ops.reshape(pair, (self.num_out, self.num_in, 1))
            decay = (1.0 - self.momentum) * pair
            self.moving_mean.assign(
                self.moving_mean + decay * (mean - self.moving_mean))
            self.moving_variance.assign(
                self.moving_variance
                + decay * (variance - self.moving_variance))
        else:
            mean = self.moving_mean[o, i]
            variance = self.moving_variance[o, i]
        y = (x - mean) * ops.rsqrt(variance + self.epsilon)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_out": self.num_out, "num_in": self.num_in,
                       "momentum": self.momentum, "epsilon": self.epsilon})
        return config
