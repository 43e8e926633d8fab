"""The training run: build, restore, train with checkpoints, evaluate, export.

A custom loop (``strategy.run`` inside a ``tf.function``) rather than ``Model.fit``: it resumes at
the exact step, applies Tensorpack's weight decay exactly, stops on the first NaN loss with its
step, averages the replicas' BN moving statistics before each checkpoint (the evaluation that
follows uses what the checkpoint holds), and stops on SIGTERM or SIGINT after a checkpoint of the
step every worker reached (:mod:`.preemption`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from bl_net_tf import weights
from bl_net_tf.models.batch_norm import freeze_statistics
from bl_net_tf.training import distribute, inputs, optimizer as optimizers, run_config, schedule as schedules, steps
from bl_net_tf.training.checkpoints import Checkpointer, check_writable, find_checkpoints
from bl_net_tf.training.config import TrainConfig
from bl_net_tf.training.preemption import Stopped, StopRequest
from bl_net_tf.training.progress import EpochProgress, Errors, Summaries

logger = logging.getLogger(__name__)

_SAVE_VOTES = steps.STAT_NAMES.index("save_votes")
_STOP_VOTES = steps.STAT_NAMES.index("stop_votes")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


@dataclasses.dataclass
class Session:
    """Everything built for a run (exposed for tests and tools)."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    data: inputs.DataInfo
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: schedules.LearningRate
    checkpointer: Checkpointer
    steps_per_epoch: int
    step: tf.Variable
    epoch: tf.Variable
    jit_compile: bool
    is_chief: bool
    _eval: Optional[tuple] = None  # (step function, distributed dataset), made on first use
    _sync: Optional[Callable] = None  # steps.make_replica_sync, made on first use

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs


