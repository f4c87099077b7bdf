"""NeuralTalk2 image captioning as chapter 2 of *Deep Learning with PyTorch* runs it: the "FC" model
of ImageCaptioning.pytorch (ruotianluo) on a Caffe-converted ResNet-101, through one call.

* The **encoder** is ResNet-101 in the Caffe layout (:func:`caffe_resnet101`): torchvision's
  ResNet-101 with ``MaxPool2d(3, 2, 0, ceil_mode=True)`` and, in block 0 of layer2/3/4, the stride
  on the 1×1 ``conv1`` instead of the 3×3 ``conv2``. Its feature is the ``layer4`` output averaged
  over space (2048 numbers). Images are fed at their own size: no resize, no crop.
* The **decoder** (:class:`FCDecoder`) is the FC model: ``img_embed``, ``core.i2h``, ``core.h2h``,
  ``embed``, ``logit``, with the maxout LSTM step of :class:`LSTMCore`. Its sizes are read from
  the weights (the published file: 9,488 words and end token, 512 wide).
* The **vocabulary** comes from upstream's Python-2 ``infos`` pickle (:func:`read_vocabulary`),
  read with a restricted unpickler: only the five harmless globals that file needs resolve, each to
  an inert stand-in, and only the ``vocab`` mapping is kept.
* :meth:`NeuralTalk2.caption` goes from images to sentences (greedy, sampling, or upstream's beam
  search, see :mod:`.search`); :mod:`.family` is how the one builder loads it.

Weight format ``neuraltalk2``: files by role ``encoder`` (a ResNet state dict; upstream publishes it
as two byte chunks that the fetcher joins), ``decoder`` (the FC model's state dict, an old-format
``torch.save`` file that may hold CUDA tensors) and ``vocab`` (the infos pickle). The decoder and
the vocabulary are read and checked against each other before the encoder is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ...errors import ImagesTooSmallError
from ...inputs.caption_transform import MAX_SIDE, CaptionTransform, fit_side
from ...weights.manifest import WeightSet
from ..finite import check_finite
from .decoder import SEQ_LENGTH, FCDecoder, check_decoder_fits, check_generate_args

__all__ = ["NeuralTalk2", "BATCH_PIXELS", "MIN_SIDE", "ImagesTooSmallError"]

#: same-size images are encoded together in batches of at most this many pixels in all
BATCH_PIXELS = 1 << 18  # larger encoder batches are slower per image on CPUs (benchmarks/README.md)
#: the encoder's pooling needs at least this many pixels on each side (after ``max_side``)
MIN_SIDE = 3


class NeuralTalk2(nn.Module):
    """Encoder + decoder + vocabulary: images in, sentences out (:meth:`caption`).

    Attributes: ``encoder`` (Caffe-layout ResNet-101, (N, 3, H, W) normalised → (N, 2048)),
    ``decoder`` (:class:`FCDecoder`), ``vocab`` ({index: word}, 1 … V; 0 is the end token, V the
    UNK word), ``transforms`` (:class:`CaptionTransform`) and ``weights`` (the
    :class:`~dlwp_models.WeightSet`, or None for random weights).
    """

    def __init__(
        self,
        *,
        encoder: nn.Module,
        decoder: FCDecoder,
        vocab: Mapping[int, str],
        transforms: CaptionTransform | None = None,
        weights: WeightSet | None = None,
    ) -> None:
        super().__init__()
        check_decoder_fits(decoder, len(vocab), where="", fix="use the vocabulary saved with this decoder")
        self.encoder = encoder
        self.decoder = decoder
        self.vocab = dict(vocab)
        self.transforms = transforms if transforms is not None else CaptionTransform()
        self.weights = weights

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) normalised -> (N, 2048)
        # channels-last input: the faster convolution layout on CPUs (1.3x measured), same numbers
        # to float rounding
        return self.encoder(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor, **generate_args: Any) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, max_length) word indices (see :meth:`FCDecoder.generate`)."""
        return self.decoder.generate(self.encode(x), **generate_args)

    def decode(self, seq: torch.Tensor) -> list[str]:
        """(N, T) word indices -> N sentences (words up to the first end token, joined by spaces)."""
        sentences = []
        for row in seq.tolist():
            words = []
            for index in row:
                if index == 0:
                    break
                words.append(self.vocab[index])
            sentences.append(" ".join(words))
        return sentences

    @torch.inference_mode()
    def caption(
        self,
        inputs: Any,
        *,
        beam_size: int = 2,
        sample: bool = False,
        temperature: float = 1.0,
        max_length: int = SEQ_LENGTH,
        beam_select: str = "first",
        max_side: int | None = MAX_SIDE,
    ) -> str | list[str]:
        """Describe one image or a list of images in a sentence each.

        Args:
            inputs: a path, an http(s) URL, a PIL image, a numpy HWC uint8 array, a CHW tensor, an
                NCHW tensor, or a list of these. Images of different sizes may be mixed; each is
                encoded at its own size.
            beam_size: 1 for greedy decoding, more for upstream's beam search. Default 2 (the book's).
            sample: draw each word at random instead (seed with ``torch.manual_seed``); then
                ``beam_size`` and ``beam_select`` are not used. Default False.
            temperature: with ``sample=True``, words are drawn from ``exp(logprob / temperature)``.
                Default 1.0.
            max_length: the most words per caption. Default 16 (upstream's).
            beam_select: ``"first"`` (default) returns the first beam that finished, exactly as
                upstream (and the book) did; ``"best"`` returns the finished beam with the highest
                sum of log-probabilities.
            max_side: images whose longer side exceeds this are downscaled to it first (logged), so
                a huge photo cannot exhaust memory; None keeps every image's size. Default 2048.

        Returns:
            a sentence for one input, else a list of sentences in input order.

        Raises:
            ImagesTooSmallError: (an :class:`~dlwp_models.ImageInputError`) before any encoding, when
                an image has a side under :data:`MIN_SIDE` pixels (after ``max_side``); its
                ``indices`` name those images, so the others can be captioned without them.

        Example::

            captioner = torch.hub.load("org/dlwp", "neuraltalk2", pretrained=True)
            captioner.caption("horse.jpg")          # 'a person riding a horse on a beach'
        """
        from ...inputs.images import load_images

        self.check_caption_args(
            beam_size=beam_size,
            sample=sample,
            temperature=temperature,
            max_length=max_length,
            beam_select=beam_select,
            max_side=max_side,
        )
        items, single = load_images(inputs)
        batch = [
            self.transforms(fit_side(item, max_side, "the image" if single else f"image {i}"))
            for i, item in enumerate(items)
        ]  # (3, H_i, W_i) each
        _check_sides(batch, single)
        sentences = self._caption_batch(
            batch,
            beam_size=beam_size,
            sample=sample,
            temperature=temperature,
            max_length=max_length,
            beam_select=beam_select,
        )
        return sentences[0] if single else sentences

    def caption_stream(
        self,
        inputs: Iterable[Any],
        *,
        beam_size: int = 2,
        sample: bool = False,
        temperature: float = 1.0,
        max_length: int = SEQ_LENGTH,
        beam_select: str = "first",
        max_side: int | None = MAX_SIDE,
        batch_size: int = 8,
    ) -> Iterator[tuple[Any, Any]]:
        """:meth:`caption` for any number of inputs, lazily: ``(input, outcome)`` per input, in
        order, as soon as its batch of ``batch_size`` is done. ``outcome`` is the sentence (what
        ``caption`` gives for that input) or the exception the input raised (a damaged or missing
        file costs only its own answer). Inputs are decoded in worker threads, in order, a bounded
        number ahead; memory holds about one batch. The arguments are :meth:`caption`'s.
        """
        from ...inputs.streaming import stream_batches

        args = dict(
            beam_size=beam_size, sample=sample, temperature=temperature, max_length=max_length, beam_select=beam_select
        )
        self.check_caption_args(max_side=max_side, **args)
        prepare = self.caption_preparer(max_side=max_side)

        def run(batch: list[torch.Tensor]) -> list[str]:
            with torch.inference_mode():
                return self._caption_batch(batch, **args)

        on_cpu = next(self.decoder.parameters()).device.type == "cpu"
        yield from stream_batches(inputs, prepare, run, batch_size=batch_size, on_cpu=on_cpu)

    def caption_preparer(self, *, max_side: int | None = MAX_SIDE) -> Callable[[Any], torch.Tensor]:
        """``prepare(image)`` → the encoder's (3, H, W) input for one decoded image (any thread):
        downscaled to ``max_side`` and normalised as :meth:`caption` does; an image too small to
        encode raises :class:`ImagesTooSmallError` for itself alone. :meth:`caption_batch` runs a
        list of them."""
        self.check_caption_args(max_side=max_side)

        def prepare(item: Any) -> torch.Tensor:
            x = self.transforms(fit_side(item, max_side, "the image"))
            _check_sides([x], True)  # too small: this input fails alone
            return x

        return prepare

    def caption_batch(self, batch: list[torch.Tensor], **generate_args: Any) -> list[str]:
        """Inputs made by :meth:`caption_preparer` → their sentences, with :meth:`caption`'s
        ``beam_size``, ``sample``, ``temperature``, ``max_length`` and ``beam_select``."""
        self.check_caption_args(max_side=None, **generate_args)
        with torch.inference_mode():
            return self._caption_batch(batch, **generate_args)

    def check_caption_args(
        self,
        *,
        max_side: Any = MAX_SIDE,
        beam_size: Any = 2,
        sample: Any = False,
        temperature: Any = 1.0,
        max_length: Any = SEQ_LENGTH,
        beam_select: Any = "first",
    ) -> None:
        """Refuse :meth:`caption`'s arguments that this model cannot take (ValueError, TypeError)."""
        check_generate_args(
            width=self.decoder.config.vocab_size + 1,
            beam_size=beam_size,
            sample=sample,
            temperature=temperature,
            max_length=max_length,
            beam_select=beam_select,
        )
        if max_side is not None and (not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1):
            raise ValueError(
                f"max_side must be None or a positive integer, got {max_side!r}. Use e.g. "
                f"{MAX_SIDE}, or None to keep every image's size."
            )

    def _caption_batch(self, batch: list[torch.Tensor], **generate_args: Any) -> list[str]:
        """Prepared (3, H_i, W_i) images → their sentences."""
        features = self._encode_all(batch)  # (N, 2048)
        check_finite(features, self, "the encoder's image features")
        return self.decode(self.decoder.generate(features, **generate_args))

    def _encode_all(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """Encode images of any sizes: equal sizes together, in chunks of at most BATCH_PIXELS."""
        from ...inputs.images import same_size_chunks

        param = next(self.decoder.parameters())
        features: list[torch.Tensor | None] = [None] * len(batch)
        for chunk in same_size_chunks(batch, BATCH_PIXELS):
            x = torch.stack([batch[i] for i in chunk]).to(device=param.device, dtype=param.dtype)
            for i, feature in zip(chunk, self.encode(x)):
                features[i] = feature
        return torch.stack(features)  # type: ignore[arg-type]


def _check_sides(batch: list[torch.Tensor], single: bool) -> None:
    small = [i for i, x in enumerate(batch) if min(x.shape[-2:]) < MIN_SIDE]
    if not small:
        return
    sizes = ", ".join(
        f"{'the image' if single else f'image {i}'} is {batch[i].shape[-1]}x{batch[i].shape[-2]}" for i in small
    )
    raise ImagesTooSmallError(
        f"{sizes} pixels (width x height, after max_side); the captioning encoder needs at least {MIN_SIDE} "
        "pixels on each side. Upscale such images, or caption the others without them.",
        small,
    )
