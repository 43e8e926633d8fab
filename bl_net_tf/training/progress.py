"""What a run shows: a progress bar per epoch, TensorBoard scalars, and the final eval line.

The eval line is a contract for scripts: the last line of stdout is
``eval: top1_err=0.2269 top5_err=0.0651 images=50000``.
"""
from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from bl_net_tf.training.steps import STAT_NAMES

EVAL_LINE_PREFIX = "eval:"
_IMAGES = STAT_NAMES.index("images")
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))


@dataclasses.dataclass(frozen=True)
class Errors:
    """Mean loss, top-1 and top-5 error over ``images`` images."""

    loss: float
    top1_err: float
    top5_err: float
    images: int

    @classmethod
    def from_sums(cls, sums) -> "Errors":
        s = dict(zip(STAT_NAMES, np.asarray(sums, dtype=np.float64)))
        n = max(s["images"], 1.0)
        return cls(s["loss_sum"] / n, s["wrong1"] / n, s["wrong5"] / n, int(s["images"]))

    def line(self) -> str:
        """``eval: top1_err=0.2269 top5_err=0.0651 images=50000``."""
        return f"{EVAL_LINE_PREFIX} top1_err={self.top1_err:.4f} top5_err={self.top5_err:.4f} images={self.images}"


def parse_eval_line(line: str) -> dict:
    """The values of an eval line: ``{"top1_err": 0.2269, "top5_err": 0.0651, "images": 50000}``."""
    if not line.startswith(EVAL_LINE_PREFIX):
        raise ValueError(f"not an eval line: {line!r}")
    fields = dict(item.split("=", 1) for item in line[len(EVAL_LINE_PREFIX):].split())
    return {"top1_err": float(fields["top1_err"]), "top5_err": float(fields["top5_err"]),
            "images": int(fields["images"])}


class Summaries:
    """TensorBoard scalars under ``model_dir/train`` and ``model_dir/eval`` (chief only)."""

    def __init__(self, model_dir: str, enabled: bool = True):
        self.enabled = enabled
        if enabled:
            self._train = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
            self._eval = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))

    @staticmethod
    def _write(writer, step: int, scalars: dict) -> None:
        # tf.summary.write with the scalars plugin's metadata is what tf.summary.scalar does, minus
        # the import of the tensorboard package: training does not need it, only viewing does.
        with writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
        writer.flush()

    def train(self, step: int, scalars: dict) -> None:
        if self.enabled:
            self._write(self._train, step, scalars)

    def eval(self, step: int, errors: Errors) -> None:
        if self.enabled:
            self._write(self._eval, step, {"loss": errors.loss, "top1_err": errors.top1_err,
                                           "top5_err": errors.top5_err})


class EpochProgress:
    """A progress bar over one epoch's steps with loss and top-1 error (means over the epoch so far),
    lr, images/s and the ETA; TensorBoard scalars every ``log_steps`` steps (means over those steps).

    ``first_step`` is where a resumed epoch starts. The first step of a process (tracing and
    compiling) is left out of images/s.
    """

    def __init__(self, epoch: int, epochs: int, steps_per_epoch: int, first_step: int, *, summaries: Summaries,
                 log_steps: int, verbose: bool = True):
        self.summaries = summaries
        self.log_steps = log_steps
        self._bar = None
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            # interval: at most 2 redraws a second, so a log file of a long run stays small.
            self._bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "top1_err", "lr", "images/s"],
                                            unit_name="step", interval=0.5)
            self._bar.update(first_step)
        self._in_epoch = first_step
        self._window = np.zeros(len(STAT_NAMES))
        self._clock, self._clock_images = None, 0.0
        self.epoch_sums = np.zeros(len(STAT_NAMES))

    def update(self, global_step: int, sums, lr: float) -> None:
        """Records the step that ended at ``global_step`` with its global ``sums``."""
        now = time.monotonic()
        sums = np.asarray(sums, dtype=np.float64)
        self._in_epoch += 1
        self.epoch_sums += sums
        self._window += sums
        if self._clock is None:  # the step that traced and compiled: no speed from it
            self._clock, self._clock_images = now, 0.0
        else:
            self._clock_images += sums[_IMAGES]
        elapsed = now - self._clock
        speed = self._clock_images / elapsed if elapsed > 0 else 0.0
        if self._bar is not None:
            epoch = Errors.from_sums(self.epoch_sums)  # means over this epoch's steps so far
            self._bar.update(self._in_epoch, [("loss", epoch.loss), ("top1_err", epoch.top1_err),
                                              ("lr", lr), ("images/s", speed)])
        if global_step % self.log_steps == 0:
            window = Errors.from_sums(self._window)
            self.summaries.train(global_step, {"loss": window.loss, "top1_err": window.top1_err,
                                               "top5_err": window.top5_err, "learning_rate": lr,
                                               "images_per_sec": speed})
            self._window[:] = 0
