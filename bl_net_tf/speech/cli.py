"""``bl-net-train-speech`` (and ``python train_speech.py``): trains a (bL-)ResNet-22 acoustic model
on frame-labelled log-mel TFRecords (paper Appendix B).

    bl-net-train-speech --train_records='data/train-*.tfrecord' --eval_records='data/dev-*.tfrecord' \\
        --arch=bl-resnet22-speech --alpha=2 --beta=3 --model_dir=train_log/bl-resnet22-speech-a2-b3

Without --train_records it trains on synthetic demo sounds (bl_net_tf.speech.demo), written once
to the cache, with settings for a 2-core CPU:

    bl-net-train-speech --arch=bl-resnet22-speech --alpha=2 --beta=3

Records hold one utterance each (bl_net_tf.speech.write_utterances); the defaults are the paper's
recipe (bl_net_tf.speech.trainer). The last line of stdout is ``metrics: {...}``. See docs/speech.md.
"""
from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from bl_net_tf import cli
from bl_net_tf.speech import demo
from bl_net_tf.speech.trainer import SpeechTrainConfig, train

PROG = "bl-net-train-speech"
# The speech trainer's own flags, name -> (kind, help), as bl_net_tf.cli.define takes them.
FLAGS_SPEC = {
    "train_records": (str, "TFRecord file pattern of the training utterances; without it, the synthetic demo "
                           "sounds (bl_net_tf.speech.demo)."),
    "eval_records": (str, "TFRecord file pattern evaluated at the end (frame accuracy)."),
    "batch_size": (int, "Windows per batch."),
    "epochs": (int, "Training epochs."),
    "lr": (float, "Learning rate (Nesterov momentum 0.9)."),
    "anneal_from_epoch": (int, "Multiply the rate by sqrt(0.5) every epoch from this one on."),
    "weight_decay": (float, "Weight decay."),
    "clip_norm": (float, "Gradient clipping (global norm)."),
    "shuffle_buffer": (int, "Windows in the shuffle buffer."),
    "steps_per_epoch": (int, "Steps per epoch (default: one pass over the data)."),
    "model_dir": (str, "Weights, metrics.json and a resumable backup go here."),
    "seed": (int, "Seed of the initialisation and the shuffling."),
    "init_weights": (str, "Start from a speech run's --model_dir (its model.weights.h5) or a .weights.h5 of the "
                          "same network, unless --model_dir holds a backup to resume from; the classifier is new "
                          "when --num_classes differs."),
}
SHARED = ("arch", "alpha", "beta", "merge", "num_classes", "data_format", "xla")
_NOTES = {"arch": "The speech archs: resnet22-speech, bl-resnet22-speech, bl-pyr-resnet22-speech.",
          "num_classes": "The paper: 32k context-dependent states."}


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command line, one flag per :class:`SpeechTrainConfig` field (defaults from it)."""
    defaults = SpeechTrainConfig()
    cli.define_shared(flag_values, {name: getattr(defaults, name) for name in SHARED}, _NOTES)
    cli.define(flag_values, FLAGS_SPEC, {name: getattr(defaults, name) for name in FLAGS_SPEC})


def run(flag_values: flags.FlagValues) -> int:
    """Trains as the parsed flags say; prints ``metrics: {...}``. Every flag is checked before the
    demo sounds are prepared."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(SpeechTrainConfig) if f.name in flag_values}
    on_demo = not values["train_records"]
    if on_demo:
        if values["eval_records"]:
            raise cli.UsageError("--eval_records needs --train_records (without both, the demo sounds are used)")
        changed = {k: v for k, v in demo.TRAIN_DEFAULTS.items() if not flag_values[k].present}
        values.update(changed, train_records=demo.default_root())
    SpeechTrainConfig(**values).validate()  # every flag, before the demo sounds are written
    if on_demo:
        values["train_records"], values["eval_records"] = demo.prepare()
        print(f"no --train_records: training on the demo sounds ({', '.join(demo.CLASSES)}) in "
              f"{os.path.dirname(values['train_records'])} with "
              f"{' '.join(f'--{k}={v}' for k, v in changed.items()) or 'your flags'}", flush=True)
    metrics = train(SpeechTrainConfig(**values), verbose=2)
    print(f"metrics: {json.dumps(metrics, sort_keys=True)}", flush=True)
    return cli.OK


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, define_flags, run, argv, log_level="INFO")
