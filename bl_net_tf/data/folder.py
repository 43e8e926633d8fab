"""Listing ImageNet stored as image files in a folder.

Two layouts are read, both with ``train/<wnid>/*.JPEG``:

* ``val/<wnid>/*.JPEG`` - the layout of the PyTorch ImageNet example;
* a flat ``val/`` with a ``val.txt`` of ``<file name> <label>`` lines, in
  ``data_dir/val.txt`` or ``data_dir/val/val.txt`` - Tensorpack's ILSVRC12 layout
  (its ``val.txt`` comes from Caffe's ``caffe_ilsvrc12.tar.gz``).

The label of a class is the index of its folder name (the wnid) in sorted order,
which for ILSVRC-2012 is also the order of Caffe's ``synsets.txt``.

Paths are ``bytes``, as the file system stores them, so that any file name is read,
UTF-8 or not (a ``str`` holding an undecodable name cannot become a ``tf.string``).
An image-named entry that cannot be a readable file (a directory named ``x.JPEG``, a
FIFO, a symbolic link to nothing, a file that ``val.txt`` names but that is not
there) is not listed as an image: it is returned in ``unreadable`` with the reason,
so that the loader names and counts it.
"""
import dataclasses
import os

from bl_net_tf.data.skipped import display_name

# Files in a class folder that count as images; others (README, .DS_Store) are ignored.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_IMAGE_SUFFIXES = tuple(suffix.encode() for suffix in IMAGE_SUFFIXES)
VAL_LIST = "val.txt"
# Caffe's class list, one wnid a line; read only when no train/ folder names the classes.
SYNSETS = "synsets.txt"


@dataclasses.dataclass(frozen=True)
class ImageList:
    """The image files of one split, in a deterministic order.

    ``paths`` (bytes) and ``labels`` are parallel lists; ``class_names`` holds the wnids, so
    that ``class_names[label]`` names the class of an image. ``unreadable`` lists
    ``(path, reason)`` for the entries that look like images but cannot be read as files;
    ``empty_classes`` the class folders of this split that hold no image.
    """
    paths: list
    labels: list
    class_names: list
    unreadable: list = dataclasses.field(default_factory=list)
    empty_classes: list = dataclasses.field(default_factory=list)

    def shard(self, num_shards: int, index: int) -> "ImageList":
        """Every ``num_shards``-th image starting at ``index``: disjoint across indices.

        The unreadable entries go with shard 0 only, so that each is reported once.
        """
        return ImageList(self.paths[index::num_shards], self.labels[index::num_shards],
                         self.class_names, self.unreadable if index == 0 else [],
                         self.empty_classes)


def _subfolders(path: str) -> list:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _entry_problem(entry: os.DirEntry):
    """Why an image-named directory entry cannot be read as an image file; None if it can."""
    return None if entry.is_file() else _path_problem(entry.path)  # is_file follows links, cached


def _path_problem(path: bytes):
    """Why ``path`` (an image named in a list file or a directory) cannot be read as an image
    file; None if it can."""
    if os.path.isfile(path):
        return None
    if os.path.islink(path):
        return "dangling symbolic link" if not os.path.exists(path) else "link to a non-regular file"
    if not os.path.lexists(path):
        return "no such file"
    return "a directory, not a file" if os.path.isdir(path) else "not a regular file"


def _images_in(folder: bytes) -> tuple:
    """``(image paths, [(path, reason), ...] unreadable)`` of one folder, each sorted."""
    images, unreadable = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(b".") or not entry.name.lower().endswith(_IMAGE_SUFFIXES):
                continue
            problem = _entry_problem(entry)
            if problem is None:
                images.append(entry.path)
            else:
                unreadable.append((entry.path, problem))
    return sorted(images), sorted(unreadable)


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
    paths, labels, unreadable, empty = [], [], [], []
    for name in _subfolders(split_dir):
        if name not in index:
            raise ValueError(
                f"The {os.path.basename(split_dir)} class {name} (folder {os.path.join(split_dir, name)}) is not "
                f"among the {len(names)} classes of train/; every class must have a train/ folder.")
        images, bad = _images_in(os.fsencode(os.path.join(split_dir, name)))
        paths += images
        labels += [index[name]] * len(images)
        unreadable += bad
        if not images:
            empty.append(os.path.join(split_dir, name))
    return ImageList(paths, labels, names, unreadable, empty)


def _listed(split_dir: str, list_file: str, names: list) -> ImageList:
    paths, labels, unreadable = [], [], []
    with open(list_file, encoding="utf-8", errors="surrogateescape") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= len(names):
                raise ValueError(
                    f"{list_file}:{number}: expected '<file name> <label>' with a label in "
                    f"[0, {len(names)}), got {line.strip()!r}.")
            path = os.fsencode(os.path.join(split_dir, fields[0]))
            problem = _path_problem(path)
            if problem is None:
                paths.append(path)
                labels.append(int(fields[1]))
            else:
                unreadable.append((path, problem))
    return ImageList(paths, labels, names, unreadable)


def list_images(data_dir: str, split: str, input_context=None) -> ImageList:
    """Lists the images of ``split`` ("train" or "val") under ``data_dir``.

    With a ``tf.distribute.InputContext``, only this input pipeline's shard.

    Raises:
        ValueError: if the split's folder is missing, a class folder is not a train/ class, or
            the split holds no image (for this shard).
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
        unreadable = (f" ({len(images.unreadable)} cannot be read, e.g. {display_name(images.unreadable[0][0])}: "
                      f"{images.unreadable[0][1]})" if images.unreadable else "")
        raise ValueError(f"No images in {split_dir}{unreadable}: expected {split}/<wnid>/*.JPEG"
                         + (" or a flat val/ with val.txt." if split == "val" else "."))
    if input_context is None:
        return images
    shard = images.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if not shard.paths:
        raise ValueError(f"Input pipeline {input_context.input_pipeline_id} of "
                         f"{input_context.num_input_pipelines} has no {split} image to read: "
                         f"{split_dir} holds {len(images.paths)}.")
    return shard
