"""Listing ImageNet folders (both val layouts) and telling the sources apart."""
import logging
import os

import pytest
import tensorflow as tf

from bl_net_tf.data import folder, imagenet_dataset, sources

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture()
def pytorch_layout(tmp_path):
    for label, wnid in enumerate(reversed(WNIDS)):  # created out of order on purpose
        for i in range(3):
            _touch(tmp_path / "train" / wnid / f"{wnid}_{i}.JPEG")
        _touch(tmp_path / "val" / wnid / f"ILSVRC2012_val_{label:08d}.JPEG")
    _touch(tmp_path / "train" / WNIDS[0] / "notes.txt")
    _touch(tmp_path / "train" / WNIDS[0] / ".hidden.JPEG")
    return tmp_path


def test_labels_follow_sorted_wnids(pytorch_layout):
    train = folder.list_images(str(pytorch_layout), "train")
    assert train.class_names == WNIDS
    assert len(train.paths) == 9  # notes.txt and hidden files are not images
    assert train.unreadable == [] and train.empty_classes == []
    for path, label in zip(train.paths, train.labels):
        assert os.path.basename(os.path.dirname(os.fsdecode(path))) == WNIDS[label]
    assert train.paths == sorted(train.paths)
    val = folder.list_images(str(pytorch_layout), "val")
    assert val.labels == [0, 1, 2]


def test_listing_sets_apart_what_cannot_be_a_readable_image(pytorch_layout):
    """Image-named entries that are not files are reported with the reason, not listed; a name that
    is not UTF-8 is listed, as bytes."""
    wnid = pytorch_layout / "train" / WNIDS[1]
    os.symlink(pytorch_layout / "gone.JPEG", wnid / "dangling.JPEG")
    (wnid / "folder.JPEG").mkdir()
    os.mkfifo(wnid / "fifo.JPEG")
    odd_name = os.fsencode(wnid) + b"/caf\xe9.JPEG"
    _touch(odd_name)
    (pytorch_layout / "train" / "n99999999").mkdir()  # a class without images
    train = folder.list_images(str(pytorch_layout), "train")
    assert [(os.path.basename(p), reason) for p, reason in train.unreadable] == [
        (b"dangling.JPEG", "dangling symbolic link"), (b"fifo.JPEG", "not a regular file"),
        (b"folder.JPEG", "a directory, not a file")]
    assert odd_name in train.paths and all(isinstance(p, bytes) for p in train.paths)
    assert train.empty_classes == [str(pytorch_layout / "train" / "n99999999")]
    shards = [train.shard(2, i) for i in range(2)]
    assert shards[0].unreadable == train.unreadable and shards[1].unreadable == []  # reported once


def test_a_file_named_in_val_txt_but_missing_is_reported(tmp_path):
    _touch(tmp_path / "train" / WNIDS[0] / "a.JPEG")
    _touch(tmp_path / "val" / "here.JPEG")
    _touch(tmp_path / "val.txt", b"here.JPEG 0\ngone.JPEG 0\n")
    val = folder.list_images(str(tmp_path), "val")
    assert val.paths == [os.fsencode(tmp_path / "val" / "here.JPEG")]
    assert val.unreadable == [(os.fsencode(tmp_path / "val" / "gone.JPEG"), "no such file")]


@pytest.mark.parametrize("list_in_val", [False, True])
def test_flat_val_with_val_txt(pytorch_layout, list_in_val):
    flat = pytorch_layout / "flat"
    for wnid in WNIDS:
        _touch(flat / "train" / wnid / f"{wnid}_0.JPEG")
    lines = "ILSVRC2012_val_00000001.JPEG 2\nILSVRC2012_val_00000002.JPEG 0\n"
    for name in ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"):
        _touch(flat / "val" / name)
    _touch(flat / ("val/val.txt" if list_in_val else "val.txt"), lines.encode())
    val = folder.list_images(str(flat), "val")
    assert [os.path.basename(p) for p in val.paths] == [b"ILSVRC2012_val_00000001.JPEG",
                                                         b"ILSVRC2012_val_00000002.JPEG"]
    assert val.labels == [2, 0]


def test_flat_val_without_train_takes_classes_from_synsets(tmp_path):
    _touch(tmp_path / "val" / "a.JPEG")
    _touch(tmp_path / "val.txt", b"a.JPEG 1\n")
    _touch(tmp_path / "synsets.txt", ("\n".join(WNIDS) + "\n").encode())
    assert folder.list_images(str(tmp_path), "val").labels == [1]


