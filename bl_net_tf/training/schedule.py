"""The learning rate as a function of the global step.

The paper (Appendix A.1) uses a cosine schedule (Loshchilov & Hutter, SGDR) over 110 epochs;
``step`` is Tensorpack's early-2018 imagenet-resnet.py schedule (the commit is cited below): x0.1
at epochs 30, 60, 85, 95 and 105 of 110 (stretched proportionally for runs of another length). Both can start with a linear warm-up.
The schedule is evaluated at the optimizer's step counter, which is checkpointed, so a resumed
run continues the schedule exactly where it stopped.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from bl_net_tf.constants import LR_SCHEDULES, check_choice

# Tensorpack's ScheduledHyperParamSetter for 110 epochs: x0.1 at each of these epochs.
# examples/ResNet/imagenet-resnet.py from commit 0086e156c7a8c769fffea2214242c1b5767359d7 (2018-01-29)
# through 43f7ca7506b12bb975606093fb6c44168d108386 (2018-03-04): the 110-epoch script of the paper's
# time (Appendix A.1 trains 110 epochs). From 4adbaa945109589c835372ccf1c6ae01c9555142 (2018-03-04) on
# it is 30, 60, 90, 100 of 105 epochs, with a 5-epoch warm-up from 4cde005e (2018-04-07).
STEP_BOUNDARIES = (30, 60, 85, 95, 105)
STEP_FACTOR = 0.1
STEP_EPOCHS = 110


@keras.saving.register_keras_serializable(package="bl_net_tf")
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up, then cosine decay to 0 or Tensorpack's steps.

    Args:
      peak_lr: the rate after warm-up (cosine starts here; ``step`` divides it).
      steps_per_epoch: optimizer steps in one epoch.
      epochs: length of the run; cosine reaches 0 at its end.
      kind: ``cosine`` or ``step``.
      warmup_epochs: a linear ramp from ``warmup_start_lr`` to ``peak_lr`` over this many epochs
        (fractional epochs allowed). Cosine then decays over the remaining steps.
      warmup_start_lr: where the ramp starts.
    """

    def __init__(self, peak_lr: float, steps_per_epoch: int, epochs: int, kind: str = "cosine",
                 warmup_epochs: float = 0.0, warmup_start_lr: float = 0.0):
        check_choice("lr_schedule", kind, LR_SCHEDULES)
        self.peak_lr = float(peak_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.kind = kind
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_start_lr = float(warmup_start_lr)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_epochs * self.steps_per_epoch))

    def step_boundaries(self) -> list:
        """Steps at which ``step`` divides the rate by 10 (epoch boundaries scaled to the run)."""
        scale = self.epochs / STEP_EPOCHS
        return [int(round(b * scale)) * self.steps_per_epoch for b in STEP_BOUNDARIES]

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(self.warmup_steps)
        if self.kind == "cosine":
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
            decayed = self.peak_lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            drops = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.step_boundaries()])
            decayed = self.peak_lr * tf.pow(STEP_FACTOR, drops)
        if self.warmup_steps == 0:
            return decayed
        ramp = self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * step / warmup
        return tf.where(step < warmup, ramp, decayed)

    def get_config(self):
        return dict(peak_lr=self.peak_lr, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs,
                    kind=self.kind, warmup_epochs=self.warmup_epochs, warmup_start_lr=self.warmup_start_lr)


def from_config(config, steps_per_epoch: int) -> LearningRate:
    """The schedule of a :class:`~bl_net_tf.training.config.TrainConfig`.

    The warm-up starts at the batch-256 rate 0.1 when the peak is above it (Tensorpack's
    ``[(0, 0.1), (3, BASE_LR)]``, Goyal et al. 2017), else at 0.
    """
    from bl_net_tf.training.config import REFERENCE_LR

    peak = config.peak_lr
    return LearningRate(peak, steps_per_epoch, config.epochs, kind=config.lr_schedule,
                        warmup_epochs=config.warmup,
                        warmup_start_lr=REFERENCE_LR if peak > REFERENCE_LR else 0.0)
