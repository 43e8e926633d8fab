"""Side-by-side speed of models on this machine: images/s, their ratio, the FLOP ratio, peak memory.

    python -m bl_net_tf.benchmark --arch bl-resnet50 --vs keras:ResNet50 --mode infer
    python -m bl_net_tf.benchmark --arch bl-resnext50 --vs resnext50 --vs keras:ResNet50 --mode train
    python -m bl_net_tf.benchmark --all --markdown      # the table in docs/benchmarks.md

Every model is built, warmed up (traced, and compiled with ``--xla on``), then the models take turns
one step at a time in this one process, so a machine shared with other jobs slows them alike;
each model's figure is the median over ``--steps`` steps. ``keras:NAME`` is a
``keras.applications`` model with random weights. Peak memory is the most the device's TensorFlow
allocator held during one timed step above what it held before it (the model's own weights and
optimizer slots live before the step and are not counted); see docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Optional

from bl_net_tf.constants import DATA_FORMATS, DEFAULT_IMAGE_SIZE, IMAGENET_CLASSES, check_positive_int
from bl_net_tf.models import grouped_conv
from bl_net_tf.models.grouped_conv import IMPLEMENTATIONS, resolve_implementation

KERAS_PREFIX = "keras:"
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

    def describe(self) -> str:
        return (f"{self.mode}, batch {self.batch_size} at {self.image_size}x{self.image_size}, {self.precision}, "
                f"{self.data_format}, XLA {'on' if self.xla else 'off'}, grouped conv "
                f"{resolve_implementation(self.grouped_conv)}, median of {self.steps} steps")


@dataclasses.dataclass
class Result:
    """One model's measurements; ``macs`` per image (conv + FC), ``peak_bytes`` per step."""

    name: str
    step_seconds: list
    batch_size: int
    macs: int
    params: int
    peak_bytes: Optional[int]

    @property
    def images_per_second(self) -> float:
        return self.batch_size / statistics.median(self.step_seconds)


def _device() -> str:
    import tensorflow as tf

    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def check_name(name: str) -> None:
    """Raises ValueError for a name that is neither a registered arch nor a keras.applications model."""
    import keras

    from bl_net_tf.models import registry

    if not name.startswith(KERAS_PREFIX):
        registry.get_spec(name)
    elif not callable(getattr(keras.applications, name[len(KERAS_PREFIX):], None)):
        raise ValueError(f"keras.applications has no {name[len(KERAS_PREFIX):]!r}")


def build_model(name: str, settings: Settings):
    """A registered arch (``bl-resnet50``) or ``keras:ResNet50``; returns (model, input layout).

    Our models take NHWC images whatever their data format; keras.applications models take the
    layout of the global image data format they were built under.
    """
    import keras

    import bl_net_tf

    size = settings.image_size
    if not name.startswith(KERAS_PREFIX):
        model = bl_net_tf.create_model(name, num_classes=settings.num_classes, input_shape=(size, size, 3),
                                       data_format=settings.data_format)
        if settings.grouped_conv != "auto":
            grouped_conv.set_implementation(model, settings.grouped_conv)
        return model, "channels_last"
    constructor = getattr(keras.applications, name[len(KERAS_PREFIX):])
    layout = settings.data_format or keras.config.image_data_format()
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(layout)
    try:
        shape = (3, size, size) if layout == "channels_first" else (size, size, 3)
        model = constructor(weights=None, input_shape=shape, classes=settings.num_classes,
                            classifier_activation=None)
    finally:
        keras.config.set_image_data_format(previous)
    return model, layout


def make_step(model, settings: Settings):
    """A compiled function of (images, labels) running one inference or SGD training step."""
    import keras
    import tensorflow as tf

    if settings.mode == "infer":
        def infer(images, labels):
            del labels
            return model(images, training=False)

        return tf.function(infer, jit_compile=settings.xla)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)  # the paper's optimizer
    if settings.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = loss_fn(labels, logits)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return tf.function(train, jit_compile=settings.xla)


def run(names, settings: Settings) -> list:
    """Builds ``names``, warms each up, then times them taking turns; returns one Result each."""
    import keras
    import numpy as np
    import tensorflow as tf

    from bl_net_tf.profile import count_macs, count_params

    for name in names:
        check_name(name)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(settings.precision)
    try:
        models = [build_model(name, settings) for name in names]
        steps = [make_step(model, settings) for model, _ in models]
    finally:
        keras.config.set_dtype_policy(previous_policy)
    rng = np.random.default_rng(0)
    nhwc = rng.standard_normal((settings.batch_size, settings.image_size, settings.image_size, 3), dtype=np.float32)
    inputs = {"channels_last": tf.constant(nhwc), "channels_first": tf.constant(nhwc.transpose(0, 3, 1, 2))}
    labels = tf.constant(rng.integers(0, settings.num_classes, settings.batch_size))
    device = _device()
    for (_, layout), step in zip(models, steps):
        for _ in range(settings.warmup):
            step(inputs[layout], labels).numpy()
    times = [[] for _ in names]
    peaks = [None for _ in names]
    for _ in range(settings.steps):
        for i, ((_, layout), step) in enumerate(zip(models, steps)):
            before = _reset_peak(device)
            start = time.perf_counter()
            step(inputs[layout], labels).numpy()
            times[i].append(time.perf_counter() - start)
            peak = _peak(device)
            if before is not None and peak is not None:
                peaks[i] = max(peaks[i] or 0, peak - before)
    results = [Result(name, seconds, settings.batch_size, count_macs(model), count_params(model), peak)
               for name, (model, _), seconds, peak in zip(names, models, times, peaks)]
    del models, steps
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
    model, _ = build_model(arch, dataclasses.replace(settings, grouped_conv="auto"))
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


