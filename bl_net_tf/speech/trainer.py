"""Training the acoustic models on frame-labelled TFRecords with Appendix B.1's recipe.

Defaults are the paper's: 16 epochs, batch 512, Nesterov momentum 0.9, learning rate 0.03
multiplied by sqrt(0.5) every epoch from the 10th on, gradient clipping at a global norm of 10,
weight decay 1e-6, softmax cross-entropy on the central frame's state. (Keras's SGD decays the
weights decoupled from the gradient, PyTorch's adds the L2 term to it; at 1e-6 the two are
indistinguishable.) ``train_speech.py`` is the command line; this module is what it calls.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional

import keras

from bl_net_tf import constants
from bl_net_tf.speech.records import frame_dataset
from bl_net_tf.training import distribute
from bl_net_tf.weights import SPEECH_RUN_WEIGHTS

ANNEAL_FACTOR = math.sqrt(0.5)


@dataclasses.dataclass(frozen=True)
class SpeechTrainConfig:
    """One training run; ``train_records`` / ``eval_records`` are TFRecord file patterns written by
    :func:`bl_net_tf.speech.records.write_utterances`."""

    train_records: str = ""
    eval_records: Optional[str] = None
    arch: str = "bl-resnet22-speech"
    alpha: int = 2  # the paper's best setting, Table 3 line 5
    beta: int = 3
    merge: str = "add"
    num_classes: int = constants.SPEECH_NUM_CLASSES
    data_format: str = constants.AUTO  # as the ImageNet trainer's: channels_first with a GPU
    batch_size: int = 512
    epochs: int = 16
    lr: float = 0.03
    anneal_from_epoch: int = 10
    momentum: float = 0.9
    weight_decay: float = 1e-6
    clip_norm: float = 10.0
    shuffle_buffer: int = 10_000  # windows; see frame_dataset
    steps_per_epoch: Optional[int] = None
    model_dir: Optional[str] = None
    seed: Optional[int] = None
    xla: str = constants.AUTO  # as the ImageNet trainer's: XLA with a GPU
    init_weights: Optional[str] = None  # a speech run's model_dir or a .weights.h5 (bl_net_tf/weights.py)

    def validate(self) -> "SpeechTrainConfig":
        """Checks every field, the model's options with create_model's own checks.

        Raises:
          ValueError: one line naming the bad value and what is allowed.
        """
        from bl_net_tf.models.factory import validate_model_options

        if not self.train_records:
            raise ValueError("train_records is required (a TFRecord file pattern)")
        for name in ("batch_size", "epochs", "anneal_from_epoch"):
            constants.check_positive_int(name, getattr(self, name))
        constants.check_choice("data_format", self.data_format, constants.DATA_FORMAT_MODES)
        validate_model_options(**self.model_options(), weights=self.init_weights)
        for name in ("lr", "clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        constants.check_choice("xla", self.xla, constants.XLA_MODES)
        if self.steps_per_epoch is not None:
            constants.check_positive_int("steps_per_epoch", self.steps_per_epoch)
        return self

    def model_options(self) -> dict:
        """The network's ``create_model`` keyword arguments (what ``init_weights`` must fit)."""
        return dict(arch=self.arch, alpha=self.alpha, beta=self.beta, merge=self.merge, num_classes=self.num_classes)


def learning_rate(config: SpeechTrainConfig, epoch: int) -> float:
    """The rate for 0-based ``epoch``: ``lr`` until epoch ``anneal_from_epoch`` (1-based), then
    times sqrt(0.5) per epoch, the first time at ``anneal_from_epoch``."""
    return config.lr * ANNEAL_FACTOR ** max(0, epoch + 2 - config.anneal_from_epoch)


def _on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def compile_for_training(model: keras.Model, config: SpeechTrainConfig) -> keras.Model:
    optimizer = keras.optimizers.SGD(config.lr, momentum=config.momentum, nesterov=True,
                                     weight_decay=config.weight_decay, global_clipnorm=config.clip_norm)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="frame_acc")],
                  jit_compile=_placement(config)[0])
    return model


def build_model(config: SpeechTrainConfig) -> keras.Model:
    from bl_net_tf import create_model

    return create_model(**config.model_options(), data_format=_placement(config)[1])


def _placement(config: SpeechTrainConfig) -> tuple:
    """``(jit_compile, data_format)`` on this machine, as the ImageNet trainer resolves them."""
    on_gpu = _on_gpu()
    jit_compile = distribute.resolve_xla(config.xla, on_gpu)
    return jit_compile, distribute.resolve_data_format(config.data_format, on_gpu, jit_compile)


def train(config: SpeechTrainConfig, model: Optional[keras.Model] = None, verbose: int = 0) -> dict:
    """Trains ``model`` (default: ``config.arch`` from the registry) and returns the final metrics:
    ``loss``, ``frame_acc`` and, with ``eval_records``, ``eval_loss`` / ``eval_frame_acc``.

    With a ``model_dir``, an interrupted run resumes from its last epoch (Keras's BackupAndRestore),
    and the weights (``model.weights.h5``) and metrics (``metrics.json``) are written at the end.
    ``init_weights`` initialise the model unless the run resumes (the classifier stays new when the
    class count differs).
    """
    config.validate()
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    train_ds = frame_dataset(config.train_records, batch_size=config.batch_size,
                             shuffle_buffer=config.shuffle_buffer, seed=config.seed)
    if config.steps_per_epoch:
        train_ds = train_ds.repeat()
    eval_ds = frame_dataset(config.eval_records, batch_size=config.batch_size) if config.eval_records else None
    model = model if model is not None else build_model(config)
    callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate(config, epoch))]
    backup = os.path.join(config.model_dir, "backup") if config.model_dir else None
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(backup))
    if config.init_weights is not None:
        from bl_net_tf import weights

        resumed = backup if backup and os.path.isdir(backup) and os.listdir(backup) else None
        weights.initialize(model, config.init_weights, config.model_options(), resumed_from=resumed)
    model = compile_for_training(model, config)
    history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                        callbacks=callbacks, verbose=verbose).history
    metrics = {name: float(values[-1]) for name, values in history.items() if name != "learning_rate"}
    if eval_ds is not None:
        loss, acc = model.evaluate(eval_ds, verbose=verbose)
        metrics.update(eval_loss=float(loss), eval_frame_acc=float(acc))
    if config.model_dir:
        model.save_weights(os.path.join(config.model_dir, SPEECH_RUN_WEIGHTS))
        with open(os.path.join(config.model_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
    return metrics
