"""Trains and evaluates a Big-Little Net on ImageNet with the paper's recipe.

    python train_imagenet.py --arch=bl-resnet50 --alpha=2 --beta=4            # demo digits, CPU
    python train_imagenet.py --flagfile=flags/bl-resnext101-32x4d-a2-b4.cfg --data_dir=/data/imagenet

The last line of stdout is ``eval: top1_err=... top5_err=... images=...``. See docs/training.md.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ start-up chatter

from absl import app, flags, logging  # noqa: E402

from bl_net_tf import training  # noqa: E402
from bl_net_tf.training import flags as training_flags  # noqa: E402

training_flags.define_flags()
flags.adopt_module_key_flags(training_flags)  # --help lists them


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, explicit = training_flags.config_from_flags(flags.FLAGS)
        config = training.resolve(config, explicit)
        demo = training.demo_changes(config, explicit)
        if config.demo:
            logging.info("no --data_dir: training on the demo digits with %s",
                         ", ".join(f"--{k}={v}" for k, v in demo.items()) or "your flags")
        errors = training.run(config)
    except (ValueError, OSError, ImportError, training.TrainingDiverged) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 1
    print(errors.line(), flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
