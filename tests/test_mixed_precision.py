"""The GPU's graph without a GPU: channels_first + XLA in float32, float16 and bfloat16 for each model
family, on one device and on MirroredStrategy over two logical CPUs, with the trainer's own step,
optimizer and loss scaling; a channels_first run resumed as channels_last; the preflight doctor.

XLA's CPU backend compiles the NCHW graph a GPU runs. Full-size models take 30-40 s each to compile
on 2 cores, so the families are checked on their miniatures (models/miniature.py: the registry's
builders at a few channels, with every dtype- and layout-relevant layer). The XLA work runs in two
worker processes side by side (logical CPUs must be set up before TensorFlow starts, and one worker
per core halves the wait), compiled with ``--xla_backend_optimization_level=0``: the HLO graph, where
the dtype errors show, is the same; only LLVM spends less time optimising the machine code.

MirroredStrategy runs float16, the one precision whose step differs across replicas (the loss scale
and its skipped steps), on the smallest miniature (ShuffleNet's: a bL stage, BN, pooling, the head);
each replica's graph is the one-device graph, which every family and precision runs here.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf import doctor
from bl_net_tf.data import demo
from bl_net_tf.models import grouped_conv
from bl_net_tf.models.layers import ResizeLike
from bl_net_tf.training import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 900
FAMILIES = ("resnet", "speech", "shufflenet")
PRECISIONS = ("none", "float16", "bfloat16")
COMPUTE_DTYPES = {"none": "float32", "float16": "float16", "bfloat16": "bfloat16"}
# The families each worker trains on one device (every precision) and on two replicas (float16),
# split so that both workers take about as long; "b" also runs the vote and the resumed run.
PARTS = {"a": dict(one=("resnet",), two=("shufflenet",)),
         "b": dict(one=("speech", "shufflenet"), two=())}
TWO_REPLICAS = tuple(family for spec in PARTS.values() for family in spec["two"])

WORKER = textwrap.dedent("""
    import glob, json, logging, sys, time
    import keras, numpy as np, tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bl_net_tf import doctor, training
    from bl_net_tf.data import demo
    from bl_net_tf.models import miniature
    from bl_net_tf.training.optimizer import DynamicLossScale, NesterovMomentum

    logging.basicConfig(level=logging.INFO)
    one_device, two_replicas, root = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
    ONE = tf.distribute.OneDeviceStrategy("/cpu:0")
    TWO = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    BATCH, STEPS = 8, 2
    results = {}

    def values(variables):
        return {v.path: np.array(v.numpy(), dtype="float64") for v in variables}

    def local(strategy, variable):
        return [np.asarray(t).tolist() for t in strategy.experimental_local_results(variable.value)]

    def overflow(strategy, model, optimizer, step):
        # A loss scale of 2^40 overflows the float16 gradients: every replica must skip the step
        # (weights unchanged), halve the scale, and still count the step for the schedule.
        before, iterations = values(model.trainable_variables), int(optimizer.iterations.numpy())
        optimizer.dynamic_scale.assign(2.0 ** 40)
        loss = step()
        after = values(model.trainable_variables)
        return dict(loss=loss, moved=max(float(np.abs(after[k] - before[k]).max()) for k in before),
                    scales=local(strategy, optimizer.dynamic_scale),
                    counted=int(optimizer.iterations.numpy()) - iterations)

    def train(family, strategy, data_format, xla, precision, init=None):
        began = time.perf_counter()
        keras.utils.set_random_seed(0)  # the same initial weights in every run (see the equality test)
        model, optimizer = doctor.build(family, strategy, data_format=data_format, precision=precision)
        if init is not None:
            for v in model.weights:
                v.assign(init[v.path])
        start = values(model.weights)
        step = doctor.stepper(strategy, model, optimizer, doctor.batches(family, BATCH), jit_compile=xla)
        result = dict(losses=[step() for _ in range(STEPS)],
                      variable_dtypes=sorted({v.dtype for v in model.weights}),
                      compute_dtypes=sorted({layer.compute_dtype for layer in model.layers if layer.weights}),
                      logits_dtype=model.output.dtype,
                      replicas_apart=max(float(np.ptp(local(strategy, v), axis=0).max())
                                         for v in model.trainable_variables))
        end = values(model.weights)
        if precision == "float16":
            result["overflow"] = overflow(strategy, model, optimizer, step)
        result["seconds"] = time.perf_counter() - began
        print(family, strategy.num_replicas_in_sync, data_format, xla, precision, f"{result['seconds']:.1f} s",
              file=sys.stderr, flush=True)
        return result, start, end

    def difference(start, a_end, b_end):
        a = np.concatenate([(a_end[k] - start[k]).ravel() for k in sorted(start)])
        b = np.concatenate([(b_end[k] - start[k]).ravel() for k in sorted(start)])
        return float(np.linalg.norm(a - b) / np.linalg.norm(a))

    for family in [f for f in one_device if f]:
        # The channels_first + XLA float32 step against the channels_last one on TF's CPU kernels,
        # from the same weights on the same batch.
        last, start, last_end = train(family, ONE, "channels_last", False, "none")
        first, _, first_end = train(family, ONE, "channels_first", True, "none", init=start)
        results[f"{family}/one/none"] = first
        results[f"{family}/equal"] = dict(
            paths=sorted(first_end) == sorted(last_end), update_difference=difference(start, last_end, first_end),
            loss_difference=max(abs(a - b) for a, b in zip(first["losses"], last["losses"])))
        for precision in ("float16", "bfloat16"):
            results[f"{family}/one/{precision}"] = train(family, ONE, "channels_first", True, precision)[0]
    for family in [f for f in two_replicas if f]:
        results[f"{family}/two/float16"] = train(family, TWO, "channels_first", True, "float16")[0]

    if "--vote" in sys.argv:
        # Only the second replica's gradient overflows: both replicas must skip (Keras's own
        # LossScaleOptimizer decides on the first replica's and writes -inf into every weight).
        with TWO.scope():
            w = keras.Variable(np.ones(3, "float32"), name="kernel")
            optimizer = DynamicLossScale(NesterovMomentum(0.1))
            optimizer.build([w])

        @tf.function
        def apply(bad_replica):
            def replica_fn():
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                optimizer.apply_gradients([(tf.where(tf.equal(replica, bad_replica), np.inf, 1.0) * tf.ones([3]), w)])
            TWO.run(replica_fn)

        results["vote"] = []
        for bad in (1, -1):
            apply(tf.constant(bad))
            results["vote"].append(dict(weights=local(TWO, w), scales=local(TWO, optimizer.dynamic_scale),
                                        iterations=int(optimizer.iterations.numpy())))

    if "--resume" in sys.argv:
        # A run written channels_first with XLA (a GPU's) resumes channels_last without XLA (a CPU's).
        def model_fn(num_classes, input_shape, data_format):
            return miniature.build("shufflenet", data_format=data_format, num_classes=num_classes,
                                   image_size=input_shape[0])

        # The whole validation set is one batch: an XLA-compiled evaluation then compiles once (a
        # partial last batch would be a second shape, a second compile).
        val_images = len(glob.glob(demo.prepare() + "/val/*/*"))

        def config(epochs, data_format, xla):
            fields = dict(epochs=epochs, steps_per_epoch=2, warmup_epochs=0.0, seed=0, model_dir=root + "/run",
                          data_format=data_format, xla=xla, gpus=0, batch_size=val_images)
            return training.resolve(training.TrainConfig(**fields), explicit=set(fields))

        first = training.build(config(1, "channels_first", "on"), ONE, model_fn=model_fn)
        first_errors = training.train(first)
        second = training.build(config(2, "channels_last", "off"), ONE, model_fn=model_fn)
        saved, restored = values(first.model.weights), values(second.model.weights)
        results["resume"] = dict(
            formats=[s.model.get_layer("stem_conv").data_format for s in (first, second)],
            jit=[first.jit_compile, second.jit_compile], resumed_at=int(second.step.numpy()),
            weights_equal=sorted(saved) == sorted(restored) and all(np.array_equal(saved[k], restored[k]) for k in saved),
            optimizer_equal=all(np.array_equal(a.numpy(), b.numpy())
                                for a, b in zip(first.optimizer.variables, second.optimizer.variables)),
            first_images=first_errors.images)
        errors = training.train(second)
        results["resume"].update(final_step=int(second.step.numpy()), iterations=int(second.optimizer.iterations.numpy()),
                                 images=errors.images, top1_err=errors.top1_err)
    print(json.dumps(results))
