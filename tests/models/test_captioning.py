"""NeuralTalk2 captioning: loading the published files' formats safely through torch.hub, the Caffe
ResNet-101 encoder, the FC decoder's step, and greedy / sampling / upstream's beam search.

Files are generated in the upstream formats and served from 127.0.0.1: the encoder state dict
(torch.save, split into two byte chunks), the decoder state dict (legacy non-zip torch.save with
CUDA storages, as a 2017 GPU save), and the infos pickle (protocol 0 text, as Python 2 wrote it).
Decoding tests use decoders with hand-set weights that realise a chosen word-to-word table.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from upstream_code import legacy_cuda_save, upstream_caffe_resnet101

from dlwp_models import ImageInputError, IncompatibleWeightsError, UnsafeFileError
from dlwp_models.models.captioning import (
    DecoderConfig,
    FCDecoder,
    NeuralTalk2,
    caffe_resnet101,
    encoder_from_state_dict,
    placeholder_vocabulary,
    read_vocabulary,
)
from dlwp_models.models.captioning.search import beam_search, greedy_search, sample_search

REPO_DIR = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 9487  # the published vocabulary: 9,487 words, 'UNK' last
WIDTH = VOCAB_SIZE + 1  # decoder outputs: the end token 0 + the words
FEATURES = 2048
SENTENCE = "a person riding a horse on a beach"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIVE_GLOBALS = {
    ("copy_reg", "_reconstructor"),
    ("__builtin__", "object"),
    ("argparse", "Namespace"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
}


def hub_load(**kwargs: Any) -> nn.Module:
    return torch.hub.load(str(REPO_DIR), "neuraltalk2", source="local", **kwargs)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# =========================================================================== upstream formats

# ---- Python 2's pickle protocol 0 (what cPickle.dump(infos, f) wrote) -------------------------


@dataclass(frozen=True)
class Py2Str:
    """A Python 2 byte string (pickled as STRING, read back as latin-1)."""

    data: bytes


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(frozen=True)
class Reduce:
    """``func(*args)``, then ``BUILD`` with ``state`` when given."""

    func: Global
    args: tuple
    state: Any = None


def _py2_repr(data: bytes) -> bytes:
    out = bytearray(b"'")
    for byte in data:
        char = bytes([byte])
        if char in (b"\\", b"'"):
            out += b"\\" + char
        elif char in (b"\n", b"\r", b"\t"):
            out += {b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t"}[char]
        elif 32 <= byte < 127:
            out += char
        else:
            out += b"\\x%02x" % byte
    return bytes(out + b"'")


def py2_pickle(obj: Any) -> bytes:
    """Protocol-0 text exactly as Python 2 writes it (with memo PUTs), for the types used here."""
    out: list[bytes] = []
    memo = iter(range(1, 1 << 30))

    def put() -> None:
        out.append(b"p%d\n" % next(memo))

    def dump(value: Any) -> None:
        if value is None:
            out.append(b"N")
        elif isinstance(value, bool):
            out.append(b"I01\n" if value else b"I00\n")
        elif isinstance(value, int):
            out.append(b"I%d\n" % value)
        elif isinstance(value, float):
            out.append(b"F" + repr(value).encode() + b"\n")
        elif isinstance(value, Py2Str):
            out.append(b"S" + _py2_repr(value.data) + b"\n")
            put()
        elif isinstance(value, str):  # Python 2 unicode
            text = value.replace("\\", "\\u005c").replace("\n", "\\u000a")
            out.append(b"V" + text.encode("raw-unicode-escape") + b"\n")
            put()
        elif isinstance(value, Global):
            out.append(b"c" + value.module.encode() + b"\n" + value.name.encode() + b"\n")
            put()
        elif isinstance(value, tuple):
            out.append(b"(")
            for item in value:
                dump(item)
            out.append(b"t")
            put()
        elif isinstance(value, list):
            out.append(b"(l")
            put()
            for item in value:
                dump(item)
                out.append(b"a")
        elif isinstance(value, dict):
            out.append(b"(d")
            put()
            for key, item in value.items():
                dump(key)
                dump(item)
                out.append(b"s")
        elif isinstance(value, Reduce):
            dump(value.func)
            dump(value.args)
            out.append(b"R")
            put()
            if value.state is not None:
                dump(value.state)
                out.append(b"b")
        else:
            raise TypeError(type(value))

    dump(obj)
    return b"".join(out) + b"."


def py2_namespace(**attrs: Any) -> Reduce:
    """An argparse.Namespace as protocol 0 stores it: copy_reg._reconstructor + a state dict."""
    return Reduce(
        Global("copy_reg", "_reconstructor"),
        (Global("argparse", "Namespace"), Global("__builtin__", "object"), None),
        {Py2Str(k.encode()): v for k, v in attrs.items()},
    )


def py2_float64(value: float) -> Reduce:
    """A numpy.float64 as protocol 0 stores it: multiarray.scalar(dtype('f8'), raw bytes)."""
    dtype = Reduce(Global("numpy", "dtype"), (Py2Str(b"f8"), 0, 1), (3, Py2Str(b"<"), None, None, None, -1, -1, 0))
    return Reduce(Global("numpy.core.multiarray", "scalar"), (dtype, Py2Str(struct.pack("<d", value))))


def infos_pickle(words: dict[int, str], *, int_keys: bool = False, extra: dict | None = None) -> bytes:
    """An ImageCaptioning.pytorch infos file: opt, training bookkeeping, and vocab {'1': word, ...}."""
    opt = py2_namespace(
        caption_model=Py2Str(b"fc"),
        input_encoding_size=512,
        rnn_size=512,
        num_layers=1,
        seq_length=16,
        drop_prob_lm=0.5,
        fc_feat_size=2048,
        vocab_size=len(words),
        batch_size=10,
        learning_rate=5e-4,
        id=Py2Str(b"fc"),
        beam_size=1,
        checkpoint_path=Py2Str(b"log_fc"),
        input_json=Py2Str(b"data/cocotalk.json"),
        start_from=None,
        language_eval=1,
        caption_author=Py2Str(b"Ren\xe9 caf\xe9"),
    )
    infos = {
        Py2Str(b"iter"): 215000,
        Py2Str(b"epoch"): 38,
        Py2Str(b"iterators"): {Py2Str(b"train"): 113287, Py2Str(b"val"): 0, Py2Str(b"test"): 0},
        Py2Str(b"split_ix"): {Py2Str(b"val"): [0, 5, 9], Py2Str(b"test"): [1, 2]},
        Py2Str(b"best_val_score"): py2_float64(0.9312),
        Py2Str(b"opt"): opt,
        Py2Str(b"val_result_history"): {
            3000: {
                Py2Str(b"loss"): py2_float64(2.61),
                Py2Str(b"lang_stats"): None,
                Py2Str(b"predictions"): [{Py2Str(b"image_id"): 391895, Py2Str(b"caption"): "a man riding a bike"}],
            }
        },
        Py2Str(b"loss_history"): {100: 3.25, 200: py2_float64(2.95)},
        Py2Str(b"lr_history"): {100: 5e-4},
        Py2Str(b"ss_prob_history"): {100: 0.0},
        Py2Str(b"vocab"): {(i if int_keys else str(i)): word for i, word in words.items()},
    }
    infos.update(extra or {})
    return py2_pickle(infos)


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every global a pickle resolves (each answered with an inert class while recording)."""
    found: set[tuple[str, str]] = set()

    class Inert:
        def __init__(self, *args: Any) -> None:
            pass

        def __setstate__(self, state: Any) -> None:
            pass

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add((module, name))
            return Inert

    Recorder(io.BytesIO(data), encoding="latin1").load()
    return found


