"""A small learnable synthetic dataset for smoke runs and tests."""

import numpy as np

from keras_compact.data.registry import ImageDataset
from keras_compact.data.registry import channel_stats
from keras_compact.data.registry import register


def make_synthetic(num_train=2048, num_test=512, shape=(32, 32, 3),
                   num_classes=10, seed=0):
    """Noisy images whose class sets a coarse colour pattern.

    Learnable in a few steps, so a smoke run shows a falling loss.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(40, 215, size=(num_classes, 4, 4, shape[-1]))

    def sample(count):
        labels = rng.integers(0, num_classes, count).astype(np.int32)
        base = patterns[labels].repeat(shape[0] // 4, 1).repeat(
            shape[1] // 4, 2)
        noise = rng.normal(0, 40, size=(count, *shape))
        return np.clip(base + noise, 0, 255).astype(np.uint8), labels

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    mean, std = channel_stats(x_train)
    return ImageDataset(x_train, y_train, x_test, y_test, num_classes, mean,
                        std)


register("synthetic", lambda data_dir: make_synthetic())
