"""Measures the images/s of an ImageNet loader.

    python -m bl_net_tf.data.benchmark --data_dir=D --loader=tfdata|tensorpack \\
        --split=train|val --batch_size=64 --batches=50 [--runs=3]

Pulls ``--warmup`` batches first (start-up, worker processes, autotuning), then
times ``--runs`` windows of ``--batches`` batches each and prints the images/s of
each window and their median. It also prints the CPU time spent per image by
this process and its worker processes, which, unlike images/s, does not depend
on what else the machine is running.
"""
import dataclasses
import os
import statistics
import sys
import time

from absl import flags
from tqdm import tqdm

from bl_net_tf import cli
from bl_net_tf.data.imagenet import SPLITS, imagenet_dataset


def cpu_seconds() -> float:
    """CPU time of this process and its live child processes (psutil, if installed)."""
    total = time.process_time()
    try:
        import psutil
    except ImportError:  # then the Tensorpack workers are not counted
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@dataclasses.dataclass
class Run:
    images_per_second: float
    cpu_ms_per_image: float


def measure(dataset, *, batches: int, warmup: int, runs: int) -> list:
    """A :class:`Run` for each of ``runs`` windows of ``batches`` batches, after ``warmup``."""
    iterator = iter(dataset.repeat())
    for _ in tqdm(range(warmup), desc="warm-up", leave=False):
        next(iterator)
    results = []
    for run in range(runs):
        images = 0
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for _ in tqdm(range(batches), desc=f"run {run + 1}/{runs}", unit="batch", leave=False):
            images += int(next(iterator)[1].shape[0])
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        results.append(Run(images / elapsed, 1000.0 * cpu / images))
    return results


FLAGS_SPEC = {
    "split": (tuple(SPLITS), "The split to read."),
    "batch_size": (int, "Images per batch."),
    "batches": (int, "Batches per timed run."),
    "warmup": (int, "Batches before timing."),
    "runs": (int, "Timed runs; the median is printed."),
}


def define_flags(flag_values: flags.FlagValues) -> None:
    """``--data_dir`` (required), ``--loader``, ``--image_size`` as the trainer's, and the timing flags."""
    cli.define_shared(flag_values, {"data_dir": None, **cli.defaults_of(imagenet_dataset, ("loader", "image_size"))})
    cli.define(flag_values, FLAGS_SPEC, dict(split="train", batch_size=64, batches=50, warmup=10, runs=1))
    flags.mark_flag_as_required("data_dir", flag_values=flag_values)


def run(args: flags.FlagValues) -> int:
    """Times the loader the parsed flags name."""
    dataset = imagenet_dataset(args.data_dir, args.split, args.batch_size, loader=args.loader,
                               image_size=args.image_size)
    results = measure(dataset, batches=args.batches, warmup=args.warmup, runs=args.runs)
    for number, result in enumerate(results, 1):
        print(f"run {number}: {result.images_per_second:.1f} images/s, "
              f"{result.cpu_ms_per_image:.2f} ms CPU per image")
    print(f"{args.loader} {args.split}: "
          f"{statistics.median(r.images_per_second for r in results):.1f} images/s, "
          f"{statistics.median(r.cpu_ms_per_image for r in results):.2f} ms CPU per image "
          f"(median of {len(results)}, batch {args.batch_size}, {args.image_size}px, "
          f"{len(os.sched_getaffinity(0))} CPUs)")
    return cli.OK


def main(argv=None) -> int:
    """Runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main("bl_net_tf.data.benchmark", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