# ---- torch files ---------------------------------------------------------------------------


def zip_save(state_dict: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


# ---- hand-set decoders ----------------------------------------------------------------------


def markov_state_dict(
    logits: torch.Tensor, *, rnn_size: int | None = None, width: int | None = None, fc_feat_size: int = 8
) -> dict[str, torch.Tensor]:
    """FC decoder weights whose next-word logits are exactly ``logits[previous word]``.

    The word embedding is one-hot, the gates are saturated (i = o = 1, f = 0, h2h = 0, maxout
    picks ``20 * onehot``), so h = tanh(20 * onehot(word)) = onehot(word) exactly in float32 and
    ``logit(h)`` is a column of the logit weight. The image embedding is zero, so the image does not
    matter. ``logits`` is (k, width) for the first k words; the rest of the vocabulary is never fed.
    """
    k, width_given = logits.shape
    width = width or width_given
    r = rnn_size or width
    assert width_given == width and k <= r
    eye = torch.eye(k, r)
    i2h_w = torch.zeros(5 * r, r)
    i2h_w[3 * r : 4 * r] = 20 * torch.eye(r)
    i2h_b = torch.cat(
        [
            torch.full((r,), 200.0),
            torch.full((r,), -200.0),
            torch.full((r,), 200.0),
            torch.zeros(r),
            torch.full((r,), -200.0),
        ]
    )
    embed = torch.zeros(width, r)
    embed[:k] = eye
    logit_w = torch.zeros(width, r)
    logit_w[:, :k] = logits.t()
    return {
        "img_embed.weight": torch.zeros(r, fc_feat_size),
        "img_embed.bias": torch.zeros(r),
        "core.i2h.weight": i2h_w,
        "core.i2h.bias": i2h_b,
        "core.h2h.weight": torch.zeros(5 * r, r),
        "core.h2h.bias": torch.zeros(5 * r),
        "embed.weight": embed,
        "logit.weight": logit_w,
        "logit.bias": torch.zeros(width),
    }


# Toy vocabulary for the decoding tests: 0 = end, 7 = UNK (the last word).
WORDS = {1: "a", 2: "dog", 3: "cat", 4: "runs", 5: "sleeps", 6: "away", 7: "UNK"}
TOY_WIDTH = len(WORDS) + 1
END, A, DOG, CAT, RUNS, SLEEPS, AWAY, UNK = range(8)


def table(rows: dict[int, dict[int, float]], width: int = TOY_WIDTH) -> torch.Tensor:
    """Next-word log-probabilities from {previous: {next: probability}}. The end token gets 1e-6
    where a row does not name it (so only the sentences a test spells out end early); the rest of
    each row's mass is spread evenly over its other words."""
    probs = torch.zeros(width, width, dtype=torch.float64)
    for prev in range(width):
        given = {END: 1e-6, **rows.get(prev, {})}
        rest = [w for w in range(width) if w not in given]
        left = 1.0 - sum(given.values())
        assert left >= -1e-5 and rest
        probs[prev, rest] = max(left, 1e-9) / len(rest)
        for word, p in given.items():
            probs[prev, word] = p
    return probs.log().float()


def toy_decoder(rows: dict[int, dict[int, float]]) -> FCDecoder:
    return FCDecoder.from_state_dict(markov_state_dict(table(rows)), source="toy decoder").eval()


def toy_caption(decoder: FCDecoder, n: int = 1, **kwargs: Any) -> list[str]:
    with torch.inference_mode():
        seq = decoder.generate(torch.zeros(n, decoder.config.fc_feat_size), **kwargs)
    return [" ".join(WORDS[i] for i in itertools.takewhile(lambda i: i != END, row)) for row in seq.tolist()]


def sentence_logprob(rows: dict[int, dict[int, float]], sentence: str) -> float:
    lp, prev = 0.0, 0
    ids = [next(i for i, w in WORDS.items() if w == word) for word in sentence.split()] + [END]
    for word in ids:
        lp += float(table(rows)[prev, word])
        prev = word
    return lp


# =========================================================================== session files


def random_caffe_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the published encoder's keys: Caffe-layout ResNet-101 with its ImageNet
    head and no ``num_batches_tracked`` (a pre-0.4.1 save); batch-norm statistics randomised so
    that loading them wrongly would show."""
    torch.manual_seed(seed)
    net = upstream_caffe_resnet101()
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_mean"):
            value = torch.randn_like(value) * 0.1
        elif key.endswith("running_var"):
            value = torch.rand_like(value) + 0.5
        elif value.dim() == 1 and not key.startswith("fc."):  # batch-norm weight, bias
            value = torch.rand_like(value) * 0.5 + 0.5 if key.endswith("weight") else torch.randn_like(value) * 0.1
        state[key] = value.clone()
    return state


def forced_sentence_state_dict() -> dict[str, torch.Tensor]:
    """Full-size decoder weights (9,488 outputs, 512 wide) that write SENTENCE whatever the image.

    Word ids 1…8 spell the sentence (the vocabulary repeats 'a'); each word's successor gets logit
    20, a sink word 9 (which only leads to itself) gets 10, the end token -30 except after
    'beach', everything else 0. So greedy and beam search (up to 3 beams) all agree, and no beam
    finishes before the sentence does.
    """
    chain = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 7, 7: 8, 8: END, 9: 9}
    logits = torch.zeros(10, WIDTH)
    logits[:, 9] = 10.0
    logits[:, END] = -30.0
    for prev, nxt in chain.items():
        logits[prev, nxt] = 20.0
    return markov_state_dict(logits, rnn_size=512, width=WIDTH, fc_feat_size=FEATURES)


def forced_vocabulary() -> dict[int, str]:
    words = placeholder_vocabulary(VOCAB_SIZE)
    words.update(enumerate(SENTENCE.split(), start=1))
    return words


@dataclass
class UpstreamFiles:
    encoder_state: dict[str, torch.Tensor]
    encoder: bytes  # torch.save of the encoder state dict, to be served as two parts
    decoder_state: dict[str, torch.Tensor]
    decoder: bytes  # legacy format, CUDA storages
    vocab: bytes  # Python 2 protocol-0 infos pickle


@pytest.fixture(scope="session")
def upstream_files() -> UpstreamFiles:
    encoder_state = random_caffe_state_dict()
    decoder_state = forced_sentence_state_dict()
    return UpstreamFiles(
        encoder_state,
        zip_save(encoder_state),
        decoder_state,
        legacy_cuda_save(decoder_state),
        infos_pickle(forced_vocabulary()),
    )


def pinned(server, filename: str, data: bytes, *, size: bool = False) -> dict:
    """Serve ``data`` (under a content-unique name) and return a spec pinned like the real ones."""
    blob = git_blob_sha1(data)
    spec = {"filename": filename, "urls": [server.serve(f"nt2-{blob[:12]}-{filename}", data)], "git_blob_sha1": blob}
    if size:
        spec["size"] = len(data)
    return spec


def coco_fc_entry(server, *, encoder: bytes, decoder: bytes, vocab: bytes) -> dict:
    """The neuraltalk2.coco_fc entry as the bundled manifest has it, pointing at served files."""
    cut = len(encoder) // 2 + 4097  # a byte chunk boundary, not a record boundary
    return {
        "name": "neuraltalk2.coco_fc",
        "model": "neuraltalk2",
        "default": True,
        "format": "neuraltalk2",
        "files": {
            "encoder": {
                "filename": "resnet101-caffe-joined.pth",
                "parts": [
                    pinned(server, "resnet101a.pth", encoder[:cut]),
                    pinned(server, "resnet101b.pth", encoder[cut:]),
                ],
            },
            "decoder": pinned(server, "fc-model.pth", decoder),
            "vocab": pinned(server, "fc-infos.pkl", vocab, size=True),
        },
        "transforms": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "max_side": 2048},
        "meta": {"task": "image captioning (test files)"},
    }


class PublishedEnv:
    """A TORCH_HOME and manifest of its own, so that the big files are fetched once per module."""

    def __init__(self, home: Path, manifest: Path) -> None:
        self.home, self.manifest = home, manifest

    def load(self, **kwargs: Any) -> nn.Module:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TORCH_HOME", str(self.home))
            mp.setenv("DLWP_MANIFEST", str(self.manifest))
            for var in ("DLWP_MIRROR", "DLWP_OFFLINE"):
                mp.delenv(var, raising=False)
            return hub_load(**kwargs)


@pytest.fixture(scope="module")
def published(weight_server, upstream_files, tmp_path_factory) -> PublishedEnv:
    folder = tmp_path_factory.mktemp("neuraltalk2")
    (folder / "home").mkdir()
    entry = coco_fc_entry(
        weight_server, encoder=upstream_files.encoder, decoder=upstream_files.decoder, vocab=upstream_files.vocab
    )
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": [entry]}), encoding="utf-8")
    return PublishedEnv(folder / "home", manifest)


@pytest.fixture(scope="module")
def captioner(published) -> NeuralTalk2:
    return published.load(pretrained=True, progress=False)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# =========================================================================== the published files


def test_hub_load_pretrained_captions_with_the_served_files(captioner, upstream_files, weight_server, tmp_path):
    # the vocabulary served is a Python 2 protocol-0 text pickle (latin-1 strings) resolving exactly
    # upstream's five globals, which the restricted unpickler allows and nothing else
    assert pickle_globals(upstream_files.vocab) == FIVE_GLOBALS
    assert upstream_files.vocab.startswith(b"(dp1\n") and b"\\xe9" in upstream_files.vocab
    path = tmp_path / "horse.jpg"
    Image.fromarray(random_image(90, 120)).save(path)
    assert captioner.caption(str(path)) == SENTENCE  # default: beam 2, first
    assert captioner.caption(path, beam_size=1) == SENTENCE
    assert captioner.caption(path, beam_size=3, beam_select="best") == SENTENCE
    assert not captioner.training and captioner.weights.name == "neuraltalk2.coco_fc"
    assert len(captioner.vocab) == VOCAB_SIZE and captioner.vocab[9487] == "UNK"
    assert captioner.vocab[2] == "person" and captioner.vocab[1] == captioner.vocab[4] == "a"
    # the encoder was joined from both parts, both were fetched from the server
    for part in captioner.weights.files["encoder"].parts:
        assert any(h.status == 200 for h in weight_server.hits_for(part.urls[0].rsplit("/", 1)[-1]))


def test_loaded_tensors_equal_the_files_and_sit_on_the_cpu(captioner, upstream_files):
    # what was served: the encoder in torch.save's zip format, with its ImageNet head and without
    # batch counters; the decoder a legacy (non-zip) save of CUDA storages, as a 2017 GPU run wrote it
    assert zipfile.is_zipfile(io.BytesIO(upstream_files.encoder)) and "fc.weight" in upstream_files.encoder_state
    assert not any(k.endswith("num_batches_tracked") for k in upstream_files.encoder_state)
    assert not zipfile.is_zipfile(io.BytesIO(upstream_files.decoder))
    assert b"ctorch.cuda\nFloatStorage\n" in upstream_files.decoder and b"cuda:0" in upstream_files.decoder
    encoder = captioner.encoder.state_dict()
    expected = {k: v for k, v in upstream_files.encoder_state.items() if not k.startswith("fc.")}
    assert set(expected) - set(encoder) == set()
    assert set(encoder) - set(expected) == {k for k in encoder if k.endswith("num_batches_tracked")}
    for key, value in expected.items():
        assert torch.equal(encoder[key], value), key
    decoder = captioner.decoder.state_dict()
    assert set(decoder) == set(upstream_files.decoder_state)
    for key, value in upstream_files.decoder_state.items():
        assert torch.equal(decoder[key], value), key
    # the decoder file holds CUDA storages; the default map_location puts everything on the CPU
    assert {t.device.type for t in captioner.state_dict().values()} == {"cpu"}


def test_map_location_applies_to_every_file(published):
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    model = published.load(weights="coco_fc", progress=False, map_location=to_cpu)
    assert model.weights.name == "neuraltalk2.coco_fc"
    assert set(seen) == {"cuda:0", "cpu"}  # the decoder's CUDA storages went through it too
    assert {t.device.type for t in model.state_dict().values()} == {"cpu"}


def test_encoder_matches_upstream_feature_extraction(captioner, upstream_files):
    """Upstream: skimage image / 255, Normalize(ImageNet), misc/resnet.py's ResNet loaded strictly,
    myResnet's conv1 … layer4 and ``x.mean(3).mean(2)``, one image at a time."""
    reference = with_counters(upstream_caffe_resnet101(), upstream_files.encoder_state)
    image = random_image(97, 75, seed=3)  # odd sizes: ceil_mode matters
    x = torch.from_numpy(image.astype("float32") / 255.0).permute(2, 0, 1)
    x = ((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)).unsqueeze(0)
    with torch.inference_mode():
        y = x
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            y = getattr(reference, name)(y)
        expected = y.mean(3).mean(2).squeeze(0)
        ours = captioner.encode(captioner.transforms(Image.fromarray(image)).unsqueeze(0))[0]
        standard = nn.Sequential(*list(torchvision_resnet101_with(upstream_files.encoder_state).children())[:-1])(x)
    assert torch.isfinite(expected).all() and expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(standard.flatten(), expected, rtol=1e-2, atol=1e-2)  # the layout matters


def torchvision_resnet101_with(state: dict[str, torch.Tensor]) -> nn.Module:
    import torchvision

    return with_counters(torchvision.models.resnet101(), state)


def with_counters(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a pre-0.4.1 state dict strictly, as torch itself does (num_batches_tracked = 0)."""
    state = dict(state)
    for key in net.state_dict():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.tensor(0))
    net.load_state_dict(state)
    return net.eval()


def test_encoder_is_resnet101_in_the_caffe_layout():
    import torchvision

    with torch.device("meta"):
        encoder = caffe_resnet101()
        standard = torchvision.models.resnet101()
    expected_keys = [k for k in standard.state_dict() if not k.startswith("fc.")]
    assert list(encoder.state_dict()) == expected_keys
    pool = encoder.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)
    for layer in (encoder.layer2, encoder.layer3, encoder.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)
        assert all(block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1) for block in layer[1:])
    assert encoder.layer1[0].conv1.stride == (1, 1) and encoder.layer1[0].conv2.stride == (1, 1)


def test_import_does_not_pull_in_torchvision():
    code = "import sys, dlwp_models.models.captioning; sys.exit('torchvision' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR).returncode == 0


# =========================================================================== caption(): inputs


def test_caption_accepts_every_input_kind_and_mixed_sizes(captioner, tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(random_image(40, 56)[:, :, 0], "L").save(path)
    inputs = [
        str(path),
        path,
        Image.fromarray(random_image(64, 48)),
        random_image(33, 70),
        torch.from_numpy(random_image(50, 50)).permute(2, 0, 1),  # CHW uint8
        torch.rand(1, 45, 60),  # grey CHW float
    ]
    assert captioner.caption(inputs) == [SENTENCE] * len(inputs)
    assert captioner.caption(torch.rand(3, 3, 40, 40), beam_size=1) == [SENTENCE] * 3  # NCHW: a list
    assert captioner.caption(torch.rand(3, 40, 40)) == SENTENCE  # CHW: one
    assert captioner.caption([torch.rand(3, 40, 40)]) == [SENTENCE]


def test_images_of_different_sizes_are_encoded_separately_and_kept_in_order(captioner):
    """With a decoder that reads the image, a mixed-size batch captions each image as if alone."""
    ramp = torch.linspace(0, 1, 48)
    images = [
        torch.rand(3, 40, 48),
        ramp.expand(3, 48, 48),
        torch.rand(3, 56, 48) ** 4,
        ramp.flip(0).expand(3, 40, 48),
        ramp.view(1, 48, 1).expand(3, 48, 48),
    ]  # sizes 40, 48, 56
    with torch.inference_mode():
        features = torch.cat([captioner.encode(captioner.transforms(image)[None]) for image in images])
    torch.manual_seed(5)
    decoder = FCDecoder(DecoderConfig(vocab_size=40, input_encoding_size=16, rnn_size=16)).eval()
    with torch.no_grad():  # embed the images' differences, not their common part
        weight = torch.randn(16, FEATURES)
        centred = (features - features.mean(0)) @ weight.T
        decoder.img_embed.weight.copy_(weight * 3 / centred.std())
        decoder.img_embed.bias.copy_(-(decoder.img_embed.weight @ features.mean(0)))
        decoder.logit.weight.mul_(20)
        decoder.logit.bias[END] -= 30  # captions of a few words at least
    model = NeuralTalk2(encoder=captioner.encoder, decoder=decoder, vocab=placeholder_vocabulary(40))
    alone = [model.caption(image) for image in images]
    assert len(set(alone)) > 2  # the test can tell images apart
    assert model.caption(images) == alone
    assert model.caption(images, beam_size=1) == [model.caption(i, beam_size=1) for i in images]


def test_large_images_are_downscaled_to_max_side_with_a_log_note(captioner, caplog):
    shapes = []
    hook = captioner.encoder.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    caplog.set_level(logging.INFO, logger="dlwp_models.inputs.caption_transform")
    try:
        captioner.caption(Image.fromarray(random_image(120, 300)), max_side=100)
        captioner.caption(torch.rand(3, 250, 50), max_side=100)
        captioner.caption(torch.rand(3, 250, 50), max_side=None)
        captioner.caption(torch.rand(3, 100, 60), max_side=100)
    finally:
        hook.remove()
    assert shapes == [(1, 3, 40, 100), (1, 3, 100, 20), (1, 3, 250, 50), (1, 3, 100, 60)]
    notes = [r.getMessage() for r in caplog.records if "max_side=100" in r.getMessage()]
    assert len(notes) == 2 and "300x120" in notes[0] and "100x40" in notes[0]


def test_transforms_are_rgb_over_255_then_imagenet_statistics(captioner):
    image = random_image(9, 7, seed=1)
    x = captioner.transforms(Image.fromarray(image))
    expected = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    ) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert x.shape == (3, 9, 7) and x.dtype == torch.float32  # no resize
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(captioner.transforms(torch.from_numpy(image).permute(2, 0, 1)), expected)
    grey = captioner.transforms(Image.fromarray(image[:, :, 0], "L"))
    torch.testing.assert_close(
        grey[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], grey[2] * IMAGENET_STD[2] + IMAGENET_MEAN[2]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": -2}, "beam_size"),
        ({"beam_size": 2.0}, "beam_size"),
        ({"beam_size": True}, "beam_size"),
        ({"beam_size": WIDTH + 1}, "at most"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": -1}, "max_length"),
        ({"max_length": 3.5}, "max_length"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"beam_select": "worst"}, "beam_select"),
        ({"max_side": 0}, "max_side"),
        ({"max_side": 10.5}, "max_side"),
        ({"sample": "yes"}, "sample"),
    ],
)
def test_bad_caption_arguments_are_refused(captioner, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        captioner.caption(torch.rand(3, 32, 32), **kwargs)


def test_bad_images_are_refused_clearly(captioner, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        captioner.caption(str(tmp_path / "missing.jpg"))
    with pytest.raises(ImageInputError):
        captioner.caption(str(tmp_path / "notes.txt"))
    with pytest.raises(ImageInputError, match=r"\[0, 1\]"):
        captioner.caption(torch.full((3, 8, 8), 2.0))


# =========================================================================== loading: bad files


@pytest.fixture
def serve_coco_fc(weight_server, make_manifest):
    """Serve a coco_fc weight set made of these files (the encoder defaults to tiny junk bytes: the
    decoder and vocabulary are checked before the encoder is read)."""

    def serve(*, decoder: bytes, vocab: bytes, encoder: bytes = b"encoder bytes, never parsed " * 8) -> None:
        make_manifest([coco_fc_entry(weight_server, encoder=encoder, decoder=decoder, vocab=vocab)])

    return serve


def small_decoder_file(vocab_size: int) -> bytes:
    torch.manual_seed(0)
    decoder = FCDecoder(DecoderConfig(vocab_size=vocab_size, input_encoding_size=8, rnn_size=8))
    return legacy_cuda_save(decoder.state_dict())


def test_vocabulary_must_match_the_decoder_width(serve_coco_fc):
    serve_coco_fc(decoder=small_decoder_file(20), vocab=infos_pickle(placeholder_vocabulary(VOCAB_SIZE)))
    with pytest.raises(IncompatibleWeightsError, match=r"9487 words.*21 outputs.*needs 20"):
        hub_load(pretrained=True, progress=False)


def test_decoder_must_take_2048_d_features(serve_coco_fc):
    state = FCDecoder(DecoderConfig(vocab_size=20, input_encoding_size=8, rnn_size=8, fc_feat_size=1000)).state_dict()
    serve_coco_fc(decoder=legacy_cuda_save(state), vocab=infos_pickle(placeholder_vocabulary(20)))
    with pytest.raises(IncompatibleWeightsError, match="1000-d image features.*2048"):
        hub_load(pretrained=True, progress=False)


@pytest.mark.parametrize(
    "change, key",
    [
        ("drop", "logit.bias"),
        ("drop", "core.h2h.weight"),
        ("add", "core.extra"),
        ("reshape", "core.i2h.weight"),
    ],
)
def test_decoder_keys_are_checked_strictly(serve_coco_fc, change, key):
    torch.manual_seed(0)
    state = FCDecoder(DecoderConfig(vocab_size=20, input_encoding_size=8, rnn_size=8)).state_dict()
    if change == "drop":
        del state[key]
    elif change == "add":
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(4 * 8, 8)  # an ordinary LSTM's 4 gates, not 5
    serve_coco_fc(decoder=legacy_cuda_save(state), vocab=infos_pickle(placeholder_vocabulary(20)))
    with pytest.raises(IncompatibleWeightsError, match=key):
        hub_load(pretrained=True, progress=False)


def test_malicious_vocabulary_is_refused_through_the_hub(serve_coco_fc, tmp_path):
    marker = tmp_path / "pwned"
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    serve_coco_fc(decoder=small_decoder_file(20), vocab=evil)
    with pytest.raises(UnsafeFileError, match="os.system"):
        hub_load(pretrained=True, progress=False)
    assert not marker.exists()


def test_pretrained_false_gives_random_weights_and_a_placeholder_vocabulary():
    torch.manual_seed(0)
    model = hub_load()
    assert model.weights is None and not model.training
    assert len(model.vocab) == VOCAB_SIZE and model.vocab[1] == "w1" and model.vocab[VOCAB_SIZE] == "UNK"
    assert model.decoder.config.vocab_size == VOCAB_SIZE and model.decoder.logit.out_features == WIDTH
    for kwargs in ({}, {"beam_size": 1}, {"sample": True}):
        words = model.caption(torch.rand(3, 64, 64), **kwargs).split()
        assert 0 < len(words) <= 16 and all(w in model.vocab.values() for w in words)


# =========================================================================== strict encoder keys


@pytest.fixture(scope="module")
def encoder_state(upstream_files) -> dict[str, torch.Tensor]:
    return upstream_files.encoder_state


def test_encoder_loads_with_or_without_the_imagenet_head(encoder_state):
    with_head = encoder_from_state_dict(encoder_state, source="test")
    without = encoder_from_state_dict(
        {k: v for k, v in encoder_state.items() if not k.startswith("fc.")}, source="test"
    )
    assert not any(t.is_meta for t in with_head.state_dict().values())
    assert isinstance(with_head.fc, nn.Identity) and isinstance(without.fc, nn.Identity)
    torch.testing.assert_close(with_head.state_dict(), without.state_dict())


@pytest.mark.parametrize(
    "change, key",
    [
        ("drop", "layer3.22.bn3.running_var"),
        ("drop", "conv1.weight"),
        ("add", "layer5.0.conv1.weight"),
        ("add", "fc.extra"),
        ("reshape", "layer2.0.conv1.weight"),
    ],
)
def test_encoder_keys_are_checked_strictly(encoder_state, change, key):
    state = dict(encoder_state)
    if change == "drop":
        del state[key]
    elif change == "add":
        state[key] = torch.zeros(1)
    else:
        state[key] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(IncompatibleWeightsError, match=key.replace(".", r"\.")):
        encoder_from_state_dict(state, source="test encoder")


def test_encoder_file_in_the_legacy_format_loads_too(encoder_state, tmp_path):
    from dlwp_models.loading.checkpoints import load_state_dict_file

    path = tmp_path / "resnet101-legacy.pth"
    path.write_bytes(_legacy_save(encoder_state))
    encoder = encoder_from_state_dict(load_state_dict_file(path, map_location="cpu"), source=path.name)
    assert torch.equal(encoder.state_dict()["layer4.2.conv3.weight"], encoder_state["layer4.2.conv3.weight"])


def _legacy_save(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


# =========================================================================== vocabulary pickle


def test_vocabulary_is_read_from_a_python2_infos_pickle(tmp_path):
    path = tmp_path / "fc-infos.pkl"
    path.write_bytes(infos_pickle(forced_vocabulary()))
    vocab = read_vocabulary(path)
    assert list(vocab) == list(range(1, VOCAB_SIZE + 1))
    assert vocab[8] == "beach" and vocab[9] == "w9" and vocab[VOCAB_SIZE] == "UNK"
    path.write_bytes(infos_pickle({1: "a", 2: "caf\xe9", 3: "UNK"}, int_keys=True))
    assert read_vocabulary(path) == {1: "a", 2: "caf\xe9", 3: "UNK"}


@pytest.mark.parametrize(
    "words, message",
    [
        ({1: "a", 3: "UNK"}, "index 2 is missing"),
        ({0: "a", 1: "UNK"}, "index 2 is missing"),
    ],
)
def test_vocabulary_indices_must_run_from_one(tmp_path, words, message):
    path = tmp_path / "fc-infos.pkl"
    path.write_bytes(infos_pickle(words))
    with pytest.raises(IncompatibleWeightsError, match=message):
        read_vocabulary(path)


def test_vocabulary_indices_must_be_unique(tmp_path):
    path = tmp_path / "fc-infos.pkl"
    path.write_bytes(py2_pickle({Py2Str(b"vocab"): {"1": "a", "01": "b", "2": "UNK"}}))
    with pytest.raises(IncompatibleWeightsError, match="index 1 appears twice"):
        read_vocabulary(path)


def test_a_pickle_without_vocab_is_not_an_infos_file(tmp_path):
    path = tmp_path / "fc-infos.pkl"
    path.write_bytes(py2_pickle({Py2Str(b"opt"): py2_namespace(rnn_size=512)}))
    with pytest.raises(IncompatibleWeightsError, match="no 'vocab'"):
        read_vocabulary(path)


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module that leaves a marker file when imported."""
    name = f"dlwp_probe_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(*a):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, marker


@pytest.mark.parametrize(
    "payload",
    [
        "os.system",
        "posix.system",
        "builtins.exec",
        "__builtin__.eval",
        "subprocess.call",
        "argparse.ArgumentParser",
        "probe",
    ],
)
def test_forbidden_globals_are_refused_before_import_or_call(tmp_path, probe_module, payload):
    marker = tmp_path / "ran"
    module, name = (probe_module[0], "run") if payload == "probe" else payload.rsplit(".", 1)
    call = Reduce(Global(module, name), (Py2Str(b"touch " + str(marker).encode()),))
    path = tmp_path / "fc-infos.pkl"
    # hidden inside an otherwise genuine infos file, next to the allowed globals
    path.write_bytes(infos_pickle({1: "a", 2: "UNK"}, extra={Py2Str(b"hook"): call}))
    with pytest.raises(UnsafeFileError, match=f"{module}.{name}"):
        read_vocabulary(path)
    assert not marker.exists() and not probe_module[1].exists()
    assert probe_module[0] not in sys.modules


def test_allowed_globals_cannot_build_other_objects(tmp_path):
    path = tmp_path / "fc-infos.pkl"
    sneaky = Reduce(
        Global("copy_reg", "_reconstructor"), (Global("__builtin__", "object"), Global("__builtin__", "object"), None)
    )
    path.write_bytes(infos_pickle({1: "a", 2: "UNK"}, extra={Py2Str(b"x"): sneaky}))
    with pytest.raises(UnsafeFileError):
        read_vocabulary(path)


# =========================================================================== the decoder step


def test_core_step_is_the_maxout_lstm_and_warm_up_feeds_image_then_start_token():
    torch.manual_seed(1)
    config = DecoderConfig(vocab_size=11, input_encoding_size=5, rnn_size=6, fc_feat_size=7)
    decoder = FCDecoder(config).eval()
    core, r = decoder.core, 6

    def step(x, h, c):
        s = x @ core.i2h.weight.T + core.i2h.bias + h @ core.h2h.weight.T + core.h2h.bias
        i, f, o = (1 / (1 + torch.exp(-s[:, k * r : (k + 1) * r])) for k in range(3))
        g = torch.maximum(s[:, 3 * r : 4 * r], s[:, 4 * r : 5 * r])
        c = f * c + i * g
        return o * torch.tanh(c), c

    x, h, c = torch.randn(3, 5), torch.randn(3, 6), torch.randn(3, 6)
    with torch.no_grad():
        out, (h1, c1) = core(x, (h, c))
        eh, ec = step(x, h, c)
        torch.testing.assert_close((out, h1, c1), (eh, eh, ec))

        feats = torch.randn(2, 7)
        logprobs, (h2, c2) = decoder.start(feats)
        zero = torch.zeros(2, 6)
        h_img, c_img = step(feats @ decoder.img_embed.weight.T + decoder.img_embed.bias, zero, zero)
        h_bos, c_bos = step(decoder.embed.weight[[0, 0]], h_img, c_img)
        torch.testing.assert_close(logprobs, F.log_softmax(h_bos @ decoder.logit.weight.T + decoder.logit.bias, -1))
        torch.testing.assert_close((h2, c2), (h_bos, c_bos))

        decoder.train()  # dropout 0.5 on h, in training only
        dropped, _ = core(x.repeat(200, 1), (h.repeat(200, 1), c.repeat(200, 1)))
        assert 0.35 < float((dropped == 0).float().mean()) < 0.65


# =========================================================================== decoding

BEAM_BEATS_GREEDY = {
    END: {DOG: 0.5, CAT: 0.4},
    DOG: {RUNS: 0.35, SLEEPS: 0.25},
    CAT: {SLEEPS: 0.95},
    RUNS: {END: 0.9},
    SLEEPS: {END: 0.95},
}
FIRST_IS_NOT_BEST = {END: {DOG: 0.6, CAT: 0.4}, DOG: {RUNS: 0.9}, CAT: {END: 0.5}, RUNS: {END: 0.9}}
UNK_FAVOURED = {END: {UNK: 0.55, DOG: 0.44}, DOG: {UNK: 0.7, RUNS: 0.29}, UNK: {END: 0.9}, RUNS: {END: 0.9}}


def test_greedy_decoding_follows_the_most_likely_word():
    decoder = toy_decoder({END: {A: 0.9}, A: {DOG: 0.8}, DOG: {RUNS: 0.7}, RUNS: {AWAY: 0.6}, AWAY: {END: 0.9}})
    assert toy_caption(decoder, 2, beam_size=1) == ["a dog runs away"] * 2
    assert toy_caption(decoder, beam_size=2) == ["a dog runs away"]
    assert toy_caption(decoder, beam_size=3, beam_select="best") == ["a dog runs away"]


def test_beam_search_finds_a_better_sentence_than_greedy():
    decoder = toy_decoder(BEAM_BEATS_GREEDY)
    assert toy_caption(decoder, beam_size=1) == ["dog runs"]
    assert toy_caption(decoder, beam_size=2) == ["cat sleeps"]
    assert toy_caption(decoder, beam_size=2, beam_select="best") == ["cat sleeps"]
    assert sentence_logprob(BEAM_BEATS_GREEDY, "cat sleeps") > sentence_logprob(BEAM_BEATS_GREEDY, "dog runs")


def test_first_finished_beam_is_returned_by_default_not_the_best():
    """'cat' ends at step 1 in slot 1 (score log .2); 'dog runs' ends at step 2 (log .486)."""
    decoder = toy_decoder(FIRST_IS_NOT_BEST)
    assert toy_caption(decoder, beam_size=2) == ["cat"]  # upstream's choice
    assert toy_caption(decoder, beam_size=2, beam_select="first") == ["cat"]
    assert toy_caption(decoder, beam_size=2, beam_select="best") == ["dog runs"]
    assert toy_caption(decoder, beam_size=1) == ["dog runs"]
    assert sentence_logprob(FIRST_IS_NOT_BEST, "dog runs") > sentence_logprob(FIRST_IS_NOT_BEST, "cat")


def test_unk_is_penalised_in_beam_search_only():
    decoder = toy_decoder(UNK_FAVOURED)
    assert toy_caption(decoder, beam_size=1) == ["UNK"]  # greedy keeps UNK
    assert toy_caption(decoder, beam_size=2) == ["dog runs"]  # at every step
    assert toy_caption(decoder, beam_size=3, beam_select="best") == ["dog runs"]


def test_max_length_cuts_captions_and_a_full_length_beam_counts_as_finished():
    decoder = toy_decoder({END: {A: 0.99}, A: {A: 0.99}})
    assert toy_caption(decoder, beam_size=1, max_length=3) == ["a a a"]
    assert toy_caption(decoder, beam_size=2, max_length=3) == ["a a a"]
    assert toy_caption(decoder, beam_size=2, max_length=1, beam_select="best") == ["a"]
    assert toy_caption(decoder, beam_size=2) == [" ".join(["a"] * 16)]


def test_sampling_draws_from_exp_logprob_over_temperature():
    decoder = toy_decoder({END: {DOG: 0.75, CAT: 0.25 - 1e-6}, DOG: {END: 0.999}, CAT: {END: 0.999}})
    torch.manual_seed(0)
    first = toy_caption(decoder, 4000, sample=True)
    share = sum(c.startswith("dog") for c in first) / len(first)
    assert abs(share - 0.75) < 0.03
    torch.manual_seed(0)
    assert toy_caption(decoder, 4000, sample=True) == first  # seedable
    hot = toy_caption(decoder, 4000, sample=True, temperature=2.0)
    expected = math.sqrt(0.75) / (math.sqrt(0.75) + math.sqrt(0.25))  # p ∝ exp(lp / 2)
    assert abs(sum(c.startswith("dog") for c in hot) / 4000 - expected) < 0.03
    greedy_like = toy_decoder(BEAM_BEATS_GREEDY)
    assert toy_caption(greedy_like, 50, sample=True, temperature=0.01) == ["dog runs"] * 50


def test_generate_returns_zero_padded_word_indices():
    decoder = toy_decoder(BEAM_BEATS_GREEDY)
    torch.manual_seed(0)
    for kwargs in ({"beam_size": 1}, {"beam_size": 2}, {"beam_size": 3, "beam_select": "best"}, {"sample": True}):
        with torch.inference_mode():
            seq = decoder.generate(torch.zeros(50, 8), max_length=5, **kwargs)
        assert seq.shape == (50, 5) and seq.dtype == torch.long
        for row in seq.tolist():
            ended = row.index(END) if END in row else len(row)
            assert all(i == END for i in row[ended:]) and all(i != END for i in row[:ended])
        if not kwargs.get("sample"):
            assert (seq[:, 2:] == 0).all() and (seq[:, :2] != 0).all()
    with pytest.raises(ValueError, match="at most"):
        decoder.generate(torch.zeros(1, 8), beam_size=TOY_WIDTH + 1)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        decoder.generate(torch.zeros(1, 9))


# ---- beam search against upstream's own loops ----------------------------------------------


class TableStep:
    """A decoder stand-in whose next-word log-probabilities depend on the whole history: the state
    is a running hash of the words fed so far, the output a row of a fixed table. Every row is an
    exact table look-up, so any batching gives bit-identical numbers."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows  # (K, V), all <= 0
        self.calls: list[int] = []

    def __call__(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]):
        self.calls.append(words.shape[0])
        (h,) = state
        h = (h * 31 + words + 1) % self.rows.shape[0]
        return self.rows[h], (h,)

    def start(self, n: int):
        h = torch.arange(n) * 7 % self.rows.shape[0]
        return self.rows[h], (h,)


def upstream_beam_search(step, logprobs, state, *, beam_size: int, seq_length: int) -> list[dict]:
    """ImageCaptioning.pytorch's CaptionModel.beam_search for one image, loop for loop (state and
    logprobs already copied to beam_size rows). Returns its done_beams, as upstream sorts them."""
    beam_seq = torch.zeros(seq_length, beam_size, dtype=torch.long)
    beam_seq_logprobs = torch.zeros(seq_length, beam_size)
    beam_logprobs_sum = torch.zeros(beam_size)
    done_beams = []
    for t in range(seq_length):
        logprobsf = logprobs.float().clone()
        logprobsf[:, logprobsf.size(1) - 1] = logprobsf[:, logprobsf.size(1) - 1] - 1000
        ys, ix = torch.sort(logprobsf, dim=1, descending=True, stable=True)
        candidates = []
        cols = min(beam_size, ys.size(1))
        rows = 1 if t == 0 else beam_size
        for c in range(cols):
            for q in range(rows):
                local_logprob = ys[q, c]
                candidate_logprob = beam_logprobs_sum[q] + local_logprob
                candidates.append({"c": ix[q, c], "q": q, "p": candidate_logprob, "r": local_logprob})
        candidates = sorted(candidates, key=lambda x: -x["p"])
        new_state = [s.clone() for s in state]
        if t >= 1:
            beam_seq_prev = beam_seq[:t].clone()
            beam_seq_logprobs_prev = beam_seq_logprobs[:t].clone()
        for vix in range(beam_size):
            v = candidates[vix]
            if t >= 1:
                beam_seq[:t, vix] = beam_seq_prev[:, v["q"]]
                beam_seq_logprobs[:t, vix] = beam_seq_logprobs_prev[:, v["q"]]
            for state_ix in range(len(new_state)):
                new_state[state_ix][vix] = state[state_ix][v["q"]]
            beam_seq[t, vix] = v["c"]
            beam_seq_logprobs[t, vix] = v["r"]
            beam_logprobs_sum[vix] = v["p"]
        state = tuple(new_state)
        for vix in range(beam_size):
            if beam_seq[t, vix] == 0 or t == seq_length - 1:
                done_beams.append(
                    {
                        "seq": beam_seq[:, vix].clone(),
                        "p": beam_logprobs_sum[vix],  # a view: upstream's alias
                        "p_when_done": float(beam_logprobs_sum[vix]),
                    }
                )
                beam_logprobs_sum[vix] = -1000
        logprobs, state = step(beam_seq[t], state)
    # upstream returns sorted(...)[:beam_size] and uses element 0; "best" needs them all
    return sorted(done_beams, key=lambda x: -x["p"])


def random_rows(seed: int, width: int, *, quantised: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(53, width, generator=g) * 2
    logits[:, 0] += torch.rand(53, generator=g) * 3 - 1  # end often likely
    logits[:, -1] += torch.rand(53, generator=g) * 4 - 1  # UNK sometimes the best word
    rows = F.log_softmax(logits, dim=-1)
    if quantised:  # many exact ties of scores
        rows = torch.floor(rows * 2) / 2
    return rows


@pytest.mark.parametrize("quantised", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("width, beam_size", [(7, 2), (7, 3), (7, 5), (5, 5), (4, 3)])
def test_beam_search_reproduces_upstream_decision_for_decision(width, beam_size, quantised):
    """Random history-dependent tables; beams as wide as the vocabulary make finished beams
    (-1000) and UNK (-1000) candidates compete with live ones."""
    n, seq_length = 3, 9
    differs = 0
    for seed in range(60):
        rows = random_rows(seed, width, quantised=quantised)
        step = TableStep(rows)
        logprobs, state = step.start(n)
        ours = {
            select: beam_search(step, logprobs, state, beam_size=beam_size, max_length=seq_length, select=select)
            for select in ("first", "best")
        }
        for k in range(n):
            done = upstream_beam_search(
                step,
                logprobs[k : k + 1].expand(beam_size, width),
                tuple(s[k : k + 1].repeat(beam_size) for s in state),
                beam_size=beam_size,
                seq_length=seq_length,
            )
            upstream_first = done[0]["seq"]
            # upstream's aliasing leaves every score at -1000, so its sort kept recording order
            assert all(float(d["p"]) == -1000 for d in done)
            best = max(done, key=lambda d: d["p_when_done"])  # the earliest recorded among equals
            assert ours["first"][k].tolist() == upstream_first.tolist(), (seed, k)
            assert ours["best"][k].tolist() == best["seq"].tolist(), (seed, k)
            differs += ours["first"][k].tolist() != ours["best"][k].tolist()
    assert differs > 0  # the two rules were told apart


def test_beam_search_is_batched_over_images_and_beams():
    step = TableStep(random_rows(0, 9, quantised=False))
    logprobs, state = step.start(4)
    beam_search(step, logprobs, state, beam_size=3, max_length=6, select="best")
    assert step.calls == [12] * 5  # one call per step, all images × beams at once


def test_greedy_and_sampling_stop_each_image_at_its_own_end_token():
    step = TableStep(random_rows(3, 7, quantised=False))
    logprobs, state = step.start(12)
    with torch.inference_mode():
        greedy = greedy_search(step, logprobs, state, max_length=9)
        alone = torch.cat(
            [
                greedy_search(step, logprobs[k : k + 1], tuple(s[k : k + 1] for s in state), max_length=9)
                for k in range(12)
            ]
        )
        torch.manual_seed(0)
        sampled = sample_search(step, logprobs, state, max_length=9, temperature=1.0)
    assert torch.equal(greedy, alone)
    for seq in (greedy, sampled):
        lengths = set()
        for row in seq.tolist():
            ended = row.index(END) if END in row else len(row)
            assert all(i == END for i in row[ended:]), row
            lengths.add(ended)
        assert len(lengths) > 1  # images ended at different steps


def test_cli_captions_each_image(published, tmp_path, capsys, monkeypatch):
    from dlwp_models.cli.main import main

    paths = []
    for i, size in enumerate([(90, 120), (64, 64)]):
        paths.append(tmp_path / f"photo{i}.png")
        Image.fromarray(random_image(*size, seed=i)).save(paths[-1])
    monkeypatch.setenv("TORCH_HOME", str(published.home))  # files already fetched there
    monkeypatch.setenv("DLWP_MANIFEST", str(published.manifest))
    assert main(["caption", *map(str, paths), "--beam-size", "2", "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{p}: {SENTENCE}" for p in paths]
    with pytest.raises(SystemExit) as info:
        main(["caption", str(paths[0]), "--beam-size", "0", "-q"])
    assert info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


class ZeroFeatures(nn.Module):
    """A stand-in encoder: every image gives the zero feature (the toy decoders ignore it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], FEATURES)


