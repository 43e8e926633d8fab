"""Trains and evaluates a Big-Little Net on ImageNet with the paper's recipe; the same command as
``bl-net-train`` (bl_net_tf/training/cli.py), for a checkout without installing the package.

    python train_imagenet.py --arch=bl-resnet50 --alpha=2 --beta=4            # demo digits, CPU
    python train_imagenet.py --recipe=bl-resnext101-32x4d-a2-b4 --data_dir=/data/imagenet

The last line of stdout is ``eval: top1_err=... top5_err=... images=...``. See docs/training.md.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ start-up chatter

from bl_net_tf.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
