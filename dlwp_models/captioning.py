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
* :func:`neuraltalk2` is the hub entrypoint; :meth:`NeuralTalk2.caption` goes from images to
  sentences (greedy, sampling, or upstream's beam search, see :mod:`dlwp_models._caption_search`).

Weight format ``neuraltalk2``: files by role ``encoder`` (a ResNet state dict; upstream publishes it
as two byte chunks that the fetcher joins), ``decoder`` (the FC model's state dict, an old-format
``torch.save`` file that may hold CUDA tensors) and ``vocab`` (the infos pickle). The decoder and
the vocabulary are read and checked against each other before the encoder is touched.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._building import fetch_for, resolve_weights
from ._caption_search import BEAM_SELECT, beam_search, greedy_search, sample_search
from ._checkpoints import build_on_meta, load_into, restricted_load
from ._errors import IncompatibleWeightsError, UnsafeFileError
from ._manifest import WeightSet
from ._mappable import load_weight_file
from ._transform_settings import from_weight_set, mean_std

__all__ = [
    "NeuralTalk2", "FCDecoder", "LSTMCore", "DecoderConfig", "CaptionTransform", "caffe_resnet101",
    "encoder_from_state_dict", "read_vocabulary", "placeholder_vocabulary", "neuraltalk2",
    "ENCODER_FEATURES", "MAX_SIDE", "SEQ_LENGTH",
]

log = logging.getLogger(__name__)

MODEL = "neuraltalk2"
FORMAT = "neuraltalk2"
ROLES = ("encoder", "decoder", "vocab")
#: the encoder's feature size (ResNet-101's last stage)
ENCODER_FEATURES = 2048
#: upstream's caption length limit (words, not counting the end token)
SEQ_LENGTH = 16
#: images whose longer side exceeds this are downscaled before encoding (memory guard)
MAX_SIDE = 2048
#: same-size images are encoded together in batches of at most this many pixels in all
BATCH_PIXELS = 1 << 18   # larger encoder batches are slower per image on CPUs (benchmarks/README.md)
#: ImageNet statistics, the encoder's input normalisation
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TRANSFORM_KEYS = {"mean", "std", "max_side"}
#: the published encoder file also holds the ImageNet classifier head, which captioning never uses
_ENCODER_HEAD_KEYS = ("fc.weight", "fc.bias")


# --------------------------------------------------------------------------- encoder

class SpatialMean(nn.Module):
    """``x.mean(3).mean(2)``: upstream's feature, in upstream's order of reduction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C)
        return x.mean(3).mean(2)


def caffe_resnet101() -> nn.Module:
    """ResNet-101 in the Caffe layout, returning the 2048-d spatial mean of ``layer4``.

    torchvision's ``ResNet(Bottleneck, [3, 4, 23, 3])`` with ``maxpool = MaxPool2d(3, 2, 0,
    ceil_mode=True)``, the stride of block 0 of layer2/3/4 moved from ``conv2`` (3×3) to ``conv1``
    (1×1), ``avgpool`` = :class:`SpatialMean` and no classifier (``fc`` is an ``Identity``). Its
    state-dict keys are torchvision's ``resnet101`` keys without ``fc.*``.
    """
    from torchvision.models.resnet import Bottleneck, ResNet  # lazily: hubconf must stay cheap

    net = ResNet(Bottleneck, [3, 4, 23, 3])
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv1.stride = (2, 2)
        layer[0].conv2.stride = (1, 1)
    net.avgpool = SpatialMean()   # (N, 2048, h, w) -> (N, 2048); the flatten after it is a no-op
    net.fc = nn.Identity()
    return net


def encoder_from_state_dict(raw: Any, *, source: str) -> nn.Module:
    """The Caffe-layout encoder loaded strictly from a ResNet-101 state dict (built on ``meta``,
    the given tensors assigned). The ImageNet classifier head (``fc.weight``, ``fc.bias``) that the
    published file carries is dropped, as it is unused; any other difference is an error naming
    the first offending key. Files without ``num_batches_tracked`` (pre-0.4.1) are accepted."""
    if not isinstance(raw, Mapping):
        raise IncompatibleWeightsError(
            f"{source}: expected a ResNet-101 state dict (a mapping of names to tensors), got "
            f"{type(raw).__name__}. Use the published encoder file (resnet101a.pth + resnet101b.pth).")
    state_dict = OrderedDict((k, v) for k, v in raw.items() if k not in _ENCODER_HEAD_KEYS)
    encoder = build_on_meta(caffe_resnet101)
    load_into(encoder, state_dict, source=source)
    return encoder


# --------------------------------------------------------------------------- decoder

@dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the FC decoder. The defaults are the published model's."""

    vocab_size: int = 9487           # words; outputs are vocab_size + 1 (index 0 = start/end token)
    input_encoding_size: int = 512   # word and image embedding width
    rnn_size: int = 512              # LSTM width
    fc_feat_size: int = ENCODER_FEATURES
    drop_prob_lm: float = 0.5        # dropout on the LSTM output (training only)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, source: str) -> "DecoderConfig":
        """Read the sizes from a decoder state dict (the rest is checked by the strict load)."""
        shapes = {}
        for key in ("embed.weight", "core.h2h.weight", "img_embed.weight"):
            value = state_dict.get(key)
            if not isinstance(value, torch.Tensor) or value.dim() != 2:
                what = "missing" if value is None else f"not a 2-d tensor ({type(value).__name__})"
                raise IncompatibleWeightsError(
                    f"{source}: key {key!r} is {what}. The file is not an FC captioning model's "
                    "state dict; use the decoder file saved with the vocabulary (fc-model.pth).")
            shapes[key] = tuple(value.shape)
        width, encoding = shapes["embed.weight"]
        if width < 2:
            raise IncompatibleWeightsError(f"{source}: 'embed.weight' has {width} rows; a decoder needs "
                                           "the end token and at least one word. Use the published file.")
        return cls(vocab_size=width - 1, input_encoding_size=encoding, rnn_size=shapes["core.h2h.weight"][1],
                   fc_feat_size=shapes["img_embed.weight"][1])


