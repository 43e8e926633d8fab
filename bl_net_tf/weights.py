"""Where a model's weights come from: ``create_model(weights=...)``, the trainers' ``--init_weights``
and the exporter's ``--weights`` / ``--pytorch_checkpoint`` all read them through :func:`find`.

A source is one of:

* ``"imagenet"``: the official release's ImageNet checkpoint of the arch (:data:`OFFICIAL`, α=2,
  β=4), looked up by its file name in ``$BL_NET_TF_WEIGHTS_DIR``, else ``<cache>/weights``
  (``~/.cache/bl_net_tf/weights``; ``$BL_NET_TF_CACHE`` moves the cache). Nothing is downloaded:
  the files sit behind share links, so without the file one line says which file to download from
  which page and where to put it.
* an official PyTorch checkpoint (``.pth.tar``; any file that is none of the below): converted by
  :mod:`bl_net_tf.convert_pytorch` into the network the official code builds (``upsample="nearest"``,
  average-pool shortcuts), the conversion cached as ``<name>.<sha256>.weights.h5`` beside the file
  or, when its folder cannot be written, in ``<cache>/converted``. Later loads need no torch.
* a Keras ``.weights.h5`` (``model.save_weights``, ``bl-net-convert``, a speech run's).
* a training run's model_dir (``run_config.json`` says its network; its latest checkpoint) or one
  of its checkpoints (``model_dir/ckpt-N``); a speech run's model_dir (its ``model.weights.h5``).

What a source says about the network (:attr:`WeightSource.network`: the official weights' upsample
and shortcut, a run's whole configuration) fills the options a request leaves unset and must agree
with those it sets (one-line ValueError otherwise). Then every variable is loaded by its path
(``stage2_big_block1_conv1/kernel``), whatever the data format or precision, except the classifier
(:data:`CLASSIFIER`) when the class counts differ: it keeps its fresh initialisation and a warning
names it. Any other variable that is missing or of another shape is an error listing them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from bl_net_tf import constants
from bl_net_tf.models import registry
from bl_net_tf.models.resnet import DEFAULT_MERGES

logger = logging.getLogger(__name__)

IMAGENET = "imagenet"
WEIGHTS_DIR_ENV = "BL_NET_TF_WEIGHTS_DIR"
# The layer every family's head ends in (models/resnet.py classifier_head, models/speech.py speech_head).
CLASSIFIER = "head_fc"
# What train_speech.py writes into its model_dir at the end of a run (speech/trainer.py).
SPEECH_RUN_WEIGHTS = "model.weights.h5"
_KERAS_SUFFIX = ".weights.h5"
_LISTED = 8  # names an error lists per kind of mismatch


@dataclasses.dataclass(frozen=True)
class OfficialCheckpoint:
    """One ImageNet checkpoint of the official release (IBM/BigLittleNet README and
    models/_model_urls.py at dff465428df4e921fdb73ac5cd4510c20b303d95): all α=2, β=4."""

    arch: str
    title: str  # as the release's README names it
    file_name: str
    page: str  # the share link it is downloaded from, by hand
    top1_err: float  # % on a single 224 crop, as the release's README prints it


OFFICIAL_ALPHA, OFFICIAL_BETA = 2, 4
OFFICIAL = {checkpoint.arch: checkpoint for checkpoint in (
    OfficialCheckpoint("bl-resnet50", "bLResNet-50 (α=2, β=4)", "ImageNet-bLResNet-50-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blresnet-50-a2-b4", 22.41),
    OfficialCheckpoint("bl-resnet101", "bLResNet-101 (α=2, β=4)", "ImageNet-bLResNet-101-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blresnet-101-a2-b4", 21.34),
    OfficialCheckpoint("bl-resnext50-32x4d", "bLResNeXt-50 (32x4d)", "ImageNet-bLResNeXt-50-32x4d-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blresnext-50-32x4d-a2-b4", 21.62),
    OfficialCheckpoint("bl-resnext101-32x4d", "bLResNeXt-101 (32x4d)", "ImageNet-bLResNeXt-101-32x4d-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blresnext-101-32x4d-a2-b4", 20.87),
    OfficialCheckpoint("bl-resnext101-64x4d", "bLResNeXt-101 (64x4d)", "ImageNet-bLResNeXt-101-64x4d-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blresnext-101-64x4d-a2-b4", 20.34),
    OfficialCheckpoint("bl-seresnext50-32x4d", "bLSEResNeXt-50 (32x4d)",
                       "ImageNet-bLSEResNeXt-50-32x4d-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blseresnext-50-32x4d-a2-b4", 21.44),
    OfficialCheckpoint("bl-seresnext101-32x4d", "bLSEResNeXt-101 (32x4d)",
                       "ImageNet-bLSEResNeXt-101-32x4d-a2-b4.pth.tar",
                       "https://ibm.box.com/v/blseresnext-101-32x4d-a2-b4", 21.04),
)}
# The network every official checkpoint is, in create_model's options (models/blresnet.py,
# blresnext.py, blseresnext.py): F.interpolate's nearest upsampling, AvgPool2d + 1x1 conv shortcuts,
# two branches merged by addition in all four bL stages.
OFFICIAL_NETWORK = {"upsample": "nearest", "shortcut": "avgpool", "merge": "add", "branches": 2,
                    "merges": DEFAULT_MERGES}
# The network options a source may fix (create_model's names; "arch" with its ResNeXt widths).
NETWORK_OPTIONS = ("arch", "alpha", "beta", "merge", "branches", "merges", "upsample", "shortcut")


def weights_dir() -> str:
    """Where ``weights="imagenet"`` looks for the official files: ``$BL_NET_TF_WEIGHTS_DIR``, else
    ``<cache>/weights`` (``$BL_NET_TF_CACHE``, else ``~/.cache/bl_net_tf``)."""
    from bl_net_tf.data.demo import cache_root

    return os.environ.get(WEIGHTS_DIR_ENV) or os.path.join(cache_root(), "weights")


def official_table() -> str:
    """The official checkpoints as the Markdown table of docs/deployment.md."""
    lines = ["| model (official name) | `arch` | file | page | top-1 err (%) |", "|---|---|---|---|---:|"]
    lines += [f"| {c.title} | `{c.arch}` | `{c.file_name}` | {c.page} | {c.top1_err:.2f} |" for c in OFFICIAL.values()]
    return "\n".join(lines)


def arch_name(arch: str, cardinality: Optional[int] = None, base_width: Optional[int] = None) -> str:
    """The registry's full name of ``arch`` (aliases and ResNeXt widths resolved)."""
    return registry.get_spec(arch, cardinality, base_width).name


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """A source :func:`find` recognised.

    Attributes:
      kind: ``keras`` (a .weights.h5), ``checkpoint`` (a training run's) or ``pytorch``.
      path: the file, or the checkpoint's prefix.
      label: how messages name it.
      network: the create_model options it fixes (:data:`NETWORK_OPTIONS`; ``arch`` comes with
        ``cardinality`` and ``base_width``), resolved as ``validate_model_options`` resolves them.
      why: what says so, for the message of a conflicting request.
      num_classes: its classes when known without reading the weights, else None.
    """

    kind: str
    path: str
    label: str
    network: dict = dataclasses.field(default_factory=dict)
    why: str = ""
    num_classes: Optional[int] = None

    def fill(self, values: dict, given, flag: bool = False) -> dict:
        """``values`` (create_model or TrainConfig options by name) with the source's network where
        the name is not in ``given``; ``num_classes`` None becomes the source's when it is known.

        Raises:
          ValueError: a name in ``given`` whose value differs from the source's (``flag``: named as
            the trainer's ``--flag``).
        """
        values = dict(values)
        for name, theirs in self.network.items():
            if name in ("cardinality", "base_width"):
                continue  # with "arch"
            if name == "arch":
                theirs_name = arch_name(theirs, self.network.get("cardinality"), self.network.get("base_width"))
                if "arch" not in given:
                    values.update(arch=theirs, cardinality=self.network.get("cardinality"),
                                  base_width=self.network.get("base_width"))
                elif arch_name(values["arch"], values.get("cardinality"), values.get("base_width")) != theirs_name:
                    raise ValueError(self._conflict("arch", theirs_name, values["arch"], flag))
            elif name not in given or values[name] is None:
                values[name] = theirs
            elif values[name] != theirs:
                raise ValueError(self._conflict(name, theirs, values[name], flag))
        if values.get("num_classes") is None and self.num_classes is not None:
            values["num_classes"] = self.num_classes
        return values

    def _conflict(self, name: str, theirs, ours, flag: bool) -> str:
        asked = f"--{name}={ours}" if flag else f"{name}={ours!r}"
        return f"{self.label} needs {name}={theirs!r} ({self.why}), got {asked}"

    def read(self, model: keras.Model, request) -> dict:
        """``{variable path: array}`` for the variables of ``model`` (built for ``request``, a
        ModelOptions) that the source holds, the classifier's whatever its shape.

        Raises:
          ValueError: unreadable, or not this network (one line).
        """
        if self.kind == "checkpoint":
            from bl_net_tf.training.checkpoints import read_model_variables

            return read_model_variables(self.path, model)
        return _read_keras(self._keras_file(request), model)

    def _keras_file(self, request) -> str:
        """The ``.weights.h5`` to read: the file itself, or the cached conversion of a PyTorch one."""
        if self.kind == "keras":
            return self.path
        from bl_net_tf import convert_pytorch  # torch is an optional extra: only to convert

        name = f"{_stem(self.path)}.{_sha256(self.path)[:16]}{_KERAS_SUFFIX}"
        folders = (os.path.dirname(os.path.abspath(self.path)), _user_cache("converted"))
        for folder in folders:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        converted = convert_pytorch.convert_checkpoint(self.path, request.spec.name, request.alpha, request.beta,
                                                       data_format="channels_last")
        path = _save_first_writable(converted, folders, name)
        logger.info("converted %s to %s (read from there from now on)", self.path, path)
        return path


