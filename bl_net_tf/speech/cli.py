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
import sys

from absl import flags

from bl_net_tf import constants
from bl_net_tf.speech import demo
from bl_net_tf.speech.trainer import SpeechTrainConfig, train
from bl_net_tf.training.cli import run_command

def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The command line, one flag per :class:`SpeechTrainConfig` field (defaults from it)."""
    d = SpeechTrainConfig()
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("train_records", None, "TFRecord file pattern of the training utterances; without it, the "
                        "synthetic demo sounds (bl_net_tf.speech.demo).", **fv)
    flags.DEFINE_string("eval_records", None, "TFRecord file pattern evaluated at the end (frame accuracy).", **fv)
    flags.DEFINE_string("arch", d.arch, "resnet22-speech, bl-resnet22-speech or bl-pyr-resnet22-speech.", **fv)
    flags.DEFINE_integer("alpha", d.alpha, "Width divisor of the Little-Branch.", **fv)
    flags.DEFINE_integer("beta", d.beta, "Depth divisor of the Little-Branch.", **fv)
    flags.DEFINE_enum("merge", d.merge, constants.MERGE_KINDS, "How the branches merge.", **fv)
    flags.DEFINE_integer("num_classes", d.num_classes, "Context-dependent states (32k in the paper).", **fv)
    flags.DEFINE_enum("data_format", None, constants.DATA_FORMATS,
                      "Layout inside the model (default: channels_first on GPU).", **fv)
    flags.DEFINE_integer("batch_size", d.batch_size, "Windows per batch.", **fv)
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs.", **fv)
    flags.DEFINE_float("lr", d.lr, "Learning rate (Nesterov momentum 0.9).", **fv)
    flags.DEFINE_integer("anneal_from_epoch", d.anneal_from_epoch,
                         "Multiply the rate by sqrt(0.5) every epoch from this one on.", **fv)
    flags.DEFINE_float("weight_decay", d.weight_decay, "Weight decay.", **fv)
    flags.DEFINE_float("clip_norm", d.clip_norm, "Gradient clipping (global norm).", **fv)
    flags.DEFINE_integer("shuffle_buffer", d.shuffle_buffer, "Windows in the shuffle buffer.", **fv)
    flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the data).", **fv)
    flags.DEFINE_string("model_dir", None, "Weights, metrics.json and a resumable backup go here.", **fv)
    flags.DEFINE_integer("seed", None, "Seed of the initialisation and the shuffling.", **fv)
    flags.DEFINE_enum("xla", d.xla, constants.XLA_MODES, "XLA-compile the training step (auto: with a GPU).", **fv)
    flags.DEFINE_string("init_weights", None, "Start from a speech run's --model_dir (its model.weights.h5) or a "
                        ".weights.h5 of the same network, unless --model_dir holds a backup to resume from; the "
                        "classifier is new when --num_classes differs.", **fv)


def run(flag_values: flags.FlagValues = flags.FLAGS) -> int:
    """Trains as the parsed flags say; prints ``metrics: {...}`` (0) or ``error: ...`` (1)."""
    fields = [f.name for f in dataclasses.fields(SpeechTrainConfig) if f.name in flag_values]
    values = {name: flag_values[name].value for name in fields}
    try:
        if not values["train_records"]:
            if values["eval_records"]:
                raise ValueError("--eval_records needs --train_records (without both, the demo sounds are used)")
            values["train_records"], values["eval_records"] = demo.prepare()
            changed = {k: v for k, v in demo.TRAIN_DEFAULTS.items() if not flag_values[k].present}
            values.update(changed)
            print(f"no --train_records: training on the demo sounds ({', '.join(demo.CLASSES)}) in "
                  f"{os.path.dirname(values['train_records'])} with "
                  f"{' '.join(f'--{k}={v}' for k, v in changed.items()) or 'your flags'}", flush=True)
        metrics = train(SpeechTrainConfig(**values), verbose=2)
    except (ValueError, OSError) as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"metrics: {json.dumps(metrics, sort_keys=True)}", flush=True)
    return 0


def _define_flags() -> list:
    define_flags()
    return [field.name for field in dataclasses.fields(SpeechTrainConfig) if field.name in flags.FLAGS]


def main(argv=None) -> None:
    """The console script: parses ``argv`` (default ``sys.argv``) and exits with the status."""
    run_command(_define_flags, run, list(sys.argv if argv is None else argv), __doc__)
