"""The Tensorpack DataFlow loader: the paper's own input pipeline, wrapped in tf.data.

As Tensorpack's ``examples/ImageNetModels/imagenet_utils.py`` (whose ``ILSVRC12Files``
is a ``DataFromList`` of the listed files, used here directly on ``folder.py``'s
list), each image is decoded with OpenCV (BGR), ``AugmentImageComponent``
applies ``fbresnet_augmentor`` (built here from ``recipe.py``), training runs in
``MultiProcessRunnerZMQ`` worker processes, and ``BatchData`` batches. The batches
are turned to RGB and served by ``tf.data.Dataset.from_generator`` with an explicit
output signature, so this loader is a drop-in for the tf.data one.

Differences from the tf.data loader, inherited from Tensorpack: only the image
folder layout is read; in training every worker process shuffles the whole list on
its own, so an "epoch" is ``len(list)`` images drawn from the workers' streams
rather than each image exactly once, and ``seed`` does not make it reproducible.
The training workers are forked when the dataset is created and end with the
process (or with the thread that created the dataset). The batches are handed over
through queues with timeouts: a DataFlow that ends (its workers terminated) ends
the epoch instead of leaving the trainer waiting.
"""
import atexit
import contextlib
import ctypes
import os
import queue
import signal
import threading

import numpy as np
import tensorflow as tf

from bl_net_tf.data import integrity, recipe
from bl_net_tf.data.folder import ImageList
from bl_net_tf.data.skipped import SkippedFiles

# How long the consumer waits for a batch before it checks that the producing thread still runs.
_POLL_SECONDS = 1.0

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def fbresnet_augmentors(train: bool, image_size: int,
                        eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL) -> list:
    """Tensorpack's ``fbresnet_augmentor`` for BGR uint8 images, sized ``image_size``.

    For evaluation ``image_size`` is the centre crop after resizing the shorter side
    to ``recipe.eval_resize_size(image_size, eval_protocol)``.
    """
    import cv2
    from tensorpack.dataflow import imgaug

    if not train:
        return [imgaug.ResizeShortestEdge(recipe.eval_resize_size(image_size, eval_protocol),
                                          cv2.INTER_CUBIC),
                imgaug.CenterCrop((image_size, image_size))]
    return [
        imgaug.GoogleNetRandomCropAndResize(
            crop_area_fraction=recipe.CROP_AREA_RANGE,
            aspect_ratio_range=recipe.CROP_ASPECT_RANGE,
            target_shape=image_size, interp=cv2.INTER_CUBIC),
        imgaug.RandomOrderAug([
            imgaug.BrightnessScale(recipe.BRIGHTNESS_RANGE, clip=False),
            imgaug.Contrast(recipe.CONTRAST_RANGE, rgb=False, clip=False),
            imgaug.Saturation(recipe.SATURATION_DELTA, rgb=False),
            # The RGB PCA restated for BGR: reverse the channel rows and, with the
            # eigenvalues, the eigenvector columns (as fbresnet_augmentor does).
            imgaug.Lighting(recipe.LIGHTING_STD,
                            eigval=recipe.PCA_EIGVAL_RGB[::-1],
                            eigvec=recipe.PCA_EIGVEC_RGB[::-1, ::-1]),
        ]),
        imgaug.Flip(horiz=True, prob=recipe.FLIP_PROBABILITY),
    ]


def _setup_worker(parent_pid: int) -> None:
    """Settings for a worker process, on its first image."""
    import cv2

    # One OpenCV thread per worker: the workers already use every core, and a
    # thread pool in each would only make them wait on each other. A forked worker
    # has it from _one_opencv_thread; a spawned one (a fresh process) sets it here.
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    # End with the parent, even if it dies without cleaning up: Tensorpack asks the
    # kernel for that only when python-prctl is installed, and an orphaned worker
    # blocks forever in a send while holding the parent's stdout open.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:
        os._exit(0)  # the parent ended before the request was made


@contextlib.contextmanager
def _one_opencv_thread():
    """OpenCV runs on one thread while the workers are forked, so they start with one.

    Setting it in a forked child instead deadlocks once this process has run a parallel
    OpenCV call (an evaluation's resize, an earlier run's): the child's ``setNumThreads``
    waits for the parent's pool threads, which a fork does not copy (OpenCV 5.0, pthreads).
    """
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


class DecodeBGR:
    """``MapData`` function: ``[path, label]`` -> ``[BGR image, label]``, None if unreadable.

    A top-level class, not a closure, so that the dataflow can be pickled if
    multiprocessing spawns its workers instead of forking them.
    """

    def __init__(self, skipped: SkippedFiles):
        self.skipped = skipped
        self.parent_pid = os.getpid()
        self.worker_ready = False

    def __call__(self, datapoint):
        import cv2

        if not self.worker_ready and os.getpid() != self.parent_pid:
            _setup_worker(self.parent_pid)
            self.worker_ready = True
        path, label = datapoint
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as error:
            self.skipped.add(path, f"cannot be read ({error.strerror})")
            return None
        _, problem = integrity.inspect_bytes(data)
        image = None
        if problem != integrity.EMPTY:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            self.skipped.add(path, problem or integrity.CORRUPT)
            return None
        return [image, label]


