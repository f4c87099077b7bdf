"""The baselines: the book's / upstream's plain code paths, written out as a reader of chapter 2
would run them (no dlwp code except where the issue says "the same model").

* classifiers: ``torchvision.models.<name>(weights=...)`` and the book's loop (PIL open, Resize(256),
  CenterCrop(224), ToTensor, Normalize, one image at a time under ``no_grad``);
* CycleGAN: the notebook's ``ResNetGenerator`` built normally, ``torch.load`` + ``load_state_dict``;
* NeuralTalk2: upstream's Caffe ResNet-101 and the FC decoder built normally, ``torch.load`` +
  ``load_state_dict``, ``pickle.load`` of the infos file; captions one image at a time, one beam
  at a time (each decoder step is run for a single beam).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# the book's generator and upstream's Caffe ResNet-101, written out once for tests and benchmarks
from upstream_code import BookResNetGenerator as ResNetGenerator
from upstream_code import upstream_caffe_resnet101

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
UNK_PENALTY = 1000.0
FINISHED_SCORE = -1000.0


# --------------------------------------------------------------------------- classifiers


def book_transform(resize: int = 256, crop: int = 224):
    from torchvision import transforms as T

    return T.Compose(
        [T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    )


def torchvision_load(name: str) -> nn.Module:
    """What a torchvision user types: the builder with the weights enum (reads torch's cache)."""
    import torchvision

    weights = {
        "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
        "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    }[name]
    return getattr(torchvision.models, name)(weights=weights)


def book_classify(model: nn.Module, path: str, preprocess, labels: list[str], topk: int = 5):
    """Chapter 2's steps for one image: open, preprocess, unsqueeze, run, softmax, sort."""
    from PIL import Image

    img = Image.open(path)
    img_t = preprocess(img)
    batch_t = torch.unsqueeze(img_t, 0)
    model.eval()
    with torch.no_grad():
        out = model(batch_t)
    percentage = torch.nn.functional.softmax(out, dim=1)[0] * 100
    _, indices = torch.sort(out, descending=True)
    return [(labels[idx], percentage[idx].item()) for idx in indices[0][:topk]]


# --------------------------------------------------------------------------- CycleGAN (the notebook's class)


def naive_cyclegan(path: Path) -> nn.Module:
    netG = ResNetGenerator()
    model_data = torch.load(path)
    netG.load_state_dict(model_data)
    netG.eval()
    return netG


def book_translate(netG: nn.Module, path: str):
    from PIL import Image
    from torchvision import transforms as T

    preprocess = T.Compose([T.Resize(256), T.ToTensor()])
    img = Image.open(path)
    batch_t = torch.unsqueeze(preprocess(img), 0)
    with torch.no_grad():
        batch_out = netG(batch_t)
    out_t = (batch_out.data.squeeze() + 1.0) / 2.0
    return T.ToPILImage()(out_t)


# --------------------------------------------------------------------------- NeuralTalk2


class FCModel(nn.Module):
    """ImageCaptioning.pytorch's FC model (models/FCModel.py), inference part, written out: the
    image embedding is the LSTM's first input, then words; maxout LSTM core."""

    def __init__(
        self, vocab_size: int = 9487, input_encoding_size: int = 512, rnn_size: int = 512, fc_feat_size: int = 2048
    ) -> None:
        super().__init__()
        self.rnn_size = rnn_size
        self.img_embed = nn.Linear(fc_feat_size, input_encoding_size)
        self.core = nn.Module()
        self.core.i2h = nn.Linear(input_encoding_size, 5 * rnn_size)
        self.core.h2h = nn.Linear(rnn_size, 5 * rnn_size)
        self.embed = nn.Embedding(vocab_size + 1, input_encoding_size)
        self.logit = nn.Linear(rnn_size, vocab_size + 1)

    def _core(self, xt, state):
        prev_h, prev_c = state
        r = self.rnn_size
        all_input_sums = self.core.i2h(xt) + self.core.h2h(prev_h)
        in_gate, forget_gate, out_gate = torch.sigmoid(all_input_sums[:, : 3 * r]).split(r, dim=1)
        in_transform = torch.max(all_input_sums[:, 3 * r : 4 * r], all_input_sums[:, 4 * r :])
        next_c = forget_gate * prev_c + in_gate * in_transform
        next_h = out_gate * torch.tanh(next_c)
        return next_h, (next_h, next_c)

    def step(self, it, state):
        output, state = self._core(self.embed(it), state)
        return torch.nn.functional.log_softmax(self.logit(output), dim=-1), state

    def start(self, fc_feats):
        n = fc_feats.shape[0]
        zeros = fc_feats.new_zeros(n, self.rnn_size)
        _, state = self._core(self.img_embed(fc_feats), (zeros, zeros))  # t = 0: the image
        return self.step(torch.zeros(n, dtype=torch.long), state)  # t = 1: the start token


def naive_neuraltalk2(encoder_path: Path, decoder_path: Path, vocab_path: Path) -> dict[str, Any]:
    """Upstream's eval.py way: build each network (random init), torch.load, load_state_dict."""
    cnn = upstream_caffe_resnet101()
    cnn.load_state_dict(torch.load(encoder_path, map_location="cpu"))
    cnn.eval()
    decoder = FCModel()
    decoder.load_state_dict(torch.load(decoder_path, map_location="cpu"))
    decoder.eval()
    with open(vocab_path, "rb") as fh:
        infos = pickle.load(fh, encoding="latin1")
    vocab = {int(k): v for k, v in infos["vocab"].items()}
    return {"encoder": cnn, "decoder": decoder, "vocab": vocab}


def upstream_features(cnn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """misc/resnet_utils.myResnet: layer4's output averaged over space, (N, 3, H, W) -> (N, 2048)."""
    x = cnn.maxpool(cnn.relu(cnn.bn1(cnn.conv1(x))))
    x = cnn.layer4(cnn.layer3(cnn.layer2(cnn.layer1(x))))
    return x.mean(3).mean(2)


def caption_input(path: str) -> torch.Tensor:
    """Upstream's preprocessing: RGB, /255, ImageNet mean/std, no resize -> (1, 3, H, W)."""
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def beam_search_one_beam_at_a_time(
    decoder: nn.Module, feature: torch.Tensor, *, beam_size: int = 2, max_length: int = 16
) -> list[int]:
    """Upstream's beam search rule for ONE image, each beam's decoder step run on its own (M = 1):
    UNK penalised, each live beam proposes its top-B words, candidates ranked by running sum (ties:
    for each rank, for each beam), a beam that ends (or reaches the last step) is recorded as
    finished, and the first one recorded is the caption."""
    logprobs, state = decoder.start(feature)  # (1, V), ((1, R), (1, R))
    b = beam_size
    vocab = logprobs.shape[1]
    beams_lp = [logprobs[0]] * b
    beams_state = [state] * b
    beams_words: list[list[int]] = [[] for _ in range(b)]
    sums = torch.zeros(b, dtype=torch.float32)
    for t in range(max_length):
        proposals = []
        for q in range(b if t > 0 else 1):  # only beam 0 is live at first
            lp = beams_lp[q].float().clone()
            lp[vocab - 1] -= UNK_PENALTY
            ys, ix = lp.sort(descending=True, stable=True)
            proposals.append((ys[:b], ix[:b]))
        candidates = []
        for c in range(b):
            for q, (ys, ix) in enumerate(proposals):
                score = sums[q] + ys[c]  # float32, as the batched search
                candidates.append((float(score), q, int(ix[c])))
        candidates.sort(key=lambda cand: -cand[0])  # stable: keeps the tie order
        chosen = candidates[:b]
        new_words, new_states, new_sums = [], [], []
        for score, q, word in chosen:
            words = beams_words[q] + [word]
            finished = word == 0 or t == max_length - 1
            if finished:
                return words
            new_words.append(words)
            new_states.append(beams_state[q])
            new_sums.append(score)
        beams_words = new_words
        sums = torch.tensor(new_sums, dtype=torch.float32)
        beams_lp, beams_state = [], []
        for words, st in zip(new_words, new_states):
            lp, st = decoder.step(torch.tensor([words[-1]]), st)  # one beam at a time
            beams_lp.append(lp[0])
            beams_state.append(st)
    raise AssertionError("unreachable: the last step finishes every beam")


def words_to_sentence(words: list[int], vocab: dict[int, str]) -> str:
    out = []
    for index in words:
        if index == 0:
            break
        out.append(vocab[index])
    return " ".join(out)
