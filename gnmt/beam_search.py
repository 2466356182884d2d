"""Batched beam search for GNMT: all sentences x beams decode together, one step at a time.

Hypotheses are ranked, once every beam of a sentence has produced EOS (or the length
limit is reached), by the GNMT paper's score (Wu et al., 2016, section 7):

    s(Y, X) = log P(Y | X) / lp(Y) + cp(X, Y)
    lp(Y)   = ((c + |Y|) / (c + 1)) ** alpha            c = len_norm_const, alpha = len_norm_factor
    cp(X,Y) = beta * sum_i log(min(sum_j p_ij, 1))       beta = cov_penalty_factor

|Y| counts generated tokens including EOS, p_ij is the attention of target step j on
source position i, and source positions that received no attention at all (padding)
are left out of the sum. Coverage follows each hypothesis as beams are reordered.
A finished beam is carried along unchanged (EOS with log-probability 0) while the
others of its sentence go on; finished sentences leave the batch, so the remaining
ones decode faster. Beam size 1 is greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gnmt.model import GNMT
from gnmt.tokenizer import BOS, EOS


@dataclass(frozen=True)
class SearchConfig:
    beam_size: int = 5
    max_length: int = 150  # generated tokens per sentence, EOS included
    len_norm_factor: float = 0.6
    len_norm_const: float = 5.0
    cov_penalty_factor: float = 0.1


def final_scores(
    log_probs: torch.Tensor, lengths: torch.Tensor, coverage: torch.Tensor, cfg: SearchConfig
) -> torch.Tensor:
    """GNMT ranking score for hypotheses: log_probs [N], lengths [N], coverage [N, S]."""
    length = lengths.to(log_probs.dtype)
    lp = ((cfg.len_norm_const + length) / (cfg.len_norm_const + 1.0)) ** cfg.len_norm_factor
    attended = coverage > 0
    cp = torch.where(attended, coverage.clamp(max=1.0).clamp(min=1e-30).log(), 0.0).sum(-1)
    return log_probs / lp + cfg.cov_penalty_factor * cp


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

    alive = torch.arange(batch, device=device)  # original index of each live sentence
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    tokens = torch.full((batch * k, 0), BOS, dtype=torch.long, device=device)
    last = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
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
        coverage = coverage[origin]
        state = [(h.index_select(1, origin), c.index_select(1, origin)) for h, c in state]
        last = word.unsqueeze(1)

        done = finished.view(n, k).all(dim=1)
        if step == cfg.max_length - 1:
            done[:] = True
        if not done.any():
            continue
        ranked = final_scores(scores.view(-1), lengths, coverage, cfg).view(n, k)
        best = ranked.argmax(dim=1)
        for i in done.nonzero().flatten().tolist():
            row = i * k + best[i].item()
            hyp = tokens[row, : lengths[row]].tolist()
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
