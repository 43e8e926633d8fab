"""Side-by-side speed of models on this machine: images/s, their ratio, the FLOP ratio, peak memory.

``bl-net-benchmark`` (``python -m bl_net_tf.benchmark``)::

    bl-net-benchmark --arch=bl-resnet50 --vs=keras:ResNet50 --mode=infer
    bl-net-benchmark --arch=bl-resnext50 --vs=resnext50 --vs=keras:ResNet50 --mode=train
    bl-net-benchmark --arch=export:bl-resnet50 --vs=export:resnet50 --vs=bl-resnet50
    bl-net-benchmark --suite=all          # the table in docs/benchmarks.md
    bl-net-benchmark --suite=gpu --output=gpu.md   # GPU defaults; fp32 on a CPU

Every model is built, warmed up (traced, and compiled with ``--xla=on``), then the models take turns
one step at a time in this one process, so a machine shared with other jobs slows them alike;
each model's figure is the median over ``--steps`` steps. ``keras:NAME`` is a
``keras.applications`` model with random weights; ``export:ARCH`` and ``saved_model:DIR`` time a
SavedModel's ``predict_images`` on uint8 images, ``folded:ARCH`` the network an export serves as a
Keras forward pass (see benchmark_models.py). Peak memory is the most
the device's TensorFlow allocator held during one timed step above what it held before it (the
model's own weights and optimizer slots live before the step and are not counted); see
docs/benchmarks.md.
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from typing import Optional

from absl import flags

from bl_net_tf import benchmark_models, cli
from bl_net_tf.benchmark_models import check_name
from bl_net_tf.constants import (AUTO, DATA_FORMATS, DEFAULT_IMAGE_SIZE, DTYPE_POLICIES, IMAGENET_CLASSES,
                                 MIXED_PRECISION, check_choice, check_positive_int)
from bl_net_tf.models import grouped_conv
from bl_net_tf.models.grouped_conv import IMPLEMENTATIONS, resolve_implementation

MODES = ("infer", "train")

# --suite all: each Big-Little model, its plain baseline, and the keras.applications model of the same
# depth where there is one (ResNeXt-50 is in ResNet-50's FLOP class, as the issue compares them).
TABLE = (
    ("bl-resnet50", "resnet50", "keras:ResNet50"),
    ("bl-resnet101", "resnet101", "keras:ResNet101"),
    ("bl-resnet152", "resnet152", "keras:ResNet152"),
    ("bl-resnext50-32x4d", "resnext50-32x4d", "keras:ResNet50"),
    ("bl-resnext101-32x4d", "resnext101-32x4d", "keras:ResNet101"),
    ("bl-resnext101-64x4d", "resnext101-64x4d", "keras:ResNet101"),
    ("bl-seresnext50-32x4d", "seresnext50-32x4d", "keras:ResNet50"),
    ("bl-seresnext101-32x4d", "seresnext101-32x4d", "keras:ResNet101"),
)


@dataclasses.dataclass(frozen=True)
class Suite:
    """A fixed set of comparisons, run in both modes; ``gpu_mixed_precision`` is its default
    ``--mixed_precision`` where a GPU is visible (none elsewhere)."""

    rows: tuple
    gpu_mixed_precision: str = "none"


SUITES = {
    "all": Suite(TABLE),
    # The GPU check: the main bL models against their baselines and keras.applications, at
    # the GPU defaults (channels_first, XLA, mixed_float16); on a CPU the same in fp32.
    "gpu": Suite((TABLE[0], TABLE[1], TABLE[3]), gpu_mixed_precision="float16"),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How every model of one comparison runs. ``data_format=None`` is the package's per-device
    default (channels_first on a GPU); ``mixed_precision`` as the trainer's (its Keras dtype policy
    is :attr:`dtype_policy`)."""

    mode: str = "infer"
    batch_size: int = 32
    image_size: int = DEFAULT_IMAGE_SIZE
    steps: int = 10
    warmup: int = 2
    xla: bool = False
    data_format: Optional[str] = None
    mixed_precision: str = "none"
    num_classes: int = IMAGENET_CLASSES
    grouped_conv: str = "auto"
    saved_model_loader: str = "function"  # benchmark_models.SAVED_MODEL_LOADERS

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_choice("saved_model_loader", self.saved_model_loader, benchmark_models.SAVED_MODEL_LOADERS)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        resolve_implementation(self.grouped_conv)
        if self.data_format is not None:
            check_choice("data_format", self.data_format, DATA_FORMATS, more=" or None")
        for label in ("batch_size", "image_size", "steps", "num_classes"):
            check_positive_int(label, getattr(self, label))

    @property
    def dtype_policy(self) -> str:
        return DTYPE_POLICIES[self.mixed_precision]

    def describe(self, with_mode: bool = True) -> str:
        return (f"{self.mode + ', ' if with_mode else ''}batch {self.batch_size} at {self.image_size}x"
                f"{self.image_size}, {self.dtype_policy}, "
                f"{self.data_format}, XLA {'on' if self.xla else 'off'}, grouped conv "
                f"{resolve_implementation(self.grouped_conv)}, "
                f"{'SavedModels in TF1 sessions, ' if self.saved_model_loader == 'session' else ''}"
                f"median of {self.steps} steps")


