"""How the one builder builds NeuralTalk2: the ``neuraltalk2`` weight format (encoder, decoder and
vocabulary files) and the random model (the entrypoint's docstring is in :mod:`.docs`). The small
files are read and checked against each other before the 170 MB encoder is touched."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import nn

from ...inputs.caption_transform import CaptionTransform
from ...loading.weight_files import load_weight_file
from ...weights.manifest import WeightSet
from ...weights.store import CachedFile
from ..family import Family
from .decoder import DecoderConfig, FCDecoder, check_decoder_fits
from .encoder import caffe_resnet101, encoder_from_state_dict
from .model import NeuralTalk2
from .vocabulary import placeholder_vocabulary, read_vocabulary

__all__ = ["CaptioningFamily", "FAMILY"]

log = logging.getLogger(__name__)


class _Plan(NamedTuple):
    weights: WeightSet
    transforms: CaptionTransform


class CaptioningFamily(Family):
    """NeuralTalk2 image captioning."""

    def random(self, model: str, kwargs: Mapping[str, Any]) -> nn.Module:
        config = DecoderConfig()
        return NeuralTalk2(
            encoder=caffe_resnet101(), decoder=FCDecoder(config), vocab=placeholder_vocabulary(config.vocab_size)
        ).eval()

    def plan(self, model: str, weights: WeightSet | None, kwargs: Mapping[str, Any]) -> _Plan:
        assert weights is not None, "neuraltalk2 takes no one-off files"
        return _Plan(weights, CaptionTransform.from_weights(weights))

    def load(self, plan: _Plan, files: Mapping[str, CachedFile], map_location: Any) -> nn.Module:
        name = plan.weights.name
        device = "cpu" if map_location is None else map_location  # the published decoder holds CUDA tensors
        vocab = read_vocabulary(files["vocab"].path)
        decoder = FCDecoder.from_state_dict(
            load_weight_file(files["decoder"], map_location=device),
            source=f"weight set {name!r} ({files['decoder'].name})",
        )
        check_decoder_fits(
            decoder,
            len(vocab),
            where=f"weight set {name!r} ({files['vocab'].name}, {files['decoder'].name}): ",
            fix=f'fix the entry\'s "files" in {plan.weights.source}',
        )
        encoder = encoder_from_state_dict(
            load_weight_file(files["encoder"], map_location=device),
            source=f"weight set {name!r} ({files['encoder'].name})",
        )
        model = NeuralTalk2(
            encoder=encoder, decoder=decoder, vocab=vocab, transforms=plan.transforms, weights=plan.weights
        )
        log.info("neuraltalk2: loaded %s (%d words)", name, len(vocab))
        return model.eval()


FAMILY = CaptioningFamily()
