"""The package's command lines: absl flags, one error format, one set of exit statuses.

Every command (``bl-net-train``, ``bl-net-train-speech``, ``bl-net-export``, ``bl-net-convert``,
``bl-net-profile``, ``bl-net-benchmark``, ``bl-net-doctor``; ``python -m bl_net_tf.paper_tables``,
``.data.benchmark``, ``.data.sample_photos``) is a ``main(argv=None) -> int`` that calls
:func:`main` here. It parses ``argv`` (the arguments after the program's name, default
``sys.argv[1:]``) into a FlagValues of its own, so that several commands can run in one process,
and returns the exit status:

  0       done (``--help`` too: the command's docstring and its flags)
  1       bad input, or a failure while running: one line ``<prog>: error: <what is wrong and what
          is allowed>`` on stderr, no traceback. ValueError, OSError, ImportError and a TensorFlow
          ``OpError`` (raised inside an input pipeline or a compiled step: a failed assertion, a
          dead Tensorpack worker) are expected; anything else is a bug and keeps its traceback.
  2       a usage error, in the same one-line format: an unknown flag, a value that is not of the
          flag's type or among its choices, a positional argument, flags that do not go together
  128+N   signal N stopped the command: 130 for Ctrl-C; the trainer saves a checkpoint first on
          SIGTERM (143) or SIGINT and says ``<prog>: stopped: ...`` (the same command resumes)

The flags that several commands share (the model options, ``--data_format``, ``--xla``,
``--mixed_precision``, ...) are defined once, in :data:`SHARED_FLAGS`, with one meaning and one
help text; each command picks its own defaults.
"""
from __future__ import annotations

import inspect
import logging
import re
import signal
import sys
from typing import Callable, Mapping, Optional

from absl import flags, logging as absl_logging

from bl_net_tf import constants
from bl_net_tf.models.resnet import DEFAULT_MERGES, SUPPORTED_MERGES

OK, ERROR, USAGE = 0, 1, 2
_HELP = ("--help", "-help", "--helpfull", "-helpfull", "--helpshort", "-h", "-?")


class UsageError(ValueError):
    """Flags the command does not take (together): exit status 2, before any work is done."""


def _choices(values) -> str:
    return " or ".join(map(str, values))


# name -> (kind, help); a kind is str, int, float, bool or a tuple of the allowed values.
SHARED_FLAGS = {
    # The network: create_model's options under its names (bl_net_tf/models/factory.py).
    "arch": (str, "Architecture: a name from bl_net_tf.list_models(), e.g. bl-resnet50, bl-resnext101-32x4d "
                  "(short names: 32x4d)."),
    "alpha": (int, "Width divisor of the Little-Branch (α; bL archs)."),
    "beta": (int, "Depth divisor of the Little-Branch (β; bL archs)."),
    "cardinality": (int, "ResNeXt groups. Unset: the arch's (32 for the short names)."),
    "base_width": (int, "ResNeXt width per group. Unset: the arch's (4 for the short names)."),
    "merge": (constants.MERGE_KINDS, "How a bL-module merges its branches: add (the paper) or concat (Table 7)."),
    "branches": (int, f"Branches per bL-module: {_choices(constants.BRANCH_COUNTS)} (Table 7's K; "
                      f"bL-ResNet/ResNeXt/SE-ResNeXt)."),
    "merges": (int, f"How many times the branches merge (Table 8): unset is {DEFAULT_MERGES}; by depth, "
                    + "; ".join(f"{depth}: {', '.join(map(str, counts))}" for depth, counts in SUPPORTED_MERGES.items())
                    + " (bL-ResNet/ResNeXt/SE-ResNeXt)."),
    "upsample": (constants.UPSAMPLE_MODES, "How the Big-Branch is upsampled: bilinear (the paper) or nearest "
                                           "(the official PyTorch release; its weights need it). Unset: what the "
                                           "weights need (nearest for the official ones), else bilinear."),
    "shortcut": (constants.SHORTCUT_KINDS, "Projection shortcut of a bottleneck that changes shape: conv "
                                           "(Tensorpack's strided 1x1 conv + BN) or avgpool (the official bL "
                                           "release's 3x3/s2 average pool, then 1x1 conv + BN). Unset: conv for "
                                           "the plain baselines, avgpool for the bL archs, as the paper trained."),
    "num_classes": (int, f"Classes (logits). Unset: the family's, {constants.IMAGENET_CLASSES} for ImageNet, "
                         f"{constants.SPEECH_NUM_CLASSES} states for speech."),
    "image_size": (int, "Side of the square images the network takes (the training crop; for serving, the "
                        "centre crop)."),
    # How it runs on the device.
    "gpus": (int, "GPUs per worker: N >= 2 mirrors over N GPUs, 0 trains on the CPU. Unset: every visible GPU."),
    "data_format": (constants.DATA_FORMAT_MODES, "Layout inside the model (inputs are NHWC either way); auto: "
                                                 "channels_first with a GPU (cuDNN's), channels_last on the CPU."),
    "xla": (constants.XLA_MODES, "XLA-compile each step (jit_compile); auto: on with a GPU, off on the CPU."),
    "mixed_precision": (constants.MIXED_PRECISION, "Compute dtype of the layers, Keras's mixed_float16 or "
                                                   "mixed_bfloat16 policy (variables stay float32); none: float32. "
                                                   "float16 scales the loss."),
    "data_dir": (str, "ImageNet: an image folder, a prepared TFDS imagenet2012 or TFRecord shards (docs/data.md)."),
    "loader": (constants.LOADERS, "Input pipeline: tf.data, or Tensorpack's DataFlow as the paper."),
}
# The model options above, in create_model's order.
MODEL_FLAGS = ("arch", "alpha", "beta", "cardinality", "base_width", "merge", "branches", "merges", "upsample",
               "shortcut", "num_classes", "image_size")


