"""What dlwp adds to a torchvision classifier: ``weights``, ``transforms``, ``categories`` and a
one-call :meth:`ClassifierMixin.predict`, mixed into the torchvision class (:func:`hub_class`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any

import torch
from torch import nn

from ...inputs.predictions import Prediction
from ...inputs.transforms import ClassifierTransform
from ...loading.modules import eval_mode
from ...weights.manifest import WeightSet
from ...weights.store import CachedFile
from ..finite import check_finite

__all__ = ["ClassifierMixin", "hub_class"]


class ClassifierMixin:
    """What dlwp adds to a torchvision classifier: ``weights``, ``transforms``, ``categories`` and
    :meth:`predict`. It holds no modules, so the state dict is the torchvision model's."""

    weights: WeightSet | None
    transforms: ClassifierTransform
    categories: list[str] | None
    #: the verified file the weights came from (None: random weights); keys the ONNX backend's graph
    weight_file: CachedFile | None = None

    #: images per forward pass in :meth:`predict` when ``batch_size`` is not given. Measured on a
    #: 2-core CPU: ResNet-101 is slower per image at 32 than at 16 (its activations outgrow the
    #: caches); AlexNet, whose time goes into reading its 58M fully connected weights once per
    #: batch, is faster at 32 (:func:`hub_class` sets that).
    default_batch_size: int = 16

    def predict(
        self, inputs: Any, topk: int | None = None, *, batch_size: int | None = None, backend: str = "eager"
    ) -> Prediction | list[Prediction]:
        """Top-``topk`` ``(label, percent)`` pairs per image, percent = softmax × 100 (as the book);
        ``topk`` defaults to 5, or the number of classes when the model has fewer.

        ``inputs``: one image or a list of them: a path (str or Path), an http(s) URL, a PIL image,
        a numpy HWC uint8 array, or a CHW / NCHW tensor (uint8, or float in [0, 1]). One image
        gives one :class:`Prediction`; a list (or an NCHW batch) gives a list of them. Images run
        through :attr:`transforms` in batches of ``batch_size`` (default
        :attr:`default_batch_size`) on the model's device, in eval mode under
        ``torch.inference_mode()``; the model's train/eval mode is restored afterwards.

        How it is fast: files and URLs are checked first, then decoded, resized and cropped in
        worker threads (one per core, up to 4) while the model runs on the previous batch;
        scaling and normalising happen once per batch; batches go in channels-last memory (the
        faster convolution layout on CPUs). The network's input is bit for bit the book's
        pipeline's (``model(model.transforms(image))``); only the batched arithmetic rounds
        differently in the last bits of float32.

        ``backend="onnxruntime"`` runs the forward pass (only that: decoding and batching are the
        same) in ONNX Runtime, usually faster on CPUs, with differences in the last digits of the
        percentages. The graph is exported on first use and cached beside the weight file (see
        :mod:`dlwp_models.models.onnx_backend`); it needs ``pip install -e ".[onnx]"``.

        Example::

            >>> model.predict("bobby.jpg", topk=2)
            [('golden retriever', 96.29...), ('Labrador retriever', 2.81...)]
        """
        topk, batch_size = self._checked(topk, batch_size)
        prepare_one, classify, on_cpu = self._batch_functions(topk, backend)
        results, single = self._in_batches(inputs, prepare_one, classify, batch_size, on_cpu)
        return results[0] if single else results

    def embed(self, inputs: Any, *, batch_size: int | None = None, pool: bool = True) -> torch.Tensor:
        """The features the classification head receives, per image: (N, D) for a list of images,
        (D,) for one. ``inputs``, decoding, batching and preprocessing are those of :meth:`predict`
        (the same network input, bit for bit); the network runs up to its head and no further.

        The features are the pooled vector the head maps to classes (2048 numbers for a ResNet-50,
        4096 for AlexNet's and VGG's last hidden layer); SqueezeNet's head is a 1×1 convolution on
        its last feature map, which ``pool=False`` returns as it is ((N, 512, 13, 13)) and the
        default averages over its positions.

        Example::

            >>> model.embed(["cat.jpg", "dog.jpg"]).shape
            torch.Size([2, 2048])
        """
        batch_size = self._batch_size(batch_size)
        prepare_one, features, on_cpu = self._embed_functions(pool)
        results, single = self._in_batches(inputs, prepare_one, features, batch_size, on_cpu)
        if single:
            return results[0]
        return torch.stack(results) if results else torch.empty(0)

    def embed_stream(
        self, inputs: Iterable[Any], *, batch_size: int | None = None, pool: bool = True
    ) -> Iterator[tuple[Any, torch.Tensor | BaseException]]:
        """:meth:`embed` for any number of inputs, lazily, as :meth:`predict_stream` is for
        :meth:`predict`: ``(input, features or the exception that input raised)`` in order."""
        from ...inputs.streaming import stream_batches

        batch_size = self._batch_size(batch_size)
        prepare_one, features, on_cpu = self._embed_functions(pool)

        def run(batch: list[torch.Tensor]) -> list[torch.Tensor]:
            with torch.inference_mode():
                return features(batch)

        with eval_mode(self):
            yield from stream_batches(inputs, prepare_one, run, batch_size=batch_size, on_cpu=on_cpu)

    def reset_classifier(self, classes: int | Sequence[str]) -> None:
        """Put a fresh classification head with ``classes`` outputs on the network (an int, or the
        class names, which then become :attr:`categories`), keeping the body's weights: what a
        fine-tune starts from. The head's layers (ResNet's ``fc``; AlexNet's and VGG's
        ``classifier[6]``; DenseNet's ``classifier``; SqueezeNet's final 1×1 convolution;
        Inception v3's ``fc`` and ``AuxLogits.fc``) are new, initialised from ``torch``'s global
        random generator (seed it for a repeatable head). Without names, :attr:`categories` is None
        until you set it. The model no longer matches its weight file, so the ONNX Runtime backend
        exports its graph anew for this process."""
        from ..onnx_backend import forget_sessions
        from .heads import check_labels, put_fresh_head

        num_classes, labels = check_labels(classes)
        assert isinstance(self, nn.Module)
        put_fresh_head(self, num_classes)
        self.categories = labels
        self.weight_file = None  # the graph cached beside it is of the old head
        forget_sessions(self)

    def ready(self, backend: str = "eager") -> None:
        """Make ``backend``'s engine now: a backend that cannot run this model yet (the int8 one
        without a quantized graph of its weights) is refused here, before any image."""
        self._batch_functions(1, backend)

    def _in_batches(
        self,
        inputs: Any,
        prepare_one: Callable[[Any], torch.Tensor],
        run: Callable[[list[torch.Tensor]], list[Any]],
        batch_size: int,
        on_cpu: bool,
    ) -> tuple[list[Any], bool]:
        """``run``'s results for every image of ``inputs`` (prepared by ``prepare_one`` in worker
        threads, run in batches of ``batch_size``), and whether ``inputs`` was a single image."""
        from ...inputs.images import image_sources
        from ...inputs.pipeline import default_workers, ordered_map

        sources, single = image_sources(inputs)

        def prepare(source: Any) -> list[torch.Tensor]:
            return [prepare_one(item) for item in source()]

        workers = default_workers() if len(sources) > 1 else 1
        # on the CPU, the workers prepare a whole batch while the model waits and then wait while it
        # runs (sharing the cores makes both slower); on a GPU they prepare the next batch meanwhile
        prepared = ordered_map(
            prepare, sources, workers=workers, ahead=batch_size if on_cpu else 2 * batch_size, overlap=not on_cpu
        )
        pixels = chain.from_iterable(prepared)
        results: list[Any] = []
        try:
            with eval_mode(self), torch.inference_mode():
                while batch := list(islice(pixels, batch_size)):
                    results += run(batch)
        finally:
            prepared.close()
        return results, single

    def _embed_functions(
        self, pool: bool
    ) -> tuple[Callable[[Any], torch.Tensor], Callable[[list[torch.Tensor]], list[torch.Tensor]], bool]:
        """``(prepare, features, on_cpu)`` as :meth:`_batch_functions`, with the head's input per
        image (pooled when ``pool``) in place of predictions."""
        from .heads import head_input, pooled

        transforms = self.transforms
        prepare_one = transforms.crop_pixels if isinstance(transforms, ClassifierTransform) else transforms
        collate = self._collate()
        device, dtype = self._placement()

        def features(batch: list[torch.Tensor]) -> list[torch.Tensor]:
            found = head_input(self, collate(batch, device, dtype))
            check_finite(found, self, "the features")
            found = pooled(found) if pool else found
            return list(found.float().cpu().contiguous().unbind(0))

        return prepare_one, features, device.type == "cpu"

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        """The device and floating dtype of the model's parameters (the CPU and float32 without any)."""
        param = next(self.parameters(), None)  # type: ignore[attr-defined]
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        return device, dtype

    def predict_stream(
        self, inputs: Iterable[Any], topk: int | None = None, *, batch_size: int | None = None, backend: str = "eager"
    ) -> Iterator[tuple[Any, Prediction | BaseException]]:
        """:meth:`predict` for any number of inputs, lazily: ``(input, outcome)`` per input, in
        order, as soon as its batch is done. ``outcome`` is the input's :class:`Prediction` (with
        ``indices``), equal to what ``predict`` gives for it, or the exception it raised (a damaged
        or missing file costs only its own answer). ``inputs`` is an iterable of single images
        (paths, URLs, …), read a bounded number ahead; memory holds about one batch.
        """
        from ...inputs.streaming import stream_batches

        topk, batch_size = self._checked(topk, batch_size)
        prepare_one, classify, on_cpu = self._batch_functions(topk, backend)

        def run(batch: list[torch.Tensor]) -> list[Prediction]:
            with torch.inference_mode():
                return classify(batch)

        with eval_mode(self):
            yield from stream_batches(inputs, prepare_one, run, batch_size=batch_size, on_cpu=on_cpu)

    def predict_crops(
        self, crops: Sequence[torch.Tensor], topk: int | None = None, *, backend: str = "eager"
    ) -> list[Prediction]:
        """:meth:`predict` for images already resized and cropped by
        ``model.transforms.crop_pixels`` (uint8 (crop, crop, 3) tensors), e.g. on other machines
        as the Ray batch engine does: one forward pass for all of them, the same predictions as
        :meth:`predict` on the original images."""
        topk, _ = self._checked(topk, None)
        if not isinstance(self.transforms, ClassifierTransform):
            raise TypeError(
                "predict_crops needs model.transforms to be dlwp's ClassifierTransform (it made "
                f"the crops); this model has {type(self.transforms).__name__}. Use predict."
            )
        _, classify, _ = self._batch_functions(topk, backend)
        with eval_mode(self), torch.inference_mode():
            return classify(list(crops))

    def _checked(self, topk: Any, batch_size: Any) -> tuple[int, int]:
        """``topk`` (None: 5, or all the classes when fewer) and the batch size, after checking the
        arguments of predict."""
        categories = self.categories
        if not categories:
            raise ValueError(
                "this model has no category names (model.categories is None: it was built "
                "with a num_classes that does not match its weight set's labels). Set "
                "model.categories to a list with one label per output first."
            )
        if topk is None:
            topk = min(5, len(categories))
        if isinstance(topk, bool) or not isinstance(topk, int):
            raise TypeError(f"topk must be an int between 1 and {len(categories)}, got {topk!r}.")
        if not 1 <= topk <= len(categories):
            raise ValueError(
                f"topk must be between 1 and {len(categories)} (the number of classes), "
                f"got {topk}. Pass a value in that range."
            )
        return topk, self._batch_size(batch_size)

    def _batch_size(self, batch_size: Any) -> int:
        if batch_size is None:
            batch_size = self.default_batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        return batch_size

    def _batch_functions(
        self, topk: int, backend: str = "eager"
    ) -> tuple[Callable[[Any], torch.Tensor], Callable[[list[torch.Tensor]], list[Prediction]], bool]:
        """``(prepare, classify, on_cpu)``: one image → its cropped pixels (any thread), a list of
        those → their predictions (one forward pass, by ``backend``), and whether the model is on
        the CPU."""
        from ..onnx_backend import network_runner

        weights = self.weights.name if self.weights is not None else type(self).__name__.lower()
        command = f"python -m dlwp_models quantize {weights.split('.')[0]} --weights {weights} --calibrate PHOTOS"
        crop = self.transforms.crop if isinstance(self.transforms, ClassifierTransform) else None
        forward = (
            network_runner(
                self,
                backend,
                any_size=False,
                meaning="logits",
                quantize_command=command,
                size=None if crop is None else (crop, crop),
            )
            or self
        )
        categories = self.categories
        assert isinstance(self, nn.Module) and categories
        device, dtype = self._placement()
        transforms = self.transforms
        prepare_one = transforms.crop_pixels if isinstance(transforms, ClassifierTransform) else transforms
        collate = self._collate()

        def classify(batch: list[torch.Tensor]) -> list[Prediction]:
            logits = forward(collate(batch, device, dtype))
            if isinstance(logits, tuple):  # InceptionOutputs when scripted
                logits = logits[0]
            check_finite(logits, self, "the output")
            if logits.dim() != 2 or logits.shape[1] != len(categories):
                raise ValueError(
                    f"the model outputs shape {tuple(logits.shape)}, but it has {len(categories)} "
                    "category names. Set model.categories to one label per output."
                )
            percent = torch.softmax(logits.float(), dim=1) * 100
            values, indices = percent.topk(topk, dim=1)
            return [
                Prediction(((categories[i], v) for i, v in zip(row_indices, row_values)), row_indices)
                for row_values, row_indices in zip(values.tolist(), indices.tolist())
            ]

        return prepare_one, classify, device.type == "cpu"

    def _collate(self) -> Callable[[Sequence[torch.Tensor], torch.device, torch.dtype], torch.Tensor]:
        """How prepared images become one network input batch: the transform's own collation, or
        for the caller's own callable (e.g. a torchvision preset: image → normalised CHW tensor)
        a plain stack."""
        transforms = self.transforms
        return transforms.collate if isinstance(transforms, ClassifierTransform) else _stack_normalised


