"""Side-by-side speed of models on this machine: images/s, their ratio, the FLOP ratio, peak memory.

    python -m bl_net_tf.benchmark --arch bl-resnet50 --vs keras:ResNet50 --mode infer
    python -m bl_net_tf.benchmark --arch bl-resnext50 --vs resnext50 --vs keras:ResNet50 --mode train
    python -m bl_net_tf.benchmark --arch export:bl-resnet50 --vs export:resnet50 --vs bl-resnet50
    python -m bl_net_tf.benchmark --all --markdown      # the table in docs/benchmarks.md
    python -m bl_net_tf.benchmark --suite gpu --output gpu.md   # GPU defaults; fp32 on a CPU

Every model is built, warmed up (traced, and compiled with ``--xla on``), then the models take turns
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

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Optional

from bl_net_tf import benchmark_models
from bl_net_tf.benchmark_models import check_name
from bl_net_tf.constants import DATA_FORMATS, DEFAULT_IMAGE_SIZE, IMAGENET_CLASSES, check_positive_int
from bl_net_tf.models import grouped_conv
from bl_net_tf.models.grouped_conv import IMPLEMENTATIONS, resolve_implementation

MODES = ("infer", "train")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# --all: each Big-Little model, its plain baseline, and the keras.applications model of the same
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
    """A fixed set of comparisons, run in both modes; ``gpu_precision`` is its default dtype
    policy where a GPU is visible (float32 elsewhere)."""

    rows: tuple
    gpu_precision: str = "float32"


SUITES = {
    "all": Suite(TABLE),
    # The GPU check: the main bL models against their baselines and keras.applications, at
    # the GPU defaults (channels_first, XLA, mixed_float16); on a CPU the same in fp32.
    "gpu": Suite((TABLE[0], TABLE[1], TABLE[3]), gpu_precision="mixed_float16"),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How every model of one comparison runs. ``data_format=None`` is the package's per-device
    default (channels_first on a GPU); ``precision`` is a Keras dtype policy."""

    mode: str = "infer"
    batch_size: int = 32
    image_size: int = DEFAULT_IMAGE_SIZE
    steps: int = 10
    warmup: int = 2
    xla: bool = False
    data_format: Optional[str] = None
    precision: str = "float32"
    num_classes: int = IMAGENET_CLASSES
    grouped_conv: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        resolve_implementation(self.grouped_conv)
        if self.data_format not in DATA_FORMATS + (None,):
            raise ValueError(f"unknown data_format {self.data_format!r}; allowed: {', '.join(DATA_FORMATS)}")
        for label in ("batch_size", "image_size", "steps", "num_classes"):
            check_positive_int(label, getattr(self, label))

    def describe(self, with_mode: bool = True) -> str:
        return (f"{self.mode + ', ' if with_mode else ''}batch {self.batch_size} at {self.image_size}x"
                f"{self.image_size}, {self.precision}, "
                f"{self.data_format}, XLA {'on' if self.xla else 'off'}, grouped conv "
                f"{resolve_implementation(self.grouped_conv)}, median of {self.steps} steps")


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


def run(names, settings: Settings) -> list:
    """Builds ``names``, warms each up, then times them taking turns; returns one Result each."""
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    for name in names:
        check_name(name, settings.mode)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(settings.precision)
    with tempfile.TemporaryDirectory(prefix="bl_net_tf_benchmark_") as workdir:
        try:
            contenders = [benchmark_models.build(name, settings, workdir) for name in names]
        finally:
            keras.config.set_dtype_policy(previous_policy)
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
                                        data_format=settings.data_format, dtype=settings.precision,
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


def _flop_ratio(first: Result, other: Result) -> str:
    return "-" if not first.macs or not other.macs else f"{other.macs / first.macs:.2f}x"