def find(source, arch: Optional[str] = None, *, need_file: bool = True) -> WeightSource:
    """Recognises a weights source (the module docstring lists them).

    Args:
      source: ``"imagenet"``, a path (str or os.PathLike).
      arch: the registry name of the network to load into (``"imagenet"`` looks its file up by it).
      need_file: False: ``"imagenet"`` does not need its file to be there yet (what the network is
        does not depend on it).

    Raises:
      ValueError: an arch without official weights, a folder that is no run, a run without a
        checkpoint or of a custom model (one line).
      FileNotFoundError: no such file or folder, or (``need_file``) the official file is missing,
        saying where to download it and where to put it.
    """
    source = os.fspath(source)
    if source == IMAGENET:
        return _official(arch, need_file)
    if tf.io.gfile.isdir(source):
        from bl_net_tf.training import run_config

        if tf.io.gfile.exists(os.path.join(source, run_config.FILE_NAME)):
            return _run(source, None)
        if tf.io.gfile.exists(os.path.join(source, SPEECH_RUN_WEIGHTS)):
            return WeightSource("keras", os.path.join(source, SPEECH_RUN_WEIGHTS), f"run {source}")
        raise ValueError(f"{source} is a folder without run_config.json (a train_imagenet.py run) or "
                         f"{SPEECH_RUN_WEIGHTS} (a train_speech.py run)")
    if tf.io.gfile.exists(source + ".index"):
        return _run(os.path.dirname(source), source)
    if not tf.io.gfile.exists(source):
        raise FileNotFoundError(f"no weights file or run folder at {source}")
    if source.endswith(_KERAS_SUFFIX):
        return WeightSource("keras", source, source)
    return WeightSource("pytorch", source, source, dict(OFFICIAL_NETWORK), "the official PyTorch models' structure")