def build(config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None, *,
          model_fn: Optional[Callable[..., keras.Model]] = None) -> Session:
    """Creates the strategy (unless given), reads the data set's size, builds the model and
    optimizer under the strategy and restores the latest checkpoint of ``config.model_dir``; without
    one, loads ``config.init_weights`` (if any).

    ``model_fn(num_classes=, input_shape=, data_format=)`` replaces the registry's model (a custom
    network, or a tiny one in tests); it takes uint8 RGB images and returns logits.

    Raises:
      ValueError: a configuration that cannot run here (see the messages).
    """
    strategy = strategy or distribute.create_strategy(config.gpus)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {replicas} replicas")
    on_gpu = distribute.uses_gpu(strategy)
    jit_compile = distribute.resolve_xla(config.xla, on_gpu)
    data_format = distribute.resolve_data_format(config.data_format, on_gpu, jit_compile)
    is_chief = distribute.is_chief(strategy)

    if config.data_dir is None:
        from bl_net_tf.data import demo

        data = inputs.describe(demo.prepare())
    else:
        data = inputs.describe(config.data_dir, train=not config.eval_only)
    steps_per_epoch = config.steps_per_epoch or data.train_images // config.batch_size
    if steps_per_epoch < 1:
        if not config.eval_only:
            raise ValueError(f"the training set has {data.train_images} images, fewer than one batch of "
                             f"{config.batch_size}")
        steps_per_epoch = 1  # only numbers the schedule, which evaluation does not use
    check_writable(config.model_dir)
    if config.export_dir and is_chief:  # the export is written beside export_dir, then moved in
        check_writable(os.path.dirname(os.path.abspath(config.export_dir)), "export_dir's parent")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)

    logger.info("%s on %d replica(s) (%s), %s, XLA %s, %s, global batch %d (%d per replica), "
                "%d steps per epoch", config.arch, replicas, "GPU" if on_gpu else "CPU", data_format,
                "on" if jit_compile else "off", config.mixed_precision, config.batch_size,
                config.batch_size // replicas, steps_per_epoch)
    # A fixed input size unless evaluation runs at another one (the paper's @256 rows).
    size = config.image_size if config.eval_image_size in (None, config.image_size) else None
    with strategy.scope(), steps.dtype_policy(config.mixed_precision):
        if model_fn is None:
            model = run_config.create_run_model(run_config.model_options(config, data.num_classes),
                                                input_shape=(size, size, 3), data_format=data_format)
        else:
            model = model_fn(num_classes=data.num_classes, input_shape=(size, size, 3), data_format=data_format)
        schedule = schedules.from_config(config, steps_per_epoch)
        optimizer = optimizers.create_optimizer(
            model, schedule, momentum=config.momentum, weight_decay=config.weight_decay,
            weight_decay_norm=config.weight_decay_norm, loss_scale=config.mixed_precision == "float16")
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpointer = Checkpointer(config.model_dir, step=step, is_chief=is_chief,
                                worker_index=distribute.task_id(strategy), minutes=config.checkpoint_minutes,
                                model=model, optimizer=optimizer, epoch=epoch)
    session = Session(config, strategy, data, model, optimizer, schedule, checkpointer, steps_per_epoch,
                      step, epoch, jit_compile, is_chief)
    path = checkpointer.restore(start_fresh=config.start_fresh)
    if path is not None:
        logger.info("resumed from %s at step %d", path, int(step.numpy()))
    if config.init_weights is not None:  # only a run without a checkpoint starts from them
        weights.initialize(model, config.init_weights, run_config.model_options(config, data.num_classes),
                           resumed_from=path)
    if config.freeze_bn:
        logger.info("--freeze_bn: the statistics of %d BatchNorm layers stay as loaded", freeze_statistics(model))
    # What `python -m bl_net_tf.export --model_dir` needs. An --eval_only run (the @256 recipes) keeps
    # the training's: its evaluation size and data would otherwise become the export's.
    if is_chief and not (config.eval_only and run_config.exists(config.model_dir)):
        run_config.write(config.model_dir, run_config.from_training(config, data, custom_model=model_fn is not None))
    return session


def evaluate(session: Session, stop: Optional[StopRequest] = None) -> Errors:
    """Top-1 / top-5 error of the model over the whole validation set.

    Raises:
      Stopped: ``stop`` was requested on some worker (the evaluation is abandoned).
    """
    if session._eval is None:  # traced once per run, not once per evaluation
        session._eval = (steps.make_eval_step(session.strategy, session.model, jit_compile=session.jit_compile),
                         inputs.eval_dataset(session.strategy, session.config, session.data))
    eval_step, dataset = session._eval
    total = np.zeros(len(steps.STAT_NAMES))
    for images, labels in dataset:
        total += eval_step(images, labels, _stop_vote(stop)).numpy()
        if total[_STOP_VOTES] > 0:
            raise _stopped(session, stop, "during the evaluation")
    errors = Errors.from_sums(total)
    if errors.images == 0:
        raise ValueError(f"the validation set of {session.data.data_dir} has no readable image")
    return errors


def _save(session: Session, step: int, epoch: int) -> None:
    if session._sync is None:
        session._sync = steps.make_replica_sync(session.strategy, session.model)
    session._sync()  # every replica holds, and the checkpoint saves, the mean BN statistics
    session.step.assign(step)
    session.epoch.assign(epoch)
    path = session.checkpointer.save()
    if session.is_chief:
        logger.info("saved %s (step %d)", path, step)


def _stop_vote(stop: Optional[StopRequest]) -> tf.Tensor:
    return tf.constant(float(stop is not None and stop.requested))


def _stopped(session: Session, stop: Optional[StopRequest], where: str) -> Stopped:
    """The exception that ends a stopped run; a worker that got no signal itself reports SIGTERM."""
    if stop is not None and stop.requested:
        signum, who = stop.signum, signal.Signals(stop.signum).name
    else:
        signum, who = signal.SIGTERM, "a stop request of another worker"
    # The step, not checkpointer.latest: on another worker the chief's write may still be landing.
    return Stopped(f"{who} {where}: step {int(session.step.numpy())} is saved in {session.config.model_dir}; "
                   f"run the same command to resume", signum)


def train(session: Session) -> Optional[Errors]:
    """Runs the remaining steps; evaluates every ``eval_every_epochs`` and after the last epoch.

    Returns:
      the last evaluation, None if no step was left to run.

    Raises:
      TrainingDiverged: a NaN or infinite loss (the run stops before saving it).
      Stopped: SIGTERM or SIGINT (on any worker): the step all workers reached was saved.
    """
    config, strategy = session.config, session.strategy
    start = int(session.step.numpy())
    if start >= session.total_steps:
        logger.info("training already finished at step %d", start)
        return None
    with StopRequest() as stop:
        seed = None if config.seed is None else config.seed + start  # a resumed run sees new batches
        iterator = iter(inputs.train_dataset(strategy, config, session.data, seed=seed))
        train_step = steps.make_train_step(strategy, session.model, session.optimizer,
                                           global_batch=config.batch_size, label_smoothing=config.label_smoothing,
                                           jit_compile=session.jit_compile)
        return _train_epochs(session, train_step, iterator, stop)


def _train_epochs(session: Session, train_step, iterator, stop: StopRequest) -> Optional[Errors]:
    config = session.config
    summaries = Summaries(config.model_dir, enabled=session.is_chief)
    spe, errors, step = session.steps_per_epoch, None, int(session.step.numpy())
    while step < session.total_steps:
        epoch = step // spe
        progress = EpochProgress(epoch, config.epochs, spe, step % spe, summaries=summaries,
                                 log_steps=config.log_steps, verbose=session.is_chief)
        while step < (epoch + 1) * spe:
            lr = float(session.schedule(step))
            vote = tf.constant(float(session.checkpointer.wants_time_save()))
            try:
                sums = train_step(iterator, vote, _stop_vote(stop)).numpy()
            except tf.errors.OutOfRangeError:  # the endless stream ended: every file was skipped
                raise ValueError(f"no readable training image in {session.data.data_dir} (not one batch of "
                                 f"{config.batch_size}; the files skipped are named above)") from None
            stop.arm()  # from now on a signal stops after a step and a checkpoint (see .preemption)
            step += 1
            if not np.all(np.isfinite(sums)):
                raise TrainingDiverged(f"loss is {Errors.from_sums(sums).loss} at step {step} (epoch {epoch + 1}); "
                                       f"stopped without saving it, the last checkpoint is "
                                       f"{session.checkpointer.latest}")
            progress.update(step, sums, lr)
            if sums[_STOP_VOTES] > 0:
                _save(session, step, step // spe)
                raise _stopped(session, stop, f"at step {step} (epoch {epoch + 1})")
            if sums[_SAVE_VOTES] > 0 and step % spe:
                _save(session, step, epoch)
        _save(session, step, epoch + 1)
        last = step == session.total_steps
        if last or (epoch + 1) % config.eval_every_epochs == 0:
            errors = evaluate(session, stop)
            summaries.eval(step, errors)
            logger.info("epoch %d: val top1_err=%.4f top5_err=%.4f loss=%.4f (%d images)", epoch + 1,
                        errors.top1_err, errors.top5_err, errors.loss, errors.images)
    return errors


def run(config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None, *,
        model_fn: Optional[Callable[..., keras.Model]] = None) -> Errors:
    """Trains (unless ``eval_only``) and evaluates; exports to ``export_dir`` if set.
    ``strategy`` and ``model_fn``: see :func:`build`.

    Returns:
      the final evaluation on the validation set.

    Raises:
      ValueError: bad configuration or data (one line each).
      TrainingDiverged: the loss became NaN or infinite.
    """
    if config.eval_only and not find_checkpoints(config.model_dir):
        raise ValueError(f"--eval_only: no checkpoint in {config.model_dir}")
    session = build(config, strategy, model_fn=model_fn)
    if config.eval_only:
        errors = evaluate(session)
    else:
        errors = train(session) or evaluate(session)
    if config.export_dir and session.is_chief:
        from bl_net_tf.export import export_saved_model

        export_saved_model(session.model, config.export_dir, image_size=config.eval_image_size or config.image_size,
                           class_names=session.data.class_names, eval_protocol=config.eval_protocol, overwrite=True)
        logger.info("exported a SavedModel to %s", config.export_dir)
    return errors
