"""Preflight for a training node: ``python -m bl_net_tf.doctor`` (``bl-net-doctor``).

Run it on the node (or in the container) before a multi-day job. It prints what the node has
(TensorFlow and the CUDA/cuDNN it was built for, the GPUs and their memory, NCCL, XLA, oneDNN),
then trains a few steps of each model family's miniature (models/miniature.py) with the trainer's
own step, optimizer and strategy, in each precision, in the data format and XLA setting the trainer
would choose on this node (or the ones given), and prints one verdict line per combination:

    ok    resnet      channels_first  XLA on   float16   8 GPU   loss 2.303 2.298   41.2 s

Exit status (bl_net_tf/cli.py) 0 when every combination trains with finite losses; 1 when one does
not, or for bad input (one line on stderr: ``--data_format=channels_first`` without a GPU or XLA,
more ``--gpus`` than exist); 2 for a usage error (an unknown flag, a value outside its choices).
``TF_CONFIG`` is ignored: the doctor checks the node it runs on, not the cluster.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import sys
import time
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from bl_net_tf import cli, constants  # noqa: E402
from bl_net_tf.models import grouped_conv, miniature  # noqa: E402
from bl_net_tf.training import distribute, optimizer as optimizers, steps  # noqa: E402

PRECISIONS = constants.MIXED_PRECISION
STEPS = 2
BATCH_PER_REPLICA = 4
NUM_CLASSES = 10
LEARNING_RATE = 0.1


@dataclasses.dataclass(frozen=True)
class Combination:
    """One way the trainer can run: a model family in a layout, compiled or not, in a precision."""

    family: str
    data_format: str
    xla: bool
    precision: str

    def describe(self) -> str:
        return (f"{self.family:<11} {self.data_format:<15} XLA {'on ' if self.xla else 'off'}  "
                f"{constants.DTYPE_POLICIES[self.precision].replace('mixed_', ''):<9}")


def build(family: str, strategy: tf.distribute.Strategy, *, data_format: str, precision: str):
    """``(model, optimizer)``: the miniature of ``family`` and the trainer's optimizer (Nesterov, L2
    decay, dynamic loss scaling for float16), built under ``strategy`` and ``precision``'s policy."""
    with strategy.scope(), steps.dtype_policy(precision):
        model = miniature.build(family, data_format=data_format, num_classes=NUM_CLASSES)
        optimizer = optimizers.create_optimizer(model, LEARNING_RATE, momentum=0.9, weight_decay=1e-4,
                                                loss_scale=precision == "float16")
    return model, optimizer


def batches(family: str, batch_size: int, *, seed: int = 0) -> tuple:
    """One batch of synthetic inputs (uint8 images as the input pipeline gives them, or normal
    speech features) and labels, the same for every ``seed``."""
    rng = np.random.default_rng(seed)
    shape = (batch_size,) + miniature.input_shape(family)
    if family == "speech":
        inputs = rng.standard_normal(shape).astype("float32")
    else:
        inputs = rng.integers(0, 256, shape).astype("uint8")
    return inputs, rng.integers(0, NUM_CLASSES, batch_size).astype("int32")


def stepper(strategy: tf.distribute.Strategy, model, optimizer, data: tuple, *, jit_compile: bool):
    """``step() -> mean loss``: one step of the trainer (training/steps.py) on ``data`` (the global
    batch, split over the replicas), the same batch at every call; traced at the first call."""
    inputs, labels = data
    batch = len(labels)
    dataset = strategy.distribute_datasets_from_function(
        lambda context: tf.data.Dataset.from_tensors((inputs, labels)).unbatch()
        .shard(context.num_input_pipelines, context.input_pipeline_id)
        .batch(context.get_per_replica_batch_size(batch)).repeat())
    train_step = steps.make_train_step(strategy, model, optimizer, global_batch=batch, jit_compile=jit_compile)
    iterator = iter(dataset)

    def step() -> float:
        sums = train_step(iterator, tf.constant(0.0)).numpy()
        return float(sums[0] / sums[3])

    return step


def check(combination: Combination, strategy: tf.distribute.Strategy) -> tuple:
    """``(ok, detail)``: trains :data:`STEPS` steps of ``combination``; ok when every loss is finite."""
    try:
        model, optimizer = build(combination.family, strategy, data_format=combination.data_format,
                                 precision=combination.precision)
        data = batches(combination.family, BATCH_PER_REPLICA * strategy.num_replicas_in_sync)
        step = stepper(strategy, model, optimizer, data, jit_compile=combination.xla)
        losses = [step() for _ in range(STEPS)]
    except Exception as error:  # noqa: BLE001 - any failure is the verdict, reported in one line
        return False, f"{type(error).__name__}: {cli.error_line(error)[:300]}"
    text = "loss " + " ".join(f"{loss:.3f}" for loss in losses)
    if isinstance(optimizer, optimizers.DynamicLossScale):  # skipped steps keep the loss; say why
        text += f" (loss scale 2^{int(np.log2(float(optimizer.dynamic_scale.numpy())))})"
    return bool(np.all(np.isfinite(losses))), text


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_lines() -> list:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return [f"GPUs:      none visible{hint}"]
    from tensorflow.python.client import device_lib  # the memory TF can allocate on each GPU

    memory = {d.name.replace("/device:", ""): d.memory_limit for d in device_lib.list_local_devices()
              if d.device_type == "GPU"}
    lines = []
    for i, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        capability = ".".join(map(str, details.get("compute_capability", ()))) or "?"
        gigabytes = memory.get(f"GPU:{i}", 0) / 2 ** 30
        lines.append(f"GPU {i}:     {details.get('device_name', gpu.name)}, compute capability {capability}, "
                     f"{gigabytes:.1f} GB usable by TensorFlow")
    return lines