def format_text(results: list, settings: Settings) -> str:
    first = results[0]
    lines = [f"{' vs '.join(r.name for r in results)}: {settings.describe()}"]
    for r in results:
        size = "" if r.macs is None else f"  {r.macs / 1e9:6.2f} GMACs  {r.params / 1e6:6.2f}M params"
        lines.append(f"  {r.name:24} {r.images_per_second:8.2f} images/s{size}  peak {_gb(r.peak_bytes)}")
    for r in results[1:]:
        lines.append(f"  {first.name} / {r.name}: speed {speed_up(first, r):.2f}x, "
                     f"FLOP ratio {_flop_ratio(first, r)}, peak memory {_ratio(first.peak_bytes, r.peak_bytes)}")
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
                    f"{_flop_ratio(first, r)} | {_gb(first.peak_bytes)[:-3]} | {_gb(r.peak_bytes)[:-3]} |")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bl_net_tf.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help="a registered arch, keras:NAME (keras.applications), folded:ARCH[@PRECISION] "
                        "(the network an export serves, as Keras), export:ARCH[@PRECISION] (ARCH exported "
                        "and served) or saved_model:DIR (an export); see bl_net_tf/benchmark_models.py")
    parser.add_argument("--vs", action="append", default=[], help="a model to compare with (repeatable)")
    parser.add_argument("--suite", choices=sorted(SUITES),
                        help="a fixed set of comparisons in both modes, as markdown rows: all (every row of "
                        "docs/benchmarks.md) or gpu (the GPU defaults: channels_first, XLA, mixed_float16; "
                        "fp32 on a CPU)")
    parser.add_argument("--all", action="store_true", help="the same as --suite all")
    parser.add_argument("--mode", choices=MODES, default="infer")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (tracing, XLA)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each comparison this many times (models rebuilt) and summarise the speed-ups")
    parser.add_argument("--xla", nargs="?", const="on", choices=("on", "off"),
                        help="compile each step with XLA (jit_compile); a bare --xla is --xla on; "
                        "default: on with a GPU, off on CPU (docs/benchmarks.md)")
    parser.add_argument("--data_format", choices=DATA_FORMATS, help="default: channels_first on a GPU")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="the Keras models' dtype policy; default float32 (--suite gpu: mixed_float16 on a GPU)")
    parser.add_argument("--num_classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--grouped_conv", choices=IMPLEMENTATIONS, default="auto",
                        help="the grouped-conv kernel of our models (see bl_net_tf/models/grouped_conv.py)")
    parser.add_argument("--grouped_convs", action="store_true",
                        help="time --arch's grouped convolutions alone, per implementation")
    parser.add_argument("--markdown", action="store_true", help="print table rows instead of text")
    parser.add_argument("--output", help="also write the device line and the markdown table to this file")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    suite = SUITES["all"] if args.all else SUITES.get(args.suite)
    if not suite and not args.arch:
        parser.error("give --arch (and --vs), --suite or --all")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    try:
        if args.grouped_convs:
            settings = resolve_settings(args, args.mode)
            speeds = grouped_conv_speeds(args.arch, settings)
            print(f"{args.arch}'s grouped convolutions: {settings.describe()}")
            for name, (seconds, rate) in speeds.items():
                print(f"  {name:6} {seconds:7.3f} s per batch  {rate:7.1f} GFLOP/s  "
                      f"{speeds['keras'][0] / seconds:5.1f}x keras")
            return 0
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
                runs = [run(names, settings) for _ in range(args.repeat)]
                for results in runs:
                    _print(args.output, format_markdown(results, settings) if markdown else
                           format_text(results, settings))
                if args.repeat > 1:
                    print(format_repeats(runs), flush=True)
        if args.output:
            print(f"wrote {args.output}")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _print(output: Optional[str], text: str, mode: str = "a") -> None:
    """Prints ``text``; with ``output`` also writes it there (``mode="w"`` starts the file)."""
    print(text, flush=True)
    if output:
        with open(output, mode, encoding="utf-8") as handle:
            handle.write(text + "\n")


def resolve_settings(args, mode: str, suite: Optional[Suite] = None) -> Settings:
    """The Settings that parsed flags ask for: per-device defaults for what they leave out."""
    gpu = _has_gpu()
    precision = args.precision or (suite.gpu_precision if suite and gpu else "float32")
    return Settings(mode=mode, batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                    warmup=args.warmup, xla=args.xla == "on" if args.xla else gpu,
                    data_format=args.data_format or _default_data_format(),
                    precision=precision, num_classes=args.num_classes, grouped_conv=args.grouped_conv)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _default_data_format() -> str:
    from bl_net_tf.models.factory import default_data_format

    return default_data_format()


if __name__ == "__main__":
    sys.exit(main())
