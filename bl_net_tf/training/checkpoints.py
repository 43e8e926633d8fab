"""Checkpoints of the model, the optimizer (its step counter drives the schedule) and the epoch.

Saved at the end of every epoch and every ``checkpoint_minutes``. ``tf.train.CheckpointManager``
writes the data shards in a ``ckpt-N_temp/`` folder, renames them into place, writes the index,
and only then rewrites the ``checkpoint`` state file, atomically (temp file + rename); old
checkpoints are deleted after that.

Restoring does not rely on the state file: the checkpoints are found by their files
(``ckpt-N.index``, ``ckpt-N.data-*``) and tried newest first. One that cannot be read (a data file
truncated or lost when a node died, a half-written index) or that belongs to another model is
logged with the reason and skipped; the run resumes from the newest one that restores completely
(TensorFlow checks every tensor's CRC32C as it reads it). When checkpoints exist and none restores,
the run stops rather than start over on top of them, unless ``start_fresh`` moves them aside first.
An unreadable state file is moved aside and rewritten from the files, so that the manager keeps
deleting the oldest checkpoints.

The model's variables are saved by their path (``stage2_big_block1_conv1/kernel``), not by the
position of their layer: a channels_first run (its model has one more, weightless, layer) resumes as
channels_last and the other way round, and the exporter and ``--init_weights`` read one part of a
checkpoint by name (:func:`restore_model_weights`, :func:`read_model_variables`).

In a multi-worker run every worker must save (reading replicated variables is a collective); the
non-chief workers write to a scratch folder that they delete.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from typing import Optional

import tensorflow as tf

logger = logging.getLogger(__name__)

MAX_TO_KEEP = 3
PREFIX = "ckpt"  # tf.train.CheckpointManager's default checkpoint_name
STATE_FILE = "checkpoint"
# ckpt-N.index and ckpt-N.data-00000-of-00001: the files of checkpoint N (not ckpt-N_temp/).
_CHECKPOINT_FILE = re.compile(rf"^{PREFIX}-(\d+)\.(index|data-\d+-of-\d+)$")
_TEMP_FOLDER = re.compile(rf"^{PREFIX}-\d+_temp$")  # the shards of a save in progress
# Errors of reading a checkpoint's files, and of a checkpoint whose variables are not this model's.
_UNREADABLE = (IndexError, tf.errors.OpError)
_MISMATCHED = (AssertionError, ValueError)
_CHOICES = ("use another --model_dir, or pass --start_fresh to move them into a previous-<time>/ folder and train "
            "from step 0")


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
        _restore_model_part(model, path)
    except _MISMATCHED + _UNREADABLE as error:
        raise ValueError(f"cannot load the weights of checkpoint {path} into {model.name}: {first_line(error)}") from None


def _restore_model_part(model, path: str) -> None:
    tf.train.Checkpoint(model=model_weights(model)).restore(path).expect_partial().assert_existing_objects_matched()


def read_model_variables(prefix: str, model) -> dict:
    """``{variable path: array}`` of the variables of ``model`` that the training checkpoint
    ``prefix`` holds, whatever their shapes (the caller decides what fits); saved under
    ``model/<variable path>`` by :func:`model_weights`, with ``.`` and ``/`` escaped by TF as ``..``
    and ``.S``.

    Raises:
      ValueError: ``prefix`` is not a readable checkpoint.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"cannot read checkpoint {prefix}: {first_line(error)}") from None
    keys = reader.get_variable_to_shape_map()
    state = {}
    for variable in model.weights:
        key = f"model/{variable.path.replace('.', '..').replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"
        if key in keys:
            state[variable.path] = reader.get_tensor(key)
    return state


