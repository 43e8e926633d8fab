"""The command-line flags of ``bl-net-train`` (``train_imagenet.py``) and their mapping onto
:class:`TrainConfig`; the paper's flagfiles as named recipes; the resolved configuration as text.

The defaults and help texts come from the dataclass, so the paper's recipe is written once
(config.py). A paper configuration is a flagfile, ``--flagfile=flags/bl-resnet50-a2-b4.cfg``, or
by name, ``--recipe=bl-resnet50-a2-b4``, from the flagfiles installed with the package.
"""
from __future__ import annotations

import dataclasses
import glob
import os

from absl import flags

from bl_net_tf import cli, constants
from bl_net_tf.data import recipe
from bl_net_tf.training import config as cfg

_DEFAULTS = cfg.TrainConfig()

# The trainer's own flags, name -> (kind, help) (kinds: str, int, float, bool, or a tuple of allowed
# values); the model options, --gpus, --data_format, --xla, --mixed_precision, --data_dir and
# --loader are the package's shared flags (bl_net_tf/cli.py).
FLAGS_SPEC = {
    "init_weights": (str, "Start from these weights when --model_dir has no checkpoint (a checkpoint there wins): "
                          "imagenet (the official release's file, docs/deployment.md), a .weights.h5, an official "
                          ".pth.tar, or a training run's model_dir or checkpoint. A fresh optimizer at step 0; the "
                          "classifier is new when the data's class count differs. The model flags not given take "
                          "the weights' values (--upsample=nearest for the official ones)."),
    "freeze_bn": (bool, "Keep the BatchNorm statistics of --init_weights: normalise by them in training too, never "
                        "update them (gamma and beta still train; Tensorpack's FreezeBN). For batches of a few "
                        "images per device (docs/training.md, Fine-tuning)."),
    "batch_size": (int, "Global batch size over all replicas and workers."),
    "epochs": (int, "Training epochs."),
    "lr": (float, "Peak learning rate. Default: 0.1 x batch_size / 256."),
    "lr_schedule": (constants.LR_SCHEDULES, "cosine decay to 0 (the paper), or Tensorpack's steps "
                                            "(x0.1 at epochs 30, 60, 85, 95, 105 of 110)."),
    "warmup_epochs": (float, "Linear warm-up epochs. Default: 3 when --lr > 0.1 (from 0.1, as "
                             "Tensorpack), else 0."),
    "weight_decay": (float, "L2 decay: the gradient gains weight_decay x w on conv and FC kernels "
                            "(Tensorpack's l2_regularizer on .*/W)."),
    "weight_decay_norm": (bool, "Also decay BN gamma and beta."),
    "momentum": (float, "Nesterov momentum."),
    "label_smoothing": (float, "Label smoothing of the cross-entropy (0: none, as the paper)."),
    "model_dir": (str, "Checkpoints and TensorBoard logs. Default: train_log/<arch>-a<alpha>-b<beta>."),
    "start_fresh": (bool, "Train from step 0 although --model_dir holds checkpoints (say, none can be restored): "
                          "they are moved into <model_dir>/previous-<time>/ first, nothing is deleted."),
    "eval_only": (bool, "Evaluate the latest checkpoint of --model_dir and stop."),
    "eval_image_size": (int, "Evaluation centre-crop size. Default: --image_size. The paper's @256 rows: 256."),
    "eval_protocol": (recipe.EVAL_PROTOCOLS, "The shorter side evaluation images are resized to before the centre "
                                             "crop: official (256 for 224 and for 256, as the official release; "
                                             "size / 0.875 for other sizes) or fraction (size / 0.875). docs/data.md."),
    "export_dir": (str, "Write a SavedModel for TF Serving here at the end (replacing it)."),
    "steps_per_epoch": (int, "Steps per epoch. Default: training images // batch_size."),
    "seed": (int, "Seed of the initialisation and the input order (default: random)."),
    "checkpoint_minutes": (float, "Also checkpoint every this many minutes (always every epoch)."),
    "eval_every_epochs": (int, "Evaluate on the validation set every this many epochs (and at the end)."),
    "log_steps": (int, "TensorBoard scalars every this many steps."),
}


RECIPE_LIST = "list"
# Fields whose None means "derive it", and the TrainConfig property that derives them without
# touching data or devices.
_DERIVED = {"lr": "peak_lr", "warmup_epochs": "warmup"}


# The shared flags the trainer takes (its network's classes come from the data).
SHARED = tuple(name for name in cli.MODEL_FLAGS if name != "num_classes") + (
    "data_dir", "loader", "gpus", "data_format", "xla", "mixed_precision")