def format_text(results: list, settings: Settings) -> str:
    first = results[0]
    lines = [f"{' vs '.join(r.name for r in results)}: {settings.describe()}"]
    for r in results:
        lines.append(f"  {r.name:24} {r.images_per_second:8.2f} images/s  {r.macs / 1e9:6.2f} GMACs  "
                     f"{r.params / 1e6:6.2f}M params  peak {_gb(r.peak_bytes)}")
    for r in results[1:]:
        lines.append(f"  {first.name} / {r.name}: speed {first.images_per_second / r.images_per_second:.2f}x, "
                     f"FLOP ratio {r.macs / first.macs:.2f}x, peak memory {_ratio(first.peak_bytes, r.peak_bytes)}")
    return "\n".join(lines)


def _ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


MARKDOWN_HEADER = ("| model | vs | mode | images/s | vs images/s | speed-up | FLOP ratio | peak GB | vs peak GB |\n"
                   "|---|---|---|---:|---:|---:|---:|---:|---:|")


def format_markdown(results: list, settings: Settings) -> str:
    first = results[0]
    rows = []
    for r in results[1:]:
        rows.append(f"| {first.name} | {r.name} | {settings.mode} | {first.images_per_second:.2f} | "
                    f"{r.images_per_second:.2f} | {first.images_per_second / r.images_per_second:.2f}x | "
                    f"{r.macs / first.macs:.2f}x | {_gb(first.peak_bytes)[:-3]} | {_gb(r.peak_bytes)[:-3]} |")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bl_net_tf.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help="a registered arch, or keras:NAME for a keras.applications model")
    parser.add_argument("--vs", action="append", default=[], help="a model to compare with (repeatable)")
    parser.add_argument("--all", action="store_true", help="every row of docs/benchmarks.md, both modes")
    parser.add_argument("--mode", choices=MODES, default="infer")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (tracing, XLA)")
    parser.add_argument("--xla", nargs="?", const="on", choices=("on", "off"),
                        help="compile each step with XLA (jit_compile); a bare --xla is --xla on; "
                        "default: on with a GPU, off on CPU (docs/benchmarks.md)")
    parser.add_argument("--data_format", choices=DATA_FORMATS, help="default: channels_first on a GPU")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--num_classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--grouped_conv", choices=IMPLEMENTATIONS, default="auto",
                        help="the grouped-conv kernel of our models (see bl_net_tf/models/grouped_conv.py)")
    parser.add_argument("--grouped_convs", action="store_true",
                        help="time --arch's grouped convolutions alone, per implementation")
    parser.add_argument("--markdown", action="store_true", help="print table rows instead of text")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.all and not args.arch:
        parser.error("give --arch (and --vs) or --all")
    try:
        if args.grouped_convs:
            settings = _settings(args, args.mode)
            speeds = grouped_conv_speeds(args.arch, settings)
            print(f"{args.arch}'s grouped convolutions: {settings.describe()}")
            for name, (seconds, rate) in speeds.items():
                print(f"  {name:6} {seconds:7.3f} s per batch  {rate:7.1f} GFLOP/s  "
                      f"{speeds['keras'][0] / seconds:5.1f}x keras")
            return 0
        modes = MODES if args.all else (args.mode,)
        comparisons = [[m for m in row if m] for row in TABLE] if args.all else [[args.arch] + args.vs]
        for name in {name for names in comparisons for name in names}:
            check_name(name)
        if args.markdown:
            print(MARKDOWN_HEADER)
        for names in comparisons:
            for mode in modes:
                settings = _settings(args, mode)
                results = run(names, settings)
                print(format_markdown(results, settings) if args.markdown else format_text(results, settings),
                      flush=True)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _settings(args, mode: str) -> Settings:
    return Settings(mode=mode, batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                    warmup=args.warmup, xla=args.xla == "on" if args.xla else _has_gpu(),
                    data_format=args.data_format or _default_data_format(),
                    precision=args.precision, num_classes=args.num_classes, grouped_conv=args.grouped_conv)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _default_data_format() -> str:
    from bl_net_tf.models.factory import default_data_format

    return default_data_format()


if __name__ == "__main__":
    sys.exit(main())
