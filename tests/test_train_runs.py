"""Training runs on the demo digits, each in its own process as a user would start it: learning,
SIGKILL and resume, MirroredStrategy over two logical CPUs, two MultiWorkerMirroredStrategy
workers on 127.0.0.1, and the command line's one-line errors."""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf.data import demo
from bl_net_tf.training.progress import parse_eval_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train_imagenet.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
ENV.pop("TF_CONFIG", None)
# bl-resnet50 on 32x32 digits, batch 32 (the demo defaults): the smallest real configuration.
SMALL = ["--arch=bl-resnet50", "--alpha=2", "--beta=4"]
TIMEOUT = 900


@pytest.fixture(scope="module", autouse=True)
def digits():
    """The demo data set, made once (it is cached for every later run)."""
    return demo.prepare()


def val_images(root) -> int:
    return len(glob.glob(os.path.join(root, "val", "*", "*")))


def train_cli(*args, env=ENV, **kwargs):
    return subprocess.run([sys.executable, TRAIN, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, **kwargs)


def last_eval(stdout: str) -> dict:
    return parse_eval_line(stdout.strip().splitlines()[-1])


def read_scalars(log_dir: str, tag: str) -> dict:
    """{step: value} of one TensorBoard scalar, read back from the event files."""
    values = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def checkpoint_value(path: str, name: str):
    return tf.train.load_variable(path, f"{name}/.ATTRIBUTES/VARIABLE_VALUE")


def test_killed_run_resumes_at_its_checkpoint_learns_and_exports(tmp_path, digits):
    model_dir, export_dir = tmp_path / "run", tmp_path / "export" / "1"
    args = SMALL + ["--epochs=4", "--steps_per_epoch=25", "--eval_every_epochs=4", "--seed=3",
                    f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO, env=ENV, stdout=log, stderr=log)
        deadline = time.monotonic() + TIMEOUT
        while tf.train.latest_checkpoint(str(model_dir)) is None and first.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    saved = tf.train.latest_checkpoint(str(model_dir))
    assert saved.endswith("ckpt-25") and checkpoint_value(saved, "step") == 25

    second = train_cli(*args)  # the same command again
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from {saved} at step 25" in second.stderr
    final = tf.train.latest_checkpoint(str(model_dir))
    assert final.endswith("ckpt-100")
    # 25 steps before the kill + 75 after: the optimizer took exactly the configured 100 steps.
    assert checkpoint_value(final, "step") == 100 and checkpoint_value(final, "optimizer/_iterations") == 100
    assert checkpoint_value(final, "epoch") == 4
    result = last_eval(second.stdout)
    assert result["images"] == val_images(digits)
    # Learned in 100 steps: well below chance (0.9 and 0.5); the 20-epoch demo gets to ~0.03. With
    # --seed the run is repeated exactly (file order, augmentation, initialisation), so the result
    # cannot change between runs here; the bounds sit clear of what other seeds give, as another
    # machine's rounding may: seeds 0-6 (this test's flow) gave top1 0.60-0.72, top5 0.11-0.23.
    assert result["top1_err"] < 0.8 and result["top5_err"] < 0.35
    assert "skipping checkpoint" not in second.stderr  # ckpt-25 was complete: no fallback
    assert os.path.isfile(export_dir / "saved_model.pb")
    # TensorBoard: the training loss fell, and the validation error was logged at the end.
    losses = read_scalars(str(model_dir / "train"), "loss")
    assert np.mean([losses[s] for s in (10, 20)]) > np.mean([losses[s] for s in (90, 100)])
    assert read_scalars(str(model_dir / "eval"), "top1_err")[100] == pytest.approx(result["top1_err"], abs=1e-4)


# A small conv net with BN (its batch statistics are per replica) stands in for the model where the
# point is the distribution, not the architecture; the kill/resume test above runs bl-resnet50.
SCRIPT_HEADER = textwrap.dedent("""
    import json, logging, sys
    import keras, tensorflow as tf
    from keras import layers
    from bl_net_tf import training

    logging.basicConfig(level=logging.INFO)

    def small(num_classes, input_shape, data_format, batch_norm=True):
        inputs = keras.Input(input_shape)
        x = layers.Rescaling(1 / 255.0)(inputs)
        for i, width in enumerate((16, 32)):
            x = layers.Conv2D(width, 3, strides=2, use_bias=not batch_norm, name=f"conv{i}")(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{i}")(x)
            x = layers.ReLU()(x)
        x = layers.GlobalAveragePooling2D()(x)
        fc = layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="fc")
        return keras.Model(inputs, fc(x))  # tiny initial logits, as the registry's models

    def config(model_dir, **fields):
        fields = dict(dict(epochs=1, steps_per_epoch=16, seed=0, log_steps=1, model_dir=model_dir), **fields)
        return training.resolve(training.TrainConfig(**fields), set(fields))
""")

MIRRORED = SCRIPT_HEADER + textwrap.dedent("""
    import functools
    import numpy as np
    import bl_net_tf.data
    from bl_net_tf.data import demo
    from bl_net_tf.training import steps
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    root = sys.argv[1]
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    try:
        training.run(config(root + "/odd", batch_size=33), mirrored, model_fn=small)
    except ValueError as error:
        print("odd batch:", error)
    results = {}

    # 1. The distributed step on fixed batches, without BN: one device and two replicas must
    # compute the same losses and updates (an unaveraged gradient would double every step).
    val = bl_net_tf.data.imagenet_dataset(demo.prepare(), "val", 32, image_size=32)
    images, labels = (np.concatenate(t) for t in zip(*[(x.numpy(), y.numpy()) for x, y in val.take(4)]))
    for name, strategy in [("one", one_device), ("two", mirrored)]:
        session = training.build(config(f"{root}/step_{name}", lr=0.2), strategy,
                                 model_fn=functools.partial(small, batch_norm=False))
        batches = strategy.distribute_datasets_from_function(
            lambda context: tf.data.Dataset.from_tensor_slices((images, labels)).batch(
                context.get_per_replica_batch_size(32)))
        step = steps.make_train_step(strategy, session.model, session.optimizer, global_batch=32)
        iterator = iter(batches)
        before = np.concatenate([v.numpy().ravel() for v in session.model.trainable_variables])
        losses = [float(step(iterator, tf.constant(0.0))[0]) / 32 for _ in range(4)]
        after = np.concatenate([v.numpy().ravel() for v in session.model.trainable_variables])
        results["step_" + name] = dict(losses=losses, before=before.tolist(), after=after.tolist())

    # 2. Whole runs with BN, through the input pipeline: comparable courses; each replica
    # normalises by its own 16 images; the moving averages are the replicas' mean, in both copies
    # and in the checkpoint, so that --eval_only on the checkpoint gives the run's last evaluation.
    for name, strategy in [("one", one_device), ("two", mirrored)]:
        session = training.build(config(f"{root}/{name}", lr=0.2), strategy, model_fn=small)
        errors = training.train(session)
        moving_mean = session.model.get_layer("bn0").moving_mean.value
        again = training.run(config(f"{root}/{name}", lr=0.2, eval_only=True), strategy, model_fn=small)
        results[name] = dict(images=errors.images, end=errors.line(), eval_only=again.line(), moving_means=[
            v.numpy().tolist() for v in strategy.experimental_local_results(moving_mean)])
    print(json.dumps(results))
""")


def run_script(path, *args, env=ENV):
    return subprocess.Popen([sys.executable, str(path), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_mirrored_over_two_cpus_matches_one_device(tmp_path, digits):
    (tmp_path / "mirrored.py").write_text(MIRRORED)
    out, err = run_script(tmp_path / "mirrored.py", str(tmp_path)).communicate(timeout=TIMEOUT)
    assert "odd batch: batch_size 33 must be divisible by the 2 replicas" in out, err[-3000:]
    runs = json.loads(out.strip().splitlines()[-1])
    step_one, step_two = runs["step_one"], runs["step_two"]
    assert step_two["losses"] == pytest.approx(step_one["losses"], abs=1e-5)
    before, after_one, after_two = (np.asarray(w) for w in (step_one["before"], step_one["after"], step_two["after"]))
    np.testing.assert_array_equal(step_two["before"], before)
    moved, apart = np.linalg.norm(after_one - before), np.linalg.norm(after_two - after_one)
    assert moved > 0.1 and apart < 1e-4 * moved, (apart, moved)

    assert runs["one"]["images"] == runs["two"]["images"] == val_images(digits)  # a partial last batch
    one = read_scalars(str(tmp_path / "one" / "train"), "loss")
    two = read_scalars(str(tmp_path / "two" / "train"), "loss")
    assert sorted(one) == sorted(two) == list(range(1, 17))
    assert two[1] == pytest.approx(one[1], abs=0.01)  # tiny initial logits: ln(10) up to BN and crops
    assert np.mean(np.abs([two[s] - one[s] for s in one])) < 0.1
    replica0, replica1 = runs["two"]["moving_means"]
    assert replica0 == replica1
    for name in ("one", "two"):
        assert runs[name]["eval_only"] == runs[name]["end"]


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER = SCRIPT_HEADER + textwrap.dedent("""
    errors = training.run(config(sys.argv[1], steps_per_epoch=4, batch_size=16, gpus=0), model_fn=small)
    print(errors.line())
""")


def test_two_multiworker_processes_train_checkpoint_and_evaluate(tmp_path, digits):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    model_dir = tmp_path / "run"
    (tmp_path / "worker.py").write_text(WORKER)
    procs = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                               "task": {"type": "worker", "index": index}})}
        procs.append(run_script(tmp_path / "worker.py", str(model_dir), env=env))
    results = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert "multi-worker training: 2 workers (this is worker 0), 2 replicas in total" in results[0][1]
    chief, other = (parse_eval_line(out.strip().splitlines()[-1]) for out, _ in results)
    assert chief == other and chief["images"] == val_images(digits)  # each read half; the sums are global
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-4")
    assert not os.path.exists(model_dir / ".worker1")  # the other worker's scratch copy is gone
    losses = read_scalars(str(model_dir / "train"), "loss")
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))


