"""``imagenet_dataset``: the one entry point of the ImageNet input pipelines."""
import tensorflow as tf

from bl_net_tf.constants import DEFAULT_IMAGE_SIZE, LOADERS, check_choice, check_positive_int
from bl_net_tf.data import folder, recipe, sources, tensorpack_loader, tfdata_loader
from bl_net_tf.data.skipped import SkippedFiles

SPLITS = {"train": "train", "val": "val", "validation": "val"}


def imagenet_dataset(data_dir: str, split: str, batch_size: int, *, loader: str = "tfdata",
                     image_size: int = DEFAULT_IMAGE_SIZE, eval_image_size=None, shuffle=None, seed=None,
                     drop_remainder=None, input_context=None, label_offset=None,
                     skipped=None, eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL) -> tf.data.Dataset:
    """ImageNet batches ``(images uint8 [B, H, W, 3] RGB, labels int32 [B])``.

    Args:
        data_dir: an ImageNet image folder, a prepared TFDS ``imagenet2012`` or a folder
            of TFRecord shards; which one is detected and logged (docs/data.md).
        split: "train", or "val" ("validation" is accepted).
        batch_size: images per batch of this dataset. Under a distribution strategy
            this is the per-pipeline batch, e.g.
            ``input_context.get_per_replica_batch_size(global_batch_size)``.
        loader: "tfdata" (fast, any source) or "tensorpack" (Tensorpack DataFlow as
            the paper used, image folders only; needs the ``tensorpack`` extra).
        image_size: training crop size; the evaluation size when ``eval_image_size``
            is None.
        eval_image_size: evaluation crop size (the paper's "@256" rows use 256), after
            resizing the shorter side as ``eval_protocol`` says.
        shuffle: shuffle the images; defaults to True for train, False for val.
        seed: makes the tf.data loader's order and augmentation reproducible.
        drop_remainder: drop a last partial batch; defaults to True for train and
            False for val (which then yields every readable image exactly once).
        input_context: a ``tf.distribute.InputContext``; each input pipeline then
            reads a disjoint shard of the data.
        label_offset: subtracted from TFRecord labels; None means 1, for the 1-based
            labels of the TF-slim / Inception converters. Only for TFRecord shards.
        skipped: a :class:`SkippedFiles` to count the unreadable files in; they are
            logged as warnings, with the reason, either way. Files found by the listing
            (not regular files, dangling links) are counted when the dataset is made,
            those found when reading on every pass over them.
        eval_protocol: the shorter side the evaluation images are resized to before the
            centre crop: "official" (256 for 224 and for 256, as the official release;
            size / 0.875 for other sizes), or "fraction" (size / 0.875); see
            ``recipe.EVAL_PROTOCOLS`` and docs/data.md.

    Returns:
        A ``tf.data.Dataset`` of one epoch (repeat it for more).

    Raises:
        ValueError: on a missing ``data_dir``, an unknown split or loader, or no data.
    """
    check_choice("split", split, SPLITS)
    check_choice("loader", loader, LOADERS)
    check_positive_int("batch_size", batch_size)
    check_positive_int("image_size", image_size)
    if eval_image_size is not None:
        check_positive_int("eval_image_size", eval_image_size)
    recipe.check_eval_protocol(eval_protocol)
    split = SPLITS[split]
    train = split == "train"
    shuffle = train if shuffle is None else shuffle
    drop_remainder = train if drop_remainder is None else drop_remainder
    size = int(image_size if train or eval_image_size is None else eval_image_size)
    batch_size = int(batch_size)
    skipped = SkippedFiles() if skipped is None else skipped

    source = sources.detect(data_dir)
    if label_offset is not None and source is not sources.Source.TFRECORD:
        raise ValueError(f"label_offset applies to TFRecord shards only; {data_dir} holds "
                         f"a {source.value}.")
    if loader == "tensorpack" and source is not sources.Source.FOLDER:
        raise ValueError(f"loader='tensorpack' reads image folders only; {data_dir} holds "
                         f"a {source.value}: use loader='tfdata'.")
    if source is sources.Source.FOLDER:
        image_list = folder.list_images(data_dir, split, input_context)
        for path, reason in image_list.unreadable:  # found by the listing: named and counted now
            skipped.add(path, reason)
        if loader == "tensorpack":
            return tensorpack_loader.images(image_list, train=train, image_size=size,
                                            batch_size=batch_size, shuffle=shuffle,
                                            drop_remainder=drop_remainder, skipped=skipped,
                                            eval_protocol=eval_protocol)
        examples = sources.folder_examples(image_list, shuffle=shuffle, seed=seed)
    else:
        examples = sources.examples(source, data_dir, split, shuffle=shuffle, seed=seed,
                                    input_context=input_context, label_offset=label_offset)
    # The payload of a folder's examples is the file's path: the loader reads it.
    return tfdata_loader.images(examples, read_files=source is sources.Source.FOLDER, train=train,
                                image_size=size, batch_size=batch_size,
                                drop_remainder=drop_remainder, seed=seed,
                                deterministic=seed is not None or not shuffle, skipped=skipped,
                                eval_protocol=eval_protocol)