""")


class Workers:
    """The two worker processes, started together; ``workers[part]`` waits for one and returns its
    results."""

    def __init__(self, tmp_path_factory):
        self._results = {}
        self._procs = {}
        # Read now, not at import: conftest.py's session fixture has set the environment by then.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
               "XLA_FLAGS": "--xla_backend_optimization_level=0"}
        env.pop("TF_CONFIG", None)
        for part, spec in PARTS.items():
            tmp = tmp_path_factory.mktemp(f"worker_{part}")
            (tmp / "worker.py").write_text(WORKER)
            extra = ["--vote", "--resume"] if part == "b" else []
            self._procs[part] = subprocess.Popen(
                [sys.executable, str(tmp / "worker.py"), ",".join(spec["one"]), ",".join(spec["two"]), str(tmp), *extra],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __getitem__(self, part) -> dict:
        if part not in self._results:
            out, err = self._procs[part].communicate(timeout=TIMEOUT)
            assert self._procs[part].returncode == 0, err[-3000:]
            self._results[part] = json.loads(out.strip().splitlines()[-1])
        return self._results[part]

    def one_device(self, family) -> dict:
        return self[next(p for p, spec in PARTS.items() if family in spec["one"])]

    def two_replicas(self, family) -> dict:
        return self[next(p for p, spec in PARTS.items() if family in spec["two"])]

    def stop(self):
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def workers(tmp_path_factory):
    """Started before the first test of the module, so that the in-process tests run meanwhile."""
    demo.prepare()  # the resume run trains on the demo digits; made once, cached
    started = Workers(tmp_path_factory)
    yield started
    started.stop()


# ---- in this process, while the workers compile --------------------------------------------------

def test_bilinear_upsampling_keeps_the_compute_dtype_in_both_directions_under_xla():
    """The issue's first failure in one layer: ResizeBilinear returns float32, and XLA's gradient of
    it did too, which a float16 graph cannot add to ("Seen floating point types of different
    precisions")."""
    layer = ResizeLike("bilinear", "channels_first", dtype="mixed_float16")
    small = tf.cast(tf.random.stateless_normal((2, 3, 4, 4), seed=(1, 2)), "float16")
    large = tf.zeros((2, 3, 8, 8), "float16")

    @tf.function(jit_compile=True)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer([x, large])
            # x also feeds a convolution: its gradient adds the two, as a Big-Little merge's does.
            side = tf.nn.conv2d(x, tf.ones((1, 1, 3, 3), "float16"), 1, "SAME", data_format="NCHW")
            total = tf.reduce_sum(y * y) + tf.reduce_sum(side)
        return y, tape.gradient(total, x)

    y, grad = forward_backward(small)
    assert y.dtype == grad.dtype == tf.float16 and y.shape == (2, 3, 8, 8)
    assert np.isfinite(grad.numpy()).all()


def test_grouped_convs_take_the_gpus_fused_op_under_xla_and_a_working_cpu_op_outside():
    seen = []

    def resolve():
        seen.append(grouped_conv.resolve_implementation("auto", "float16"))
        return tf.constant(0)

    tf.function(resolve, jit_compile=True)()
    tf.function(resolve)()
    assert seen[0] == "fused"  # XLA compiles float16 grouped convolutions (and their gradients)
    # Outside XLA: the fused op only where the CPU kernels have float16 grouped gradients (not oneDNN's).
    assert seen[1] == ("fused" if grouped_conv.cpu_runs_grouped_conv("float16") else "split")
    assert grouped_conv.cpu_runs_grouped_conv("float32")  # oneDNN, on by default on x86 Linux


def test_channels_first_is_accepted_on_a_cpu_only_with_xla():
    assert distribute.resolve_data_format("channels_first", on_gpu=False, xla=True) == "channels_first"
    with pytest.raises(ValueError, match=r"^data_format=channels_first needs a GPU \(TensorFlow's CPU convolutions "
                                         r"are channels_last only\); use --data_format=auto$"):
        distribute.resolve_data_format("channels_first", on_gpu=False, xla=False)


def test_doctor_reports_the_node_and_trains_the_trainers_choice(capsys):
    assert doctor.main(["--families=shufflenet", "--precisions=none,float16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"TensorFlow {tf.__version__} (") and f"Keras {keras.__version__}" in out[0]
    for label in ("cuDNN:", "GPUs:", "NCCL:", "XLA:       compiles and runs on CPU:0", "oneDNN:", "trainer:   1 CPU"):
        assert any(line.startswith(label) for line in out), (label, out)
    verdicts = [line for line in out if line.startswith(("ok", "FAIL"))]
    assert [line.split()[:6] for line in verdicts] == [
        ["ok", "shufflenet", "channels_last", "XLA", "off", dtype] for dtype in ("float32", "float16")]
    assert all(" loss " in line for line in verdicts) and "(loss scale 2^" in verdicts[1]
    assert out[-1] == "all of 2 combinations train"


def test_doctor_says_in_one_line_what_failed_and_refuses_bad_flags(capsys):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    # Without XLA, TF's CPU kernels have no float16 NCHW convolution: the combination fails at its step.
    ok, detail = doctor.check(doctor.Combination("shufflenet", "channels_first", False, "float16"), strategy)
    assert not ok and re.match(r"(Unimplemented|InvalidArgument)Error: .*NHWC", detail) and "\n" not in detail
    assert doctor.main(["--data_format=channels_first", "--xla=off"]) == 1
    assert capsys.readouterr().err.strip() == ("bl-net-doctor: error: data_format=channels_first needs a GPU "
                                               "(TensorFlow's CPU convolutions are channels_last only); use "
                                               "--data_format=auto")
    assert doctor.main(["--precisions=float8"]) == 2
    assert capsys.readouterr().err.strip() == ("bl-net-doctor: error: flag --precisions=['float8']: allowed: one or "
                                               "more of none, float16, bfloat16, comma-separated")


# ---- the workers' results ------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_channels_first_xla_float32_step_equals_the_channels_last_step(workers, family):
    equal = workers.one_device(family)[f"{family}/equal"]
    assert equal["paths"]  # every variable has the same path in both layouts
    # Two steps from the same weights on the same batch: oneDNN's NHWC kernels against XLA's NCHW
    # ones differ by float32 rounding, which the second step can magnify where an activation near
    # zero changes sign between the two kernels. Measured with the seeded weights: 8e-7 (shufflenet),
    # 1e-6 (resnet), 2.6e-5 (speech) of the update, losses within 1e-6. Unseeded, the speech
    # miniature's 16-channel stem gave 3e-6 to 8e-3 over ten initialisations, so the weights are seeded.
    assert equal["update_difference"] < 1e-3 and equal["loss_difference"] < 1e-4, equal


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_channels_first_with_xla_on_one_device(workers, family, precision):
    result = workers.one_device(family)[f"{family}/one/{precision}"]
    assert np.isfinite(result["losses"]).all(), result["losses"]
    assert result["variable_dtypes"] == ["float32"]
    # Every layer computes in the policy's dtype but the logits layer, which stays float32.
    assert result["compute_dtypes"] == sorted({COMPUTE_DTYPES[precision], "float32"})
    assert result["logits_dtype"] == "float32"
    if precision == "float16":
        _assert_skipped(result["overflow"], replicas=1)


@pytest.mark.parametrize("family", TWO_REPLICAS)
def test_float16_trains_channels_first_with_xla_on_two_replicas(workers, family):
    result = workers.two_replicas(family)[f"{family}/two/float16"]
    assert np.isfinite(result["losses"]).all(), result["losses"]
    assert result["replicas_apart"] == 0  # the same all-reduced update on both replicas
    _assert_skipped(result["overflow"], replicas=2)


def _assert_skipped(overflow, replicas):
    assert np.isfinite(overflow["loss"]) and overflow["moved"] == 0, overflow
    assert overflow["scales"] == [2.0 ** 39] * replicas and overflow["counted"] == 1, overflow


def test_loss_scaling_skips_on_every_replica_when_one_overflows(workers):
    skipped, applied = workers["b"]["vote"]
    assert skipped["weights"] == [[1.0] * 3] * 2 and skipped["scales"] == [2.0 ** 14] * 2
    assert skipped["iterations"] == 1  # counted: the schedule stays on the global step
    assert applied["weights"][0] == applied["weights"][1] and max(applied["weights"][0]) < 1.0
    assert applied["iterations"] == 2


def test_a_channels_first_xla_run_resumes_as_channels_last(workers):
    resume = workers["b"]["resume"]
    assert resume["formats"] == ["channels_first", "channels_last"] and resume["jit"] == [True, False]
    assert resume["resumed_at"] == 2 and resume["weights_equal"] and resume["optimizer_equal"], resume
    assert resume["final_step"] == resume["iterations"] == 4
    assert resume["images"] == resume["first_images"] > 0 and 0 <= resume["top1_err"] <= 1
