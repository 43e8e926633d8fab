"""Trains a (bL-)ResNet-22 acoustic model on frame-labelled log-mel TFRecords (paper Appendix B).

    python train_speech.py --train_records='data/train-*.tfrecord' --eval_records='data/dev-*.tfrecord' \
        --arch=bl-resnet22-speech --alpha=2 --beta=3 --model_dir=train_log/bl-resnet22-speech-a2-b3

Records hold one utterance each (bl_net_tf.speech.write_utterances); defaults are the paper's
recipe (bl_net_tf.speech.trainer). The last line of stdout is ``metrics: {...}``. See docs/speech.md.
"""
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags  # noqa: E402

from bl_net_tf.speech.trainer import SpeechTrainConfig, train  # noqa: E402

_D = SpeechTrainConfig()
flags.DEFINE_string("train_records", None, "TFRecord file pattern of the training utterances.")
flags.DEFINE_string("eval_records", None, "TFRecord file pattern evaluated at the end (frame accuracy).")
flags.DEFINE_string("arch", _D.arch, "resnet22-speech, bl-resnet22-speech or bl-pyr-resnet22-speech.")
flags.DEFINE_integer("alpha", _D.alpha, "Width divisor of the Little-Branch.")
flags.DEFINE_integer("beta", _D.beta, "Depth divisor of the Little-Branch.")
flags.DEFINE_enum("merge", _D.merge, ["add", "concat"], "How the branches merge.")
flags.DEFINE_integer("num_classes", _D.num_classes, "Context-dependent states (32k in the paper).")
flags.DEFINE_enum("data_format", None, ["channels_first", "channels_last"], "Default: channels_first on GPU.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Windows per batch.")
flags.DEFINE_integer("epochs", _D.epochs, "Training epochs.")
flags.DEFINE_float("lr", _D.lr, "Learning rate (Nesterov momentum 0.9).")
flags.DEFINE_integer("anneal_from_epoch", _D.anneal_from_epoch,
                     "Multiply the rate by sqrt(0.5) every epoch from this one on.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "Weight decay.")
flags.DEFINE_float("clip_norm", _D.clip_norm, "Gradient clipping (global norm).")
flags.DEFINE_integer("shuffle_buffer", _D.shuffle_buffer, "Windows in the shuffle buffer.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the data).")
flags.DEFINE_string("model_dir", None, "Weights, metrics.json and a resumable backup go here.")
flags.DEFINE_integer("seed", None, "Seed of the initialisation and the shuffling.")
flags.DEFINE_enum("xla", _D.xla, ["auto", "on", "off"], "XLA-compile the training step (auto: with a GPU).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    fields = [f.name for f in dataclasses.fields(SpeechTrainConfig) if f.name in flags.FLAGS]
    config = SpeechTrainConfig(**{name: flags.FLAGS[name].value for name in fields})
    try:
        metrics = train(config, verbose=2)
    except (ValueError, OSError) as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"metrics: {json.dumps(metrics, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
