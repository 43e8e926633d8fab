"""``bl-net-train`` (and ``python train_imagenet.py``): trains and evaluates a Big-Little Net with the
paper's recipe.

    bl-net-train --arch=bl-resnet50 --alpha=2 --beta=4                       # the demo digits, a CPU
    bl-net-train --recipe=bl-resnext101-32x4d-a2-b4 --data_dir=/data/imagenet --gpus=8
    bl-net-train --recipe=list                                               # the paper's rows
    bl-net-train --recipe=bl-resnet50-a2-b4 --print_config                   # what would run

Without --data_dir it reads $IMAGENET_DIR, else a prepared TFDS imagenet2012 in $TFDS_DATA_DIR
(~/tensorflow_datasets), and logs which; with none, the demo digits on one device, and for a paper
recipe or several devices a one-line error (training/data_source.py).

The last line of stdout is ``eval: top1_err=... top5_err=... images=...``. Exit status: 0 done;
1 bad input or a diverged loss (one line on stderr); 128 + the signal's number (143 for SIGTERM,
130 for SIGINT) when a signal stopped the run after a checkpoint, so that the same command
resumes. See docs/training.md and docs/cluster.md.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
from typing import Callable

from absl import app, flags, logging

from bl_net_tf import training
from bl_net_tf.training import data_source, flags as training_flags


def run(flag_values: flags.FlagValues = flags.FLAGS) -> int:
    """Does what the parsed flags say; returns the exit status (see the module docstring)."""
    if flag_values["recipe"].value == training_flags.RECIPE_LIST:
        print(training_flags.format_recipes(), flush=True)
        return 0
    try:
        config, explicit = training_flags.config_from_flags(flag_values)
        config.model_request()  # the network's own checks, before looking for data
        source = data_source.find(config.data_dir, demo=flag_values["demo"].value,
                                  devices=data_source.count_devices(config.gpus))
        if flag_values["print_config"].value:
            print(training_flags.format_config(_resolve(config, explicit, source), source.note), flush=True)
            return 0
        if source.problem:
            raise ValueError(source.problem)
        config = _resolve(config, explicit, source)
        changes = ", ".join(f"--{k}={v}" for k, v in training.demo_changes(config, explicit).items())
        if source.note:
            logging.info("%s%s", source.note, f": {changes}" if changes else "")
        errors = training.run(config)
    except training.Stopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_status
    except KeyboardInterrupt:
        print("interrupted: stopped without a new checkpoint", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    except (ValueError, OSError, ImportError, training.TrainingDiverged) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 1
    print(errors.line(), flush=True)
    return 0


def _resolve(config: training.TrainConfig, explicit, source: data_source.DataSource) -> training.TrainConfig:
    """``config`` resolved on ``source``'s data. A source that stops the run (printed only) shows
    the configuration the run would have on ImageNet, without a --data_dir."""
    if source.problem is None:
        return training.resolve(dataclasses.replace(config, data_dir=source.data_dir), explicit)
    on_imagenet = training.resolve(dataclasses.replace(config, data_dir="<ImageNet>"), explicit)
    return dataclasses.replace(on_imagenet, data_dir=None)


def run_command(define_flags: Callable[[], list], run_parsed: Callable[[], int], argv: list, doc: str) -> None:
    """An absl command: defines its flags on ``flags.FLAGS`` (``define_flags`` returns their names,
    which ``--help`` lists after ``doc``), parses ``argv`` (no positional arguments) and exits with
    ``run_parsed()``'s status. Shared by both trainers; once per process."""
    for name in define_flags():
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:  # a console script's generated module: absl's --help shows this text
        main_module.__doc__ = doc

    def main_(argv) -> int:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        return run_parsed()

    app.run(main_, argv=argv)


def _define_flags() -> list:
    training_flags.define_flags(flags.FLAGS)
    return [*training_flags.FLAGS_SPEC, *training_flags.COMMAND_FLAGS]


def main(argv=None) -> None:
    """The console script: parses ``argv`` (default ``sys.argv``) and exits with the status."""
    argv = list(sys.argv if argv is None else argv)
    try:
        argv = training_flags.expand_recipes(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    run_command(_define_flags, run, argv, __doc__)