@dataclasses.dataclass
class Result:
    """One model's measurements; ``macs`` per image (conv + FC; None for a SavedModel from disk),
    ``peak_bytes`` per step."""

    name: str
    step_seconds: list
    batch_size: int
    macs: Optional[int]
    params: Optional[int]
    peak_bytes: Optional[int]

    @property
    def images_per_second(self) -> float:
        return self.batch_size / statistics.median(self.step_seconds)


def _device() -> str:
    import tensorflow as tf

    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def run_models(names, settings: Settings) -> list:
    """Builds ``names``, warms each up, then times them taking turns; returns one Result each."""
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    from bl_net_tf.training.steps import dtype_policy

    for name in names:
        check_name(name, settings.mode)
    with tempfile.TemporaryDirectory(prefix="bl_net_tf_benchmark_") as workdir:
        with dtype_policy(settings.mixed_precision):
            contenders = [benchmark_models.build(name, settings, workdir) for name in names]
        rng = np.random.default_rng(0)
        shape = (settings.batch_size, settings.image_size, settings.image_size, 3)
        nhwc = rng.standard_normal(shape, dtype=np.float32)
        inputs = {"channels_last": tf.constant(nhwc), "channels_first": tf.constant(nhwc.transpose(0, 3, 1, 2)),
                  "uint8": tf.constant(rng.integers(0, 256, shape, dtype=np.uint8))}
        labels = tf.constant(rng.integers(0, settings.num_classes, settings.batch_size))
        device = _device()
        for contender in contenders:
            for _ in range(settings.warmup):
                contender.step(inputs[contender.inputs], labels).numpy()
        times = [[] for _ in names]
        peaks = [None for _ in names]
        for _ in range(settings.steps):
            for i, contender in enumerate(contenders):
                before = _reset_peak(device)
                start = time.perf_counter()
                contender.step(inputs[contender.inputs], labels).numpy()
                times[i].append(time.perf_counter() - start)
                peak = _peak(device)
                if before is not None and peak is not None:
                    peaks[i] = max(peaks[i] or 0, peak - before)
        results = [Result(c.name, seconds, settings.batch_size, c.macs, c.params, peak)
                   for c, seconds, peak in zip(contenders, times, peaks)]
        del contenders
        keras.backend.clear_session()
    return results


def grouped_conv_speeds(arch: str, settings: Settings, implementations=("keras", "fused", "split")) -> dict:
    """Times every grouped convolution of ``arch`` alone, once per implementation, taking turns.

    Each distinct (input shape, filters, groups, stride) of the model is run as one layer (forward,
    or forward and both gradients with ``mode="train"``), weighted by how often the model has it.
    Returns {implementation: (seconds per batch for all the model's grouped convs, GFLOP/s)}.
    """
    import collections

    import keras
    import numpy as np
    import tensorflow as tf

    from bl_net_tf.profile import layer_macs

    check_name(arch)
    model, _ = benchmark_models.keras_model(arch, dataclasses.replace(settings, grouped_conv="auto"))
    shapes = collections.Counter()
    macs = 0
    for layer in model.layers:
        if isinstance(layer, grouped_conv.Conv2D) and layer.groups > 1:
            shapes[(tuple(layer.input.shape[1:]), layer.filters, layer.kernel_size[0], layer.groups,
                    layer.strides[0], layer.padding)] += 1
            macs += settings.batch_size * layer_macs(layer)
    keras.backend.clear_session()
    if not shapes:
        raise ValueError(f"{arch} has no grouped convolutions")
    total = {name: 0.0 for name in implementations}
    rng = np.random.default_rng(0)
    for (in_shape, filters, kernel_size, groups, stride, padding), count in shapes.items():
        x = tf.constant(rng.standard_normal((settings.batch_size,) + in_shape, dtype=np.float32))
        steps = {}
        for name in implementations:
            layer = grouped_conv.Conv2D(filters, kernel_size, strides=stride, padding=padding, groups=groups, use_bias=False,
                                        data_format=settings.data_format, dtype=settings.dtype_policy,
                                        implementation=name)
            layer.build(x.shape)
            steps[name] = tf.function(_layer_step(layer, settings.mode))
        for name, step in steps.items():
            for _ in range(settings.warmup):
                step(x).numpy()
        seconds = {name: [] for name in implementations}
        for _ in range(settings.steps):
            for name, step in steps.items():
                start = time.perf_counter()
                step(x).numpy()
                seconds[name].append(time.perf_counter() - start)
        for name in implementations:
            total[name] += count * statistics.median(seconds[name])
    flops = 2 * macs * (3 if settings.mode == "train" else 1)
    return {name: (t, flops / t / 1e9) for name, t in total.items()}


