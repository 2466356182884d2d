"""Batched beam search for GNMT: all sentences x beams decode together, one step at a time.

Hypotheses are ranked, once every beam of a sentence has produced EOS, by the GNMT
paper's score (Wu et al., 2016, section 7):

    s(Y, X) = log P(Y | X) / lp(Y) + cp(X, Y)
    lp(Y)   = ((c + |Y|) / (c + 1)) ** alpha            c = len_norm_const, alpha = len_norm_factor
    cp(X,Y) = beta * sum_i log(min(sum_j p_ij, 1))       beta = cov_penalty_factor

where p_ij is the attention of target step j on source position i; source positions
that received no attention at all (padding) are left out of the sum. What |Y| and the
coverage sum_j p_ij are, and what happens at the length limit, follow one of two rule
sets (`SearchConfig.scoring`):

- "nvidia" (the default), NVIDIA's PyTorch GNMT exactly, so its published BLEU and its
  checkpoints' translations reproduce: |Y| counts the start token as well as the
  generated tokens (EOS included); the coverage is kept per beam slot and not reordered
  when the beams are re-ranked (slot b adds the attention of whichever hypothesis sits
  in it at each step), and when a sentence finishes its beams are first sorted by
  log-probability, the lengths moving with them and the coverage staying; a sentence
  that reaches the length limit (or finishes on its last step) is ranked by its plain
  log-probability, without lp or cp.
- "paper", the paper's definitions: |Y| counts the generated tokens (EOS included), the
  coverage follows each hypothesis, and sentences at the length limit are ranked by the
  full score too.

A finished beam is carried along unchanged (EOS with log-probability 0) while the
others of its sentence go on; finished sentences leave the batch, so the remaining
ones decode faster. Beam size 1 is greedy decoding (either rule set). `max_length`
counts generated tokens, EOS included: NVIDIA's `--max-seq-len N` is `max_length` N - 1.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import cli
from gnmt.model import GNMT
from gnmt.tokenizer import BOS, EOS


@dataclass(frozen=True)
class SearchConfig:
    beam_size: int = 5
    max_length: int = 150  # generated tokens per sentence, EOS included
    len_norm_factor: float = 0.6
    len_norm_const: float = 5.0
    cov_penalty_factor: float = 0.1
    scoring: str = "nvidia"  # or "paper": see the module docstring

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring {self.scoring!r}: choose one of {', '.join(SCORINGS)}")


SCORINGS = ("nvidia", "paper")


def add_scoring_flags(group: argparse._ActionsContainer) -> None:
    """The flags that rank hypotheses, as train, translate and serve take them."""
    group.add_argument(
        "--len-norm-factor",
        type=cli.nonnegative_float,
        default=0.6,
        help="length normalization exponent (alpha); 0: none",
    )
    group.add_argument(
        "--len-norm-const",
        type=cli.nonnegative_float,
        default=5.0,
        help="length normalization constant (c)",
    )
    group.add_argument(
        "--cov-penalty-factor",
        type=cli.nonnegative_float,
        default=0.1,
        help="coverage penalty weight (beta); 0: none",
    )
    group.add_argument(
        "--beam-scoring",
        choices=SCORINGS,
        default="nvidia",
        help="nvidia: NVIDIA's recipe exactly (its BLEU reproduces: the length counts the "
        "start token, coverage is kept per beam slot, sentences at --max-length are "
        "ranked by log-probability alone); paper: the GNMT paper's definitions (the "
        "generated length, each hypothesis's own coverage) everywhere",
    )


def search_config(args: argparse.Namespace, beam_size: int, max_length: int) -> SearchConfig:
    """The search of `add_scoring_flags`' flags, with this beam and length limit."""
    return SearchConfig(
        beam_size,
        max_length,
        args.len_norm_factor,
        args.len_norm_const,
        args.cov_penalty_factor,
        args.beam_scoring,
    )


def final_scores(
    log_probs: torch.Tensor, lengths: torch.Tensor, coverage: torch.Tensor, cfg: SearchConfig
) -> torch.Tensor:
    """GNMT ranking score for hypotheses: log_probs [N], lengths [N], coverage [N, S]."""
    length = lengths.to(log_probs.dtype)
    lp = ((cfg.len_norm_const + length) / (cfg.len_norm_const + 1.0)) ** cfg.len_norm_factor
    attended = coverage > 0
    cp = torch.where(attended, coverage.clamp(max=1.0).clamp(min=1e-30).log(), 0.0).sum(-1)
    return log_probs / lp + cfg.cov_penalty_factor * cp


