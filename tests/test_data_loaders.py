"""Both loaders on real photographs in ImageNet's layouts, with ImageNet's bad files.

The folder holds, next to JPEG photographs, a PNG named .JPEG, a CMYK JPEG and a
grayscale JPEG (all readable) and a truncated JPEG, an empty file and a JPEG whose
header and end marker are intact but whose Huffman table is corrupt (skipped, named
and counted). The same images are also written as TFRecord shards and as a prepared
TFDS imagenet2012.
"""
import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from faults import SilentDataFlow, corrupt_body, dead_worker
from PIL import Image

from bl_net_tf import training
from bl_net_tf.data import SkippedFiles, benchmark, imagenet_dataset, tensorpack_loader
from bl_net_tf.data.records import COUNTS_FILE
from bl_net_tf.training import inputs

PHOTOS = {"n01440764": "astronaut", "n02123045": "chelsea", "n07920052": "coffee"}
SIZE = 32  # training crop and evaluation size
TRAIN_PHOTOS, VAL_PHOTOS = 4, 2
# (file name, class index, kind): odd but readable files, then the bad ones.
ODD_FILES = [("odd_png.JPEG", 0, "png"), ("odd_cmyk.JPEG", 1, "cmyk"),
             ("odd_grey.JPEG", 2, "grey")]
BAD_FILES = [("bad_truncated.JPEG", 1, "truncated"), ("bad_empty.JPEG", 2, "empty"),
             ("bad_corrupt_body.JPEG", 0, "corrupt_body")]
VAL_FILES = 3 * VAL_PHOTOS + len(ODD_FILES) + len(BAD_FILES)


