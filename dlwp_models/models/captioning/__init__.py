"""NeuralTalk2 image captioning as chapter 2 runs it: the Caffe-layout ResNet-101 encoder
(:mod:`.encoder`), the FC decoder (:mod:`.decoder`) and its searches (:mod:`.search`), the
vocabulary (:mod:`.vocabulary`), the model and its ``caption`` (:mod:`.model`), and its weight
format (:mod:`.family`)."""

from __future__ import annotations

from ..lazy import lazy_getattr
from ..registry import FamilyInfo, register_family
from . import docs

INFO = register_family(
    FamilyInfo(
        name="captioning",
        models=docs.MODELS,
        format="neuraltalk2",
        task="caption",
        builder=f"{__name__}.family:FAMILY",
        docstring=lambda model, sets: docs.DOC,
        roles=("encoder", "decoder", "vocab"),
        accepts_files=False,
    )
)

__all__ = [
    "INFO",
    "BATCH_PIXELS",
    "DecoderConfig",
    "ENCODER_FEATURES",
    "FAMILY",
    "FCDecoder",
    "LSTMCore",
    "NeuralTalk2",
    "SEQ_LENGTH",
    "caffe_resnet101",
    "check_decoder_fits",
    "encoder_from_state_dict",
    "placeholder_vocabulary",
    "read_vocabulary",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "decoder": ("SEQ_LENGTH", "DecoderConfig", "FCDecoder", "LSTMCore", "check_decoder_fits"),
        "encoder": ("ENCODER_FEATURES", "caffe_resnet101", "encoder_from_state_dict"),
        "family": ("FAMILY",),
        "model": ("BATCH_PIXELS", "NeuralTalk2"),
        "vocabulary": ("placeholder_vocabulary", "read_vocabulary"),
    },
)