def test_a_bad_flag_is_one_error_line_and_a_nonzero_exit():
    result = train_cli("--arch=bl-resnet42")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("bl-net-train: error: unknown arch 'bl-resnet42'; "
                                                             "allowed: ")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def app():
    """What train_imagenet.py and bl-net-train run, in this process."""
    from bl_net_tf.training import cli

    return lambda *argv: cli.main(list(argv))


def test_bad_input_fails_with_one_line(app, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "train" / "n01").mkdir(parents=True)
    (empty / "val").mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("")
    mismatch = tmp_path / "mismatch"  # a val class that train lacks; no val/ at all
    for split, digits in (("train", (0, 1)), ("val", (0, 1, 5))):
        for digit in digits:
            shutil.copytree(os.path.join(demo.prepare(), split, f"digit_{digit}"), mismatch / split / f"digit_{digit}")
    shutil.copytree(mismatch / "train", tmp_path / "no_val" / "train")
    damaged = tmp_path / "damaged"  # checkpoints, none restorable
    damaged.mkdir()
    (damaged / "ckpt-45.index").write_bytes(b"garbage")
    (damaged / "ckpt-90.data-00000-of-00001").write_bytes(b"garbage")
    cases = [
        (["--data_dir=/no/such/dir"], "error: data_dir '/no/such/dir' does not exist"),
        ([f"--data_dir={empty}"], "error: No images in"),
        (["--arch=resnet7"], "error: unknown arch 'resnet7'"),
        (["--gpus=4", "--demo"], "error: --gpus=4 but only 0 GPU(s) exist"),  # without --demo: no ImageNet
        ([f"--model_dir={a_file}/run"], f"error: model_dir '{a_file}/run' is not writable"),
        ([f"--model_dir={tmp_path}/m", f"--export_dir={a_file}/x/1"], f"error: export_dir's parent '{a_file}/x'"),
        (["--epochs=2", "--warmup_epochs=5"], "error: warmup_epochs must be in [0, epochs=2)"),
        (["--data_format=channels_first", "--gpus=0"], "error: data_format=channels_first needs a GPU"),
        ([f"--model_dir={tmp_path}/none", "--eval_only"], "error: --eval_only: no checkpoint in"),
        ([f"--data_dir={mismatch}"], "error: The val class digit_5 "),
        ([f"--data_dir={tmp_path}/no_val"], f"error: {tmp_path}/no_val has no val split"),
        ([f"--model_dir={damaged}"], f"error: no checkpoint of {damaged} can be restored: {damaged}/ckpt-90 is "
                                     f"unreadable"),
        ([f"--model_dir={damaged}", "--start_fresh", "--eval_only"], "error: start_fresh trains from step 0"),
    ]
    for argv, message in cases:
        assert app(*argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith(f"bl-net-train: {message}"), (argv, err[-1:])
        assert not any(line.startswith("Traceback") for line in err), argv
