"""The one home of the package's enums and shared constants, and the checkers that enforce them.

Models, trainers and command lines import their choices from here, so a value allowed in one place
is allowed everywhere and every error names the same list. Plain Python: importing this module
does not import TensorFlow.
"""
from __future__ import annotations

import numbers

# Layouts inside a model. Inputs are NHWC whatever the layout; weights have the same shapes in both.
CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"
DATA_FORMATS = (CHANNELS_FIRST, CHANNELS_LAST)
# How the branches of a Big-Little module merge: the paper's addition, or Table 7's concatenation.
MERGE_KINDS = ("add", "concat")
# Branches per bL-module: the paper's two, or Table 7's K=3.
BRANCH_COUNTS = (2, 3)
# How the Big-Branch is upsampled: bilinear (the paper) or nearest (the official PyTorch release).
UPSAMPLE_MODES = ("bilinear", "nearest")
# The projection shortcut of a bottleneck that changes shape: "conv", Tensorpack's 1x1 conv + BN
# carrying the stride (the plain baselines, as the paper trained them), or "avgpool", the official
# release's 3x3/s2 average pool, then a 1x1 conv + BN (the bL models). models/families.py says
# which family takes which by default.
SHORTCUT_KINDS = ("conv", "avgpool")
# What a registered architecture takes: (height, width, 3) images or log-mel windows.
TASKS = ("image", "speech")

# The ImageNet models' defaults.
IMAGENET_CLASSES = 1000
DEFAULT_IMAGE_SIZE = 224
# The image networks' total stride: an input must be at least this large in each dimension.
MIN_INPUT_SIZE = 32

# The speech acoustic models (Section 4.2, Appendix B): windows of 49 frames of 64 log-mel bands
# (with deltas, 3 channels), classified into 32k tied context-dependent states.
SPEECH_MEL_BINS = 64
SPEECH_CONTEXT_FRAMES = 49
SPEECH_NUM_CLASSES = 32000

# The commands' choices. AUTO picks per device (training/distribute.py): channels_first and XLA
# with a GPU, channels_last and no XLA on the CPU.
AUTO = "auto"
DATA_FORMAT_MODES = (AUTO,) + DATA_FORMATS
XLA_MODES = (AUTO, "on", "off")
LOADERS = ("tfdata", "tensorpack")
LR_SCHEDULES = ("cosine", "step")
# --mixed_precision -> the Keras dtype policy the model is built under (variables stay float32).
DTYPE_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
MIXED_PRECISION = tuple(DTYPE_POLICIES)
# The arithmetic of an exported network (export --precision): bfloat16 for CPUs with AMX or
# AVX512-BF16, float16 for GPUs.
SERVING_PRECISIONS = ("float32", "bfloat16", "float16")


def check_positive_int(name: str, value) -> int:
    """Returns ``value`` if it is an integer >= 1 (Python or NumPy; not a bool).

    Raises:
      ValueError: ``{name} must be an integer >= 1, got {value!r}``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_choice(name: str, value, allowed, *, more: str = ""):
    """Returns ``value`` if it is one of ``allowed``.

    Raises:
      ValueError: ``unknown {name} {value!r}; allowed: a, b`` (then ``more``, e.g. " or None").
    """
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}{more}")
    return value