def define(flag_values: flags.FlagValues, specs: Mapping, defaults: Mapping, notes: Optional[Mapping] = None) -> None:
    """Defines a flag for each name of ``defaults`` (its default value) on ``flag_values``: kind and
    help from ``specs`` (``{name: (kind, help)}``), then ``notes[name]`` (what the command makes of
    it, e.g. what unset means there). A kind is str, int, float, bool, a tuple of the allowed values
    (one of them) or a list of them (a comma-separated list of them)."""
    definers = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                bool: flags.DEFINE_bool}
    notes = notes or {}
    for name, default in defaults.items():
        kind, help_text = specs[name]
        help_text = f"{help_text} {notes[name]}" if name in notes else help_text
        if isinstance(kind, tuple):
            flags.DEFINE_enum(name, default, kind, help_text, flag_values=flag_values)
        elif isinstance(kind, list):
            allowed = ", ".join(kind)
            flags.DEFINE_list(name, list(default), f"{help_text} Comma-separated, of: {allowed}.", flag_values=flag_values)
            flags.register_validator(name, lambda values, kind=kind: bool(values) and set(values) <= set(kind),
                                     f"allowed: one or more of {allowed}, comma-separated", flag_values=flag_values)
        else:
            definers[kind](name, default, help_text, flag_values=flag_values)


def define_shared(flag_values: flags.FlagValues, defaults: Mapping, notes: Optional[Mapping] = None) -> None:
    """Defines the :data:`SHARED_FLAGS` named by ``defaults`` (see :func:`define`)."""
    define(flag_values, SHARED_FLAGS, defaults, notes)


def defaults_of(function: Callable, names) -> dict:
    """``{name: function's default}`` for its parameters ``names``: a command's flags default to what
    the function it calls does."""
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in names}


def model_defaults(*names: str) -> dict:
    """``{name: create_model's default}`` for the model flags ``names`` (all of :data:`MODEL_FLAGS`
    without names); ``image_size``: the ImageNet models' 224, ``arch``: None."""
    from bl_net_tf.models.factory import create_model

    defaults = {"arch": None, **defaults_of(create_model, MODEL_FLAGS[1:-1]), "image_size": constants.DEFAULT_IMAGE_SIZE}
    return {name: defaults[name] for name in names or MODEL_FLAGS}