def _layer_step(layer, mode: str):
    import tensorflow as tf

    def forward(x):
        return tf.reduce_sum(layer(x))

    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        dx, dw = tape.gradient(y, [x, layer.kernel], output_gradients=tf.ones_like(y))
        return tf.reduce_sum(dx) + tf.reduce_sum(dw)

    return forward if mode == "infer" else forward_backward


def _reset_peak(device: str) -> Optional[int]:
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device)
        return tf.config.experimental.get_memory_info(device)["current"]
    except (ValueError, tf.errors.OpError):  # a device whose allocator keeps no statistics
        return None


def _peak(device: str) -> Optional[int]:
    import tensorflow as tf

    try:
        return tf.config.experimental.get_memory_info(device)["peak"]
    except (ValueError, tf.errors.OpError):
        return None


def _gb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GB"


def format_text(results: list, settings: Settings) -> str:
    first = results[0]
    lines = [f"{' vs '.join(r.name for r in results)}: {settings.describe()}"]
    for r in results:
        size = "" if r.macs is None else f"  {r.macs / 1e9:6.2f} GMACs  {r.params / 1e6:6.2f}M params"
        lines.append(f"  {r.name:24} {r.images_per_second:8.2f} images/s{size}  peak {_gb(r.peak_bytes)}")
    for r in results[1:]:
        lines.append(f"  {first.name} / {r.name}: speed {speed_up(first, r):.2f}x, "
                     f"FLOP ratio {_ratio(r.macs, first.macs)}, peak memory {_ratio(first.peak_bytes, r.peak_bytes)}")
    return "\n".join(lines)


def speed_up(first: Result, other: Result) -> float:
    return first.images_per_second / other.images_per_second


def _ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


MARKDOWN_HEADER = ("| model | vs | mode | images/s | vs images/s | speed-up | FLOP ratio | peak GB | vs peak GB |\n"
                   "|---|---|---|---:|---:|---:|---:|---:|---:|")


def format_markdown(results: list, settings: Settings) -> str:
    first = results[0]
    rows = []
    for r in results[1:]:
        rows.append(f"| {first.name} | {r.name} | {settings.mode} | {first.images_per_second:.2f} | "
                    f"{r.images_per_second:.2f} | {speed_up(first, r):.2f}x | "
                    f"{_ratio(r.macs, first.macs)} | {_gb(first.peak_bytes)[:-3]} | {_gb(r.peak_bytes)[:-3]} |")
    return "\n".join(rows)


def format_repeats(runs: list) -> str:
    """One line per compared model: its speed-up in each of several runs, their minimum and median."""
    lines = []
    for i, other in enumerate(runs[0][1:], start=1):
        ups = [speed_up(results[0], results[i]) for results in runs]
        lines.append(f"  {runs[0][0].name} / {other.name} over {len(runs)} runs: "
                     f"{' '.join(f'{u:.2f}x' for u in ups)} (min {min(ups):.2f}x, median {statistics.median(ups):.2f}x)")
    return "\n".join(lines)


def describe_device() -> str:
    """The GPUs TensorFlow sees (timing runs on the first), else the CPU's model name and cores."""
    import os
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            capability = details.get("compute_capability")
            names.append(details.get("device_name", gpu.name) + (
                f" (compute capability {capability[0]}.{capability[1]})" if capability else ""))
        return f"{', '.join(names)}; timed on GPU:0; TensorFlow {tf.__version__}"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, no GPU; TensorFlow {tf.__version__}"


