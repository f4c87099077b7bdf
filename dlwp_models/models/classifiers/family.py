"""How the one builder builds a classifier: the ``torchvision`` weight format (adapter and strict
load on the meta device), random models, one-off checkpoint files, and what is attached."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from ...errors import IncompatibleWeightsError
from ...inputs.transforms import ClassifierTransform, check_resized_pixels
from ...loading.checkpoints import plain_state_dict
from ...loading.modules import build_on_meta, load_into
from ...loading.weight_files import load_weight_file
from ...weights.manifest import WeightSet, get_weights
from ...weights.store import CachedFile
from ..family import Family
from ..pipelines import ClassifierPipeline, plain_module
from .architectures import arch_of, architecture_kwargs, check_kwargs, weights_kwargs
from .categories import categories_of
from .heads import check_labels
from .predict import hub_class

__all__ = ["ClassifierFamily", "FAMILY", "adapt_torchvision_state_dict", "build_for_state_dict"]

log = logging.getLogger(__name__)


_DENSENET_OLD_KEY = re.compile(  # torchvision's densenet._load_state_dict pattern (+ the counters)
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def adapt_torchvision_state_dict(state_dict: Any, *, source: str) -> OrderedDict[str, Any]:
    """The "torchvision" format adapter: a plain state dict, with the pre-0.4 DenseNet key names
    of torchvision's own files (``denselayer1.norm.1.weight``) renamed as torchvision does
    (``denselayer1.norm1.weight``), and the batch-norm counters that files saved before PyTorch
    0.4.1 lack set to 0 (as torch does), on the device of their layer's statistics."""
    if not isinstance(state_dict, Mapping):
        raise IncompatibleWeightsError(
            f"{source}: the file holds a {type(state_dict).__name__}, not a state dict. Save the weights "
            "with torch.save(model.state_dict(), path)."
        )
    adapted: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        match = _DENSENET_OLD_KEY.match(key) if isinstance(key, str) else None
        new_key = match.group(1) + match.group(2) if match else key
        if new_key in adapted:
            raise IncompatibleWeightsError(
                f"{source}: key {key!r} and another key both mean {new_key!r}. Keep one of them in the file."
            )
        adapted[new_key] = value
    return adapted  # missing batch-norm counters (pre-0.4.1 files) are filled by load_into


def build_for_state_dict(
    model: str, state_dict: Mapping[str, torch.Tensor], *, source: str, **kwargs: Any
) -> tuple[nn.Module, int]:
    """Build classifier ``model`` with the head ``state_dict`` has (``num_classes`` read from the
    layer whose width differs from ImageNet's 1000) and load it strictly, on the meta device by
    assignment. Returns the module (a plain torchvision one) and its number of classes."""
    import torchvision.models

    builder = getattr(torchvision.models, model)
    requested = kwargs.pop("num_classes", None)
    settings = {**architecture_kwargs(model), **kwargs}
    reference = build_on_meta(lambda: builder(weights=None, **{**settings, "num_classes": 1000}))
    num_classes = 1000
    for key, want in reference.state_dict().items():
        got = state_dict.get(key)
        if (
            isinstance(got, torch.Tensor)
            and got.dim() >= 1
            and want.dim() >= 1
            and want.shape[0] == 1000
            and tuple(got.shape) != tuple(want.shape)
        ):
            num_classes = int(got.shape[0])
            break
    if requested is not None and requested != num_classes:
        raise ValueError(
            f"{source}: the weights have {num_classes} classes, but num_classes={requested!r} "
            "was given. Leave num_classes out; it is read from the weights."
        )
    net = build_on_meta(lambda: builder(weights=None, **{**settings, "num_classes": num_classes}))
    load_into(net, adapt_torchvision_state_dict(state_dict, source=source), source=source)
    return net, num_classes


class _Plan(NamedTuple):
    model: str
    weights: WeightSet | None  # None: a one-off checkpoint file
    described: WeightSet  # whose transforms and labels the model gets
    categories: list[str] | None
    kwargs: Mapping[str, Any]
    drop_aux: bool = False
    classes: int | None = None  # the caller's num_classes (or number of labels)
    labels: list[str] | None = None  # the caller's labels


def _requested_classes(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], int | None, list[str] | None]:
    """The keyword arguments without ``num_classes`` and ``labels``, and those two (checked)."""
    rest = dict(kwargs)
    classes, labels = rest.pop("num_classes", None), rest.pop("labels", None)
    if classes is None and labels is None:
        return rest, None, None
    return (rest, *check_labels(classes, labels))