def model_options(flag_values: flags.FlagValues, names=MODEL_FLAGS) -> dict:
    """The ``create_model`` keyword arguments the model flags ``names`` set (``image_size`` as
    ``input_shape``), leaving out the unset ones and ``arch``."""
    options = {name: flag_values[name].value for name in names
               if name in flag_values and name != "arch" and flag_values[name].value is not None}
    if "image_size" in options:
        size = options.pop("image_size")
        options["input_shape"] = (size, size, 3)
    return options


def error_line(error: BaseException) -> str:
    """What a user reads of ``error``: the first line of its message. For a TensorFlow op error,
    the line that says what failed, without TensorFlow's node names and traceback: the Python
    exception raised inside the pipeline (``tf.py_function``, a generator), or an assertion's
    message."""
    message = (getattr(error, "message", None) or str(error)).strip()
    if _is_op_error(error):
        raised = re.findall(r"^\w+(?:Error|Exception): (.+)$", message, flags=re.M)
        asserted = re.search(r"assertion failed: \[(.*?)\s*\]", message)
        if raised:
            return raised[-1]
        if asserted:
            return asserted.group(1)
        lines = [re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line).strip() for line in message.splitlines()]
        message = "\n".join(line for line in lines if line and not line.startswith(
            ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")))
    return (message.splitlines() or [type(error).__name__])[0]


def _is_op_error(error: BaseException) -> bool:
    tf = sys.modules.get("tensorflow")  # an OpError needs TensorFlow imported
    return tf is not None and isinstance(error, tf.errors.OpError)


def _help(prog: str, doc: str, flag_values: flags.FlagValues) -> str:
    for name in flag_values:
        if name not in ("flagfile", "undefok"):
            flag_values.register_key_flag_for_module(prog, flag_values[name])
    return f"{doc.strip()}\n{flag_values.module_help(prog)}"


def _setup_logging(level: str) -> None:
    """absl's log format on stderr, as ``absl.app.run`` sets it up, at ``level``. The command's own
    flags are not absl's global ones: those are marked parsed (their defaults)."""
    absl_logging.use_absl_handler()
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    logging.getLogger().setLevel(level)


def main(prog: str, doc: str, define_flags: Callable[[flags.FlagValues], None],
         run: Callable[[flags.FlagValues], Optional[int]], argv=None, *, expand: Callable[[list], list] = list,
         expected: tuple = (), log_level: str = "WARNING") -> int:
    """Runs a command; returns its exit status (the module docstring).

    Args:
      prog: the name errors start with (the console script's).
      doc: the text ``--help`` prints before the flags.
      define_flags: defines the command's flags on the FlagValues it is given.
      run: does the work with the parsed flags; returns the exit status (None: 0). It raises
        :class:`UsageError` for flags that do not go together, ValueError/OSError/... for bad
        input (one line each).
      argv: the arguments after the program's name (default ``sys.argv[1:]``).
      expand: rewrites ``argv`` before absl reads it (the trainer's ``--recipe``).
      expected: more error types that end the command with status 1 (e.g. a diverged loss).
      log_level: what the ``logging`` module shows, ``"WARNING"`` or ``"INFO"`` (absl's format, on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    if any(arg in _HELP for arg in argv[:argv.index("--") if "--" in argv else len(argv)]):
        print(_help(prog, doc, flag_values), flush=True)
        return OK
    root_level = logging.getLogger().level
    try:
        arguments = flag_values([prog, *expand(argv)])[1:]
        if arguments:
            raise UsageError(f"unexpected arguments {' '.join(arguments)}: this command takes flags only "
                             f"(--help lists them)")
        _setup_logging(log_level)
        status = run(flag_values)
    except (flags.Error, UsageError) as error:
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr, flush=True)
        return USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    except Exception as error:  # noqa: BLE001 (the expected ones are chosen below; others are re-raised)
        if not isinstance(error, (ValueError, OSError, ImportError) + expected) and not _is_op_error(error):
            raise
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr, flush=True)
        return ERROR
    finally:
        logging.getLogger().setLevel(root_level)  # for the next command of a process that runs several
    return OK if status is None else status