def toy_captioner(rows: dict[int, dict[int, float]]) -> NeuralTalk2:
    decoder = FCDecoder.from_state_dict(markov_state_dict(table(rows), fc_feat_size=FEATURES), source="toy")
    return NeuralTalk2(encoder=ZeroFeatures(), decoder=decoder, vocab=WORDS).eval()


def test_caption_passes_beam_size_and_beam_select_on_for_one_image_and_for_a_list():
    """BEAM_BEATS_GREEDY: greedy writes 'dog runs', beam 2 'cat sleeps'; so an option that does
    not reach the search shows, whether one image or a list is given."""
    model = toy_captioner(BEAM_BEATS_GREEDY)
    image = random_image(32, 32)
    assert model.caption(image, beam_size=1) == "dog runs"
    assert model.caption(image) == model.caption(image, beam_size=2) == "cat sleeps"
    assert model.caption([image, image], beam_size=1) == ["dog runs", "dog runs"]
    assert model.caption([image, image], beam_size=2) == ["cat sleeps", "cat sleeps"]
    first_is_not_best = toy_captioner(FIRST_IS_NOT_BEST)
    assert first_is_not_best.caption(image, beam_size=2) == "cat"
    assert first_is_not_best.caption([image], beam_size=2, beam_select="best") == ["dog runs"]