def _encoded(photo: np.ndarray, kind: str) -> bytes:
    image = Image.fromarray(photo)
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, "PNG")
    elif kind == "cmyk":
        image.convert("CMYK").save(buffer, "JPEG", quality=90)
    elif kind == "grey":
        image.convert("L").save(buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    if kind == "corrupt_body":
        return corrupt_body(data)
    return {"truncated": data[: len(data) // 2], "empty": b""}.get(kind, data)


def _view(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 75% crop of ``photo``, resized to a small 48x64 or 64x48 picture."""
    h, w = photo.shape[:2]
    ch, cw = int(h * 0.75), int(w * 0.75)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    size = (64, 48) if rng.uniform() < 0.75 else (48, 64)
    return np.asarray(Image.fromarray(photo[y:y + ch, x:x + cw]).resize(size, Image.BICUBIC))


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """An ImageNet folder; returns (root, {split: [(path, label), ...] readable files})."""
    root = str(tmp_path_factory.mktemp("imagenet"))
    rng = np.random.default_rng(0)
    wnids = sorted(PHOTOS)
    photos = [getattr(skimage.data, PHOTOS[w])() for w in wnids]
    readable = {"train": [], "val": []}
    for split, count in (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS)):
        files = [(f"{wnids[c]}_{i}.JPEG", c, "jpeg") for c in range(3) for i in range(count)]
        for name, label, kind in files + ODD_FILES + BAD_FILES:
            path = os.path.join(root, split, wnids[label], name)
            _write(path, _encoded(_view(photos[label], rng), kind))
            if not name.startswith("bad_"):
                readable[split].append((path, label))
        readable[split].sort()
    return root, readable


def _bad_paths(root, split):
    return sorted(os.path.join(root, split, sorted(PHOTOS)[c], n) for n, c, _ in BAD_FILES)


def _epoch(dataset):
    images, labels = [], []
    for batch_images, batch_labels in dataset:
        assert batch_images.dtype == tf.uint8 and batch_labels.dtype == tf.int32
        assert batch_images.shape[1:] == (SIZE, SIZE, 3)
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def val_tfdata(imagenet):
    root, _ = imagenet
    skipped = SkippedFiles()
    dataset = imagenet_dataset(root, "validation", 4, image_size=SIZE, skipped=skipped)
    return _epoch(dataset), _epoch(dataset), skipped


@pytest.fixture(scope="module")
def val_tensorpack(imagenet):
    root, _ = imagenet
    skipped = SkippedFiles()
    dataset = imagenet_dataset(root, "val", 4, loader="tensorpack", image_size=SIZE,
                               skipped=skipped)
    return _epoch(dataset), _epoch(dataset), skipped


@pytest.mark.parametrize("loader", ["tfdata", "tensorpack"])
def test_val_is_complete_deterministic_and_skips_bad_files(
        imagenet, val_tfdata, val_tensorpack, loader):
    root, readable = imagenet
    first, second, skipped = val_tfdata if loader == "tfdata" else val_tensorpack
    assert list(first[1]) == [label for _, label in readable["val"]]
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    # Two epochs, each skipping and naming every bad file.
    assert skipped.count == 2 * len(BAD_FILES)
    assert sorted(set(skipped.names)) == _bad_paths(root, "val")


def test_loaders_agree_on_eval_images(val_tfdata, val_tensorpack):
    (ours, _), _, _ = val_tfdata
    (theirs, _), _, _ = val_tensorpack
    differences = np.abs(ours.astype(float) - theirs.astype(float)).mean(axis=(1, 2, 3))
    assert differences.max() < 4.0


def test_odd_files_come_out_as_rgb(imagenet, val_tfdata):
    _, readable = imagenet
    (images, _), _, _ = val_tfdata
    paths = [path for path, _ in readable["val"]]
    grey = images[paths.index(next(p for p in paths if p.endswith("odd_grey.JPEG")))]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    for odd in ("odd_png.JPEG", "odd_cmyk.JPEG"):
        colour = images[paths.index(next(p for p in paths if p.endswith(odd)))]
        assert np.abs(colour[..., 0].astype(int) - colour[..., 2]).mean() > 5


def test_skipped_files_are_logged_by_name(imagenet, caplog):
    root, _ = imagenet
    caplog.set_level(logging.WARNING)
    list(imagenet_dataset(root, "val", 16, image_size=SIZE))
    for path in _bad_paths(root, "val"):
        assert path in caplog.text
    assert "JPEG without end-of-image marker" in caplog.text and "empty file" in caplog.text
    assert "corrupt image data (the decoder rejects it)" in caplog.text


@pytest.mark.parametrize("loader", ["tfdata", "tensorpack"])
def test_a_val_folder_with_bad_entries_yields_the_good_images_and_names_the_bad(imagenet, tmp_path, loader):
    """3 good JPEGs, one with a corrupt body, a dangling link and a good one whose name is not UTF-8:
    4 images, 2 files skipped, each named."""
    root = tmp_path / "data"
    photo = Image.open(imagenet[1]["val"][0][0]).convert("RGB")
    good = _encoded(np.asarray(photo), "jpeg")
    for name in ("n01", "n02"):
        _write(root / "train" / name / "a.JPEG", good)
    for i in range(3):
        _write(root / "val" / "n01" / f"good_{i}.JPEG", good)
    _write(root / "val" / "n02" / "corrupt_body.JPEG", corrupt_body(good))
    os.symlink(root / "nowhere.JPEG", root / "val" / "n02" / "dangling.JPEG")
    _write(os.fsencode(root / "val" / "n02") + b"/caf\xe9.JPEG", good)
    skipped = SkippedFiles()
    _, labels = _epoch(imagenet_dataset(str(root), "val", 4, loader=loader, image_size=SIZE, skipped=skipped))
    assert sorted(labels) == [0, 0, 0, 1]
    assert skipped.count == 2
    assert sorted(skipped.names) == [str(root / "val" / "n02" / "corrupt_body.JPEG"),
                                     str(root / "val" / "n02" / "dangling.JPEG")]


def test_tfdata_train_epoch(imagenet):
    root, readable = imagenet
    skipped = SkippedFiles()
    dataset = imagenet_dataset(root, "train", 4, image_size=SIZE, seed=1, skipped=skipped)
    images, labels = _epoch(dataset)
    full_batches = len(readable["train"]) // 4 * 4
    assert len(labels) == full_batches  # drop_remainder for training
    assert sorted(labels) != list(labels)  # shuffled
    assert set(labels) == {0, 1, 2}
    assert skipped.count == len(BAD_FILES)
    # Reproducible from the seed, with new augmentations in every epoch.
    again, _ = _epoch(imagenet_dataset(root, "train", 4, image_size=SIZE, seed=1))
    np.testing.assert_array_equal(images, again)
    next_epoch, _ = _epoch(dataset)
    assert np.any(images != next_epoch)


def test_tensorpack_train_batches(imagenet):
    root, readable = imagenet
    skipped = SkippedFiles()
    dataset = imagenet_dataset(root, "train", 4, loader="tensorpack", image_size=SIZE,
                               skipped=skipped)
    assert dataset.element_spec[0].shape == (4, SIZE, SIZE, 3)
    batches = list(dataset.repeat().take(8))
    for images, labels in batches:
        assert images.dtype == tf.uint8 and images.shape == (4, SIZE, SIZE, 3)
        assert labels.dtype == tf.int32 and set(labels.numpy()) <= {0, 1, 2}
    # 32 images from two workers: one of them went once through all 18 files.
    assert skipped.count >= len(BAD_FILES)
    assert len(readable["train"]) == 15


# A process that has run a parallel OpenCV call (here a large bicubic resize, as an evaluation's)
# then starts a training loader, whose forked workers must not wait for the parent's OpenCV pool.
AFTER_OPENCV = """
import sys, cv2, numpy as np
from bl_net_tf.data import imagenet_dataset
cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000), interpolation=cv2.INTER_CUBIC)
threads = cv2.getNumThreads()
dataset = imagenet_dataset(sys.argv[1], "train", 4, loader="tensorpack", image_size=32)
print(len(list(dataset.take(2))), threads == cv2.getNumThreads(), flush=True)  # one write: workers share stdout
"""


def test_tensorpack_workers_start_after_opencv_ran_in_parallel_here(imagenet):
    root, _ = imagenet
    # Before the fix the workers hung for ever in cv2.setNumThreads(1); 240 s is several times
    # what the run takes on 2 cores (import, fork, two batches).
    run = subprocess.Popen([sys.executable, "-c", AFTER_OPENCV, root], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        out, err = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # the hung workers too: they are in the run's session
        run.communicate()
        pytest.fail("the Tensorpack workers hung after a parallel OpenCV call in their parent")
    assert run.returncode == 0, err[-3000:]
    # Two batches; this process's OpenCV threads restored. (Tensorpack logs to stdout around it.)
    assert "2 True" in out.splitlines(), out[-3000:]


def _digest(image):
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_input_pipelines_read_disjoint_shards(imagenet, val_tfdata):
    root, _ = imagenet
    (everything, _), _, _ = val_tfdata
    shards = [_epoch(imagenet_dataset(root, "val", 4, image_size=SIZE,
                                      input_context=tf.distribute.InputContext(2, i, 1)))[0]
              for i in range(2)]
    seen = [_digest(image) for shard in shards for image in shard]
    assert len(seen) == len(set(seen)) == len(everything)
    assert set(seen) == {_digest(image) for image in everything}


def _example(data: bytes, label: int, name: str, synset: str = None) -> bytes:
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
    }
    if synset is not None:  # build_imagenet_data.py writes it; hand-made shards may not
        feature["image/class/synset"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[synset.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_shards(root, out, *, label_base, synsets=True, split="validation"):
    """The val split as Inception-style shards, bad files included; ``synsets``: write each record's
    wnid (True), none (False), or a {label: wnid} of one's own."""
    files = sorted((os.path.join(d, f), sorted(PHOTOS).index(os.path.basename(d)))
                   for d, _, names in os.walk(os.path.join(root, "val")) for f in names)
    wnids = dict(enumerate(sorted(PHOTOS))) if synsets is True else synsets or {}
    os.makedirs(out, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(out, f"{split}-00000-of-00001")) as writer:
        for path, label in files:
            with open(path, "rb") as f:
                writer.write(_example(f.read(), label + label_base, os.path.basename(path), wnids.get(label)))
    return out


def test_tfrecord_shards(imagenet, val_tfdata, tmp_path):
    root, readable = imagenet
    (expected_images, expected_labels), _, _ = val_tfdata
    shards = _write_shards(root, str(tmp_path / "one_based"), label_base=1)
    skipped = SkippedFiles()
    images, labels = _epoch(imagenet_dataset(shards, "val", 4, image_size=SIZE,
                                             skipped=skipped))
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(images, expected_images)
    assert sorted(skipped.names) == sorted(
        os.path.join(shards, "validation-00000-of-00001") + ":" + name for name, _, _ in BAD_FILES)
    zero_based = _write_shards(root, str(tmp_path / "zero_based"), label_base=0)
    _, labels = _epoch(imagenet_dataset(zero_based, "val", 4, image_size=SIZE, label_offset=0))
    np.testing.assert_array_equal(labels, expected_labels)
    with pytest.raises(tf.errors.InvalidArgumentError, match="need label_offset=0"):
        _epoch(imagenet_dataset(zero_based, "val", 4, image_size=SIZE))


def test_tfrecord_shards_are_counted_once_and_recounted_when_changed(imagenet, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    shards = _write_shards(imagenet[0], str(tmp_path / "shards"), label_base=1)
    with open(os.path.join(shards, "validation-00000-of-00001"), "rb") as f:
        val = f.read()
    with open(os.path.join(shards, "train-00000-of-00001"), "wb") as f:
        f.write(val * 2)
    info = inputs.describe(shards)
    assert (info.train_images, info.val_images, info.num_classes, info.label_offset) == (2 * VAL_FILES, VAL_FILES, 3, 1)
    assert caplog.text.count("counting the records") == 2 and os.path.isfile(os.path.join(shards, COUNTS_FILE))
    caplog.clear()
    assert inputs.describe(shards) == info and "counting" not in caplog.text  # from the cache
    with open(os.path.join(shards, "train-00000-of-00001"), "ab") as f:
        f.write(val)
    assert inputs.describe(shards).train_images == 3 * VAL_FILES  # the changed shard was read again
    assert _trainer_sees(shards, tmp_path, batch_size=4) == (3 * VAL_FILES // 4, 3)


def test_tfrecord_class_names_come_from_the_synsets_the_converter_wrote(imagenet, tmp_path, caplog):
    """build_imagenet_data.py's image/class/synset names the classes (what an export from the run
    returns as class_names); shards without it, or naming only some classes, give none; train and val
    naming a label differently is an error before training."""
    caplog.set_level(logging.INFO)
    root = imagenet[0]
    named = _write_shards(root, str(tmp_path / "named"), label_base=1)
    _write_shards(root, named, label_base=1, split="train")
    assert inputs.describe(named).class_names == sorted(PHOTOS)
    assert inputs.describe(named).class_names == sorted(PHOTOS)  # from the cache
    assert inputs.describe(_write_shards(root, str(tmp_path / "none"), label_base=1, synsets=False),
                           train=False).class_names is None
    partly = _write_shards(root, str(tmp_path / "partly"), label_base=0, synsets={0: "n01440764"})
    assert inputs.describe(partly, train=False).class_names is None
    assert "the shards name 1 of 3 classes" in caplog.text
    clash = _write_shards(root, str(tmp_path / "clash"), label_base=1)
    _write_shards(root, clash, label_base=1, split="train", synsets={0: "n09999999", 1: "n02123045", 2: "n07920052"})
    with pytest.raises(ValueError, match="TFRecord label 1 is n09999999, and n01440764 in the val shards"):
        inputs.describe(clash)


def test_record_counts_go_to_the_user_cache_when_the_shards_folder_cannot_take_them(imagenet, tmp_path, monkeypatch):
    monkeypatch.setenv("BL_NET_TF_CACHE", str(tmp_path / "cache"))
    shards = _write_shards(imagenet[0], str(tmp_path / "shards"), label_base=0)
    os.mkdir(os.path.join(shards, COUNTS_FILE))  # the place beside the shards cannot be written
    assert inputs.describe(shards, train=False).val_images == VAL_FILES
    assert len(os.listdir(tmp_path / "cache" / "record_counts")) == 1
    assert inputs.describe(shards, train=False).label_offset == 0  # a stored 0: 0-based labels


def test_a_damaged_shard_is_named(imagenet, tmp_path):
    shards = _write_shards(imagenet[0], str(tmp_path), label_base=1)
    path = os.path.join(shards, "validation-00000-of-00001")
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)  # inside the first record: its CRC no longer matches
    with pytest.raises(ValueError, match=f"TFRecord shard {path} cannot be read: "):
        inputs.describe(shards, train=False)


def test_tfrecord_input_pipelines_read_disjoint_records(imagenet, val_tfdata, tmp_path):
    (everything, _), _, _ = val_tfdata
    shards = _write_shards(imagenet[0], str(tmp_path), label_base=1)  # one shard: by record
    seen = [_digest(image) for i in range(2) for image in _epoch(imagenet_dataset(
        shards, "val", 4, image_size=SIZE, input_context=tf.distribute.InputContext(2, i, 1)))[0]]
    assert len(seen) == len(set(seen)) == len(everything)


def _tiny_model(num_classes, input_shape, data_format):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def _trainer_sees(data_dir, tmp_path, batch_size=4):
    """(steps per epoch, classes of the model) of a trainer built on ``data_dir``."""
    fields = dict(data_dir=str(data_dir), batch_size=batch_size, image_size=SIZE, epochs=1,
                  model_dir=str(tmp_path / "run"))
    session = training.build(training.resolve(training.TrainConfig(**fields), set(fields)), model_fn=_tiny_model)
    return session.steps_per_epoch, session.model.output.shape[-1]


def test_prepared_tfds_imagenet2012_gives_its_own_size_and_classes(imagenet, tmp_path):
    import tensorflow_datasets as tfds

    _, readable = imagenet
    images = [np.asarray(Image.open(path).convert("RGB").resize((48, 64))) for path, _ in
              readable["val"]]
    examples = {"image": np.stack(images), "label": [label for _, label in readable["val"]],
                "file_name": [os.path.basename(path) for path, _ in readable["val"]]}
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(names=sorted(PHOTOS)),
        "file_name": tfds.features.Text()})
    val = {key: values[:5] for key, values in examples.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name="imagenet2012", version="5.1.0", features=features, data_dir=str(tmp_path),
        split_datasets={"train": tf.data.Dataset.from_tensor_slices(examples),
                        "validation": tf.data.Dataset.from_tensor_slices(val)})
    _, labels = _epoch(imagenet_dataset(str(tmp_path), "val", 4, image_size=SIZE))
    assert sorted(labels) == sorted(examples["label"][:5])
    images, labels = _epoch(imagenet_dataset(str(tmp_path), "train", 4, image_size=SIZE))
    assert len(labels) == len(examples["label"]) // 4 * 4
    info = inputs.describe(str(tmp_path))
    train_images = len(examples["label"])
    assert (info.train_images, info.val_images, info.class_names) == (train_images, 5, sorted(PHOTOS))
    assert _trainer_sees(tmp_path, tmp_path) == (train_images // 4, len(PHOTOS))  # not ImageNet's 1000


@pytest.mark.parametrize("args, kwargs, message", [
    (("/no/such/dir", "train", 4), {}, "does not exist"),
    ((None, "test", 4), {}, "unknown split 'test'; allowed: train, val, validation"),
    ((None, "train", 4), {"loader": "torch"},
     "unknown loader 'torch'; allowed: tfdata, tensorpack"),
    ((None, "train", 0), {}, "batch_size must be an integer >= 1, got 0"),
    ((None, "train", 4), {"label_offset": 1}, "label_offset applies to TFRecord shards only"),
])
def test_bad_arguments_raise_one_clear_line(imagenet, args, kwargs, message):
    root, _ = imagenet
    args = (root if args[0] is None else args[0],) + args[1:]
    with pytest.raises(ValueError, match=message):
        imagenet_dataset(*args, **kwargs)


def test_tensorpack_loader_reads_folders_only(imagenet, tmp_path):
    shards = _write_shards(imagenet[0], str(tmp_path), label_base=1)
    with pytest.raises(ValueError, match="loader='tensorpack' reads image folders only"):
        imagenet_dataset(shards, "val", 4, loader="tensorpack")


def test_benchmark_prints_images_per_second(imagenet, capsys):
    benchmark.main(["--data_dir", imagenet[0], "--split", "val", "--batch_size", "4",
                    "--batches", "2", "--warmup", "1", "--runs", "2", "--image_size", "32"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("tfdata val:") and "ms CPU per image (median of 2" in lines[-1]


class _SlowDataFlow:
    """Stands in for a ``MultiProcessRunnerZMQ``: each batch takes a while to arrive."""

    def __init__(self):
        self.inside = threading.Event()  # set while a batch is being received

    def reset_state(self):
        pass

    def __iter__(self):
        while True:
            self.inside.set()
            time.sleep(0.2)
            self.inside.clear()
            yield np.zeros((2, SIZE, SIZE, 3), np.uint8), np.zeros([2], np.int64)


def test_tensorpack_batches_stop_before_the_dataflow_is_torn_down():
    dataflow = _SlowDataFlow()
    batches = tensorpack_loader._WorkerBatches(dataflow, queue_size=1)
    images, labels = next(batches())
    assert images.shape == (2, SIZE, SIZE, 3) and labels.dtype == np.int32
    dataflow.inside.wait(timeout=5)  # the producer waits on the stream, as at exit
    batches._stop()  # what the exit handler does before Tensorpack closes its socket
    assert not batches.thread.is_alive() and not dataflow.inside.is_set()


class _EndingDataFlow:
    """Stands in for a ``MultiProcessRunnerZMQ`` whose workers are terminated after one batch."""

    def reset_state(self):
        pass

    def __iter__(self):
        from tensorpack.dataflow import DataFlowTerminated

        yield np.zeros((2, SIZE, SIZE, 3), np.uint8), np.zeros([2], np.int64)
        raise DataFlowTerminated()


def _within(seconds, function):
    """``function()``'s result (or error), computed in a thread that must end within ``seconds``."""
    outcome = []

    def run():
        try:
            outcome.append(function())
        except Exception as error:  # raised below, in the test's thread
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still waiting"
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def test_a_terminated_dataflow_ends_the_epoch():
    batches = tensorpack_loader._WorkerBatches(_EndingDataFlow(), queue_size=1)
    assert len(_within(10, lambda: list(batches()))) == 1


def test_a_stopped_producer_ends_the_epoch_instead_of_a_wait():
    dataflow = _SlowDataFlow()
    batches = tensorpack_loader._WorkerBatches(dataflow, queue_size=1)
    stream = batches()
    next(stream)
    batches._stop()  # the producer returns without an end marker
    assert len(_within(10, lambda: list(stream))) <= 1  # at most the batch already queued


def test_dead_workers_are_reported_instead_of_a_wait():
    dataflow = SilentDataFlow()
    batches = tensorpack_loader._WorkerBatches(dataflow, workers=lambda: [dead_worker(3)])
    with pytest.raises(RuntimeError, match=r"the 1 Tensorpack worker processes ended \(exit codes 3\)"):
        _within(10, lambda: list(batches()))
    dataflow.release.set()
