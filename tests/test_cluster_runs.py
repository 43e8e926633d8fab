"""Scale-out and preemption, as clusters run the trainer: two tasks started the way ``srun`` starts
them (SLURM_* variables, no TF_CONFIG) training the demo together, SIGTERM in the middle of an
epoch saving the step reached and the same command resuming there; the Slurm task layout and the
signal handling on their own."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from bl_net_tf.data import demo
from bl_net_tf.training import distribute
from bl_net_tf.training.preemption import StopRequest
from bl_net_tf.training.progress import parse_eval_line
from test_train_runs import WORKER, read_scalars, run_script, val_images  # the TF_CONFIG test's worker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train_imagenet.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
ENV.pop("TF_CONFIG", None)
for name in [name for name in ENV if name.startswith("SLURM_")]:  # the suite may itself run under Slurm
    ENV.pop(name)
TIMEOUT = 600
GRACE = 60  # seconds: the longest grace period a cluster gives between SIGTERM and SIGKILL


@pytest.fixture(scope="module", autouse=True)
def digits():
    return demo.prepare()


def free_port_pair() -> int:
    """A port p with p + 1 also free (srun's two tasks on one node listen on p and p + 1)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free ports")


def latest_step(model_dir) -> int:
    path = tf.train.latest_checkpoint(str(model_dir))
    return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE")) if path else 0


def test_two_srun_tasks_train_the_demo_together(tmp_path):
    """The demo digits for an epoch of 4 steps; a small network, as the TF_CONFIG test next door."""
    port = free_port_pair()
    model_dir = tmp_path / "run"
    (tmp_path / "worker.py").write_text(WORKER)
    procs = []
    for rank in range(2):  # what srun --ntasks=2 sets for each task of a one-node step
        env = {**ENV, "SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "localhost",
               "SLURM_STEP_TASKS_PER_NODE": "2", distribute.SLURM_PORT_ENV: str(port)}
        procs.append(run_script(tmp_path / "worker.py", str(model_dir), env=env))
    results = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    for rank, (_, err) in enumerate(results):
        assert (f"multi-worker training: 2 workers (this is worker {rank}), 2 replicas in total; "
                f"cluster from Slurm (srun)") in err
    chief, other = (parse_eval_line(out.strip().splitlines()[-1]) for out, _ in results)
    assert chief == other and chief["images"] == val_images(demo.prepare())  # each read half; sums are global
    # The shared model_dir: the chief's checkpoint and TensorBoard logs; no scratch copy left.
    assert latest_step(model_dir) == 4
    assert sorted(read_scalars(str(model_dir / "train"), "loss")) == [1, 2, 3, 4]
    assert not [name for name in os.listdir(model_dir) if name.startswith(".")]


def test_sigterm_saves_the_step_reached_and_the_same_command_resumes_there(tmp_path):
    model_dir = tmp_path / "run"
    log_path = tmp_path / "train.log"
    # 50 epochs: the run is still training when the signal comes, however slow the machine.
    command = [sys.executable, TRAIN, "--epochs=50", "--steps_per_epoch=10", "--batch_size=8",
               "--eval_every_epochs=50", "--seed=0", f"--model_dir={model_dir}"]
    with open(log_path, "w") as log:
        run = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while latest_step(model_dir) < 10:  # the end of epoch 1
            assert run.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        signalled = time.monotonic()
        run.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        run.send_signal(signal.SIGTERM)  # a second one changes nothing
        status = run.wait(timeout=TIMEOUT)
    took = time.monotonic() - signalled
    text = log_path.read_text()
    assert status == 128 + signal.SIGTERM, text[-3000:]
    assert took < GRACE
    saved = latest_step(model_dir)
    assert 10 < saved < 500  # past the epoch-1 checkpoint, in the middle of the run
    path = tf.train.latest_checkpoint(str(model_dir))
    assert path.endswith(f"ckpt-{saved}")
    assert tf.train.load_variable(path, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == saved
    epoch = (saved - 1) // 10 + 1
    assert f"stopped: SIGTERM at step {saved} (epoch {epoch}): step {saved} is saved in {model_dir}" in text

    # The same command again: it restores exactly that step. Stopped before its first step has
    # finished, it ends at once (nothing new to save), leaving the checkpoint as it was.
    with open(log_path, "w") as log:
        again = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while f"resumed from {path} at step {saved}" not in log_path.read_text():
            assert again.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        again.send_signal(signal.SIGTERM)
        status = again.wait(timeout=TIMEOUT)
    # -SIGTERM when the signal came before the first step; after it, a save of the step reached.
    assert status in (-signal.SIGTERM, 128 + signal.SIGTERM), log_path.read_text()[-3000:]
    resumed = latest_step(model_dir)
    assert resumed == saved or (status > 0 and resumed > saved)
    final = tf.train.latest_checkpoint(str(model_dir))
    assert tf.train.load_variable(final, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == resumed


def test_a_stop_request_takes_the_first_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        stop.arm()
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # handled before raise_signal returns
        assert stop.requested and stop.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)  # ignored: the first one's save is under way
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after a signal: stop now
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with StopRequest() as stop:  # not armed: the handlers stay as they were
        assert signal.getsignal(signal.SIGTERM) == before[0]


def test_slurm_tasks_get_their_ports_and_their_share_of_the_gpus(monkeypatch):
    # Rank 3 of 2 nodes x 2 tasks: the second task of n2.
    for name, value in {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]",
                        "SLURM_STEP_TASKS_PER_NODE": "2(x2)", distribute.SLURM_PORT_ENV: "31000"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.slurm_tasks() == 4
    resolver, on_node, local_index = distribute.slurm_cluster()
    assert resolver.cluster_spec().as_dict() == {"worker": ["n1:31000", "n1:31001", "n2:31000", "n2:31001"]}
    assert (resolver.task_type, resolver.task_id, on_node, local_index) == ("worker", 3, 2, 1)
    gpus = [f"GPU:{i}" for i in range(8)]
    assert distribute.task_gpus(gpus, None, on_node, local_index) == gpus[4:]  # half the node's 8
    assert distribute.task_gpus(gpus, 2, on_node, local_index) == ["GPU:2", "GPU:3"]
    assert distribute.task_gpus(gpus[:1], None, on_node, local_index) == ["GPU:0"]  # --gpus-per-task=1
    assert distribute.task_gpus([], None, on_node, local_index) == []  # CPU nodes
    with pytest.raises(ValueError, match="2 Slurm tasks on a node with --gpus=6 need 12 GPUs, it has 8"):
        distribute.task_gpus(gpus, 6, on_node, local_index)
    monkeypatch.setenv(distribute.SLURM_PORT_ENV, "http")
    with pytest.raises(ValueError, match="BL_NET_TF_SLURM_PORT must be a port number, got 'http'"):
        distribute.slurm_cluster()
    monkeypatch.setenv(distribute.SLURM_PORT_ENV, "31000")
    monkeypatch.delenv("SLURM_STEP_NODELIST")
    with pytest.raises(ValueError, match="cannot read the Slurm job step: SLURM_STEP_NODELIST not found"):
        distribute.slurm_cluster()