def test_cli_beam_size_reaches_the_search(weight_server, upstream_files, tmp_path, capsys, monkeypatch):
    """A served decoder whose beams disagree (greedy 'dog runs', beam 2 'cat sleeps'): the CLI's
    caption follows --beam-size."""
    from dlwp_models.cli.main import main

    decoder = zip_save(markov_state_dict(table(BEAM_BEATS_GREEDY), fc_feat_size=FEATURES))
    entry = coco_fc_entry(
        weight_server,
        encoder=upstream_files.encoder,
        decoder=decoder,
        vocab=infos_pickle({i: w for i, w in WORDS.items()}),
    )
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": [entry]}), encoding="utf-8")
    monkeypatch.setenv("DLWP_MANIFEST", str(manifest))
    image = tmp_path / "photo.png"
    Image.fromarray(random_image(40, 40)).save(image)
    for beam, sentence in ((1, "dog runs"), (2, "cat sleeps")):
        assert main(["caption", str(image), "--beam-size", str(beam), "-q"]) == 0
        assert capsys.readouterr().out.strip() == f"{image}: {sentence}"


# =========================================================================== tiny images (issue 14)


@pytest.mark.parametrize("height,width", [(1, 64), (2, 64), (64, 1), (64, 2), (1, 1), (3, 2)])
def test_an_image_too_small_to_encode_is_named_before_any_encoding(captioner, monkeypatch, height, width):
    from dlwp_models.errors import ImageInputError
    from dlwp_models.models.captioning.model import ImagesTooSmallError

    encoded = []
    monkeypatch.setattr(captioner, "encode", lambda x: encoded.append(x) or torch.zeros(len(x), 2048))
    with pytest.raises(ImagesTooSmallError, match=f"image 1 is {width}x{height} pixels.*at least 3") as info:
        captioner.caption([random_image(40, 50), random_image(height, width)])
    assert info.value.indices == [1] and isinstance(info.value, ImageInputError)
    assert encoded == []  # nothing was encoded for nothing