def _with_head(net: nn.Module, plan: _Plan, have: int) -> nn.Module:
    """The loaded ``net`` (``have`` classes) with the caller's classes: a fresh head when their
    number differs, else the same head, named by ``labels`` when given."""
    if plan.classes is not None and plan.classes != have:
        log.info("%s: a fresh %d-class head on the pretrained body", plan.model, plan.classes)
        net.reset_classifier(plan.labels or plan.classes)
    elif plan.labels is not None:
        net.categories = list(plan.labels)
    return net


def _attach(
    net: nn.Module,
    weights: WeightSet | None,
    described: WeightSet,
    categories: list[str] | None,
    weight_file: CachedFile | None = None,
) -> nn.Module:
    net.__class__ = hub_class(type(net))
    net.weights = weights
    net.weight_file = weight_file
    net.transforms = ClassifierTransform.from_weights(described)
    net.categories = categories
    return net


class ClassifierFamily(Family):
    """The book's ImageNet classifiers (torchvision architectures)."""

    def check_arguments(self, model: str, kwargs: Mapping[str, Any]) -> None:
        import torchvision.models

        arch = arch_of(model)
        rest, _, _ = _requested_classes(kwargs)  # labels: dlwp's own argument
        check_kwargs(model, arch, getattr(torchvision.models, arch.cls_name), {**rest, "num_classes": 1})

    def random(self, model: str, kwargs: Mapping[str, Any]) -> nn.Module:
        import torchvision.models

        described = get_weights("DEFAULT", model)
        categories = categories_of(described)
        kwargs, classes, labels = _requested_classes(kwargs)
        kwargs = {**arch_of(model).random_defaults, **kwargs, **({"num_classes": classes} if classes else {})}
        net = getattr(torchvision.models, model)(weights=None, **kwargs)
        if labels is not None:
            categories = labels
        elif categories is not None and len(categories) != kwargs.get("num_classes", 1000):
            categories = None  # a custom head: its labels are the caller's to set
        return _attach(net, None, described, categories)

    def plan(self, model: str, weights: WeightSet | None, kwargs: Mapping[str, Any]) -> _Plan:
        described = weights or get_weights("DEFAULT", model)
        ClassifierTransform.from_weights(described)  # a bad entry fails before any download
        kwargs, classes, labels = _requested_classes(kwargs)
        if weights is None:
            return _Plan(model, None, described, categories_of(described), kwargs, False, classes, labels)
        categories = categories_of(weights)
        build_kwargs, drop_aux = weights_kwargs(model, arch_of(model), weights, categories, kwargs)
        return _Plan(model, weights, weights, categories, build_kwargs, drop_aux, classes, labels)

    def load(self, plan: _Plan, files: Mapping[str, CachedFile], map_location: Any) -> nn.Module:
        file = files["state_dict"]
        if plan.weights is None:
            return _load_one_off(plan, file, map_location)
        import torchvision.models

        builder = getattr(torchvision.models, plan.model)
        net = build_on_meta(lambda: builder(weights=None, **plan.kwargs))
        source = f"weight set {plan.weights.name!r} ({file.name})"
        load_into(net, adapt_torchvision_state_dict(load_weight_file(file, map_location), source=source), source=source)
        if plan.drop_aux:  # as torchvision's inception_v3 does for aux_logits=False
            net.aux_logits = False
            net.AuxLogits = None
        log.info("loaded %s into %s", source, plan.model)
        net = _attach(net.eval(), plan.weights, plan.described, plan.categories, file)
        return _with_head(net, plan, int(plan.kwargs.get("num_classes", 1000)))

    def check_export_size(self, model: nn.Module, height: int, width: int) -> None:
        check_resized_pixels(height, width, model.transforms.resize)

    def export_pipeline(self, model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        t = model.transforms

        def reference(images: torch.Tensor) -> torch.Tensor:
            return model(torch.stack([t(img.float() / 255) for img in images]))

        return ClassifierPipeline(plain_module(model), t), reference


def _load_one_off(plan: _Plan, file: CachedFile, map_location: Any) -> nn.Module:
    """One-off weights from a file (a checkpoint or a plain state dict; any head width): the
    default set's transforms, and its labels when the head has as many outputs."""
    source = f"weights file {str(file.path)!r}"
    state_dict = plain_state_dict(load_weight_file(file, map_location), source=source)
    net, num_classes = build_for_state_dict(plan.model, state_dict, source=source, **plan.kwargs)
    categories = plan.categories
    if categories is not None and len(categories) != num_classes:
        categories = None  # a custom head: its labels are the caller's to set (model.categories = [...])
    log.info("loaded %s into %s (%d classes)", source, plan.model, num_classes)
    return _with_head(_attach(net.eval(), None, plan.described, categories, file), plan, num_classes)


FAMILY = ClassifierFamily()
