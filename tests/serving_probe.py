"""Hostile requests against an exported SavedModel, each measured in a fresh process.

Used by tests/test_serving_limits.py (a small export) and from the command line against a
full-size one (docs/deployment.md, "How the limits were measured")::

    python tests/serving_probe.py models/bl_resnet50/1 [case ...]

Each case runs in its own interpreter that never imports bl_net_tf (as TF Serving would): it loads
the SavedModel, answers one ordinary request (so that the graph's own allocations are made), resets
the kernel's peak-RSS mark (``/proc/self/clear_refs``) and sends the hostile request. The growth is
the peak RSS during that request minus the RSS before it. A watchdog thread ends the process when
the growth passes ``--cap_mb`` (default 3000), so that a probe of unfixed code cannot take the
machine down; such a case is reported as ``killed``. The tests send several requests to one process
(:func:`measure`); TF returns large tensors to the system when freed, so each is measured afresh.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
DEFAULT_CAP_MB = 3000

# Runs in a fresh interpreter; argv: export_dir, a pickle of [(name, [bytes, ...]), ...], cap in MB.
# Prints one JSON line per request.
RUNNER = r"""
import json, os, pickle, sys, threading, time
import tensorflow as tf

def rss_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])

export_dir, requests_path, cap_mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(requests_path, "rb") as handle:
    warmup, requests = pickle.load(handle)
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
serve(image_bytes=tf.constant(warmup))
state = {"before": rss_kb("VmRSS"), "name": None}

def watchdog():
    while True:
        if rss_kb("VmRSS") - state["before"] > cap_mb * 1024:
            print(json.dumps({"name": state["name"], "outcome": "killed", "growth_mb": None,
                              "message": f"> {cap_mb:.0f} MB"}), flush=True)
            os._exit(0)
        time.sleep(0.002)

threading.Thread(target=watchdog, daemon=True).start()
for name, request in requests:
    state["name"], state["before"] = name, rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM, the peak RSS, to the current RSS
    start = time.perf_counter()
    try:
        outputs = serve(image_bytes=tf.constant(request, dtype=tf.string))
        outcome, message = "answered", f"probabilities {list(outputs['probabilities'].shape)}"
    except tf.errors.OpError as error:
        lines = [line.strip() for line in error.message.splitlines() if line.strip()]
        asserted = [line for line in lines if line.startswith("assertion failed")]
        noise = ("Graph execution", "Detected at", "File ", "[[", "{{node")
        other = [line for line in lines if not line.startswith(noise)]
        outcome, message = type(error).__name__, (asserted or other or lines or [""])[0]
    seconds = time.perf_counter() - start
    growth = (rss_kb("VmHWM") - state["before"]) / 1024
    print(json.dumps({"name": name, "outcome": outcome, "growth_mb": round(growth, 1), "message": message,
                      "seconds": round(seconds, 2)}), flush=True)