def _rgb_batches(dataflow):
    for images, labels in dataflow:
        yield np.ascontiguousarray(images[..., ::-1]), labels.astype(np.int32)


class _InProcessBatches:
    """Generator function for ``from_generator``: each call iterates one epoch afresh."""

    def __init__(self, dataflow):
        self.dataflow = dataflow
        self.dataflow.reset_state()

    def __call__(self):
        return _rgb_batches(self.dataflow)


class _WorkerBatches:
    """Generator function for ``from_generator`` over a ``MultiProcessRunnerZMQ``.

    The DataFlow is reset, which forks its workers, at construction, in the calling
    thread, normally the main one: a child forked from another thread allocates
    from that thread's malloc arena, whose heap glibc trims and refills for every
    image (the workers spent as much time in the kernel as in Python, measured).
    One background thread, started by the first call, then pulls the batches and
    hands them over a bounded queue, because tf.data calls a generator from varying
    threads while a ZMQ socket must be used by one thread at a time. Each call
    yields ``len(dataflow)`` batches of the workers' endless stream.

    The consumer waits in slices of :data:`_POLL_SECONDS`: when the producing thread
    has ended the epoch ends; when every worker process (``workers()``, a list of
    ``multiprocessing.Process``) has died, no batch can come, and it says so.
    """

    _END = object()

    def __init__(self, dataflow, queue_size: int = 4, workers=list):
        self.dataflow = dataflow
        with _one_opencv_thread():
            self.dataflow.reset_state()
        self.workers = workers()
        self.queue = queue.Queue(queue_size)
        self.stopping = threading.Event()
        self.thread = None
        # Tensorpack closes its ZMQ socket in an exit handler; closing it while this
        # thread waits on it crashed or hung the process at exit (seen here). Exit
        # handlers run last-registered first, so this stops the thread before that.
        atexit.register(self._stop)

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self):
        from tensorpack.dataflow import DataFlowTerminated

        try:
            while True:
                for batch in _rgb_batches(self.dataflow):
                    if not self._put(batch):
                        return
                if not self._put(self._END):
                    return
        except DataFlowTerminated:  # the workers were ended: no more batches, this epoch ends
            self._put(self._END)
        except Exception as error:  # handed to the consumer, which raises it
            self._put(error)

    def _stop(self):
        self.stopping.set()
        if self.thread is not None:
            # The workers still run, so a pending receive completes soon.
            self.thread.join(timeout=30)

    def __call__(self):
        if self.thread is None:
            self.thread = threading.Thread(target=self._produce, daemon=True,
                                           name="tensorpack-dataflow")
            self.thread.start()
        while True:
            try:
                item = self.queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self.thread.is_alive():
                    return  # the producer ended without a word (it was stopped): so does the epoch
                if self.workers and not any(worker.is_alive() for worker in self.workers):
                    codes = ", ".join(str(worker.exitcode) for worker in self.workers)
                    raise RuntimeError(f"the {len(self.workers)} Tensorpack worker processes ended (exit codes "
                                       f"{codes}) and no batch can come; see their messages above")
                continue
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item


def images(image_list: ImageList, *, train: bool, image_size: int, batch_size: int, shuffle: bool,
           drop_remainder: bool, skipped: SkippedFiles,
           eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL) -> tf.data.Dataset:
    """Batches ``(uint8 [B, S, S, 3] RGB, int32 [B])`` of ``image_list`` through Tensorpack."""
    from tensorpack.dataflow import AugmentImageComponent, BatchData, DataFromList, MapData
    from tensorpack.dataflow import MultiProcessRunnerZMQ

    files = DataFromList(list(zip(image_list.paths, image_list.labels)), shuffle=shuffle)
    flow = MapData(files, DecodeBGR(skipped))
    flow = AugmentImageComponent(flow, fbresnet_augmentors(train, image_size, eval_protocol), copy=False)
    # Without shuffling, every worker would send the same images in the same order.
    if train and shuffle:
        runner = MultiProcessRunnerZMQ(flow, num_proc=len(os.sched_getaffinity(0)))
        # runner._procs: its worker processes, started when _WorkerBatches resets the flow.
        batches = _WorkerBatches(BatchData(runner, batch_size, remainder=not drop_remainder),
                                 workers=lambda: runner._procs)
    else:
        batches = _InProcessBatches(BatchData(flow, batch_size, remainder=not drop_remainder))
    batch = batch_size if drop_remainder else None
    signature = (tf.TensorSpec([batch, image_size, image_size, 3], tf.uint8),
                 tf.TensorSpec([batch], tf.int32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return dataset.prefetch(tf.data.AUTOTUNE)