def _official(arch: Optional[str], need_file: bool) -> WeightSource:
    if arch not in OFFICIAL:
        raise ValueError(f"weights='imagenet': the official release has ImageNet weights for "
                         f"{', '.join(OFFICIAL)} (alpha={OFFICIAL_ALPHA}, beta={OFFICIAL_BETA}), not for {arch}")
    official = OFFICIAL[arch]
    path = os.path.join(weights_dir(), official.file_name)
    if need_file and not os.path.isfile(path):
        raise FileNotFoundError(f"weights='imagenet' for {arch} reads the official {official.file_name}, which is "
                                f"not in {weights_dir()}: download it from {official.page} (the IBM/BigLittleNet "
                                f"release) into that folder, or set ${WEIGHTS_DIR_ENV} to the folder that holds it")
    network = dict(OFFICIAL_NETWORK, arch=arch, alpha=OFFICIAL_ALPHA, beta=OFFICIAL_BETA)
    return WeightSource("pytorch", path, f"the official {official.file_name}", network,
                        "the official ImageNet weights", num_classes=constants.IMAGENET_CLASSES)


def _run(model_dir: str, checkpoint: Optional[str]) -> WeightSource:
    """A training run's checkpoint (the latest when None), with the network its run_config.json records."""
    from bl_net_tf.models.factory import validate_model_options
    from bl_net_tf.training import run_config

    run = run_config.read(model_dir)
    if run.model is None:
        raise ValueError(f"{model_dir} trained a custom model (model_fn): load its checkpoint with "
                         f"bl_net_tf.training.checkpoints.restore_model_weights")
    if checkpoint is None:  # the newest, found by its files as the trainer finds them
        from bl_net_tf.training.checkpoints import find_checkpoints

        checkpoint = next(iter(find_checkpoints(model_dir)), None)
        if checkpoint is None:
            raise ValueError(f"no checkpoint in {model_dir}")
    trained = validate_model_options(**run.model)
    network = {name: getattr(trained, name) for name in NETWORK_OPTIONS[1:]}
    if not trained.spec.big_little:
        del network["alpha"], network["beta"]  # recorded, never used
    network.update(arch=run.model["arch"], cardinality=run.model.get("cardinality"),
                   base_width=run.model.get("base_width"))
    return WeightSource("checkpoint", checkpoint, f"run {model_dir} ({os.path.basename(checkpoint)})", network,
                        f"as the run trained, {os.path.join(model_dir, run_config.FILE_NAME)}",
                        num_classes=run.num_classes)


