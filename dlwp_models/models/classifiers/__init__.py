"""The book's ImageNet classifiers: torchvision architectures with verified weights, their
evaluation transform, their labels and a one-call ``predict``.

The one builder (:func:`dlwp_models.hub.build`) makes each classifier with the keyword arguments
torchvision's own builder sets for the chosen weights, loads the weight set's file strictly (built
on the ``meta`` device, tensors assigned from a memory-mapped file), and returns the model as an
instance of a subclass of its torchvision class (``isinstance(model, torchvision.models.ResNet)``
holds, the state dict keys are torchvision's) that also carries ``weights``, ``transforms``,
``categories`` and ``predict(inputs, topk=5)``.

torchvision is imported only when a model is built, so importing this package (as ``hubconf.py``
does for ``torch.hub.list``) stays cheap.
"""

from __future__ import annotations

from ..lazy import lazy_getattr
from ..registry import FamilyInfo, register_family
from . import docs
from .architectures import CLASS_NAMES, CLASSIFIERS, arch_of, architecture_kwargs
from .categories import IMAGENET1K, categories_of

INFO = register_family(
    FamilyInfo(
        name="classifiers",
        models=CLASSIFIERS,
        format="torchvision",
        task="classify",
        builder=f"{__name__}.family:FAMILY",
        docstring=docs.docstring,
        onnx=True,
        int8=True,
        exportable=True,
        heads={model: arch_of(model).head for model in CLASSIFIERS},
    )
)

_lazy = lazy_getattr(
    __name__,
    {
        "family": ("FAMILY", "adapt_torchvision_state_dict", "build_for_state_dict"),
        "predict": ("ClassifierMixin", "hub_class"),
    },
)

__all__ = [
    "CLASSIFIERS",
    "INFO",
    "FAMILY",
    "ClassifierMixin",
    "IMAGENET1K",
    "adapt_torchvision_state_dict",
    "architecture_kwargs",
    "build_for_state_dict",
    "categories_of",
    "hub_class",
]


def __getattr__(name: str) -> type:
    """Module attribute hook (PEP 562): ``dlwp_models.models.classifiers.ResNet`` etc. are the
    model classes, made on first use, so that unpickling a saved model finds them in a fresh
    process; the family and predict modules are imported only when one of their names is asked
    for (listing the hub's entrypoints reads the registry and the docstrings alone)."""
    if name in CLASS_NAMES:
        import torchvision.models

        return _lazy("hub_class")(getattr(torchvision.models, name))
    return _lazy(name)
