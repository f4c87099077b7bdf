"""The FC caption decoder: the maxout LSTM step, its sizes read from the weights, and generation
through :mod:`.search`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import IncompatibleWeightsError
from ...loading.modules import build_on_meta, load_into
from ..finite import check_finite
from .encoder import ENCODER_FEATURES
from .search import BEAM_SELECT, beam_search, greedy_search, sample_search

__all__ = ["DecoderConfig", "LSTMCore", "FCDecoder", "check_generate_args", "check_decoder_fits", "SEQ_LENGTH"]

#: upstream's caption length limit (words, not counting the end token)
SEQ_LENGTH = 16


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the FC decoder. The defaults are the published model's."""

    vocab_size: int = 9487  # words; outputs are vocab_size + 1 (index 0 = start/end token)
    input_encoding_size: int = 512  # word and image embedding width
    rnn_size: int = 512  # LSTM width
    fc_feat_size: int = ENCODER_FEATURES
    drop_prob_lm: float = 0.5  # dropout on the LSTM output (training only)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, source: str) -> DecoderConfig:
        """Read the sizes from a decoder state dict (the rest is checked by the strict load)."""
        shapes = {}
        for key in ("embed.weight", "core.h2h.weight", "img_embed.weight"):
            value = state_dict.get(key)
            if not isinstance(value, torch.Tensor) or value.dim() != 2:
                what = "missing" if value is None else f"not a 2-d tensor ({type(value).__name__})"
                raise IncompatibleWeightsError(
                    f"{source}: key {key!r} is {what}. The file is not an FC captioning model's "
                    "state dict; use the decoder file saved with the vocabulary (fc-model.pth)."
                )
            shapes[key] = tuple(value.shape)
        width, encoding = shapes["embed.weight"]
        if width < 2:
            raise IncompatibleWeightsError(
                f"{source}: 'embed.weight' has {width} rows; a decoder needs "
                "the end token and at least one word. Use the published file."
            )
        return cls(
            vocab_size=width - 1,
            input_encoding_size=encoding,
            rnn_size=shapes["core.h2h.weight"][1],
            fc_feat_size=shapes["img_embed.weight"][1],
        )


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

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, c = state  # (M, R) each
        r = self.rnn_size
        s = self.i2h(x) + self.h2h(h)  # (M, 5R)
        i, f, o = torch.sigmoid(s[:, : 3 * r]).split(r, dim=1)  # (M, R) each
        g = torch.max(s[:, 3 * r : 4 * r], s[:, 4 * r :])  # (M, R) maxout
        c = f * c + i * g
        h = o * torch.tanh(c)
        return self.dropout(h), (h, c)  # as upstream: the state keeps h without dropout


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
    def from_state_dict(cls, raw: Any, *, source: str) -> FCDecoder:
        """Build on ``meta`` with the sizes the weights have, then load them strictly."""
        if not isinstance(raw, Mapping):
            raise IncompatibleWeightsError(
                f"{source}: expected the FC decoder's state dict (a mapping of names to tensors), got "
                f"{type(raw).__name__}. Use the published decoder file (fc-model.pth)."
            )
        config = DecoderConfig.from_state_dict(raw, source=source)
        return load_into(build_on_meta(lambda: cls(config)), raw, source=source)

    def step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Feed one word per row: (M,) -> log-probabilities of the next word (M, V + 1), state."""
        h, state = self.core(self.embed(words), state)
        return F.log_softmax(self.logit(h), dim=-1), state

    def start(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The two warm-up steps: (N, F) image features -> first-word log-probabilities (N, V + 1), state."""
        n = features.shape[0]
        zeros = features.new_zeros(n, self.config.rnn_size)
        _, state = self.core(self.img_embed(features), (zeros, zeros))  # step 0: the image
        start = torch.zeros(n, dtype=torch.long, device=features.device)
        return self.step(start, state)  # step 1: start token

    def generate(
        self,
        features: torch.Tensor,
        *,
        beam_size: int = 2,
        sample: bool = False,
        temperature: float = 1.0,
        max_length: int = SEQ_LENGTH,
        beam_select: str = "first",
    ) -> torch.Tensor:
        """Word indices for (N, F) image features: an (N, max_length) long tensor, zero after the end.

        ``sample=True`` draws each word (``temperature`` scales the log-probabilities; seed with
        ``torch.manual_seed``); otherwise ``beam_size=1`` is greedy and a larger ``beam_size`` runs
        upstream's beam search, returning the first finished beam (``beam_select="first"``) or the
        best-scoring one (``"best"``)."""
        check_generate_args(
            beam_size=beam_size,
            sample=sample,
            temperature=temperature,
            max_length=max_length,
            beam_select=beam_select,
            width=self.config.vocab_size + 1,
        )
        if features.dim() != 2 or features.shape[1] != self.config.fc_feat_size:
            raise ValueError(
                f"expected image features of shape (N, {self.config.fc_feat_size}), got "
                f"{tuple(features.shape)}; pass the encoder's output."
            )
        logprobs, state = self.start(features)
        check_finite(logprobs, self, "the first word's log-probabilities")
        if sample:
            return sample_search(self.step, logprobs, state, max_length=max_length, temperature=temperature)
        if beam_size == 1:
            return greedy_search(self.step, logprobs, state, max_length=max_length)
        return beam_search(self.step, logprobs, state, beam_size=beam_size, max_length=max_length, select=beam_select)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_generate_args(
    *, beam_size: Any, sample: Any, temperature: Any, max_length: Any, beam_select: Any, width: int
) -> None:
    if not _is_int(beam_size) or beam_size < 1:
        raise ValueError(
            f"beam_size must be a positive integer, got {beam_size!r}. Use 1 for greedy "
            "decoding or e.g. 2 (the default) for beam search."
        )
    if beam_size > width:
        raise ValueError(
            f"beam_size must be at most the number of words + 1 ({width}), got {beam_size}. Use a smaller beam."
        )
    if not _is_int(max_length) or max_length < 1:
        raise ValueError(
            f"max_length must be a positive integer, got {max_length!r}. Use e.g. {SEQ_LENGTH} (upstream's limit)."
        )
    if not isinstance(sample, bool):
        raise TypeError(f"sample must be True or False, got {sample!r}")
    if (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            f"temperature must be a positive number, got {temperature!r}. Use 1.0 to "
            "sample from the model's distribution, less for safer captions."
        )
    if beam_select not in BEAM_SELECT:
        raise ValueError(
            f"beam_select must be one of {list(BEAM_SELECT)}, got {beam_select!r}. Use "
            "'first' (upstream's result) or 'best' (the best-scoring finished beam)."
        )


def check_decoder_fits(decoder: FCDecoder, vocab_words: int, *, where: str, fix: str) -> None:
    """The decoder's width must be the vocabulary + the end token, and it must embed the
    encoder's 2048-d features; ``where`` prefixes the message, ``fix`` ends it."""
    width = decoder.config.vocab_size + 1
    if vocab_words != width - 1:
        raise IncompatibleWeightsError(
            f"{where}the vocabulary has {vocab_words} words, but the decoder has {width} outputs (words + "
            f"the end token), so it needs {width - 1}. The files belong to different models; {fix}."
        )
    if decoder.config.fc_feat_size != ENCODER_FEATURES:
        raise IncompatibleWeightsError(
            f"{where}the decoder's 'img_embed.weight' takes {decoder.config.fc_feat_size}-d image features, "
            f"but the ResNet-101 encoder gives {ENCODER_FEATURES}. Use a decoder trained on ResNet-101 "
            "features."
        )