# ---- reading ------------------------------------------------------------------------------------

def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_layer_groups(model: keras.Model) -> dict:
    """``{layer name: its group in a .weights.h5 of model}``. Keras addresses a functional model's
    layers there by position, not name: ``layers/<snake_case class name>``, then ``_1``, ``_2``, ...
    for the later layers of the same class (keras/src/saving/saving_lib.py, _save_container_state)."""
    seen, groups = {}, {}
    for layer in model.layers:
        name = _snake_case(type(layer).__name__)
        count = seen.get(name)
        seen[name] = 0 if count is None else count + 1
        groups[layer.name] = f"layers/{name}" + ("" if count is None else f"_{count + 1}")
    return groups


def _read_keras(path: str, model: keras.Model) -> dict:
    """The model's variables from a .weights.h5 written by a model of the same layers (any head,
    layout or precision), by each layer's place in the file; a file with more layers than the
    model (beyond the head of a features_only model) is another network."""
    import h5py

    from bl_net_tf.training.checkpoints import first_line

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"cannot read {path} as a Keras .weights.h5 file: {first_line(error)}") from None
    with handle:
        state, weighted = {}, [layer for layer in model.layers if layer.weights]
        groups = _h5_layer_groups(model)
        for layer in weighted:
            stored = handle.get(f"{groups[layer.name]}/vars")
            if stored is None or len(stored) != len(layer.weights):
                continue  # missing: reported with the model's names
            for index, variable in enumerate(layer.weights):  # the order Layer.save_own_variables writes
                state[variable.path] = np.asarray(stored[str(index)])
        in_file = sum(1 for group in handle.get("layers", {}).values() if len(group.get("vars", ())))
    has_head = any(layer.name == CLASSIFIER for layer in weighted)
    if in_file > len(weighted) and has_head:
        raise ValueError(f"{path} holds {in_file} layers with weights, the model {len(weighted)}: another network")
    return state


# ---- loading into a model -----------------------------------------------------------------------

def _listing(label: str, items: list) -> str:
    more = f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else ""
    return f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}"


def assign(model: keras.Model, state: dict, what: str) -> list:
    """Assigns ``state`` (``{variable path: array}``) to ``model``'s variables; returns the paths of
    the classifier's variables left as they were (another class count, or none in ``state``).

    Raises:
      ValueError: another variable is missing or of another shape (all listed, one line).
    """
    missing, misshaped, keep = [], [], []
    for variable in model.weights:
        value = state.get(variable.path)
        fits = value is not None and tuple(value.shape) == tuple(variable.shape)
        if not fits and variable.path.startswith(CLASSIFIER + "/"):
            keep.append(variable.path)
        elif value is None:
            missing.append(variable.path)
        elif not fits:
            misshaped.append(f"{variable.path} {tuple(value.shape)} vs {tuple(variable.shape)}")
    problems = [_listing(label, items) for label, items in (("missing", missing),
                                                             ("mis-shaped (weights vs model)", misshaped)) if items]
    if problems:
        raise ValueError(f"does not fit {what}: {'; '.join(problems)}")
    for variable in model.weights:
        if variable.path not in keep:
            variable.assign(np.asarray(state[variable.path], dtype=variable.dtype))
    return keep


