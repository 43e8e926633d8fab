"""Training and evaluation on ImageNet with the paper's recipe (Appendix A.1, as Tensorpack).

``bl-net-train`` (:mod:`.cli`; ``train_imagenet.py`` in a checkout) is the command line; this
package is the library behind it:

* :mod:`.config` - :class:`TrainConfig`, the recipe's defaults, demo defaults, validation;
* :mod:`.flags` - the absl flags and their mapping onto a config, the packaged recipes;
* :mod:`.distribute` - strategy (one device, mirrored GPUs, multi-worker by TF_CONFIG or Slurm),
  data format, XLA;
* :mod:`.schedule`, :mod:`.optimizer` - cosine/step learning rate, Nesterov SGD + L2 decay;
* :mod:`.steps`, :mod:`.loop` - the distributed train/eval steps and the run;
* :mod:`.checkpoints`, :mod:`.progress` - fault tolerance, progress bar, TensorBoard, eval line;
* :mod:`.preemption` - SIGTERM/SIGINT: a checkpoint at the step every worker reached, then stop.
"""
from bl_net_tf.training.config import DEMO_DEFAULTS, TrainConfig, demo_changes, resolve
from bl_net_tf.training.loop import TrainingDiverged, build, evaluate, run, train
from bl_net_tf.training.preemption import Stopped
from bl_net_tf.training.progress import Errors, parse_eval_line

__all__ = ["DEMO_DEFAULTS", "Errors", "Stopped", "TrainConfig", "TrainingDiverged", "build", "demo_changes",
           "evaluate", "parse_eval_line", "resolve", "run", "train"]
