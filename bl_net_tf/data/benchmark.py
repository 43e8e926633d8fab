"""Measures the images/s of an ImageNet loader.

    python -m bl_net_tf.data.benchmark --data_dir D --loader tfdata|tensorpack \\
        --split train|val --batch_size 64 --batches 50 [--runs 3]

Pulls ``--warmup`` batches first (start-up, worker processes, autotuning), then
times ``--runs`` windows of ``--batches`` batches each and prints the images/s of
each window and their median.
"""
import argparse
import os
import statistics
import time

from tqdm import tqdm

from bl_net_tf.data.imagenet import LOADERS, SPLITS, imagenet_dataset


def measure(dataset, *, batches: int, warmup: int, runs: int) -> list:
    """Images/s of ``runs`` windows of ``batches`` batches, after ``warmup`` batches."""
    iterator = iter(dataset.repeat())
    for _ in tqdm(range(warmup), desc="warm-up", leave=False):
        next(iterator)
    rates = []
    for run in range(runs):
        images = 0
        start = time.perf_counter()
        for _ in tqdm(range(batches), desc=f"run {run + 1}/{runs}", unit="batch", leave=False):
            images += int(next(iterator)[1].shape[0])
        rates.append(images / (time.perf_counter() - start))
    return rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Images/s of an ImageNet input pipeline.")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--loader", choices=LOADERS, default="tfdata")
    parser.add_argument("--split", choices=sorted(SPLITS), default="train")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50, help="batches per timed run")
    parser.add_argument("--warmup", type=int, default=10, help="batches before timing")
    parser.add_argument("--runs", type=int, default=1, help="timed runs; the median is printed")
    parser.add_argument("--image_size", type=int, default=224)
    args = parser.parse_args(argv)

    dataset = imagenet_dataset(args.data_dir, args.split, args.batch_size, loader=args.loader,
                               image_size=args.image_size)
    rates = measure(dataset, batches=args.batches, warmup=args.warmup, runs=args.runs)
    for run, rate in enumerate(rates, 1):
        print(f"run {run}: {rate:.1f} images/s")
    print(f"{args.loader} {args.split}: {statistics.median(rates):.1f} images/s "
          f"(median of {len(rates)}, batch {args.batch_size}, {args.image_size}px, "
          f"{len(os.sched_getaffinity(0))} CPUs)")


if __name__ == "__main__":
    main()
