"""Parameter and multiply-accumulate counts, the way the paper's tables count them.

``bl-net-profile`` (``python -m bl_net_tf.profile``)::

    bl-net-profile --arch=bl-resnet50 --alpha=2 --beta=4 --image_size=224
    bl-net-profile --paper           # every row of the paper's tables, side by side
    bl-net-profile --zoo --markdown  # the README's model table
"""
from __future__ import annotations

import math
import sys

import keras
from absl import flags
from keras import layers

from bl_net_tf import cli
from bl_net_tf.constants import DEFAULT_IMAGE_SIZE


def _spatial(layer) -> int:
    shape = layer.output.shape
    h, w = (shape[2], shape[3]) if layer.data_format == "channels_first" else (shape[1], shape[2])
    if h is None or w is None:
        raise ValueError(f"layer {layer.name} has a dynamic spatial size; build the model with a fixed input_shape")
    return int(h) * int(w)


def layer_macs(layer) -> int:
    """Multiply-accumulates of one conv / depthwise conv / dense layer for one example; 0 otherwise."""
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _spatial(layer) * int(layer.kernel.shape[2]) * layer.depth_multiplier * kh * kw
    if isinstance(layer, layers.Conv2D):
        # The kernel is (kh, kw, in/groups, out): each output sees in/groups input channels.
        kh, kw, in_per_group, out = layer.kernel.shape
        return _spatial(layer) * int(out) * int(kh * kw * in_per_group)
    if isinstance(layer, layers.Dense):
        return int(layer.kernel.shape[0] * layer.kernel.shape[1])
    return 0


def count_macs(model: keras.Model, *, include_fc: bool = True) -> int:
    """Multiply-accumulates of the conv and fully-connected layers for one example.

    A grouped conv counts 1/groups of a dense one. The paper's "GFLOPs" are this count without the
    final FC layer (``include_fc=False``; see paper_tables.py). Needs static spatial shapes.
    """
    return sum(layer_macs(layer) for layer in model.layers
               if include_fc or not isinstance(layer, layers.Dense))


def count_params(model: keras.Model) -> int:
    """Trainable parameters (BN's moving statistics excluded, as the paper and PyTorch count them)."""
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))


def profile(arch: str, image_size: int | None = DEFAULT_IMAGE_SIZE, *, include_fc: bool = False, input_shape=None,
            **kwargs) -> tuple:
    """Builds ``arch`` channels_last and returns (params, MACs); without the FC by default, as the
    paper's ImageNet tables count."""
    from bl_net_tf import create_model

    if input_shape is None and image_size is not None:
        input_shape = (image_size, image_size, 3)
    model = create_model(arch, input_shape=input_shape, data_format="channels_last", **kwargs)
    result = count_params(model), count_macs(model, include_fc=include_fc)
    keras.backend.clear_session()
    return result


def _paper_report(out) -> int:
    from bl_net_tf.paper_tables import ROWS

    out.write(f"{'table':6} {'model':58} {'Mparams':>8} {'paper':>7} {'diff':>7}   {'GFLOPs':>7} "
              f"{'paper':>6} {'diff':>7}\n")
    for row in ROWS:
        params, macs = profile(row.arch, input_shape=row.input_shape, include_fc=row.include_fc, **row.kwargs)
        mp, gf = params / 1e6, macs / 1e9
        digits = 3 if gf < 1 else 2
        out.write(f"{row.table:6} {row.label:58} {mp:8.2f} {row.mparams:7.2f} {_pct(mp, row.mparams):>7}   "
                  f"{gf:7.{digits}f} {row.gflops:6.{digits}f} {_pct(gf, row.gflops):>7}"
                  f"{'  ' + row.note if row.note else ''}\n")
        out.flush()
    _detection_report(out)
    return 0


