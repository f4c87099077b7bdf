"""Turning a caption decoder's word distributions into word sequences: greedy, sampling and
upstream's beam search, each batched over images (and beams) as tensors.

The three searches share one interface. ``step(words, state) -> (logprobs, state)`` feeds one
word per row (a ``(M,)`` long tensor) and returns the next word's log-probabilities ``(M, V)``
(index 0 is the start/end token, index ``V - 1`` the UNK word) and the new state, a tuple of
tensors whose first dimension is the row. Each search starts from the ``(N, V)`` log-probabilities
and state that the decoder's warm-up produced for N images, and returns an ``(N, max_length)``
long tensor of word indices: the caption, then zeros after its end token (or none when it ran to
``max_length`` words).

Beam search reproduces ImageCaptioning.pytorch's ``beam_search`` decision for decision (that is
how the book's captions were made); see :func:`beam_search` for the rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "State",
    "Step",
    "greedy_search",
    "sample_search",
    "beam_search",
    "BEAM_SELECT",
    "UNK_PENALTY",
    "FINISHED_SCORE",
]

State = tuple[torch.Tensor, ...]
Step = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]

#: beam search subtracts this from the UNK word's log-probability at every step (upstream's rule)
UNK_PENALTY = 1000.0
#: the running sum a finished beam is set to, so that it is (almost) never extended (upstream's rule)
FINISHED_SCORE = -1000.0
#: which finished beam beam search returns: upstream's first-recorded one, or the best-scoring one
BEAM_SELECT = ("first", "best")


def greedy_search(step: Step, logprobs: torch.Tensor, state: State, *, max_length: int) -> torch.Tensor:
    """The most likely word at every step (UNK is not suppressed, as upstream)."""
    n = logprobs.shape[0]
    seq = torch.zeros(n, max_length, dtype=torch.long, device=logprobs.device)
    live = torch.ones(n, dtype=torch.bool, device=logprobs.device)
    for t in range(max_length):
        words = logprobs.argmax(dim=-1) * live  # (N,): 0 once an image has ended
        seq[:, t] = words
        live &= words != 0
        if t == max_length - 1 or not bool(live.any()):
            break
        logprobs, state = step(words, state)  # (N, V)
    return seq


def sample_search(
    step: Step, logprobs: torch.Tensor, state: State, *, max_length: int, temperature: float
) -> torch.Tensor:
    """Draw every word from ``exp(logprob / temperature)`` (normalised) with ``torch.multinomial``
    on the CPU, like upstream, so ``torch.manual_seed`` makes captions reproducible on any device."""
    n = logprobs.shape[0]
    seq = torch.zeros(n, max_length, dtype=torch.long, device=logprobs.device)
    live = torch.ones(n, dtype=torch.bool, device=logprobs.device)
    for t in range(max_length):
        scaled = logprobs.float() / temperature  # (N, V)
        probs = torch.exp(scaled - scaled.amax(dim=-1, keepdim=True)).cpu()
        words = torch.multinomial(probs, 1).view(n).to(logprobs.device) * live
        seq[:, t] = words
        live &= words != 0
        if t == max_length - 1 or not bool(live.any()):
            break
        logprobs, state = step(words, state)
    return seq


def beam_search(
    step: Step, logprobs: torch.Tensor, state: State, *, beam_size: int, max_length: int, select: str
) -> torch.Tensor:
    """Upstream's beam search, batched: images × beams are the rows of one tensor, and no Python
    loop runs per beam or per image.

    For each image, with B = ``beam_size`` beams copied from the warm-up state, at each step
    t = 0 … ``max_length`` − 1:

    1. subtract :data:`UNK_PENALTY` from the UNK column (the last word);
    2. every live beam (only beam 0 at t = 0) proposes its B most likely words (equal
       log-probabilities: the lower word index first); a candidate's score is its beam's running
       sum + the word's log-probability;
    3. all candidates are ordered by score, descending, ties kept in the order "for each word rank,
       for each beam"; the top B become the new beams in that order (slot 0 = best), each
       inheriting its parent's words and state;
    4. for slots 0 … B − 1 in order, a beam whose new word is the end token 0, or any beam at the
       last step, is recorded as finished, and its running sum is set to :data:`FINISHED_SCORE`;
    5. the B new words are fed to the decoder.

    ``select="first"`` (default, upstream's behaviour) returns the first finished beam recorded
    (earliest step, lowest slot): upstream sorts its finished beams by scores that alias the
    running sums, which the last step overwrites with −1000 for every beam, so its sort keeps
    recording order. ``select="best"`` returns the finished beam with the highest sum of
    log-probabilities through its end token (UNK penalty included; the earliest on ties).
    """
    if select not in BEAM_SELECT:
        raise ValueError(f"beam_select must be one of {list(BEAM_SELECT)}, got {select!r}.")
    n, vocab = logprobs.shape
    b, steps = beam_size, max_length
    device = logprobs.device
    assert 1 <= b <= vocab, (b, vocab)
    images = torch.arange(n, device=device)

    logprobs = logprobs.repeat_interleave(b, dim=0)  # (N*B, V), beams of image 0 first
    state = tuple(s.repeat_interleave(b, dim=0) for s in state)
    seq = torch.zeros(n, b, steps, dtype=torch.long, device=device)  # each beam's words so far
    sums = torch.zeros(n, b, dtype=torch.float32, device=device)  # each beam's running sum
    result = torch.zeros(n, steps, dtype=torch.long, device=device)
    recorded = torch.zeros(n, dtype=torch.bool, device=device)
    best = torch.full((n,), float("-inf"), dtype=torch.float32, device=device)

    for t in range(steps):
        lp = logprobs.float().view(n, b, vocab).clone()
        lp[..., vocab - 1] -= UNK_PENALTY
        ys, ix = lp.sort(dim=-1, descending=True, stable=True)
        ys, ix = ys[..., :b], ix[..., :b]  # (N, beam q, rank c)
        scores = sums.unsqueeze(-1) + ys  # (N, q, c)
        if t == 0:
            scores[:, 1:, :] = float("-inf")  # only beam 0 is live at first
        # candidate k = c * B + q: "for each word rank, for each beam"; a stable sort keeps ties so
        scores = scores.transpose(1, 2).reshape(n, b * b)  # (N, B*B)
        words = ix.transpose(1, 2).reshape(n, b * b)
        top = scores.sort(dim=1, descending=True, stable=True).indices[:, :b]  # (N, B) new slots
        parent = top % b  # (N, B) beam each slot extends
        words = words.gather(1, top)  # (N, B)
        sums = scores.gather(1, top)
        seq = seq.gather(1, parent.unsqueeze(-1).expand(n, b, steps)).clone()
        seq[:, :, t] = words
        rows = (images.unsqueeze(1) * b + parent).view(-1)  # (N*B,) parent rows
        state = tuple(s.index_select(0, rows) for s in state)

        finished = words == 0 if t < steps - 1 else torch.ones_like(words, dtype=torch.bool)
        if select == "first":
            slot = finished.to(torch.uint8).argmax(dim=1)  # lowest finished slot
            take = finished.any(dim=1) & ~recorded
        else:
            finished_sums = sums.masked_fill(~finished, float("-inf"))
            slot = finished_sums.argmax(dim=1)  # best finished slot (lowest on ties)
            value = finished_sums.gather(1, slot.unsqueeze(1)).squeeze(1)
            take = value > best  # strictly better than any earlier
            best = torch.where(take, value, best)
        result = torch.where(take.unsqueeze(1), seq[images, slot], result)
        recorded |= take
        sums = sums.masked_fill(finished, FINISHED_SCORE)

        if t == steps - 1 or (select == "first" and bool(recorded.all())):
            break  # with "first", nothing after an image's first record changes its result
        logprobs, state = step(words.view(-1), state)  # (N*B, V)
    return result