_NOTES = {"data_dir": "Unset: $IMAGENET_DIR, else a prepared TFDS imagenet2012 in $TFDS_DATA_DIR "
                      "(~/tensorflow_datasets), else the demo digits on one device with demo defaults for the "
                      "flags not given (see --demo)."}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the trainer's flags on ``flag_values``, defaults from TrainConfig: the shared ones
    (:data:`SHARED`), :data:`FLAGS_SPEC`, and the command's own ``--recipe``, ``--print_config``
    and ``--demo``."""
    cli.define_shared(flag_values, {name: getattr(_DEFAULTS, name) for name in SHARED}, _NOTES)
    cli.define(flag_values, FLAGS_SPEC, {name: getattr(_DEFAULTS, name) for name in FLAGS_SPEC})
    flags.DEFINE_string("recipe", None, "A paper configuration by name: the packaged flagfile NAME.cfg, read "
                        "where --recipe stands (later flags override it); --recipe=list lists them.",
                        flag_values=flag_values)
    flags.DEFINE_bool("print_config", False, "Print the resolved configuration, one --name=value per line "
                      "(a valid flagfile), and exit without reading data.", flag_values=flag_values)
    flags.DEFINE_bool("demo", None, "--demo: train on the demo digits. --nodemo (every paper recipe says it): "
                      "never; without ImageNet the run stops. Unset: without --data_dir, $IMAGENET_DIR or a TFDS "
                      "imagenet2012 in $TFDS_DATA_DIR (~/tensorflow_datasets), the digits on one device only.",
                      flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> tuple:
    """``(TrainConfig, explicit)``: the parsed flags and the names given on the command line or
    in a flagfile (those the demo defaults must not override)."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(cfg.TrainConfig)}
    explicit = frozenset(name for name in values if flag_values[name].present)
    return cfg.TrainConfig(**values), explicit


def recipe_dir() -> str:
    """The paper's flagfiles: ``bl_net_tf/flags/`` in an installed package (setup.py puts the
    checkout's ``flags/`` there), else the checkout's ``flags/`` beside the package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(package, "flags")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "flags")


def recipes() -> dict:
    """``{name: description}`` of every flagfile, by name; the description is the first sentence
    of the file's header comment (the paper row it trains)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(recipe_dir(), "*.cfg"))):
        sentence = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#") or (sentence and sentence[-1].endswith(".")):
                    break
                sentence.append(line[1:].strip())
        found[os.path.basename(path)[:-len(".cfg")]] = " ".join(sentence)
    return found


def expand_recipes(argv: list) -> list:
    """``argv`` with ``--flagfile=<recipe_dir>/NAME.cfg`` inserted before each ``--recipe=NAME``
    (also ``--recipe NAME``), so the file is read where the recipe stands, as a --flagfile would be.

    Raises:
      cli.UsageError: an unknown recipe name (the message lists the known ones).
    """
    expanded, names = [], recipes()
    for index, arg in enumerate(argv):
        if arg == "--":
            return expanded + argv[index:]
        name = None
        if arg.lstrip("-") == "recipe" and arg.startswith("-") and index + 1 < len(argv):
            name = argv[index + 1]
        elif arg.startswith(("--recipe=", "-recipe=")):
            name = arg.split("=", 1)[1]
        if name is not None and name != RECIPE_LIST:
            if name not in names:
                raise cli.UsageError(f"unknown recipe {name!r}; allowed: {RECIPE_LIST}, {', '.join(names)}")
            expanded.append(f"--flagfile={os.path.join(recipe_dir(), name + '.cfg')}")
        expanded.append(arg)
    return expanded


def format_recipes() -> str:
    """One line per recipe: its name and the paper row it trains."""
    named = recipes()
    width = max(map(len, named), default=0)
    return "\n".join(f"{name:{width}}  {description}" for name, description in named.items())


def format_config(config: cfg.TrainConfig, data: str = "") -> str:
    """``config`` as flagfile lines: ``--name=value`` for every field with a value (``lr`` and
    ``warmup_epochs`` as derived from the others), ``# --name: unset`` for the rest; ``data``
    (where the data comes from, when --data_dir does not say it) as a first comment line."""
    lines = [f"# {data}"] if data else []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None and field.name in _DERIVED:
            value = getattr(config, _DERIVED[field.name])
        if value is None:
            lines.append(f"# --{field.name}: unset")
        else:
            lines.append(f"--{field.name}={str(value).lower() if isinstance(value, bool) else value}")
    return "\n".join(lines)