def test_the_smallest_encodable_image_is_captioned(captioner):
    assert isinstance(captioner.caption(random_image(3, 3)), str)
    assert isinstance(captioner.caption(random_image(3, 40)), str)


def test_cli_caption_fails_only_the_tiny_image(published, captioner, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from dlwp_models.cli.main import main

    good, tiny = tmp_path / "good.png", tmp_path / "tiny.png"
    Image.fromarray(random_image(40, 50)).save(good)
    Image.fromarray(random_image(2, 50)).save(tiny)
    monkeypatch.setenv("TORCH_HOME", str(published.home))
    monkeypatch.setenv("DLWP_MANIFEST", str(published.manifest))
    assert main(["caption", str(tiny), str(good), "-q"]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{good}: {captioner.caption(str(good))}\n"
    assert captured.err.startswith(f"dlwp: error: {tiny}: the image is 50x2 pixels") and "Traceback" not in captured.err
    assert "the captioning encoder needs at least 3 pixels on each side" in captured.err


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x96"])  # BINBYTES8, BINUNICODE8, BYTEARRAY8
def test_vocabulary_pickle_declaring_a_huge_object_is_refused_before_allocating(tmp_path, opcode):
    import resource
    import struct

    path = tmp_path / "fc-infos.pkl"
    path.write_bytes(b"\x80\x05" + opcode + struct.pack("<Q", 1 << 40) + b"tiny" + b".")  # 1 TiB declared
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnsafeFileError, match="declares a 1,099,511,627,776-byte object"):
        read_vocabulary(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) < 100 * 1024
