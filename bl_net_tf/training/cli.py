"""``bl-net-train`` (and ``python train_imagenet.py``): trains and evaluates a Big-Little Net with the
paper's recipe.

    bl-net-train --arch=bl-resnet50 --alpha=2 --beta=4                       # the demo digits, a CPU
    bl-net-train --recipe=bl-resnext101-32x4d-a2-b4 --data_dir=/data/imagenet --gpus=8
    bl-net-train --recipe=list                                               # the paper's rows
    bl-net-train --recipe=bl-resnet50-a2-b4 --print_config                   # what would run

Without --data_dir it reads $IMAGENET_DIR, else a prepared TFDS imagenet2012 in $TFDS_DATA_DIR
(~/tensorflow_datasets), and logs which; with none, the demo digits on one device, and for a paper
recipe or several devices a one-line error (training/data_source.py).

The last line of stdout is ``eval: top1_err=... top5_err=... images=...``. Exit status (the same
for every command of the package, bl_net_tf/cli.py): 0 done; 1 bad input or a diverged loss (one
line on stderr); 2 a flag the command does not take (an unknown flag or recipe, a value outside a
flag's choices); 128 + the signal's number (143 for SIGTERM, 130 for SIGINT) when a signal stopped
the run after a checkpoint, so that the same command resumes. See docs/training.md and
docs/cluster.md.
"""
from __future__ import annotations

import dataclasses
import sys

from absl import flags, logging

from bl_net_tf import cli, training
from bl_net_tf.training import data_source, flags as training_flags

PROG = "bl-net-train"


def run(flag_values: flags.FlagValues) -> int:
    """Does what the parsed flags say; returns the exit status (see the module docstring)."""
    if flag_values["recipe"].value == training_flags.RECIPE_LIST:
        print(training_flags.format_recipes(), flush=True)
        return cli.OK
    config, explicit = training_flags.config_from_flags(flag_values)
    config.model_request()  # the network's own checks, before looking for data
    source = data_source.find(config.data_dir, demo=flag_values["demo"].value,
                              devices=data_source.count_devices(config.gpus))
    if flag_values["print_config"].value:
        print(training_flags.format_config(_resolve(config, explicit, source), source.note), flush=True)
        return cli.OK
    if source.problem:
        raise ValueError(source.problem)
    config = _resolve(config, explicit, source)
    changes = ", ".join(f"--{k}={v}" for k, v in training.demo_changes(config, explicit).items())
    if source.note:
        logging.info("%s%s", source.note, f": {changes}" if changes else "")
    try:
        errors = training.run(config)
    except training.Stopped as stopped:
        print(f"{PROG}: stopped: {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_status
    print(errors.line(), flush=True)
    return cli.OK


def _resolve(config: training.TrainConfig, explicit, source: data_source.DataSource) -> training.TrainConfig:
    """``config`` resolved on ``source``'s data. A source that stops the run (printed only) shows
    the configuration the run would have on ImageNet, without a --data_dir."""
    if source.problem is None:
        return training.resolve(dataclasses.replace(config, data_dir=source.data_dir), explicit)
    on_imagenet = training.resolve(dataclasses.replace(config, data_dir="<ImageNet>"), explicit)
    return dataclasses.replace(on_imagenet, data_dir=None)


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, training_flags.define_flags, run, argv, expand=training_flags.expand_recipes,
                    expected=(training.TrainingDiverged,), log_level="INFO")
