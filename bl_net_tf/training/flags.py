"""The command-line flags of ``train_imagenet.py`` and their mapping onto :class:`TrainConfig`.

The defaults and help texts come from the dataclass, so the paper's recipe is written once
(config.py). A paper configuration is a flagfile: ``--flagfile=flags/bl-resnet50-a2-b4.cfg``.
"""
from __future__ import annotations

import dataclasses

from absl import flags

from bl_net_tf.training import config as cfg

_DEFAULTS = cfg.TrainConfig()

# name -> (kind, help); kinds: str, int, float, bool, or a tuple of allowed values.
FLAGS_SPEC = {
    "arch": (str, "Architecture, e.g. bl-resnet50, bl-resnext101-32x4d (bl_net_tf.list_models())."),
    "alpha": (int, "Width divisor of the Little-Branch (bL archs)."),
    "beta": (int, "Depth divisor of the Little-Branch (bL archs)."),
    "cardinality": (int, "ResNeXt groups (default: from --arch, 32 for the short names)."),
    "base_width": (int, "ResNeXt width per group (default: from --arch, 4 for the short names)."),
    "data_dir": (str, "ImageNet (folder, TFDS or TFRecords; docs/data.md). Unset: the demo digits, "
                      "with demo defaults for the flags not given."),
    "loader": (cfg.LOADERS, "Input pipeline: tf.data, or Tensorpack's DataFlow as the paper."),
    "gpus": (int, "GPUs per worker: N >= 2 mirrors over N GPUs, 0 trains on the CPU. Default: all visible."),
    "batch_size": (int, "Global batch size over all replicas and workers."),
    "epochs": (int, "Training epochs."),
    "lr": (float, "Peak learning rate. Default: 0.1 x batch_size / 256."),
    "lr_schedule": (cfg.LR_SCHEDULES, "cosine decay to 0 (the paper), or Tensorpack's steps "
                                      "(x0.1 at epochs 30, 60, 85, 95, 105 of 110)."),
    "warmup_epochs": (float, "Linear warm-up epochs. Default: 3 when --lr > 0.1 (from 0.1, as "
                             "Tensorpack), else 0."),
    "weight_decay": (float, "L2 decay: the gradient gains weight_decay x w on conv and FC kernels "
                            "(Tensorpack's l2_regularizer on .*/W)."),
    "weight_decay_norm": (bool, "Also decay BN gamma and beta."),
    "momentum": (float, "Nesterov momentum."),
    "label_smoothing": (float, "Label smoothing of the cross-entropy (0: none, as the paper)."),
    "data_format": (cfg.DATA_FORMATS, "Layout inside the model; auto: channels_first on GPU."),
    "xla": (cfg.XLA_MODES, "XLA-compile the forward/backward pass; auto: on with a GPU."),
    "mixed_precision": (cfg.MIXED_PRECISION, "Compute dtype (variables stay float32); float16 "
                                             "uses dynamic loss scaling."),
    "model_dir": (str, "Checkpoints and TensorBoard logs. Default: train_log/<arch>-a<alpha>-b<beta>."),
    "start_fresh": (bool, "Train from step 0 although --model_dir holds checkpoints (say, none can be restored): "
                          "they are moved into <model_dir>/previous-<time>/ first, nothing is deleted."),
    "eval_only": (bool, "Evaluate the latest checkpoint of --model_dir and stop."),
    "image_size": (int, "Training crop size."),
    "eval_image_size": (int, "Evaluation centre-crop size (after resizing the shorter side to "
                             "size / 0.875). Default: --image_size. The paper's @256 rows: 256."),
    "export_dir": (str, "Write a SavedModel for TF Serving here at the end (replacing it)."),
    "steps_per_epoch": (int, "Steps per epoch. Default: training images // batch_size."),
    "seed": (int, "Seed of the initialisation and the input order (default: random)."),
    "checkpoint_minutes": (float, "Also checkpoint every this many minutes (always every epoch)."),
    "eval_every_epochs": (int, "Evaluate on the validation set every this many epochs (and at the end)."),
    "log_steps": (int, "TensorBoard scalars every this many steps."),
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines every flag of :data:`FLAGS_SPEC` on ``flag_values``, defaults from TrainConfig."""
    definers = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                bool: flags.DEFINE_bool}
    for name, (kind, help_text) in FLAGS_SPEC.items():
        default = getattr(_DEFAULTS, name)
        if isinstance(kind, tuple):
            flags.DEFINE_enum(name, default, kind, help_text, flag_values=flag_values)
        else:
            definers[kind](name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> tuple:
    """``(TrainConfig, explicit)``: the parsed flags and the names given on the command line or
    in a flagfile (those the demo defaults must not override)."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(cfg.TrainConfig)}
    explicit = frozenset(name for name in FLAGS_SPEC if flag_values[name].present)
    return cfg.TrainConfig(**values), explicit