def restore_newest_model_weights(model, model_dir: str) -> str:
    """Loads the model part of the newest checkpoint of ``model_dir`` that restores into ``model``
    and returns its path: found by their files, newest first, each one skipped logged with the
    reason, as the trainer resumes (the ``checkpoint`` state file is not read).

    Raises:
      ValueError: no checkpoint, or none that restores (each named with the reason).
    """
    found = find_checkpoints(model_dir)
    if not found:
        raise ValueError(f"no checkpoint in {model_dir}")
    return _restore_newest(model_dir, found, lambda path: _restore_model_part(model, path),
                           "pass one with --checkpoint")


def _restore_newest(model_dir: str, found: list, restore, choices: str) -> str:
    """Calls ``restore(path)`` on the checkpoints ``found`` (newest first) until one succeeds;
    returns its path. Each one skipped is logged with the reason.

    Raises:
      ValueError: none restores; the message names each one and why, then ``choices``.
    """
    failures = []
    for path in found:
        try:
            restore(path)
        except _UNREADABLE as error:
            failures.append((path, "is unreadable", first_line(error)))
        except _MISMATCHED as error:
            failures.append((path, "does not match this model and configuration", first_line(error)))
        else:
            return path
        logger.warning("skipping checkpoint %s: it %s (%s)", *failures[-1])
    reasons = "; ".join(f"{path} {kind} ({reason[:200]})" for path, kind, reason in failures)
    raise ValueError(f"no checkpoint of {model_dir} can be restored: {reasons}; {choices}")