def test_bad_val_txt_line_is_named(pytorch_layout):
    _touch(pytorch_layout / "val.txt", b"a.JPEG 1\nb.JPEG 1000\n")
    flat_val = pytorch_layout / "val"
    for wnid in WNIDS:
        for name in os.listdir(flat_val / wnid):
            os.replace(flat_val / wnid / name, flat_val / name)
        os.rmdir(flat_val / wnid)
    with pytest.raises(ValueError, match=r"val.txt:2: expected '<file name> <label>'"):
        folder.list_images(str(pytorch_layout), "val")


def test_val_class_missing_from_train_is_an_error(pytorch_layout):
    _touch(pytorch_layout / "val" / "n99999999" / "x.JPEG")
    with pytest.raises(ValueError, match="The val class n99999999 .* is not among the 3 classes of train/"):
        folder.list_images(str(pytorch_layout), "val")


def test_shards_are_disjoint_and_complete(pytorch_layout):
    images = folder.list_images(str(pytorch_layout), "train")
    shards = [folder.list_images(str(pytorch_layout), "train",
                                 tf.distribute.InputContext(4, i, 1)) for i in range(4)]
    names = [p for shard in shards for p in shard.paths]
    assert sorted(names) == sorted(images.paths) and len(set(names)) == len(names)
    with pytest.raises(ValueError, match="Input pipeline 9 of 10 has no train image"):
        folder.list_images(str(pytorch_layout), "train", tf.distribute.InputContext(10, 9, 1))


@pytest.mark.parametrize("loader", ["tfdata", "tensorpack"])
def test_empty_split_is_an_error(tmp_path, loader):
    os.makedirs(tmp_path / "train" / WNIDS[0])
    with pytest.raises(ValueError, match="No images in .*train"):
        imagenet_dataset(str(tmp_path), "train", 4, loader=loader)
    with pytest.raises(ValueError, match="No val/ folder"):
        folder.list_images(str(tmp_path), "val")


def test_a_split_with_no_readable_entry_names_one(tmp_path):
    (tmp_path / "train" / WNIDS[0]).mkdir(parents=True)
    os.symlink(tmp_path / "gone", tmp_path / "train" / WNIDS[0] / "x.JPEG")
    with pytest.raises(ValueError, match=r"No images in .*train \(1 cannot be read, e\.g\. .*x\.JPEG: dangling"):
        folder.list_images(str(tmp_path), "train")


def test_sources_are_detected_and_logged(pytorch_layout, tmp_path_factory, caplog):
    caplog.set_level(logging.INFO)
    assert sources.detect(str(pytorch_layout)) is sources.Source.FOLDER
    assert "ImageNet image folder" in caplog.text
    shards = tmp_path_factory.mktemp("records")
    _touch(shards / "validation-00000-of-00001")
    assert sources.detect(str(shards)) is sources.Source.TFRECORD
    prepared = tmp_path_factory.mktemp("tfds")
    _touch(prepared / "imagenet2012" / "5.0.0" / "dataset_info.json", b'{"name": "imagenet2012"}')
    _touch(prepared / "imagenet2012" / "5.1.0" / "dataset_info.json", b'{"name": "imagenet2012"}')
    assert sources.detect(str(prepared)) is sources.Source.TFDS
    assert sources.tfds_source.find_prepared(str(prepared)).endswith("5.1.0")
    subsets = tmp_path_factory.mktemp("subsets")
    for config in ("1pct", "10pct"):
        _touch(subsets / "imagenet2012_subset" / config / "5.0.0" / "dataset_info.json",
               b'{"name": "imagenet2012_subset", "configName": "%s"}' % config.encode())
    one = subsets / "imagenet2012_subset" / "1pct"
    for data_dir in (one, one / "5.0.0"):
        assert sources.tfds_source.find_prepared(str(data_dir)) == str(one / "5.0.0")
    for data_dir in (subsets, subsets / "imagenet2012_subset"):
        with pytest.raises(ValueError, match="holds 2 prepared data sets .*1pct/5.0.0.*; pass the one to read"):
            sources.detect(str(data_dir))
    _touch(subsets / "imagenet2012" / "5.1.0" / "dataset_info.json", b'{"name": "imagenet2012"}')
    assert sources.tfds_source.find_prepared(str(subsets)).endswith("imagenet2012/5.1.0")  # the full set first


def test_missing_or_foreign_data_dir_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sources.detect(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="holds no ImageNet data; expected train/<wnid>"):
        sources.detect(str(tmp_path))