def _xla_line() -> str:
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    try:
        with tf.device(device):
            value = float(tf.function(lambda x: tf.reduce_sum(x * 2.0), jit_compile=True)(tf.ones([4])))
        return f"XLA:       compiles and runs on {device}" if value == 8 else f"XLA:       WRONG RESULT on {device}"
    except Exception as error:  # noqa: BLE001
        return f"XLA:       FAILS on {device}: {cli.error_line(error)[:300]}"


def _onednn_line() -> str:
    from tensorflow.python.util import _pywrap_util_port  # TF's own switch, read by its CPU kernels

    enabled = _pywrap_util_port.IsMklEnabled()
    grouped = [dtype for dtype in ("float32", "bfloat16", "float16") if grouped_conv.cpu_runs_grouped_conv(dtype)]
    return (f"oneDNN:    {'on' if enabled else 'off'} (TF_ENABLE_ONEDNN_OPTS="
            f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}); CPU grouped-conv gradients in "
            f"{', '.join(grouped) or 'no dtype'} (other dtypes split the groups outside XLA)")


def node_report() -> list:
    """What this node has, one fact per line."""
    build_info = tf.sysconfig.get_build_info()
    cuda = (f"built for CUDA {build_info.get('cuda_version', '?')}, cuDNN {build_info.get('cudnn_version', '?')}"
            if build_info.get("is_cuda_build") else "a CPU-only build")
    nccl = _package_version("nvidia-nccl-cu12")
    cudnn = _package_version("nvidia-cudnn-cu12")
    return [
        f"TensorFlow {tf.__version__} ({cuda}), Keras {keras.__version__}, Python {platform.python_version()}",
        f"cuDNN:     {'wheel nvidia-cudnn-cu12 ' + cudnn if cudnn else 'no nvidia-cudnn-cu12 wheel (a system cuDNN, if any)'}",
        *_gpu_lines(),
        f"NCCL:      {'wheel nvidia-nccl-cu12 ' + nccl if nccl else 'no nvidia-nccl-cu12 wheel'}"
        f" (all-reduces the gradients with --gpus >= 2)",
        _xla_line(),
        _onednn_line(),
    ]


# ---- command line -----------------------------------------------------------------------------

PROG = "bl-net-doctor"
FLAGS_SPEC = {
    "precisions": ([*PRECISIONS], "The --mixed_precision values to check."),
    "families": ([*miniature.FAMILIES], "The model families to check."),
}


def define_flags(flag_values: flags.FlagValues) -> None:
    """``--gpus``, ``--data_format``, ``--xla`` as the trainer's (auto: what it picks on this node), and
    what to check."""
    cli.define_shared(flag_values, dict(gpus=None, data_format=constants.AUTO, xla=constants.AUTO),
                      {"data_format": "Checks the trainer's choice on this node by default.",
                       "xla": "Checks the trainer's choice on this node by default."})
    cli.define(flag_values, FLAGS_SPEC, dict(precisions=PRECISIONS, families=miniature.FAMILIES))


def run(args: flags.FlagValues) -> int:
    """Reports the node, then trains each combination; 1 if any fails."""
    if os.environ.pop("TF_CONFIG", None) is not None:  # a cluster would wait for its other workers
        print("TF_CONFIG is set: ignored, the doctor checks this node alone", flush=True)
    strategy = distribute.create_strategy(args.gpus)
    on_gpu = distribute.uses_gpu(strategy)
    xla = distribute.resolve_xla(args.xla, on_gpu)
    data_format = distribute.resolve_data_format(args.data_format, on_gpu, xla)
    for line in node_report():
        print(line, flush=True)
    devices = f"{strategy.num_replicas_in_sync} {'GPU' if on_gpu else 'CPU'}"
    print(f"trainer:   {devices} replica(s) ({type(strategy).__name__}), {data_format}, XLA {'on' if xla else 'off'}"
          f"; {STEPS} steps of each miniature, batch {BATCH_PER_REPLICA} per replica", flush=True)
    failures = 0
    log_level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # a new train step per combination: no retracing warnings
    for precision in args.precisions:
        for family in args.families:
            combination = Combination(family, data_format, xla, precision)
            start = time.perf_counter()
            ok, detail = check(combination, strategy)
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'}  {combination.describe()} {devices:<6} {detail}  "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    tf.get_logger().setLevel(log_level)
    print(f"{'all' if not failures else failures} of {len(args.precisions) * len(args.families)} combinations "
          f"{'train' if not failures else 'FAILED'}")
    return cli.ERROR if failures else cli.OK


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
