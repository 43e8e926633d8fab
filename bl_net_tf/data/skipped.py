"""Naming and counting the image files a loader had to skip."""
import logging
import multiprocessing
import os
import threading

logger = logging.getLogger(__name__)


def display_name(name) -> str:
    """A file name (str or bytes) for messages: bytes that are not UTF-8 as ``\\xNN``, so that any
    name can be logged and read."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class SkippedFiles:
    """Record of the files a loader skipped: each is logged as a warning and counted.

    Pass one instance to ``imagenet_dataset(..., skipped=...)`` to read the count
    afterwards. The count is kept in shared memory, so files skipped inside the
    Tensorpack loader's forked worker processes are counted too; ``names`` only lists
    the files skipped in this process (the workers' warnings go to their own stderr).
    """

    def __init__(self):
        self._count = multiprocessing.Value("q", 0)
        self._names_lock = threading.Lock()
        self._names = []

    def add(self, name, reason: str) -> None:
        """Logs ``name`` (a path as str or bytes) as skipped for ``reason`` and counts it."""
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        logger.warning("Skipping image %s: %s", display_name(name), reason)
        with self._count.get_lock():
            self._count.value += 1
        with self._names_lock:
            self._names.append(name)

    def __getstate__(self):
        # Only the shared counter crosses into a spawned worker; names stay per process.
        return {"count": self._count}

    def __setstate__(self, state):
        self._count = state["count"]
        self._names_lock = threading.Lock()
        self._names = []

    @property
    def count(self) -> int:
        """How many files were skipped, in all processes, since construction."""
        return self._count.value

    @property
    def names(self) -> list:
        """The files skipped in this process, in the order they were met, as ``str`` (a name that is
        not UTF-8 as ``os.fsdecode`` gives it: ``os.fsencode`` returns the file's bytes)."""
        with self._names_lock:
            return list(self._names)
