"""Which devices train: the tf.distribute strategy, the data format and XLA, from the flags.

* ``TF_CONFIG`` in the environment: ``MultiWorkerMirroredStrategy`` over every worker
  (each uses its ``--gpus`` GPUs, or its CPU with ``--gpus=0``);
* else a Slurm job step of several tasks (``srun``; ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``):
  ``MultiWorkerMirroredStrategy`` over its tasks, the cluster from TensorFlow's
  ``SlurmClusterResolver`` (task i of a node listens on port ``$BL_NET_TF_SLURM_PORT`` + i,
  8888 by default); each task takes its share of the node's GPUs (docs/cluster.md);
* ``--gpus=N`` (N >= 2): ``MirroredStrategy`` over the first N GPUs, as Tensorpack's
  ``SyncMultiGPUTrainerReplicated``: gradients are all-reduced, BN batch statistics are per replica
  (the moving statistics are averaged over the replicas before each checkpoint, see loop.py);
* ``--gpus=1``: one GPU; ``--gpus=0``: the CPU. Without ``--gpus``, every visible GPU.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

import tensorflow as tf

from bl_net_tf import constants

logger = logging.getLogger(__name__)

SLURM_PORT_ENV = "BL_NET_TF_SLURM_PORT"
SLURM_PORT = 8888  # SlurmClusterResolver's port_base


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


def slurm_tasks() -> int:
    """The number of tasks of the Slurm job step (``srun``) this process is one of; 0 outside one."""
    if "SLURM_PROCID" not in os.environ:
        return 0
    try:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS", "0"))
    except ValueError:
        return 0


class _SlurmResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
    """``SlurmClusterResolver`` whose tasks train on the GPUs :func:`create_strategy` gives them.

    The resolver lays out a node's tasks (ports ``port_base + i``) by walking its GPUs in steps of
    ``gpus_per_task``, so it is told one GPU per task here whatever the node has (also none), and
    it does not set CUDA_VISIBLE_DEVICES (``auto_set_gpu``): that has no effect once TensorFlow has
    listed the GPUs. ``num_accelerators`` reports the GPUs chosen, which MultiWorkerMirroredStrategy
    mirrors over.
    """

    def __init__(self, port_base: int):
        tasks = slurm_tasks()
        super().__init__(port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)
        self.gpus = 0

    def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
        return {"GPU": self.gpus}


def slurm_cluster() -> tuple:
    """``(resolver, tasks on this task's node, this task's index on its node)`` of the current srun
    step (port ``$BL_NET_TF_SLURM_PORT``, default 8888, + the index on the node).

    Raises:
      ValueError: a SLURM_* variable or BL_NET_TF_SLURM_PORT missing or malformed.
    """
    raw_port = os.environ.get(SLURM_PORT_ENV, str(SLURM_PORT))
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise ValueError(f"{SLURM_PORT_ENV} must be a port number, got {raw_port!r}")
    try:
        resolver = _SlurmResolver(int(raw_port))
        spec = resolver.cluster_spec()
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"cannot read the Slurm job step: {str(error).splitlines()[0]}") from None
    host, port = spec.task_address(resolver.task_type, resolver.task_id).rsplit(":", 1)
    on_node = sum(address.rsplit(":", 1)[0] == host for address in spec.job_tasks(resolver.task_type))
    return resolver, on_node, int(port) - int(raw_port)


def task_gpus(physical: list, gpus: Optional[int], on_node: int, local_index: int) -> list:
    """The GPUs of task ``local_index`` of the ``on_node`` tasks on a node, of the ``physical`` ones it sees.

    Without ``gpus`` (``--gpus``) a task takes its share (8 GPUs, 2 tasks: 4 each). When a task sees
    fewer GPUs than there are tasks on its node, Slurm has bound GPUs to tasks (``--gpus-per-task``)
    and it takes the ones it sees.

    Raises:
      ValueError: the node has too few GPUs for ``on_node`` tasks of ``gpus`` each.
    """
    if len(physical) < on_node:  # bound by Slurm
        return physical[:len(physical) if gpus is None else gpus]
    gpus = len(physical) // on_node if gpus is None else gpus
    if len(physical) < on_node * gpus:
        raise ValueError(f"{on_node} Slurm tasks on a node with --gpus={gpus} need {on_node * gpus} GPUs, "
                         f"it has {len(physical)}")
    return physical[local_index * gpus:(local_index + 1) * gpus]


def create_strategy(gpus: Optional[int]) -> tf.distribute.Strategy:
    """The strategy for ``--gpus`` (None: all visible GPUs), ``TF_CONFIG`` or a Slurm job step.

    Must run before any other TensorFlow op (a multi-worker cluster is set up at the start).

    Raises:
      ValueError: more GPUs asked for than exist, a malformed TF_CONFIG or BL_NET_TF_SLURM_PORT.
    """
    physical = tf.config.list_physical_devices("GPU")
    if gpus is not None and gpus > len(physical):
        raise ValueError(f"--gpus={gpus} but only {len(physical)} GPU(s) exist on this machine")
    tf_config = cluster_spec()
    if tf_config is not None or slurm_tasks() > 1:
        if tf_config is not None:
            # Each worker trains on its first `gpus` GPUs, or on its CPU.
            tf.config.set_visible_devices(physical[:len(physical) if gpus is None else gpus], "GPU")
            resolver, source = None, "TF_CONFIG"
        else:
            resolver, on_node, local_index = slurm_cluster()
            mine = task_gpus(physical, gpus, on_node, local_index)
            tf.config.set_visible_devices(mine, "GPU")
            resolver.gpus, source = len(mine), "Slurm (srun)"
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        resolver = strategy.cluster_resolver
        logger.info("multi-worker training: %d workers (this is %s %s), %d replicas in total; cluster from %s",
                    resolver.cluster_spec().num_tasks("worker"), resolver.task_type, resolver.task_id,
                    strategy.num_replicas_in_sync, source)
        return strategy
    gpus = len(physical) if gpus is None else gpus
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
    if flag == constants.AUTO:
        return constants.CHANNELS_FIRST if on_gpu else constants.CHANNELS_LAST
    if flag == constants.CHANNELS_FIRST and not (on_gpu or xla):
        raise ValueError("data_format=channels_first needs a GPU (TensorFlow's CPU convolutions are "
                         "channels_last only); use --data_format=auto")
    return flag


def resolve_xla(flag: str, on_gpu: bool) -> bool:
    """``auto``: XLA on GPUs (fused kernels, a large speed-up), off on the CPU (slow compiles)."""
    return on_gpu if flag == constants.AUTO else flag == "on"
