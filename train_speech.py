"""Trains a (bL-)ResNet-22 acoustic model on frame-labelled log-mel TFRecords (paper Appendix B);
the same command as ``bl-net-train-speech`` (bl_net_tf/speech/cli.py), for a checkout without
installing the package.

    python train_speech.py --arch=bl-resnet22-speech --alpha=2 --beta=3           # the demo sounds
    python train_speech.py --train_records='data/train-*.tfrecord' --eval_records='data/dev-*.tfrecord' \\
        --arch=bl-resnet22-speech --alpha=2 --beta=3 --model_dir=train_log/bl-resnet22-speech-a2-b3

The last line of stdout is ``metrics: {...}``. See docs/speech.md.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from bl_net_tf.speech.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
