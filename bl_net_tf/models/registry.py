"""The architecture registry: the single place that maps a model name to its configuration.

Every other part of the project (builders, profiler, flagfiles, README table, tests) reads the
numbers from here. Block counts follow the paper: Table 4 for bL-ResNet-50, Table 5 for the
redistributed bL-ResNet-101/152 ([4, 8, 18, 3] and [5, 12, 30, 3]). The speech acoustic models
(Appendix B, Table 12) and ShuffleNetV2 (Appendix A.5, Table 9) take their stage layouts from
models/speech.py and models/shufflenet.py.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from bl_net_tf.constants import TASKS, check_choice, check_positive_int

# Residual blocks per stage (conv2_x .. conv5_x).
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BL_RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One registered architecture.

    Attributes:
      name: registry name, e.g. ``bl-resnext101-32x4d``.
      family: ``resnet`` | ``resnext`` | ``seresnext`` (the bottleneck flavour) | ``speech``
        (ResNet-22 acoustic models) | ``shufflenetv2``.
      depth: 50, 101 or 152; 22 for the speech ResNets; 0 for ShuffleNetV2 (no depth variants).
      big_little: True for a bL-Net, False for the plain baseline.
      cardinality, base_width: ResNeXt's groups and per-group width (1 and 64 for plain ResNet).
      lowres: ResNet on half-resolution features (Table 6): the bL stem's big path, then the
        plain stages.
      pyramid: the speech bL-PYR model: 4, 3, 2 branches in the first three stages (Appendix B.2).
      width: ShuffleNetV2's width multiplier (1.0, 1.5, 2.0).
    """

    name: str
    family: str
    depth: int
    big_little: bool
    cardinality: int = 1
    base_width: int = 64
    lowres: bool = False
    pyramid: bool = False
    width: float = 1.0

    @property
    def task(self) -> str:
        """``speech`` (log-mel windows in, per-frame states out) or ``image``."""
        return "speech" if self.family == "speech" else "image"
    @property
    def se(self) -> bool:
        return self.family == "seresnext"

    @property
    def blocks(self) -> tuple:
        return (BL_RESNET_BLOCKS if self.big_little else RESNET_BLOCKS)[self.depth]


def _register(*specs: ArchSpec) -> dict:
    return {spec.name: spec for spec in specs}


ARCHS = _register(
    ArchSpec("resnet50", "resnet", 50, False),
    ArchSpec("resnet101", "resnet", 101, False),
    ArchSpec("resnet152", "resnet", 152, False),
    ArchSpec("resnet50-lowres", "resnet", 50, False, lowres=True),
    ArchSpec("resnet101-lowres", "resnet", 101, False, lowres=True),
    ArchSpec("resnext50-32x4d", "resnext", 50, False, 32, 4),
    ArchSpec("resnext101-32x4d", "resnext", 101, False, 32, 4),
    ArchSpec("resnext101-64x4d", "resnext", 101, False, 64, 4),
    ArchSpec("seresnext50-32x4d", "seresnext", 50, False, 32, 4),
    ArchSpec("seresnext101-32x4d", "seresnext", 101, False, 32, 4),
    ArchSpec("bl-resnet50", "resnet", 50, True),
    ArchSpec("bl-resnet101", "resnet", 101, True),
    ArchSpec("bl-resnet152", "resnet", 152, True),
    ArchSpec("bl-resnext50-32x4d", "resnext", 50, True, 32, 4),
    ArchSpec("bl-resnext101-32x4d", "resnext", 101, True, 32, 4),
    ArchSpec("bl-resnext101-64x4d", "resnext", 101, True, 64, 4),
    ArchSpec("bl-seresnext50-32x4d", "seresnext", 50, True, 32, 4),
    ArchSpec("bl-seresnext101-32x4d", "seresnext", 101, True, 32, 4),
    # Speech acoustic models (Table 3); inputs are 64 log-mel bins x 49 frames x 3.
    ArchSpec("resnet22-speech", "speech", 22, False),
    ArchSpec("bl-resnet22-speech", "speech", 22, True),
    ArchSpec("bl-pyr-resnet22-speech", "speech", 22, True, pyramid=True),
    # ShuffleNetV2 and bL-ShuffleNetV2 (Table 9).
    *(ArchSpec(f"{prefix}shufflenetv2-{width}x", "shufflenetv2", 0, prefix == "bl-", width=width)
      for prefix in ("", "bl-") for width in (1.0, 1.5, 2.0)),
)

# Short names whose width comes from `cardinality`/`base_width` (32x4d when not given): the
# training command users type is `--arch=bl-resnext101`.
ALIASES = {
    "resnext50": "resnext50-32x4d",
    "resnext101": "resnext101-32x4d",
    "seresnext50": "seresnext50-32x4d",
    "seresnext101": "seresnext101-32x4d",
    "bl-resnext50": "bl-resnext50-32x4d",
    "bl-resnext101": "bl-resnext101-32x4d",
    "bl-seresnext50": "bl-seresnext50-32x4d",
    "bl-seresnext101": "bl-seresnext101-32x4d",
    "shufflenetv2": "shufflenetv2-1.0x",
    "bl-shufflenetv2": "bl-shufflenetv2-1.0x",
}


def list_models(task: Optional[str] = "image") -> list:
    """Names accepted by :func:`bl_net_tf.create_model`, sorted: the image models (ImageNet
    classifiers and detection backbones, which take (height, width, 3) images) by default,
    ``task="speech"`` for the acoustic models, ``task=None`` for all."""
    if task is not None:
        check_choice("task", task, TASKS, more=" or None")
    return sorted(name for name, spec in ARCHS.items() if task is None or spec.task == task)


def get_spec(arch: str, cardinality: Optional[int] = None, base_width: Optional[int] = None) -> ArchSpec:
    """Looks up ``arch`` (or an alias) and applies ResNeXt width overrides.

    Raises:
      ValueError: unknown name, or a width override on a family that has none.
    """
    key = ALIASES.get(arch, arch)
    if key not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(list_models(None) + sorted(ALIASES))}")
    spec = ARCHS[key]
    if cardinality is None and base_width is None:
        return spec
    if spec.family not in ("resnext", "seresnext"):
        raise ValueError(f"cardinality/base_width apply to ResNeXt and SE-ResNeXt archs, not {arch!r}")
    cardinality = spec.cardinality if cardinality is None else cardinality
    base_width = spec.base_width if base_width is None else base_width
    check_positive_int("cardinality", cardinality)
    check_positive_int("base_width", base_width)
    stem = key.rsplit("-", 1)[0]
    name = f"{stem}-{cardinality}x{base_width}d"
    return dataclasses.replace(spec, name=name, cardinality=cardinality, base_width=base_width)
