"""Checkpoints of the model, the optimizer (its step counter drives the schedule) and the epoch.

Saved at the end of every epoch and every ``checkpoint_minutes``. ``tf.train.CheckpointManager``
writes the data shards in a ``ckpt-N_temp/`` folder, renames them into place, writes the index,
and only then rewrites the ``checkpoint`` state file, atomically (temp file + rename); old
checkpoints are deleted after that. Restoring reads the state file, so a process killed at any
moment resumes from a complete checkpoint: the one before, if the kill hit a save.

The model's variables are saved by their path (``stage2_big_block1_conv1/kernel``), not by the
position of their layer: a channels_first run (its model has one more, weightless, layer) resumes as
channels_last and the other way round, and the exporter and ``--init_weights`` read one part of a
checkpoint by name (:func:`restore_model_weights`).

In a multi-worker run every worker must save (reading replicated variables is a collective); the
non-chief workers write to a scratch folder that they delete.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from typing import Optional

import tensorflow as tf

logger = logging.getLogger(__name__)

MAX_TO_KEEP = 3


def model_weights(model) -> tf.train.Checkpoint:
    """The checkpoint entry of ``model``: its variables keyed by path, independent of layer order."""
    return tf.train.Checkpoint(**{variable.path: variable for variable in model.weights})


def restore_model_weights(model, path: str) -> None:
    """Loads the model part of the training checkpoint ``path`` into ``model`` (nothing else).

    Raises:
      ValueError: ``path`` is not a readable checkpoint or lacks a variable of ``model``, or a shape
        differs (another architecture or configuration).
    """
    try:
        tf.train.Checkpoint(model=model_weights(model)).restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"cannot load the weights of checkpoint {path} into {model.name}: {reason}") from None


def check_writable(directory: str, label: str = "model_dir") -> None:
    """Creates ``directory`` and checks that files can be written there (before hours of training).

    Raises:
      ValueError: it cannot be created or written.
    """
    # One per worker of a cluster: containers on different nodes often share a pid (1), not a host name.
    probe = os.path.join(directory, f".write_probe-{socket.gethostname()}-{os.getpid()}")
    try:
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ValueError(f"{label} {directory!r} is not writable: {message.splitlines()[0]}") from None


class Checkpointer:
    """Restores the latest checkpoint of ``model_dir`` and saves new ones, by epoch and by time.

    Args:
      model_dir: where checkpoints live.
      step: the global step variable; saved as ``step`` and numbering the checkpoints.
      model: the Keras model, saved by variable path (:func:`model_weights`).
      is_chief: whether this process owns ``model_dir``; other workers write to a scratch folder.
      worker_index: names the scratch folder of a non-chief worker.
      minutes: the time between two time-triggered saves.
      **objects: what else to save (``optimizer=``, ``epoch=``).
    """

    def __init__(self, model_dir: str, *, step, model, is_chief: bool = True, worker_index: int = 0,
                 minutes: float = 10.0, **objects):
        self.model_dir = model_dir
        self.step = step
        self.is_chief = is_chief
        self.minutes = minutes
        self._write_dir = model_dir if is_chief else os.path.join(model_dir, f".worker{worker_index}")
        self.checkpoint = tf.train.Checkpoint(step=step, model=model_weights(model), **objects)
        self._manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir, max_to_keep=MAX_TO_KEEP)
        self._last_save = time.monotonic()

    @property
    def latest(self) -> Optional[str]:
        """The newest complete checkpoint of ``model_dir``, or None."""
        return tf.train.latest_checkpoint(self.model_dir)

    def restore_latest(self) -> Optional[str]:
        """Restores the newest checkpoint, if any; returns its path.

        Raises:
          ValueError: the checkpoint was written by another model or configuration.
        """
        path = self.latest
        if path is None:
            return None
        try:
            # The optimizer's slots exist already (built before), so every object restores now and
            # all of them must be in the checkpoint: another --arch in the same model_dir fails
            # here instead of training from a partial restore.
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"the checkpoint {path} does not match this model and configuration ({reason}); "
                             f"use another --model_dir") from None
        return path

    def wants_time_save(self) -> bool:
        """This process's vote: whether ``minutes`` have passed since the last save."""
        return self.is_chief and time.monotonic() - self._last_save >= self.minutes * 60

    def save(self) -> str:
        """Writes a checkpoint numbered by the global step; all workers must call this together."""
        path = self._manager.save(checkpoint_number=int(self.step.numpy()))
        self._last_save = time.monotonic()
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return path