PROG = "bl-net-benchmark"
FLAGS_SPEC = {
    "arch": (str, "The model to time: a registered arch, keras:NAME (keras.applications), "
                  "folded:ARCH[@PRECISION] (the network an export serves, as Keras), export:ARCH[@PRECISION] "
                  "(ARCH exported and served) or saved_model:DIR (an export); bl_net_tf/benchmark_models.py."),
    "suite": (tuple(SUITES), "A fixed set of comparisons in both modes, as markdown rows: all (every row of "
                             "docs/benchmarks.md) or gpu (the GPU defaults: channels_first, XLA, float16; float32 "
                             "on a CPU)."),
    "mode": (MODES, "Time inference or an SGD training step."),
    "batch_size": (int, "Images per step."),
    "steps": (int, "Timed steps per model (the median is reported)."),
    "warmup": (int, "Untimed steps per model first (tracing, XLA)."),
    "repeat": (int, "Run each comparison this many times (models rebuilt) and summarise the speed-ups."),
    "grouped_conv": (IMPLEMENTATIONS, "The grouped-conv kernel of our models (bl_net_tf/models/grouped_conv.py)."),
    "saved_model_loader": (benchmark_models.SAVED_MODEL_LOADERS,
                           "How export: and saved_model: models run: function (tf.saved_model.load, TF2) or "
                           "session (TF1's loader into a session, as TF Serving)."),
    "grouped_convs": (bool, "Time --arch's grouped convolutions alone, per implementation."),
    "markdown": (bool, "Print table rows instead of text."),
    "output": (str, "Also write the device line and the markdown table to this file."),
}
_DEFAULTS = dict(arch=None, suite=None, mode="infer", batch_size=32, steps=10, warmup=2, repeat=1, grouped_conv="auto",
                 saved_model_loader="function", grouped_convs=False, markdown=False, output=None)
_SHARED = dict(image_size=DEFAULT_IMAGE_SIZE, num_classes=IMAGENET_CLASSES, xla=AUTO, data_format=AUTO,
               mixed_precision=None)
_NOTES = {"mixed_precision": "Unset: none, or float16 with --suite gpu on a GPU.",
          "num_classes": "Here the classifier's size: every model gets the same."}


def define_flags(flag_values: flags.FlagValues) -> None:
    """The benchmark's flags, and the shared ones it takes (bl_net_tf/cli.py)."""
    cli.define(flag_values, FLAGS_SPEC, _DEFAULTS)
    cli.define_shared(flag_values, _SHARED, _NOTES)
    flags.DEFINE_multi_string("vs", [], "A model to compare --arch with (repeatable), named as --arch.",
                              flag_values=flag_values)


def run(args: flags.FlagValues) -> int:
    """Times what the parsed flags say."""
    suite = SUITES.get(args.suite)
    if not suite and not args.arch:
        raise cli.UsageError("give --arch (and --vs) or --suite")
    check_positive_int("repeat", args.repeat)
    if args.grouped_convs:
        settings = resolve_settings(args, args.mode)
        speeds = grouped_conv_speeds(args.arch, settings)
        print(f"{args.arch}'s grouped convolutions: {settings.describe()}")
        for name, (seconds, rate) in speeds.items():
            print(f"  {name:6} {seconds:7.3f} s per batch  {rate:7.1f} GFLOP/s  "
                  f"{speeds['keras'][0] / seconds:5.1f}x keras")
        return cli.OK
    modes = MODES if suite else (args.mode,)
    comparisons = [list(row) for row in suite.rows] if suite else [[args.arch] + args.vs]
    for names in comparisons:
        for name in names:
            for mode in modes:
                check_name(name, mode)
    markdown = bool(suite) or args.markdown
    _print(args.output, f"device: {describe_device()}", mode="w")
    if markdown:
        _print(args.output, f"settings: {resolve_settings(args, modes[0], suite).describe(with_mode=False)}")
        _print(args.output, MARKDOWN_HEADER)
    for names in comparisons:
        for mode in modes:
            settings = resolve_settings(args, mode, suite)
            runs = [run_models(names, settings) for _ in range(args.repeat)]
            for results in runs:
                _print(args.output, format_markdown(results, settings) if markdown else
                       format_text(results, settings))
            if args.repeat > 1:
                print(format_repeats(runs), flush=True)
    if args.output:
        print(f"wrote {args.output}")
    return cli.OK


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, define_flags, run, argv)


def _print(output: Optional[str], text: str, mode: str = "a") -> None:
    """Prints ``text``; with ``output`` also writes it there (``mode="w"`` starts the file)."""
    print(text, flush=True)
    if output:
        with open(output, mode, encoding="utf-8") as handle:
            handle.write(text + "\n")


def resolve_settings(args, mode: str, suite: Optional[Suite] = None) -> Settings:
    """The Settings that parsed flags ask for: per-device defaults for what they leave out."""
    from bl_net_tf.training.distribute import resolve_data_format, resolve_xla

    gpu = _has_gpu()
    mixed_precision = args.mixed_precision or (suite.gpu_mixed_precision if suite and gpu else "none")
    xla = resolve_xla(args.xla, gpu)
    return Settings(mode=mode, batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                    warmup=args.warmup, xla=xla, data_format=resolve_data_format(args.data_format, gpu, xla),
                    mixed_precision=mixed_precision, num_classes=args.num_classes, grouped_conv=args.grouped_conv,
                    saved_model_loader=args.saved_model_loader)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


if __name__ == "__main__":
    sys.exit(main())
