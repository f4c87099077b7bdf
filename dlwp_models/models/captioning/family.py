"""How the one builder builds NeuralTalk2: the ``neuraltalk2`` weight format (encoder, decoder and
vocabulary files), the random model, the entrypoint's docstring. The small files are read and
checked against each other before the 170 MB encoder is touched."""

from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple, Sequence

from torch import nn

from ...inputs.transforms import CaptionTransform
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

_DOC = """NeuralTalk2 image captioning (Karpathy & Fei-Fei 2015), the "FC" model of
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


class _Plan(NamedTuple):
    weights: WeightSet
    transforms: CaptionTransform


class CaptioningFamily(Family):
    """NeuralTalk2 image captioning."""

    models = ("neuraltalk2",)
    format = "neuraltalk2"
    roles = ("encoder", "decoder", "vocab")
    accepts_files = False

    def random(self, model: str, kwargs: Mapping[str, Any]) -> nn.Module:
        config = DecoderConfig()
        return NeuralTalk2(encoder=caffe_resnet101(), decoder=FCDecoder(config),
                           vocab=placeholder_vocabulary(config.vocab_size)).eval()

    def plan(self, model: str, weights: WeightSet | None, kwargs: Mapping[str, Any]) -> _Plan:
        assert weights is not None, "neuraltalk2 takes no one-off files"
        return _Plan(weights, CaptionTransform.from_weights(weights))

    def load(self, plan: _Plan, files: Mapping[str, CachedFile], map_location: Any) -> nn.Module:
        name = plan.weights.name
        device = "cpu" if map_location is None else map_location   # the published decoder holds CUDA tensors
        vocab = read_vocabulary(files["vocab"].path)
        decoder = FCDecoder.from_state_dict(load_weight_file(files["decoder"], map_location=device),
                                            source=f"weight set {name!r} ({files['decoder'].name})")
        check_decoder_fits(decoder, len(vocab), where=f"weight set {name!r} ({files['vocab'].name}, "
                           f"{files['decoder'].name}): ", fix=f"fix the entry's \"files\" in {plan.weights.source}")
        encoder = encoder_from_state_dict(load_weight_file(files["encoder"], map_location=device),
                                          source=f"weight set {name!r} ({files['encoder'].name})")
        model = NeuralTalk2(encoder=encoder, decoder=decoder, vocab=vocab, transforms=plan.transforms,
                            weights=plan.weights)
        log.info("neuraltalk2: loaded %s (%d words)", name, len(vocab))
        return model.eval()

    def docstring(self, model: str, sets: Sequence[WeightSet]) -> str:
        return _DOC


FAMILY = CaptioningFamily()
