"""Listing ImageNet stored as image files in a folder.

Two layouts are read, both with ``train/<wnid>/*.JPEG``:

* ``val/<wnid>/*.JPEG`` - the layout of the PyTorch ImageNet example;
* a flat ``val/`` with a ``val.txt`` of ``<file name> <label>`` lines, in
  ``data_dir/val.txt`` or ``data_dir/val/val.txt`` - Tensorpack's ILSVRC12 layout
  (its ``val.txt`` comes from Caffe's ``caffe_ilsvrc12.tar.gz``).

The label of a class is the index of its folder name (the wnid) in sorted order,
which for ILSVRC-2012 is also the order of Caffe's ``synsets.txt``.
"""
import dataclasses
import os

# Files in a class folder that count as images; others (README, .DS_Store) are ignored.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
VAL_LIST = "val.txt"
# Caffe's class list, one wnid a line; read only when no train/ folder names the classes.
SYNSETS = "synsets.txt"


@dataclasses.dataclass(frozen=True)
class ImageList:
    """The image files of one split, in a deterministic order.

    ``paths`` and ``labels`` are parallel lists; ``class_names`` holds the wnids, so
    that ``class_names[label]`` names the class of an image.
    """
    paths: list
    labels: list
    class_names: list

    def shard(self, num_shards: int, index: int) -> "ImageList":
        """Every ``num_shards``-th image starting at ``index``: disjoint across indices."""
        return ImageList(self.paths[index::num_shards], self.labels[index::num_shards],
                         self.class_names)


def _subfolders(path: str) -> list:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _images_in(path: str) -> list:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries
                      if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES))


def _val_list_file(data_dir: str):
    for candidate in (os.path.join(data_dir, VAL_LIST), os.path.join(data_dir, "val", VAL_LIST)):
        if os.path.isfile(candidate):
            return candidate
    return None


def has_layout(data_dir: str) -> bool:
    """Whether ``data_dir`` has ``train/`` or ``val/`` folders of either layout."""
    return any(os.path.isdir(os.path.join(data_dir, split)) for split in ("train", "val"))


def class_names(data_dir: str) -> list:
    """The wnids: sorted subfolders of ``train/``, else of ``val/``, else ``synsets.txt``."""
    for split in ("train", "val"):
        split_dir = os.path.join(data_dir, split)
        if os.path.isdir(split_dir):
            names = _subfolders(split_dir)
            if names:
                return names
    synsets = os.path.join(data_dir, SYNSETS)
    if os.path.isfile(synsets):
        with open(synsets, encoding="utf-8") as lines:
            return [line.split()[0] for line in lines if line.strip()]
    return []


def _class_folders(split_dir: str, names: list) -> ImageList:
    index = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for name in _subfolders(split_dir):
        if name not in index:
            raise ValueError(
                f"Class folder {os.path.join(split_dir, name)} is not among the "
                f"{len(names)} classes of train/; the classes must be the same in both splits.")
        for file_name in _images_in(os.path.join(split_dir, name)):
            paths.append(os.path.join(split_dir, name, file_name))
            labels.append(index[name])
    return ImageList(paths, labels, names)


def _listed(split_dir: str, list_file: str, names: list) -> ImageList:
    paths, labels = [], []
    with open(list_file, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= len(names):
                raise ValueError(
                    f"{list_file}:{number}: expected '<file name> <label>' with a label in "
                    f"[0, {len(names)}), got {line.strip()!r}.")
            paths.append(os.path.join(split_dir, fields[0]))
            labels.append(int(fields[1]))
    return ImageList(paths, labels, names)


def list_images(data_dir: str, split: str, input_context=None) -> ImageList:
    """Lists the images of ``split`` ("train" or "val") under ``data_dir``.

    With a ``tf.distribute.InputContext``, only this input pipeline's shard.

    Raises:
        ValueError: if the split's folder is missing or holds no image (for this shard).
    """
    split_dir = os.path.join(data_dir, split)
    if not os.path.isdir(split_dir):
        raise ValueError(f"No {split}/ folder in {data_dir}: expected {split}/<wnid>/*.JPEG.")
    names = class_names(data_dir)
    list_file = _val_list_file(data_dir) if split == "val" else None
    if list_file and not _subfolders(split_dir):
        images = _listed(split_dir, list_file, names)
    else:
        images = _class_folders(split_dir, names)
    if not images.paths:
        raise ValueError(f"No images in {split_dir}: expected {split}/<wnid>/*.JPEG"
                         + (" or a flat val/ with val.txt." if split == "val" else "."))
    if input_context is None:
        return images
    shard = images.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if not shard.paths:
        raise ValueError(f"Input pipeline {input_context.input_pipeline_id} of "
                         f"{input_context.num_input_pipelines} has no {split} image to read: "
                         f"{split_dir} holds {len(images.paths)}.")
    return shard