class LSTMCore(nn.Module):
    """One step of upstream's maxout LSTM.

    ``s = i2h(x) + h2h(h)`` (5R wide); ``i, f, o`` = sigmoid of the first three R-slices;
    ``g`` = element-wise max of the last two (maxout, no tanh); ``c' = f*c + i*g``;
    ``h' = o * tanh(c')``, with dropout on ``h'`` in training only.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.rnn_size = config.rnn_size
        self.i2h = nn.Linear(config.input_encoding_size, 5 * config.rnn_size)
        self.h2h = nn.Linear(config.rnn_size, 5 * config.rnn_size)
        self.dropout = nn.Dropout(config.drop_prob_lm)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, c = state                                                    # (M, R) each
        r = self.rnn_size
        s = self.i2h(x) + self.h2h(h)                                   # (M, 5R)
        i, f, o = torch.sigmoid(s[:, :3 * r]).split(r, dim=1)           # (M, R) each
        g = torch.max(s[:, 3 * r:4 * r], s[:, 4 * r:])                  # (M, R) maxout
        c = f * c + i * g
        h = o * torch.tanh(c)
        return self.dropout(h), (h, c)          # as upstream: the state keeps h without dropout


class FCDecoder(nn.Module):
    """The FC caption decoder: the image embedding is the LSTM's first input, then words.

    Generation (upstream's order): the state starts at zero; step 0 feeds ``img_embed(feature)``
    and discards its output; step 1 feeds ``embed(0)`` (the start token); each later step feeds
    the previous word, and the end token 0 stops a caption.
    """

    def __init__(self, config: DecoderConfig = DecoderConfig()) -> None:
        super().__init__()
        self.config = config
        self.img_embed = nn.Linear(config.fc_feat_size, config.input_encoding_size)
        self.core = LSTMCore(config)
        self.embed = nn.Embedding(config.vocab_size + 1, config.input_encoding_size)
        self.logit = nn.Linear(config.rnn_size, config.vocab_size + 1)

    @classmethod
    def from_state_dict(cls, raw: Any, *, source: str) -> "FCDecoder":
        """Build on ``meta`` with the sizes the weights have, then load them strictly."""
        if not isinstance(raw, Mapping):
            raise IncompatibleWeightsError(
                f"{source}: expected the FC decoder's state dict (a mapping of names to tensors), got "
                f"{type(raw).__name__}. Use the published decoder file (fc-model.pth).")
        config = DecoderConfig.from_state_dict(raw, source=source)
        return load_into(build_on_meta(lambda: cls(config)), raw, source=source)

    def step(self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Feed one word per row: (M,) -> log-probabilities of the next word (M, V + 1), state."""
        h, state = self.core(self.embed(words), state)
        return F.log_softmax(self.logit(h), dim=-1), state

    def start(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The two warm-up steps: (N, F) image features -> first-word log-probabilities (N, V + 1), state."""
        n = features.shape[0]
        zeros = features.new_zeros(n, self.config.rnn_size)
        _, state = self.core(self.img_embed(features), (zeros, zeros))            # step 0: the image
        start = torch.zeros(n, dtype=torch.long, device=features.device)
        return self.step(start, state)                                            # step 1: start token

    def generate(self, features: torch.Tensor, *, beam_size: int = 2, sample: bool = False,
                 temperature: float = 1.0, max_length: int = SEQ_LENGTH, beam_select: str = "first"
                 ) -> torch.Tensor:
        """Word indices for (N, F) image features: an (N, max_length) long tensor, zero after the end.

        ``sample=True`` draws each word (``temperature`` scales the log-probabilities; seed with
        ``torch.manual_seed``); otherwise ``beam_size=1`` is greedy and a larger ``beam_size`` runs
        upstream's beam search, returning the first finished beam (``beam_select="first"``) or the
        best-scoring one (``"best"``)."""
        _check_generate_args(beam_size=beam_size, sample=sample, temperature=temperature,
                             max_length=max_length, beam_select=beam_select, width=self.config.vocab_size + 1)
        if features.dim() != 2 or features.shape[1] != self.config.fc_feat_size:
            raise ValueError(f"expected image features of shape (N, {self.config.fc_feat_size}), got "
                             f"{tuple(features.shape)}; pass the encoder's output.")
        logprobs, state = self.start(features)
        if sample:
            return sample_search(self.step, logprobs, state, max_length=max_length, temperature=temperature)
        if beam_size == 1:
            return greedy_search(self.step, logprobs, state, max_length=max_length)
        return beam_search(self.step, logprobs, state, beam_size=beam_size, max_length=max_length,
                           select=beam_select)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_generate_args(*, beam_size: Any, sample: Any, temperature: Any, max_length: Any,
                         beam_select: Any, width: int) -> None:
    if not _is_int(beam_size) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}. Use 1 for greedy "
                         "decoding or e.g. 2 (the default) for beam search.")
    if beam_size > width:
        raise ValueError(f"beam_size must be at most the number of words + 1 ({width}), got {beam_size}. "
                         "Use a smaller beam.")
    if not _is_int(max_length) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}. Use e.g. "
                         f"{SEQ_LENGTH} (upstream's limit).")
    if not isinstance(sample, bool):
        raise TypeError(f"sample must be True or False, got {sample!r}")
    if (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}. Use 1.0 to "
                         "sample from the model's distribution, less for safer captions.")
    if beam_select not in BEAM_SELECT:
        raise ValueError(f"beam_select must be one of {list(BEAM_SELECT)}, got {beam_select!r}. Use "
                         "'first' (upstream's result) or 'best' (the best-scoring finished beam).")


# --------------------------------------------------------------------------- vocabulary

class _PickledNamespace:
    """Stand-in for ``argparse.Namespace``: a bag of attributes, nothing is run."""


class _PickledDtype:
    """Stand-in for ``numpy.dtype``: remembers its arguments and state, decodes nothing."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _PickledScalar:
    """Stand-in for a numpy scalar: its dtype and raw bytes are kept, never decoded."""

    def __init__(self, dtype: Any, data: Any = None) -> None:
        self.dtype, self.data = dtype, data


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Stand-in for Python 2's ``copy_reg._reconstructor``: only rebuilds the Namespace stand-in."""
    if cls is not _PickledNamespace or base is not object or state is not None:
        raise UnsafeFileError("refused to rebuild an object other than argparse.Namespace through "
                              "copy_reg._reconstructor. Use the published vocabulary file.")
    return _PickledNamespace()


#: the only globals the published infos pickle may resolve, each to an inert stand-in
_VOCAB_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("argparse", "Namespace"): _PickledNamespace,
    ("numpy.core.multiarray", "scalar"): _PickledScalar,
    ("numpy", "dtype"): _PickledDtype,
}


def read_vocabulary(path: str | Path) -> dict[int, str]:
    """The ``ix_to_word`` mapping (1 … V → word) of an ImageCaptioning.pytorch infos pickle.

    The file was written by Python 2 (pickle protocol 0, strings read as latin-1). Only the globals
    it needs (``copy_reg._reconstructor``, ``__builtin__.object``, ``argparse.Namespace``,
    ``numpy.core.multiarray.scalar``, ``numpy.dtype``) resolve, to inert stand-ins; any other
    global raises :class:`~dlwp_models.UnsafeFileError` before it is imported or run. Everything but
    ``vocab`` is discarded.
    """
    path = Path(path)
    infos = restricted_load(path, _VOCAB_GLOBALS, encoding="latin1")
    if not isinstance(infos, dict) or not isinstance(infos.get("vocab"), dict):
        raise IncompatibleWeightsError(
            f"{path.name} holds no 'vocab' mapping, so it is not an ImageCaptioning.pytorch infos file. "
            "Use the vocabulary file published with the decoder (fc-infos.pkl).")
    return _check_vocabulary(infos["vocab"], source=path.name)


def _check_vocabulary(raw: Mapping[Any, Any], *, source: str) -> dict[int, str]:
    vocab: dict[int, str] = {}
    for key, word in raw.items():
        index = key if _is_int(key) else int(key) if isinstance(key, str) and key.isdigit() else None
        if index is None or not isinstance(word, str):
            raise IncompatibleWeightsError(
                f"{source}: vocabulary entry {key!r}: {word!r} is not 'index': 'word'. Use the "
                "vocabulary file published with the decoder.")
        if index in vocab:
            raise IncompatibleWeightsError(f"{source}: vocabulary index {index} appears twice. Use the "
                                           "vocabulary file published with the decoder.")
        vocab[index] = word
    if sorted(vocab) != list(range(1, len(vocab) + 1)):
        gap = next(i for i in range(1, len(vocab) + 2) if i not in vocab)
        raise IncompatibleWeightsError(
            f"{source}: the vocabulary's indices are not 1 … {len(vocab)} (index {gap} is missing). "
            "Use the vocabulary file published with the decoder.")
    return {i: vocab[i] for i in range(1, len(vocab) + 1)}


def placeholder_vocabulary(size: int) -> dict[int, str]:
    """``w1`` … ``w{size-1}`` and ``UNK`` last: the vocabulary of a model with random weights."""
    return {**{i: f"w{i}" for i in range(1, size)}, size: "UNK"}


# --------------------------------------------------------------------------- preprocessing

@dataclass(frozen=True)
class CaptionTransform:
    """Image → encoder input (the ``transforms`` attribute of the model): RGB, ``/255``, then
    ImageNet ``mean``/``std``, at the image's own size (upstream's preprocessing; no resize).

    Calling it on a PIL image or a CHW tensor (uint8, or float in [0, 1]; 1 channel is tiled to 3)
    returns a float32 (3, H, W) tensor. ``max_side`` records the weight set's memory-guard limit for
    reference; the transform itself never resizes, :meth:`NeuralTalk2.caption` applies its own
    ``max_side`` argument (default 2048) before it.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_side: int | None = MAX_SIDE

    def __post_init__(self) -> None:
        mean, std = mean_std(self.mean, self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.max_side is not None and (not _is_int(self.max_side) or self.max_side < 1):
            raise ValueError(f"max_side must be None or a positive integer, got {self.max_side!r}")

    @classmethod
    def from_weights(cls, weights: WeightSet | None) -> "CaptionTransform":
        """The transform a weight set's manifest entry describes (ImageNet defaults without one)."""
        if weights is None:
            return cls()
        return from_weight_set(cls, weights, _TRANSFORM_KEYS)

    def __call__(self, image: Any) -> torch.Tensor:  # PIL image or (C, H, W) -> (3, H, W) float32
        if isinstance(image, torch.Tensor):
            x = image.float().div(255) if image.dtype == torch.uint8 else image.float()
            if x.dim() != 3 or x.shape[0] not in (1, 3):
                raise ValueError(f"expected a (3, H, W) or (1, H, W) image tensor, got {tuple(image.shape)}")
            x = x.expand(3, -1, -1)
        else:
            from ._images import to_float_tensor

            x = to_float_tensor(image.convert("RGB"))                  # (3, H, W) in [0, 1]
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(3, 1, 1)
        return (x - mean) / std


def _fit_side(item: Any, max_side: int | None, where: str) -> Any:
    """Downscale an image whose longer side exceeds ``max_side`` (aspect kept), with a log note."""
    from ._images import image_hw

    height, width = image_hw(item)
    if max_side is None or max(height, width) <= max_side:
        return item
    scale = max_side / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    log.info("%s is %dx%d (width x height), more than max_side=%d; captioning it downscaled to %dx%d "
             "to bound memory (pass max_side=None to keep the full size)",
             where, width, height, max_side, new_w, new_h)
    if isinstance(item, torch.Tensor):
        x = item.float().unsqueeze(0)                                   # (1, C, H, W)
        return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                             antialias=True).squeeze(0).clamp_(0, 1)
    from PIL import Image

    return item.resize((new_w, new_h), Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------- the model

class NeuralTalk2(nn.Module):
    """Encoder + decoder + vocabulary: images in, sentences out (:meth:`caption`).

    Attributes: ``encoder`` (Caffe-layout ResNet-101, (N, 3, H, W) normalised → (N, 2048)),
    ``decoder`` (:class:`FCDecoder`), ``vocab`` ({index: word}, 1 … V; 0 is the end token, V the
    UNK word), ``transforms`` (:class:`CaptionTransform`) and ``weights`` (the
    :class:`~dlwp_models.WeightSet`, or None for random weights).
    """

    def __init__(self, *, encoder: nn.Module, decoder: FCDecoder, vocab: Mapping[int, str],
                 transforms: CaptionTransform | None = None, weights: WeightSet | None = None) -> None:
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
    def caption(self, inputs: Any, *, beam_size: int = 2, sample: bool = False, temperature: float = 1.0,
                max_length: int = SEQ_LENGTH, beam_select: str = "first",
                max_side: int | None = MAX_SIDE) -> str | list[str]:
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

        Example::

            captioner = torch.hub.load("org/dlwp", "neuraltalk2", pretrained=True)
            captioner.caption("horse.jpg")          # 'a person riding a horse on a beach'
        """
        from ._images import load_images

        _check_generate_args(beam_size=beam_size, sample=sample, temperature=temperature,
                             max_length=max_length, beam_select=beam_select,
                             width=self.decoder.config.vocab_size + 1)
        if max_side is not None and (not _is_int(max_side) or max_side < 1):
            raise ValueError(f"max_side must be None or a positive integer, got {max_side!r}. Use e.g. "
                             f"{MAX_SIDE}, or None to keep every image's size.")
        items, single = load_images(inputs)
        batch = [self.transforms(_fit_side(item, max_side, "the image" if single else f"image {i}"))
                 for i, item in enumerate(items)]                       # (3, H_i, W_i) each
        features = self._encode_all(batch)                              # (N, 2048)
        seq = self.decoder.generate(features, beam_size=beam_size, sample=sample, temperature=temperature,
                                    max_length=max_length, beam_select=beam_select)
        sentences = self.decode(seq)
        return sentences[0] if single else sentences

    def _encode_all(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """Encode images of any sizes: equal sizes together, in chunks of at most BATCH_PIXELS."""
        from ._images import same_size_chunks

        param = next(self.decoder.parameters())
        features: list[torch.Tensor | None] = [None] * len(batch)
        for chunk in same_size_chunks(batch, BATCH_PIXELS):
            x = torch.stack([batch[i] for i in chunk]).to(device=param.device, dtype=param.dtype)
            for i, feature in zip(chunk, self.encode(x)):
                features[i] = feature
        return torch.stack(features)                                    # type: ignore[arg-type]


# --------------------------------------------------------------------------- entrypoint

def _random_model() -> NeuralTalk2:
    config = DecoderConfig()
    model = NeuralTalk2(encoder=caffe_resnet101(), decoder=FCDecoder(config),
                        vocab=placeholder_vocabulary(config.vocab_size))
    return model.eval()


def check_decoder_fits(decoder: FCDecoder, vocab_words: int, *, where: str, fix: str) -> None:
    """The decoder's width must be the vocabulary + the end token, and it must embed the
    encoder's 2048-d features; ``where`` prefixes the message, ``fix`` ends it."""
    width = decoder.config.vocab_size + 1
    if vocab_words != width - 1:
        raise IncompatibleWeightsError(
            f"{where}the vocabulary has {vocab_words} words, but the decoder has {width} outputs (words + "
            f"the end token), so it needs {width - 1}. The files belong to different models; {fix}.")
    if decoder.config.fc_feat_size != ENCODER_FEATURES:
        raise IncompatibleWeightsError(
            f"{where}the decoder's 'img_embed.weight' takes {decoder.config.fc_feat_size}-d image features, "
            f"but the ResNet-101 encoder gives {ENCODER_FEATURES}. Use a decoder trained on ResNet-101 "
            "features.")


def neuraltalk2(*, pretrained: bool = False, weights: str | None = None, progress: bool = True,
                map_location: Any = None) -> NeuralTalk2:
    """NeuralTalk2 image captioning (Karpathy & Fei-Fei 2015), the "FC" model of
    ImageCaptioning.pytorch trained on MS-COCO, as run in chapter 2 of *Deep Learning with
    PyTorch*: a Caffe-layout ResNet-101 encodes the image (at its own size), a maxout LSTM writes
    the sentence, and beam search (size 2) picks it exactly as upstream does.

    Weight sets (``weights/manifest.json``):
        ``neuraltalk2.coco_fc`` (default): the book's files from deep-learning-with-pytorch/
        ImageCaptioning.pytorch, pinned by commit and git blob SHA-1: the encoder
        (``resnet101a.pth`` + ``resnet101b.pth``, joined), the decoder (``fc-model.pth``) and the
        vocabulary (``fc-infos.pkl``, 9,487 words, read with a restricted unpickler).

    Args:
        pretrained (bool): load the default weight set. Default False: random weights and a
            placeholder vocabulary (``w1`` … ``w9486``, ``UNK``), which captions without error but
            says nothing meaningful.
        weights (str | None): a weight-set tag or name (``"coco_fc"``, ``"neuraltalk2.coco_fc"``,
            ``"DEFAULT"``). Default None.
        progress (bool): show download progress bars. Default True.
        map_location: where the loaded tensors go, as for ``torch.load`` (e.g. ``"cuda"``).
            Default None: the CPU (the published decoder file holds CUDA tensors).

    Returns:
        a :class:`NeuralTalk2` in eval mode with ``.caption(inputs, *, beam_size=2, sample=False,
        temperature=1.0, max_length=16, beam_select="first", max_side=2048)`` → str (or a list),
        ``.transforms``, ``.vocab`` and ``.weights``.

    Example::

        captioner = torch.hub.load("org/dlwp", "neuraltalk2", pretrained=True)
        captioner.caption("horse.jpg")                       # 'a person riding a horse on a beach'
        captioner.caption(["a.jpg", "b.jpg"], beam_size=3)   # one sentence per image
    """
    chosen = resolve_weights(MODEL, pretrained=pretrained, weights=weights)
    if chosen is None:
        return _random_model()
    transforms = CaptionTransform.from_weights(chosen)
    missing = [role for role in ROLES if role not in chosen.files]
    if missing:
        raise ValueError(f"weight set {chosen.name!r} has no {missing[0]!r} file; the neuraltalk2 format "
                         f"needs the roles {list(ROLES)}. Fix its \"files\" in {chosen.source}.")
    paths = fetch_for(chosen, FORMAT, progress=progress)
    device = "cpu" if map_location is None else map_location

    # the small files first: a mismatch is reported before the 170 MB encoder is read
    vocab = read_vocabulary(paths["vocab"])
    decoder_source = f"weight set {chosen.name!r} ({paths['decoder'].name})"
    decoder = FCDecoder.from_state_dict(load_weight_file(paths["decoder"], map_location=device),
                                        source=decoder_source)
    check_decoder_fits(decoder, len(vocab), where=f"weight set {chosen.name!r} ({paths['vocab'].name}, "
                       f"{paths['decoder'].name}): ", fix=f"fix the entry's \"files\" in {chosen.source}")
    encoder_source = f"weight set {chosen.name!r} ({paths['encoder'].name})"
    encoder = encoder_from_state_dict(load_weight_file(paths["encoder"], map_location=device),
                                      source=encoder_source)

    model = NeuralTalk2(encoder=encoder, decoder=decoder, vocab=vocab, transforms=transforms, weights=chosen)
    model.eval()
    log.info("neuraltalk2: loaded %s (%d words)", chosen.name, len(vocab))
    return model