def _detection_report(out) -> None:
    """Table 10: the detectors' GFLOPs include the FPN and heads, so compare savings instead: each
    bL detector's saving against the ResNet-101 detector is its backbone's saving."""
    from bl_net_tf.paper_tables import DETECTION_ROWS

    out.write("\nTable 10 (detection): the paper's detector GFLOPs include FPN, RPN and box head; only the "
              "backbone differs,\nso the paper's saving against the ResNet-101 detector is compared with our "
              "backbones' saving (features_only).\n")
    out.write(f"{'dataset':9} {'size':9} {'backbone':36} {'ours GMACs':>10} {'paper det.':>10}   "
              f"{'saving: ours':>12} {'paper':>7} {'diff':>7}\n")
    baseline = None
    for row in DETECTION_ROWS:
        _, macs = profile(row.arch, input_shape=row.image_size + (3,), features_only=True, **row.kwargs)
        gmacs = macs / 1e9
        if row.arch == "resnet101":
            baseline = row, gmacs
            saving = "-"
        else:
            ours, paper = baseline[1] - gmacs, baseline[0].gflops - row.gflops
            saving = f"{ours:12.2f} {paper:7.2f} {_pct(ours, paper):>7}"
        size = "x".join(map(str, row.image_size))
        out.write(f"{row.dataset:9} {size:9} {row.label:36} {gmacs:10.2f} {row.gflops:10.2f}   {saving:>12}\n")
        out.flush()


def _pct(ours: float, paper: float) -> str:
    return f"{100 * (ours - paper) / paper:+.2f}%"


def _zoo_report(out, markdown: bool, image_size: int) -> int:
    from bl_net_tf.models.registry import ARCHS
    from bl_net_tf.paper_tables import top1_err

    if markdown:
        out.write("| model | params (M) | GFLOPs | paper top-1 err (%) |\n|---|---:|---:|---:|\n")
    for arch, spec in ARCHS.items():  # registry order: each baseline before its bL version
        if spec.task != "image" or spec.family == "shufflenetv2":
            continue  # the ImageNet ResNet zoo; speech and ShuffleNet rows are in --paper
        params, macs = profile(arch, image_size)
        err = top1_err(arch)
        name = f"{arch} (α=2, β=4)" if spec.big_little else arch
        err_text = f"{err:.2f}" if err is not None else "-"
        if markdown:
            out.write(f"| {name} | {params / 1e6:.2f} | {macs / 1e9:.2f} | {err_text} |\n")
        else:
            out.write(f"{name:36} {params / 1e6:8.2f}M {macs / 1e9:7.2f} GFLOPs  top-1 err {err_text}\n")
        out.flush()
    return 0


PROG = "bl-net-profile"
FLAGS_SPEC = {
    "paper": (bool, "Every row of the paper's tables, ours beside the paper's (docs/paper_tables.md)."),
    "zoo": (bool, "Every registered ImageNet ResNet-family model at α=2, β=4 and --image_size."),
    "markdown": (bool, "With --zoo: a markdown table (the README's)."),
}


def define_flags(flag_values: flags.FlagValues) -> None:
    """The model options (create_model's defaults; --image_size 224) and the reports."""
    cli.define_shared(flag_values, cli.model_defaults())
    cli.define(flag_values, FLAGS_SPEC, dict.fromkeys(FLAGS_SPEC, False))


def run(args: flags.FlagValues) -> int:
    """Prints what the parsed flags ask for."""
    if args.paper:
        return _paper_report(sys.stdout)
    if args.zoo:
        return _zoo_report(sys.stdout, args.markdown, args.image_size)
    if not args.arch:
        raise cli.UsageError("give --arch, --paper or --zoo")
    from bl_net_tf import create_model

    model = create_model(args.arch, **cli.model_options(args), data_format="channels_last")
    macs = count_macs(model, include_fc=False)
    print(f"{model.name}: params {count_params(model) / 1e6:.2f}M  GFLOPs {macs / 1e9:.2f} "
          f"(conv MACs at {args.image_size}x{args.image_size}; with the FC: {count_macs(model) / 1e9:.3f})")
    return cli.OK


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