"""


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(width: int, height: int, rows=None) -> bytes:
    """A grey PNG of ``width`` x ``height`` black pixels, written row by row (no array in memory);
    with ``rows``, only that many rows of data follow the header (a header that lies)."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    data = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    data += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``: libjpeg would allocate for
    that size before it finds the data missing."""
    data = bytearray(encode(np.full((16, 16, 3), 128, np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming ``width`` x ``height`` followed by a few bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = bytes(64)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 54) + info + pixels


def gif_frames(width: int, height: int, frames: int) -> bytes:
    """An animated GIF of ``frames`` full-size frames of alternating colours (LZW makes each a few
    KB; giflib decodes them all, one byte per pixel, before the first one is returned)."""
    from PIL import Image

    colours = [Image.new("P", (width, height), color=index % 2) for index in range(frames)]
    for image in colours:
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    buffer = io.BytesIO()
    colours[0].save(buffer, format="GIF", save_all=True, append_images=colours[1:], optimize=False,
                    disposal=1, loop=0)
    return buffer.getvalue()


def gif_of_tiny_blocks(size: int = 1_000_000) -> bytes:
    """A GIF whose first image's data comes in 1-byte blocks: ``size`` bytes of them, the most
    steps a walk through its blocks can take (encoders write 255-byte blocks)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0x80, 0, 0) + bytes(6)  # 2-colour table
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 4, 4, 0) + b"\x02"
    return screen + image + b"\x01\x00" * (size // 2) + b"\x00\x3b"


def webp_of(width: int, height: int) -> bytes:
    """A lossless WebP of one colour: a few hundred bytes whatever its size."""
    return encode(np.zeros((height, width, 3), np.uint8), "WEBP", lossless=True)


def photo_jpeg(size=(375, 500), seed=0) -> bytes:
    """An ordinary photo-sized JPEG (a crop of one of scikit-image's photographs)."""
    from skimage import data

    photo = data.astronaut()
    rng = np.random.RandomState(seed)
    top, left = rng.randint(0, 512 - 256, 2)
    from PIL import Image

    crop = Image.fromarray(photo[top:top + 256, left:left + 256]).resize(size[::-1], Image.BICUBIC)
    return encode(np.asarray(crop), "JPEG", quality=90)


def at_limit(fmt: str, side: int = 4096, **options) -> bytes:
    """A ``side`` x ``side`` image of one grey level: as large as the default limit allows, a few KB."""
    return encode(np.full((side, side, 3), 100, np.uint8), fmt, **options)


def cases(max_batch: int = 16) -> dict:
    """name -> (request: list of bytes, what it is)."""
    one_pixel = encode(np.zeros((1, 1, 3), np.uint8), "JPEG")
    good = photo_jpeg()
    big_jpeg = at_limit("JPEG")
    progressive = at_limit("JPEG", progressive=True)
    return {
        "photo": ([good], "one 500x375 JPEG (the reference point)"),
        "strip_1xN_png": ([encode(np.zeros((1, 2000, 3), np.uint8), "PNG")], "PNG, 2000 wide, 1 high"),
        "strip_Nx1_png": ([encode(np.zeros((2000, 1, 3), np.uint8), "PNG")], "PNG, 1 wide, 2000 high"),
        "strip_1xN_jpeg": ([encode(np.zeros((1, 20000, 3), np.uint8), "JPEG")], "JPEG, 20000 wide, 1 high"),
        "big_png": ([png_of_zeros(20000, 20000)], "PNG, 20000x20000 (400 MP) of zeros, ~1 MB"),
        "png_header_lie": ([png_of_zeros(60000, 60000, rows=4)], "PNG header claiming 60000x60000"),
        "jpeg_header_lie": ([jpeg_with_size(65000, 65000)], "JPEG header claiming 65000x65000"),
        "bmp_header_lie": ([bmp_with_size(30000, 30000)], "BMP header claiming 30000x30000"),
        "big_webp": ([webp_of(10000, 10000)], "lossless WebP, 10000x10000 of zeros"),
        "gif_frames": ([gif_frames(3000, 3000, 20)], "GIF, 20 frames of 3000x3000"),
        "jpeg_at_limit": ([big_jpeg], "JPEG, 4096x4096 (the default max_pixels)"),
        "progressive_jpeg_at_limit": ([progressive], "progressive JPEG, 4096x4096 (libjpeg keeps all coefficients)"),
        "png_at_limit": ([at_limit("PNG")], "PNG, 4096x4096"),
        "webp_at_limit": ([at_limit("WEBP", lossless=True)], "lossless WebP, 4096x4096"),
        "gif_tiny_blocks": ([gif_of_tiny_blocks()], "GIF, 1 MB of 1-byte data blocks"),
        "gif_at_limit": ([gif_frames(4096, 4096, 3)], "GIF, 3 frames of 4096x4096"),
        "bmp_at_limit": ([at_limit("BMP")], "BMP, 4096x4096 (48 MB)"),
        "full_batch_at_limit": ([big_jpeg] * max_batch, f"{max_batch} JPEGs of 4096x4096"),
        "full_batch_progressive": ([progressive] * max_batch, f"{max_batch} progressive JPEGs of 4096x4096"),
        "full_batch_webp": ([at_limit("WEBP", lossless=True)] * max_batch, f"{max_batch} WebPs of 4096x4096"),
        "many_tiny_jpegs": ([one_pixel] * 1000, "1000 one-pixel JPEGs in one request"),
        "batch_over_limit": ([good] * (max_batch + 1), f"{max_batch + 1} photos (one over the limit)"),
        "full_batch": ([good] * max_batch, f"{max_batch} photos (the limit)"),
        "empty_batch": ([], "no image"),
        "mixed_good_bad": ([good, b"not an image", good], "photo, garbage, photo"),
    }


def measure(export_dir: str, requests: dict, cap_mb: float = DEFAULT_CAP_MB) -> dict:
    """Sends each of ``requests`` (name -> list of encoded images), in order, to ``export_dir``'s
    ``serving_default`` in one fresh process; returns name -> result (outcome, growth_mb, message,
    seconds). A request that passes ``cap_mb`` ends the process: it and the ones after it are
    reported as ``killed`` and ``not run``."""
    with tempfile.TemporaryDirectory(prefix="serving_probe_") as folder:
        path = os.path.join(folder, "requests.pickle")
        with open(path, "wb") as handle:
            pickle.dump(([photo_jpeg()], [(name, list(request)) for name, request in requests.items()]), handle)
        result = subprocess.run([sys.executable, "-c", RUNNER, export_dir, path, str(cap_mb)], env=ENV,
                                capture_output=True, text=True, timeout=1800)
    results = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            values = json.loads(line)
            results[values.pop("name")] = values
    failure = "not run" if result.returncode == 0 else \
        f"crashed (exit {result.returncode}): {(result.stderr.strip().splitlines() or [''])[-1]}"
    for name in requests:
        results.setdefault(name, {"outcome": failure, "growth_mb": None, "message": "", "seconds": None})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("cases", nargs="*", help="default: all")
    parser.add_argument("--max_batch", type=int, default=16)
    parser.add_argument("--cap_mb", type=float, default=DEFAULT_CAP_MB)
    args = parser.parse_args(argv)
    table = cases(args.max_batch)
    for name in args.cases or table:
        request, description = table[name]
        result = measure(args.export_dir, {name: request}, args.cap_mb)[name]  # a fresh process each
        growth = "-" if result["growth_mb"] is None else f"{result['growth_mb']:.0f} MB"
        print(f"| {name} | {description} | {len(request)} | {sum(map(len, request)):,} B | "
              f"{result['outcome']} | {growth} | {result.get('seconds', '-')} | {result['message'][:110]} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
