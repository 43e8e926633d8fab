"""The training configuration: one validated dataclass, the paper's recipe as its defaults.

Defaults are Appendix A.1 of the paper as trained with Tensorpack (examples/ResNet/imagenet-resnet.py,
examples/ImageNetModels/imagenet_utils.py): 110 epochs, global batch 256, Nesterov momentum 0.9,
cosine learning rate from 0.1 x batch/256 down to 0, L2 weight decay 1e-4 on conv and FC kernels,
224x224 crops, evaluation on a 224 centre crop of the image resized to 256. Which Tensorpack
script: the early-2018 one (below, and docs/training.md, "Provenance").

Without a ``data_dir`` the trainer uses the demo data set (scikit-learn's digits as an ImageNet
folder) with :data:`DEMO_DEFAULTS` for every field the user did not set.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from bl_net_tf import constants
from bl_net_tf.constants import check_choice as _choice, check_positive_int as _positive_int
from bl_net_tf.data import recipe

# The learning rate for a global batch of 256 (Goyal et al. 2017's linear scaling rule, as
# Tensorpack's BASE_LR = 0.1 * batch / 256).
REFERENCE_LR = 0.1
REFERENCE_BATCH = 256
# Tensorpack warms up for 3 epochs, linearly from 0.1, whenever its base rate is not 0.1:
# examples/ResNet/imagenet-resnet.py as of commit 0086e156c7a8c769fffea2214242c1b5767359d7
# ("LR warmup in imagenet-resnet", 2018-01-29), unchanged through 43f7ca7506b12bb975606093fb6c44168d108386
# (2018-03-04); the script of those weeks trains 110 epochs, as the paper (ICLR 2019) says it did.
# Its later versions warm up for 5 epochs of 105 (4cde005e, 2018-04-07): not the paper's run.
TENSORPACK_WARMUP_EPOCHS = 3

# The demo: 32x32 digit crops train a bL-ResNet-50 to a few percent error in a few minutes on 2 CPU
# cores. BN momentum 0.9 and zero-initialised last gammas (in the model) make this work; the rate
# is above the linear-scaling rule's 0.0125 because the run is short; the warm-up keeps the first
# epochs from diverging, and 20 epochs get through the fbresnet crops (down to 8% of a digit).
# Measured on the demo: 12 epochs 16% error without warm-up, 8% with; 15 epochs 11%; 20 epochs 3.1%
# (docs/training.md).
DEMO_DEFAULTS = dict(image_size=32, batch_size=32, epochs=20, lr=0.05, warmup_epochs=2.0, log_steps=10)

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training or evaluation run needs; see docs/training.md for each field.

    ``None`` means "derive it": ``lr`` from the batch size, ``warmup_epochs`` from ``lr``,
    ``gpus`` from the GPUs that exist, ``eval_image_size`` from ``image_size``, ``model_dir`` from
    the architecture and ``steps_per_epoch`` from the size of the training set.

    ``init_weights``: a weights source (bl_net_tf/weights.py) the run starts from when its model_dir
    has no checkpoint: a fresh optimizer at step 0, the classifier new when the data's class count
    differs. ``freeze_bn``: keep the BatchNorm statistics of those weights (models/batch_norm.py).
    """

    arch: str = "bl-resnet50"
    alpha: int = 2
    beta: int = 4
    cardinality: Optional[int] = None
    base_width: Optional[int] = None
    merge: str = "add"
    branches: int = 2
    merges: Optional[int] = None
    upsample: str = "bilinear"
    shortcut: Optional[str] = None
    init_weights: Optional[str] = None
    freeze_bn: bool = False
    data_dir: Optional[str] = None
    loader: str = "tfdata"
    gpus: Optional[int] = None
    batch_size: int = REFERENCE_BATCH
    epochs: int = 110
    lr: Optional[float] = None
    lr_schedule: str = "cosine"
    warmup_epochs: Optional[float] = None
    weight_decay: float = 1e-4
    weight_decay_norm: bool = False
    momentum: float = 0.9
    label_smoothing: float = 0.0
    data_format: str = constants.AUTO
    xla: str = constants.AUTO
    mixed_precision: str = "none"
    model_dir: Optional[str] = None
    start_fresh: bool = False
    eval_only: bool = False
    image_size: int = constants.DEFAULT_IMAGE_SIZE
    eval_image_size: Optional[int] = None
    eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL
    export_dir: Optional[str] = None
    steps_per_epoch: Optional[int] = None
    seed: Optional[int] = None
    checkpoint_minutes: float = 10.0
    eval_every_epochs: int = 1
    log_steps: int = 100

    @property
    def demo(self) -> bool:
        """True when no ``data_dir`` is given: train on the demo digits."""
        return self.data_dir is None

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else REFERENCE_LR * self.batch_size / REFERENCE_BATCH

    @property
    def warmup(self) -> float:
        """Warm-up epochs: as given, else Tensorpack's 3 when the peak rate is above 0.1."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return float(TENSORPACK_WARMUP_EPOCHS) if self.peak_lr > REFERENCE_LR else 0.0

    @property
    def run_name(self) -> str:
        """``bl-resnet50-a2-b4`` (+ a model option off its default, as ``-concat``, ``-k3``, ``-m2``;
        + ``-finetune`` with ``init_weights``; + ``-demo``): names the default model_dir. It is the
        network's name (``ModelOptions.name``) with hyphens, so two networks never share a default
        model_dir."""
        return (self.model_request().name.replace("_", "-") + ("-finetune" if self.init_weights else "")
                + ("-demo" if self.demo else ""))

    def model_request(self):
        """The network's :class:`~bl_net_tf.models.factory.ModelOptions`: every check create_model
        makes (arch, widths, alpha against them, the ablations, the input size), nothing built.

        Raises:
          ValueError: one line naming the bad value and what is allowed.
        """
        from bl_net_tf.models.factory import validate_model_options

        return validate_model_options(
            self.arch, alpha=self.alpha, beta=self.beta, cardinality=self.cardinality, base_width=self.base_width,
            merge=self.merge, branches=self.branches, merges=self.merges, upsample=self.upsample,
            shortcut=self.shortcut, input_shape=(self.image_size, self.image_size, 3), include_preprocessing=True)

    def validate(self) -> "TrainConfig":
        """Checks every field on its own and against the others.

        Raises:
          ValueError: one line naming the bad value and what is allowed.
        """
        for name in ("alpha", "beta", "batch_size", "epochs", "image_size", "eval_every_epochs", "log_steps"):
            _positive_int(name, getattr(self, name))
        self.model_request()  # everything create_model will check, up front
        for name in ("eval_image_size", "steps_per_epoch"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _choice("lr_schedule", self.lr_schedule, constants.LR_SCHEDULES)
        _choice("data_format", self.data_format, constants.DATA_FORMAT_MODES)
        _choice("xla", self.xla, constants.XLA_MODES)
        _choice("mixed_precision", self.mixed_precision, constants.MIXED_PRECISION)
        _choice("loader", self.loader, constants.LOADERS)
        _choice("eval_protocol", self.eval_protocol, recipe.EVAL_PROTOCOLS)
        if self.gpus is not None and (isinstance(self.gpus, bool) or self.gpus < 0):
            raise ValueError(f"gpus must be >= 0 (0 trains on the CPU), got {self.gpus}")
        if not (_finite(self.peak_lr) and self.peak_lr > 0):
            raise ValueError(f"lr must be > 0, got {self.peak_lr}")
        if not (_finite(self.warmup) and 0 <= self.warmup < self.epochs):
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup}")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (_finite(self.checkpoint_minutes) and self.checkpoint_minutes > 0):
            raise ValueError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        if self.freeze_bn and not self.init_weights:
            raise ValueError("freeze_bn keeps the BatchNorm statistics of --init_weights; it needs --init_weights")
        if self.start_fresh and self.eval_only:
            raise ValueError("start_fresh trains from step 0 and eval_only evaluates a checkpoint: give one of them")
        if self.weight_decay_norm and self.weight_decay == 0:
            raise ValueError("weight_decay_norm decays BN gamma/beta by weight_decay, which is 0")
        if self.demo and self.eval_image_size is not None and self.eval_image_size != self.image_size:
            raise ValueError(f"the demo evaluates at the training size ({self.image_size}): "
                             f"eval_image_size={self.eval_image_size} needs a --data_dir")
        return self


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def resolve(config: TrainConfig, explicit=()) -> TrainConfig:
    """Fills the derived fields and, for the demo, :data:`DEMO_DEFAULTS` for the fields not in
    ``explicit`` (the names the user set); then validates.

    Raises:
      ValueError: see :meth:`TrainConfig.validate`.
    """
    changes = {}
    if config.init_weights is not None:  # the network the weights are: for the fields not set
        changes.update(_network_of_init_weights(config, explicit))
    if config.demo:
        changes.update({k: v for k, v in DEMO_DEFAULTS.items() if k not in explicit})
        if "epochs" in explicit and "warmup_epochs" not in explicit:
            # The same share of a shorter or longer run warms up.
            changes["warmup_epochs"] = DEMO_DEFAULTS["warmup_epochs"] * config.epochs / DEMO_DEFAULTS["epochs"]
    config = dataclasses.replace(config, **changes)
    if config.demo and config.eval_image_size is None:
        config = dataclasses.replace(config, eval_image_size=config.image_size)
    config.validate()
    if config.model_dir is None:
        import os

        config = dataclasses.replace(config, model_dir=os.path.join("train_log", config.run_name))
    return config


def _network_of_init_weights(config: TrainConfig, explicit) -> dict:
    """The model fields ``config.init_weights`` decides (the official weights' upsample, a run's
    network) that are not in ``explicit``.

    Raises:
      ValueError: an explicit field says otherwise (one line).
    """
    from bl_net_tf import weights

    source = weights.find(config.init_weights, weights.arch_name(config.arch, config.cardinality, config.base_width),
                          need_file=False)
    network = {name: getattr(config, name) for name in (*weights.NETWORK_OPTIONS, "cardinality", "base_width")}
    filled = source.fill(network, set(explicit), flag=True)
    return {name: value for name, value in filled.items() if name in network and value != network[name]}


def demo_changes(config: TrainConfig, explicit=()) -> dict:
    """The demo defaults that :func:`resolve` applied (for the banner printed at the start)."""
    return {k: getattr(config, k) for k in DEMO_DEFAULTS if k not in explicit} if config.demo else {}
