"""Which devices train: the tf.distribute strategy, the data format and XLA, from the flags.

* ``TF_CONFIG`` in the environment: ``MultiWorkerMirroredStrategy`` over every worker
  (each uses its ``--gpus`` GPUs, or its CPU with ``--gpus=0``);
* ``--gpus=N`` (N >= 2): ``MirroredStrategy`` over the first N GPUs, as Tensorpack's
  ``SyncMultiGPUTrainerReplicated``: gradients are all-reduced, BN statistics stay per replica;
* ``--gpus=1``: one GPU; ``--gpus=0``: the CPU. Without ``--gpus``, every visible GPU.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

import tensorflow as tf

logger = logging.getLogger(__name__)


def cluster_spec() -> Optional[dict]:
    """The parsed ``TF_CONFIG`` if it describes a cluster, else None.

    Raises:
      ValueError: TF_CONFIG is not JSON or has no ``cluster``/``task``.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(tf_config, dict) or "cluster" not in tf_config or "task" not in tf_config:
        raise ValueError("TF_CONFIG must have 'cluster' and 'task' entries "
                         "(https://www.tensorflow.org/guide/distributed_training#TF_CONFIG)")
    return tf_config


def create_strategy(gpus: Optional[int]) -> tf.distribute.Strategy:
    """The strategy for ``--gpus`` (None: all visible GPUs) and ``TF_CONFIG``.

    Must run before any other TensorFlow op (a multi-worker cluster is set up at the start).

    Raises:
      ValueError: more GPUs asked for than exist, or a malformed TF_CONFIG.
    """
    physical = tf.config.list_physical_devices("GPU")
    if gpus is None:
        gpus = len(physical)
    if gpus > len(physical):
        raise ValueError(f"--gpus={gpus} but only {len(physical)} GPU(s) exist on this machine")
    tf_config = cluster_spec()
    if tf_config is not None:
        # Each worker trains on its first `gpus` GPUs, or on its CPU.
        tf.config.set_visible_devices(physical[:gpus], "GPU")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        workers = strategy.cluster_resolver.cluster_spec().num_tasks("worker")
        task = tf_config["task"]
        logger.info("multi-worker training: %d workers (this is %s %s), %d replicas in total",
                    workers, task.get("type"), task.get("index"), strategy.num_replicas_in_sync)
        return strategy
    if gpus == 0:
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if gpus == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(gpus)])


def uses_gpu(strategy: tf.distribute.Strategy) -> bool:
    """Whether the replicas run on GPUs."""
    return any(tf.DeviceSpec.from_string(d).device_type == "GPU" for d in strategy.extended.worker_devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, summaries and the export (worker 0, or alone)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def task_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def resolve_data_format(flag: str, on_gpu: bool, xla: bool = False) -> str:
    """``auto``: channels_first on GPUs (cuDNN's layout, as Tensorpack's NCHW), else channels_last.

    channels_first on the CPU needs ``xla``: XLA's CPU backend compiles the NCHW graph that a GPU
    runs (slower than channels_last there; it is for running the GPU's graph without a GPU).

    Raises:
      ValueError: channels_first on the CPU without XLA (TF's CPU convolutions are NHWC only).
    """
    if flag == "auto":
        return "channels_first" if on_gpu else "channels_last"
    if flag == "channels_first" and not (on_gpu or xla):
        raise ValueError("data_format=channels_first needs a GPU (TensorFlow's CPU convolutions are "
                         "channels_last only); use --data_format=auto")
    return flag


def resolve_xla(flag: str, on_gpu: bool) -> bool:
    """``auto``: XLA on GPUs (fused kernels, a large speed-up), off on the CPU (slow compiles)."""
    return on_gpu if flag == "auto" else flag == "on"