def _describe(request, arch: Optional[str] = None) -> str:
    """``bl-resnet50 (alpha=2, beta=4, num_classes=10)``: the network asked for."""
    options = f"alpha={request.alpha}, beta={request.beta}, " if request.spec.big_little else ""
    return f"{arch or request.spec.name} ({options}num_classes={request.num_classes})"


def _source_classes(state: dict) -> Optional[int]:
    kernel = state.get(f"{CLASSIFIER}/kernel")
    return None if kernel is None else int(kernel.shape[-1])


def load_into(model: keras.Model, source: WeightSource, request, arch: Optional[str] = None,
              state: Optional[dict] = None) -> None:
    """Loads ``source`` (or its ``state``, already read) into ``model``, built for ``request``;
    logs what it loaded and, as a warning, the classifier it left as initialised. ``arch``: the
    name the user gave, for messages.

    Raises:
      ValueError: see :meth:`WeightSource.read` and :func:`assign`.
    """
    state = source.read(model, request) if state is None else state
    try:
        kept = assign(model, state, _describe(request, arch))
    except ValueError as error:
        raise ValueError(f"{source.label} {error}") from None
    logger.info("loaded %d of the %d variables of %s from %s", len(model.weights) - len(kept), len(model.weights),
                model.name, source.label)
    if kept:
        classes = _source_classes(state)
        had = f"the {classes}-class classifier" if classes is not None else "the classifier (it has none)"
        logger.warning("%s: replaced %s of %s by a new %d-class one (%s newly initialised)", model.name, had,
                       source.label, request.num_classes, ", ".join(kept))


def create(request, weights, *, arch: str, num_classes_given: bool) -> keras.Model:
    """``create_model(arch, ..., weights=weights)`` for the ``request`` validate_model_options
    completed from the source. Without ``num_classes``, a source whose classes only its weights
    tell (a .weights.h5, a PyTorch file) has the model built again with them."""
    from bl_net_tf.models.factory import build_model

    source = find(weights, request.spec.name)
    model = build_model(request)
    state = source.read(model, request)
    classes = _source_classes(state)
    if not (num_classes_given or request.features_only or classes in (None, request.num_classes)):
        request = dataclasses.replace(request, num_classes=classes)
        model = build_model(request)
    load_into(model, source, request, arch, state)
    return model


def initialize(model: keras.Model, source, options: dict, *, resumed_from: Optional[str] = None) -> None:
    """A trainer's ``--init_weights``: loads ``source`` into ``model``, the network of the
    create_model ``options`` (with the data's class count), unless the run resumed from its own
    checkpoint ``resumed_from``, which wins (logged).

    Raises:
      ValueError, FileNotFoundError: see :func:`find` and :func:`load_into`.
    """
    if resumed_from is not None:
        logger.info("--init_weights=%s not loaded: the run resumes from its own checkpoint %s", source, resumed_from)
        return
    from bl_net_tf.models.factory import validate_model_options

    request = validate_model_options(**options)
    load_into(model, find(source, request.spec.name), request, options.get("arch"))


# ---- files --------------------------------------------------------------------------------------

def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".pth.tar", ".pth", ".pt", ".tar"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _user_cache(folder: str) -> str:
    from bl_net_tf.data.demo import cache_root

    return os.path.join(cache_root(), folder)


def _save_first_writable(model: keras.Model, folders, name: str) -> str:
    """Saves ``model``'s weights as ``name`` in the first of ``folders`` that takes it (written
    beside and renamed into place, so a reader never sees half a file); returns the path.

    Raises:
      OSError: none of them can be written.
    """
    error = None
    for folder in folders:
        path = os.path.join(folder, name)
        temporary = os.path.join(folder, f".{os.getpid()}.{name}")
        try:
            os.makedirs(folder, exist_ok=True)
            model.save_weights(temporary)
            os.replace(temporary, path)
            return path
        except OSError as failure:
            error = failure
            with contextlib.suppress(OSError):
                os.remove(temporary)
    raise OSError(f"cannot write the converted weights {name} into {' or '.join(folders)}: {error}")
