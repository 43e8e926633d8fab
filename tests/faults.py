"""Faults that happen to real files and processes, made on purpose for the tests."""
import multiprocessing
import os
import threading


def corrupt_body(jpeg: bytes) -> bytes:
    """A JPEG that passes the byte check (its start and end markers are intact) but that no decoder
    reads: its Huffman table is overwritten, as a damaged disk block would."""
    table = jpeg.index(b"\xff\xc4")  # DHT marker
    return jpeg[:table + 4] + b"\xff" * 36 + jpeg[table + 40:]


class SilentDataFlow:
    """Stands in for a ``MultiProcessRunnerZMQ`` whose workers died: nothing ever arrives until
    ``release`` is set."""

    def __init__(self):
        self.release = threading.Event()

    def reset_state(self):
        pass

    def __iter__(self):
        self.release.wait()
        return iter(())


def dead_worker(exit_code: int = 3) -> multiprocessing.Process:
    """A worker process that has ended with ``exit_code``."""
    worker = multiprocessing.get_context("fork").Process(target=os._exit, args=(exit_code,))
    worker.start()
    worker.join()
    return worker