def best_hypotheses(
    scores: torch.Tensor,
    lengths: torch.Tensor,
    coverage: torch.Tensor,
    cfg: SearchConfig,
    last_step: bool,
) -> torch.Tensor:
    """Per sentence, the beam (0..k-1) that wins: scores [n, k] (log-probabilities),
    lengths [n * k], coverage [n * k, S], by the rules of `cfg.scoring`."""
    n, k = scores.shape
    if cfg.scoring == "paper":
        return final_scores(scores.view(-1), lengths, coverage, cfg).view(n, k).argmax(dim=1)
    if last_step:  # NVIDIA: unfinished at the limit, or finished on the last step
        return scores.argmax(dim=1)
    # NVIDIA notices a finished sentence one step later, when the beams (all repeating
    # EOS at no cost) are re-ranked by log-probability: hypotheses and their lengths move
    # to the sorted order, the slots' coverage does not.
    order = scores.sort(dim=1, descending=True, stable=True).indices
    rows = (torch.arange(n, device=scores.device).unsqueeze(1) * k + order).view(-1)
    ranked = final_scores(scores.view(-1)[rows], lengths[rows], coverage, cfg).view(n, k)
    return order.gather(1, ranked.argmax(dim=1, keepdim=True)).squeeze(1)


@torch.no_grad()
def beam_search(
    model: GNMT, src: torch.Tensor, src_lengths: torch.Tensor, cfg: SearchConfig = SearchConfig()
) -> list[list[int]]:
    """Translate a batch: src [B, S], src_lengths [B] -> B token-id lists (no BOS/EOS)."""
    device = src.device
    batch, k = src.size(0), cfg.beam_size
    source = model.encode(src, src_lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(k)
    source = source.index_select(rows)
    state = source.state

    nvidia = cfg.scoring == "nvidia"
    alive = torch.arange(batch, device=device)  # original index of each live sentence
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    tokens = torch.full((batch * k, 0), BOS, dtype=torch.long, device=device)
    last = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    # NVIDIA's lengths count the start token; token rows hold `lengths - offset` tokens
    offset = 1 if nvidia else 0
    lengths = torch.full((batch * k,), offset, dtype=torch.long, device=device)
    coverage = torch.zeros(batch * k, src.size(1), device=device)
    results: list[list[int]] = [[] for _ in range(batch)]

    for step in range(cfg.max_length):
        logits, attn, state = model.decode(last, source, state)
        logp = F.log_softmax(logits[:, 0].float(), dim=-1)  # [N, V]
        vocab = logp.size(-1)
        coverage += attn[:, 0].float() * (~finished).unsqueeze(1)
        # A finished beam may only repeat EOS, at no cost.
        logp[finished] = float("-inf")
        logp[finished, EOS] = 0.0

        n = alive.numel()
        candidates = (scores.view(-1, 1) + logp).view(n, k * vocab)
        scores, index = candidates.topk(k, dim=1)
        origin = (torch.arange(n, device=device).unsqueeze(1) * k + index // vocab).view(-1)
        word = (index % vocab).view(-1)

        was_finished = finished[origin]
        tokens = torch.cat((tokens[origin], word.unsqueeze(1)), dim=1)
        lengths = lengths[origin] + (~was_finished).long()
        finished = was_finished | (word == EOS)
        if not nvidia:  # the hypothesis's own coverage; NVIDIA's stays with the slot
            coverage = coverage[origin]
        state = [(h.index_select(1, origin), c.index_select(1, origin)) for h, c in state]
        last = word.unsqueeze(1)

        done = finished.view(n, k).all(dim=1)
        last_step = step == cfg.max_length - 1
        if last_step:
            done[:] = True
        if not done.any():
            continue
        best_rows = best_hypotheses(scores, lengths, coverage, cfg, last_step)
        for i in done.nonzero().flatten().tolist():
            row = i * k + best_rows[i].item()
            hyp = tokens[row, : lengths[row] - offset].tolist()
            results[alive[i].item()] = hyp[:-1] if hyp and hyp[-1] == EOS else hyp
        keep = (~done).nonzero().flatten()
        if keep.numel() == 0:
            break
        keep_rows = (keep.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
        alive, scores = alive[keep], scores[keep]
        tokens, last, finished = tokens[keep_rows], last[keep_rows], finished[keep_rows]
        lengths, coverage = lengths[keep_rows], coverage[keep_rows]
        state = [(h.index_select(1, keep_rows), c.index_select(1, keep_rows)) for h, c in state]
        source = source.index_select(keep_rows)
    return results