def first_line(error: BaseException) -> str:
    """The first line of an error, without TF's ``{{function_node ...}}`` prefix."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"^\{\{[^}]*\}\}\s*", "", message.strip())
    return (message.splitlines() or [type(error).__name__])[0]


def find_checkpoints(model_dir: str) -> list:
    """The checkpoints of ``model_dir`` by their files, newest (highest step) first.

    A checkpoint counts as soon as one of its files is there (an index without its data, or the
    other way round, is a damaged checkpoint, not none). The ``checkpoint`` state file is not read.
    """
    try:
        names = tf.io.gfile.listdir(model_dir)
    except tf.errors.NotFoundError:
        return []
    steps = {int(match.group(1)) for match in map(_CHECKPOINT_FILE.match, names) if match}
    return [os.path.join(model_dir, f"{PREFIX}-{step}") for step in sorted(steps, reverse=True)]


def _read_state_file(model_dir: str) -> tuple:
    """``(names of the checkpoints the state file lists, why it cannot be read)``; ``([], None)``
    without a state file."""
    if not tf.io.gfile.exists(os.path.join(model_dir, STATE_FILE)):
        return [], None
    try:
        state = tf.train.get_checkpoint_state(model_dir)  # None (and a TF warning) on a parse error
    except (ValueError, tf.errors.OpError) as error:  # UnicodeDecodeError is a ValueError
        return [], first_line(error)
    if state is None:
        return [], "it does not parse as a checkpoint state"
    return [os.path.basename(path) for path in state.all_model_checkpoint_paths], None


def _write_state_file(model_dir: str, latest: str, others: list) -> None:
    """Writes a ``checkpoint`` state file naming ``latest`` and ``others`` (oldest first), atomically.

    With timestamps after ``last_preserved_timestamp``, as the manager writes them: it then counts
    these checkpoints among the ``MAX_TO_KEEP`` and deletes the oldest (without, it keeps them all).
    """
    paths = others + [latest]
    now = time.time()
    lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(path)}"' for path in paths]
    lines += [f"all_model_checkpoint_timestamps: {now - len(paths) + i}" for i in range(len(paths))]
    lines.append(f"last_preserved_timestamp: {now - len(paths) - 1}")
    temporary = os.path.join(model_dir, f".{STATE_FILE}-{os.getpid()}.tmp")
    with tf.io.gfile.GFile(temporary, "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(temporary, os.path.join(model_dir, STATE_FILE), overwrite=True)


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
    """Restores the newest restorable checkpoint of ``model_dir`` and saves new ones, by epoch and by time.

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
        self._manager = None  # made at the first save: it reads the state file that restore() may repair
        self._last_save = time.monotonic()

    @property
    def latest(self) -> Optional[str]:
        """The newest checkpoint of ``model_dir`` by its files (not necessarily intact), or None."""
        found = find_checkpoints(self.model_dir)
        return found[0] if found else None

    def restore(self, start_fresh: bool = False) -> Optional[str]:
        """Restores the newest checkpoint that restores completely; returns its path (None: none exist).

        Each checkpoint skipped on the way is logged with the reason. ``start_fresh``: restore
        nothing and (the chief) move the checkpoints of ``model_dir`` into a ``previous-<time>/``
        folder beside them, so that the new run's checkpoints do not mix with them.

        Raises:
          ValueError: checkpoints exist and none of them can be restored (one line naming each and
            why: unreadable, or written by another model or configuration), or a state file is there
            but no checkpoint file.
        """
        if start_fresh:
            if self.is_chief:
                self._set_aside()
            return None
        found = find_checkpoints(self.model_dir)
        listed, state_problem = _read_state_file(self.model_dir)
        if state_problem is not None:
            logger.warning("the checkpoint state file of %s cannot be read (%s); finding the checkpoints by "
                           "their files", self.model_dir, state_problem)
        if not found:
            if tf.io.gfile.exists(os.path.join(self.model_dir, STATE_FILE)):  # they were there once
                raise ValueError(f"{self.model_dir} has a checkpoint state file but no checkpoint files "
                                 f"({PREFIX}-N.index, {PREFIX}-N.data-*); {_CHOICES}")
            return None
        # The optimizer's slots exist already (built before), so every object restores now and all of
        # them must be in the checkpoint: another --arch in the same model_dir fails here instead of
        # training from a partial restore.
        restore = self.checkpoint.restore
        path = _restore_newest(self.model_dir, found, lambda p: restore(p).assert_existing_objects_matched(), _CHOICES)
        # A state file that cannot be read, or that misses the checkpoint (a kill after the files were
        # written, before the state file was), is rewritten: the manager then deletes the oldest
        # checkpoints as usual.
        if self.is_chief and (state_problem is not None or os.path.basename(path) not in listed):
            self._rewrite_state_file(path, found, keep_old=state_problem is not None)
        return path

    def _rewrite_state_file(self, restored: str, found: list, keep_old: bool) -> None:
        state = os.path.join(self.model_dir, STATE_FILE)
        kept = state + ".unreadable"
        if keep_old:
            tf.io.gfile.rename(state, kept, overwrite=True)
        _write_state_file(self.model_dir, restored, [path for path in reversed(found) if path != restored])
        logger.warning("rewrote the checkpoint state file of %s from the checkpoint files%s", self.model_dir,
                       f" (the unreadable one is kept as {kept})" if keep_old else "")

    def _set_aside(self) -> None:
        names = [name for name in tf.io.gfile.listdir(self.model_dir)
                 if _CHECKPOINT_FILE.match(name) or _TEMP_FOLDER.match(name.rstrip("/")) or name == STATE_FILE]
        if not names:
            return
        target = os.path.join(self.model_dir, time.strftime("previous-%Y%m%d-%H%M%S"))
        tf.io.gfile.makedirs(target)
        for name in names:
            name = name.rstrip("/")
            tf.io.gfile.rename(os.path.join(self.model_dir, name), os.path.join(target, name))
        logger.warning("start_fresh: moved the %d checkpoint file(s) of %s into %s; training from step 0",
                       len(names), self.model_dir, target)

    def wants_time_save(self) -> bool:
        """This process's vote: whether ``minutes`` have passed since the last save."""
        return self.is_chief and time.monotonic() - self._last_save >= self.minutes * 60

    def save(self) -> str:
        """Writes a checkpoint numbered by the global step; all workers must call this together."""
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir, max_to_keep=MAX_TO_KEEP)
        path = self._manager.save(checkpoint_number=int(self.step.numpy()))
        self._last_save = time.monotonic()
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            self._manager = None  # its folder is gone; the next save starts a new one
        return path
