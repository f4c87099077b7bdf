"""The caption searches on hand-written word tables (no decoder): sampling's numerics, a caption
that runs to ``max_length``, beam search with one beam, and its argument check."""

from __future__ import annotations

import pytest
import torch

from dlwp_models.models.captioning.search import beam_search, greedy_search, sample_search

V = 6  # words: 0 = end, 1 … 4, 5 = UNK


def chain_step(table: torch.Tensor):
    """A decoder whose next-word log-probabilities depend only on the previous word: ``table[word]``."""

    def step(words, state):
        return table[words], state

    return step


def no_end_table() -> torch.Tensor:
    """Word w is followed by w + 1 (4 by 4), the end token almost never."""
    probs = torch.full((V, V), 1e-3)
    for word in range(V):
        probs[word, min(word + 1, 4) if word else 1] = 1.0
    probs[:, 0] = 1e-9
    return (probs / probs.sum(dim=1, keepdim=True)).log()


def test_a_caption_without_an_end_fills_max_length_in_every_search():
    table = no_end_table()
    first = table[torch.zeros(2, dtype=torch.long)]
    want = torch.tensor([[1, 2, 3, 4, 4]] * 2)
    assert torch.equal(greedy_search(chain_step(table), first, (), max_length=5), want)
    torch.manual_seed(0)
    assert torch.equal(sample_search(chain_step(table), first, (), max_length=5, temperature=0.01), want)
    for select in ("first", "best"):
        got = beam_search(chain_step(table), first, (), beam_size=2, max_length=5, select=select)
        assert torch.equal(got, want)


def test_sampling_normalises_each_image_on_its_own_at_any_temperature():
    """Image 1's words are all very unlikely: scaled by 1 / 0.05 they are ~ -400, which only a
    per-image shift keeps from vanishing in float32."""
    first = torch.full((2, V), -20.0)
    first[0, 2] = 0.0  # image 0: word 2 for sure
    first[1, 3] = -19.0  # image 1: word 3, by e^20 to 1 at T = 0.05
    table = torch.full((V, V), -30.0)
    table[:, 0] = 0.0  # then the end
    torch.manual_seed(0)
    got = sample_search(chain_step(table), first, (), max_length=4, temperature=0.05)
    assert got.tolist() == [[2, 0, 0, 0], [3, 0, 0, 0]]


def test_beam_search_with_one_beam_is_greedy_when_no_word_is_unk():
    torch.manual_seed(1)
    table = torch.log_softmax(torch.randn(V, V) * 3, dim=1)
    table[:, V - 1] = -50.0  # UNK never wins, so its penalty changes nothing
    first = table[torch.tensor([1, 2, 3])]
    want = greedy_search(chain_step(table), first, (), max_length=6)
    for select in ("first", "best"):
        got = beam_search(chain_step(table), first, (), beam_size=1, max_length=6, select=select)
        assert torch.equal(got, want)


def test_an_unknown_beam_select_is_refused_naming_the_choices():
    first = torch.zeros(1, V)
    with pytest.raises(ValueError) as info:
        beam_search(chain_step(torch.zeros(V, V)), first, (), beam_size=2, max_length=3, select="worst")
    assert str(info.value) == "beam_select must be one of ['first', 'best'], got 'worst'."


@pytest.mark.parametrize("beam_size", [3, 4])
def test_the_decoder_runs_the_beam_width_it_is_asked_for(beam_size):
    """``FCDecoder.generate(beam_size=B)`` is upstream's beam search with B beams, and on these
    features B beams and 2 beams give different captions (so a generate that ignored B would be seen)."""
    from dlwp_models.models.captioning.decoder import DecoderConfig, FCDecoder

    torch.manual_seed(3)
    decoder = FCDecoder(DecoderConfig(vocab_size=30, input_encoding_size=8, rnn_size=8, fc_feat_size=12)).eval()
    with torch.no_grad():
        decoder.logit.weight.mul_(4)  # peaked enough that the beams matter
    features = torch.randn(16, 12)
    with torch.inference_mode():
        got = decoder.generate(features, beam_size=beam_size, max_length=8)
        logprobs, state = decoder.start(features)
        want = beam_search(decoder.step, logprobs, state, beam_size=beam_size, max_length=8, select="first")
        logprobs, state = decoder.start(features)
        two = beam_search(decoder.step, logprobs, state, beam_size=2, max_length=8, select="first")
    assert torch.equal(got, want)
    assert not torch.equal(want, two), "the fixture cannot tell the beam widths apart"
