"""``create_model``: validates the whole request (:func:`validate_model_options`), then builds a
Keras functional model from the registry and the arch's family (families.py)."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

import keras
from keras import layers

from bl_net_tf import constants
from bl_net_tf.models import registry
from bl_net_tf.models.families import FAMILIES, Family
from bl_net_tf.models.layers import ImageNetNormalization, LayerContext
from bl_net_tf.models.resnet import DEFAULT_MERGES, BigLittleOptions

# The NHWC -> NCHW transpose at the input of a channels_first model (serving/layout.py undoes it).
TO_CHANNELS_FIRST_DIMS = (3, 1, 2)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """A validated ``create_model`` request: the arch's spec (ResNeXt widths applied) and the other
    options under create_model's names, resolved (``num_classes`` and ``input_shape`` from the family when not given, ``merges``
    4 when None, ``shortcut`` the arch's default when None: None only for a family without the
    option). ``data_format`` None stays None: it is resolved on the device that builds."""

    spec: registry.ArchSpec
    alpha: int
    beta: int
    num_classes: int
    input_shape: tuple
    data_format: Optional[str]
    include_preprocessing: bool
    merge: str
    branches: int
    merges: int
    upsample: str
    shortcut: Optional[str]
    features_only: bool

    @property
    def family(self) -> Family:
        return FAMILIES[self.spec.family]

    @property
    def name(self) -> str:
        """The Keras model's name, e.g. ``bl_resnet50_a2_b4`` (+ ``_concat``, ``_k3``, ``_m2``, ``_nearest``, a
        shortcut other than the arch's default such as ``_conv``, ``_features``)."""
        name = self.spec.name.replace("-", "_") + (f"_a{self.alpha}_b{self.beta}" if self.spec.big_little else "")
        name += (f"_{self.merge}" if self.merge != "add" else "") + (f"_k{self.branches}" if self.branches != 2 else "")
        name += f"_m{self.merges}" if self.merges != DEFAULT_MERGES else ""
        name += f"_{self.upsample}" if self.spec.big_little and self.upsample != "bilinear" else ""
        name += f"_{self.shortcut}" if self.shortcut != self.family.default_shortcut(self.spec) else ""
        return name + ("_features" if self.features_only else "")


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature map of a ``features_only`` model (timm's ``feature_info``, Model Garden's
    ``output_specs``): the layer it taps, its channels and its stride (input size / map size, in
    frequency for the speech models, which never stride in time)."""

    name: str
    channels: int
    stride: int


def default_data_format() -> str:
    """channels_first where a GPU is visible (cuDNN's native layout), channels_last otherwise
    (TF's CPU kernels)."""
    import tensorflow as tf

    return "channels_first" if tf.config.list_physical_devices("GPU") else "channels_last"


def _check_input_shape(input_shape) -> tuple:
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3, None):
        raise ValueError(f"input_shape must be (height, width, 3) (images are NHWC whatever the data_format), "
                         f"got {input_shape}")
    return input_shape


def _check_ablations(spec: registry.ArchSpec, family: Family, *, merge: str, branches, merges) -> int:
    """Tables 7 and 8's options, one at a time and on the archs that have them; returns ``merges``
    resolved (their limits per depth and α are the family's check)."""
    if isinstance(branches, bool) or branches not in constants.BRANCH_COUNTS:
        raise ValueError(f"branches must be one of {', '.join(map(str, constants.BRANCH_COUNTS))} (Table 7's K), "
                         f"got {branches!r}")
    if merges is not None and (isinstance(merges, bool) or not isinstance(merges, int)):
        raise ValueError(f"merges must be an integer or None (= {DEFAULT_MERGES}), got {merges!r}")
    merges = DEFAULT_MERGES if merges is None else merges
    ablations = [label for label, on in (("merge='concat'", family.ablations and merge != "add"),
                                         (f"branches={branches}", branches != 2),
                                         (f"merges={merges}", merges != DEFAULT_MERGES)) if on]
    if ablations and not (family.ablations and spec.big_little):
        raise ValueError(f"{ablations[0]} is an ablation of the bL-ResNet/ResNeXt/SE-ResNeXt archs, "
                         f"not of {spec.name!r}")
    if len(ablations) > 1:
        raise ValueError(f"{' and '.join(ablations)} are separate ablations (Tables 7, 8); choose one at a time")
    return merges


def _check_shortcut(spec: registry.ArchSpec, family: Family, shortcut: Optional[str]) -> Optional[str]:
    """``shortcut`` resolved: None is the arch's faithful default (the family's ``default_shortcut``)."""
    if shortcut is None:
        return family.default_shortcut(spec)
    if not family.shortcuts:
        raise ValueError(f"shortcut applies to the ResNet/ResNeXt/SE-ResNeXt archs (and their bL versions), "
                         f"not to {spec.name!r}")
    return constants.check_choice("shortcut", shortcut, family.shortcuts, more=" or None (the arch's default)")


def validate_model_options(arch: str, **options) -> ModelOptions:
    """Checks ``create_model(arch, **options)`` without building anything: the same arguments and
    defaults, every check create_model makes. Trainers and command lines call it before they prepare
    data or write anything. With ``weights``, the options left unset take the source's values
    (bl_net_tf/weights.py) and those set must agree with them; the weights are not read.

    Returns:
      the resolved :class:`ModelOptions`.

    Raises:
      ValueError: one line naming the bad value and what is allowed.
    """
    params = inspect.signature(create_model).parameters
    names = [name for name, param in params.items() if param.kind is param.KEYWORD_ONLY]
    for name in options:
        constants.check_choice("option", name, names)
    values = {name: params[name].default for name in names} | options
    weights = values.pop("weights")
    if weights is not None:  # what the source says about the network fills what the request leaves unset
        from bl_net_tf import weights as sources

        source = sources.find(weights, sources.arch_name(arch, values["cardinality"], values["base_width"]),
                              need_file=False)
        given = {"arch"} | {name for name, value in values.items() if value is not None}
        values = source.fill(dict(values, arch=arch), given)
        arch = values.pop("arch")
    spec = registry.get_spec(arch, values["cardinality"], values["base_width"])
    family = FAMILIES[spec.family]
    num_classes = family.num_classes if values["num_classes"] is None else values["num_classes"]
    for name, value in (("alpha", values["alpha"]), ("beta", values["beta"]), ("num_classes", num_classes)):
        constants.check_positive_int(name, value)
    if values["data_format"] is not None:
        constants.check_choice("data_format", values["data_format"], constants.DATA_FORMATS, more=" or None")
    upsample = "bilinear" if values["upsample"] is None else values["upsample"]  # the paper's
    constants.check_choice("upsample", upsample, constants.UPSAMPLE_MODES)
    if values["merge"] not in family.merges:
        raise ValueError(f"unknown merge {values['merge']!r} for {spec.name}; allowed: {', '.join(family.merges)}")
    if values["include_preprocessing"] and spec.task != "image":
        raise ValueError(f"include_preprocessing (ImageNet mean/std) applies to image models, not {arch!r}")
    merges = _check_ablations(spec, family, merge=values["merge"], branches=values["branches"],
                              merges=values["merges"])
    input_shape = family.input_shape if values["input_shape"] is None else _check_input_shape(values["input_shape"])
    resolved = dict(values, num_classes=num_classes, input_shape=input_shape, merges=merges, upsample=upsample,
                    shortcut=_check_shortcut(spec, family, values["shortcut"]))
    request = ModelOptions(spec, **{f.name: resolved[f.name] for f in dataclasses.fields(ModelOptions)[1:]})
    family.check(request)
    return request


def create_model(arch: str, *, alpha: int = 2, beta: int = 4, num_classes: Optional[int] = None, input_shape=None,
                 data_format: Optional[str] = None, include_preprocessing: bool = False, merge: str = "add",
                 branches: int = 2, merges: Optional[int] = None, upsample: Optional[str] = None,
                 shortcut: Optional[str] = None, cardinality: Optional[int] = None,
                 base_width: Optional[int] = None, features_only: bool = False, weights=None) -> keras.Model:
    """Builds a registered architecture as a Keras 3 functional model that outputs logits.

    Args:
      arch: a name from :func:`list_models` (or a short alias such as ``bl-resnext101``).
      alpha, beta: the Little-Branch's width and depth divisors (bL archs only; ignored otherwise).
      num_classes: logits per image (default: the weights' classes, else 1000; 32000
        context-dependent states for speech). Weights of another class count load into everything
        but the classifier ``head_fc``, which keeps its initialisation (a warning says so).
      input_shape: ``(height, width, 3)``; images are NHWC whatever ``data_format`` is (a
        channels_first model transposes on the device, as tensorpack did). Default 224x224.
        Speech archs take ``(64 mel bins, frames, 3)``, default (64, 49, 3) (see models/speech.py).
      data_format: ``channels_first`` | ``channels_last`` | None (channels_first when a GPU is
        visible). Weights have the same shapes in both formats.
      include_preprocessing: inputs are RGB in [0, 255] (uint8 or float) and are normalised with
        the ImageNet mean/std inside the graph.
      merge: how branches are merged: ``add`` (the paper's choice) or ``concat`` (Table 7; bL
        image and speech archs).
      branches: branches per bL-module, 2 or 3 (Table 7's K; bL-ResNet family only).
      merges: how many times the branches merge (Table 8): None (= 4), or 1, 2 on depth 50 and 7 on
        depth 101 (bL-ResNet family only). The ablations are exclusive: one per model.
      upsample: ``bilinear`` (the paper) or ``nearest`` (the official release; its weights need it).
        None: what the weights need, else bilinear.
      shortcut: the projection shortcut of a bottleneck that changes shape: ``conv`` (Tensorpack's
        strided 1x1 conv + BN) or ``avgpool`` (the official release's 3x3/s2 average pool, then a
        1x1 conv + BN). None: as the paper's models were trained, ``conv`` for the plain baselines,
        ``avgpool`` for the bL models (ResNet family only; models/families.py says why).
      cardinality, base_width: ResNeXt width overrides (default 32x4d for the short names).
      features_only: output the feature maps (C2..C5 at strides 4, 8, 16, 32 for the image archs)
        instead of logits; the model's ``feature_info`` describes them (:class:`FeatureInfo`).
      weights: None (random initialisation); ``"imagenet"`` (the official release's checkpoint of
        the arch, from the folder docs/deployment.md names: nothing is downloaded); a ``.weights.h5``
        file; an official PyTorch ``.pth.tar`` (converted, the conversion cached); a training run's
        model_dir or one of its checkpoints. A run's recorded network (or the official one) fills
        the options left unset; set ones must agree. See bl_net_tf/weights.py.

    Raises:
      ValueError: an unknown name or option, or a value outside what the architecture allows
        (:func:`validate_model_options`, before anything is built); weights of another network.
      FileNotFoundError: no such weights; for ``"imagenet"``, which file to download from where.
    """
    request = validate_model_options(
        arch, alpha=alpha, beta=beta, num_classes=num_classes, input_shape=input_shape, data_format=data_format,
        include_preprocessing=include_preprocessing, merge=merge, branches=branches, merges=merges,
        upsample=upsample, shortcut=shortcut, cardinality=cardinality, base_width=base_width,
        features_only=features_only, weights=weights)
    if weights is None:
        return build_model(request)
    from bl_net_tf import weights as sources

    return sources.create(request, weights, arch=arch, num_classes_given=num_classes is not None)


def build_model(options: ModelOptions) -> keras.Model:
    """Builds a request :func:`validate_model_options` returned."""
    data_format = options.data_format or default_data_format()
    ctx = LayerContext(data_format=data_format, upsample=options.upsample)
    if options.shortcut is not None:
        ctx = dataclasses.replace(ctx, shortcut=options.shortcut)
    inputs = keras.Input(shape=options.input_shape, name="images")
    x = ImageNetNormalization(name="normalize")(inputs) if options.include_preprocessing else inputs
    if data_format == "channels_first":
        x = layers.Permute(TO_CHANNELS_FIRST_DIMS, name="to_channels_first")(x)
    bl = BigLittleOptions(alpha=options.alpha, beta=options.beta, merge=options.merge, branches=options.branches,
                          merges=options.merges)
    family = options.family
    features = family.build(options.spec, ctx, x, bl=bl)
    if not options.features_only:
        return keras.Model(inputs, family.head(ctx, features[-1], options.num_classes), name=options.name)
    model = keras.Model(inputs, features, name=options.name)
    model.feature_info = tuple(FeatureInfo(name, ctx.channels(f), stride) for f, name, stride in
                               zip(features, model.output_names, family.feature_strides(options)))
    return model