def _stack_normalised(tensors: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per-image outputs of a caller's own transform as one channels-last batch on ``device``."""
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != 3 or not t.is_floating_point():
            raise TypeError(
                f"model.transforms returned {type(t).__name__}"
                f"{f' {tuple(t.shape)} {t.dtype}' if isinstance(t, torch.Tensor) else ''}; predict "
                "needs a normalised float (3, H, W) tensor per image. Set model.transforms to "
                "such a callable."
            )
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(
            f"model.transforms returned images of different sizes {sorted(shapes)}; predict "
            "batches them, so it must crop every image to one size."
        )
    return torch.stack([t.to(device) for t in tensors]).to(dtype).contiguous(memory_format=torch.channels_last)


_SUBCLASSES: dict[type, type] = {}


def hub_class(cls: type) -> type:
    """``cls`` with :class:`ClassifierMixin`, created once per class. It keeps the torchvision
    name and lives in :mod:`dlwp_models.models.classifiers` (see its ``__getattr__``), so pickled
    models load again."""
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        sub = type(
            cls.__name__,
            (ClassifierMixin, cls),
            {
                **({"default_batch_size": 32} if cls.__name__ == "AlexNet" else {}),
                "__module__": __package__,
                "__qualname__": cls.__name__,
                "__doc__": f"torchvision.models.{cls.__name__} with dlwp's weights, transforms, categories "
                "and predict().",
            },
        )
        _SUBCLASSES[cls] = sub
    return sub
