"""Adaptive input embedding and projected adaptive softmax (Baevski & Auli; Grave et al.).

The vocabulary is split at `cutoffs` into clusters: ids [0, c1) form the head (the
frequent words), [c1, c2), [c2, c3), ... the tail clusters. With `div_val` > 1, cluster
i gets the smaller dimension d_embed // div_val**i and a projection between it and
d_model; with `div_val` == 1 every cluster shares one d_embed-wide table.

Softmax: the head scores the shortlist words plus one token per tail cluster; a tail
word's log-probability is the head log-probability of its cluster's token plus its
log-probability within the cluster. NVIDIA's order is kept: tail cluster i is head
column `shortlist + n_clusters - i` (the cluster rows are read from the end).

Parameter names are those of NVIDIA's PyTorch recipe (`emb_layers`, `emb_projs`,
`out_layers`, `out_projs`, `cluster_weight`, `cluster_bias`); `MemTransformerLM`
ties the softmax tables and projections to the embedding's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def cluster_bounds(n_token: int, cutoffs: Sequence[int]) -> list[tuple[int, int]]:
    """[(lo, hi)] id range of each cluster, head first."""
    ends = [0, *cutoffs, n_token]
    bounds = list(pairwise(ends))
    if any(lo >= hi for lo, hi in bounds):
        raise ValueError(f"cutoffs must increase strictly inside (0, {n_token}); got {cutoffs}")
    return bounds


def cluster_dims(d_embed: int, div_val: int, n_clusters: int) -> list[int]:
    """Embedding width of each cluster (head first)."""
    if div_val == 1:
        return [d_embed]
    return [d_embed // div_val**i for i in range(n_clusters)]


class AdaptiveEmbedding(nn.Module):
    """Token ids [T, B] -> embeddings [T, B, d_proj], scaled by sqrt(d_proj)."""

    def __init__(
        self, n_token: int, d_embed: int, d_proj: int, cutoffs: Sequence[int], div_val: int = 1
    ) -> None:
        super().__init__()
        self.d_embed, self.d_proj, self.div_val = d_embed, d_proj, div_val
        self.bounds = cluster_bounds(n_token, cutoffs)
        self.scale = d_proj**0.5
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ParameterList()
        if div_val == 1:
            self.emb_layers.append(nn.Embedding(n_token, d_embed))
            if d_proj != d_embed:
                self.emb_projs.append(nn.Parameter(torch.zeros(d_proj, d_embed)))
        else:
            for (lo, hi), d in zip(
                self.bounds, cluster_dims(d_embed, div_val, len(self.bounds)), strict=True
            ):
                self.emb_layers.append(nn.Embedding(hi - lo, d))
                self.emb_projs.append(nn.Parameter(torch.zeros(d_proj, d)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.div_val == 1:
            embed = self.emb_layers[0](tokens)
            if len(self.emb_projs):
                embed = F.linear(embed, self.emb_projs[0])
            return embed * self.scale
        # Every cluster embeds every position (ids clamped into its range) and the right
        # one is selected: no data-dependent shapes, so no host synchronisation; the
        # head dominates the cost since tails are div_val**i times narrower.
        embed = None
        for (lo, hi), table, proj in zip(self.bounds, self.emb_layers, self.emb_projs, strict=True):
            local = F.linear(table((tokens - lo).clamp(0, hi - lo - 1)), proj)
            inside = ((tokens >= lo) & (tokens < hi)).unsqueeze(-1)
            embed = local if embed is None else torch.where(inside, local, embed)
        return embed * self.scale


class ProjectedAdaptiveLogSoftmax(nn.Module):
    """Hidden states [N, d_proj] and targets [N] -> per-token NLL [N] (float32, or float64
    for a float64 model).

    `out_layers[i]` scores cluster i (with `div_val` == 1 a single layer scores the
    whole vocabulary and clusters take row slices of it); `out_projs[i]` maps d_proj to
    the cluster's width, absent when `div_val` == 1 and d_proj == d_embed.
    """

    def __init__(
        self, n_token: int, d_embed: int, d_proj: int, cutoffs: Sequence[int], div_val: int = 1
    ) -> None:
        super().__init__()
        self.n_token, self.div_val = n_token, div_val
        self.bounds = cluster_bounds(n_token, cutoffs)
        self.shortlist = self.bounds[0][1]
        self.n_clusters = len(self.bounds) - 1
        if self.n_clusters:
            self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, d_embed))
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))
        self.out_layers = nn.ModuleList()
        self.out_projs = nn.ParameterList()
        if div_val == 1:
            self.out_layers.append(nn.Linear(d_embed, n_token))
            if d_proj != d_embed:
                for _ in self.bounds:
                    self.out_projs.append(nn.Parameter(torch.zeros(d_proj, d_embed)))
        else:
            for (lo, hi), d in zip(
                self.bounds, cluster_dims(d_embed, div_val, len(self.bounds)), strict=True
            ):
                self.out_layers.append(nn.Linear(d, hi - lo))
                self.out_projs.append(nn.Parameter(torch.zeros(d_proj, d)))

    def _cluster_params(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(weight [V_i, d_i], bias [V_i], projection [d_proj, d_i] or None) of cluster i."""
        if self.div_val == 1:
            lo, hi = self.bounds[i]
            layer = self.out_layers[0]
            weight, bias = layer.weight[lo:hi], layer.bias[lo:hi]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        proj = self.out_projs[i] if len(self.out_projs) else None
        if i == 0 and self.n_clusters:
            weight = torch.cat([weight, self.cluster_weight])
            bias = torch.cat([bias, self.cluster_bias])
        return weight, bias, proj

    def _logits(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        """Logits [N, V_i] of cluster i (the head includes the cluster tokens), in
        float32 at least: softmax over a large vocabulary in fp16/bf16 loses the loss."""
        weight, bias, proj = self._cluster_params(i)
        if proj is not None:
            hidden = F.linear(hidden, proj.t())
        logits = F.linear(hidden, weight, bias)
        return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits

    def _cluster_of(self, target: torch.Tensor) -> torch.Tensor:
        """Cluster index [N] of each target id (0 = head)."""
        cluster = torch.zeros_like(target)
        for lo, _ in self.bounds[1:]:
            cluster += target >= lo
        return cluster

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        head_logits = self._logits(hidden, 0)
        if not self.n_clusters:
            return F.cross_entropy(head_logits, target, reduction="none")
        cluster = self._cluster_of(target)
        head_size = self.shortlist + self.n_clusters
        head_target = torch.where(cluster == 0, target, head_size - cluster)
        nll = F.cross_entropy(head_logits, head_target, reduction="none")
        # Tails score only their own tokens. Empty clusters still run (on zero rows) so
        # every parameter takes part in the graph, as DDP requires.
        for i in range(1, self.n_clusters + 1):
            rows = (cluster == i).nonzero().squeeze(1)
            tail_logits = self._logits(hidden.index_select(0, rows), i)
            tail_target = target.index_select(0, rows) - self.bounds[i][0]
            nll = nll.index_add(
                0, rows, F.cross_entropy(tail_logits, tail_target, reduction="none")
            )
        return nll

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [N, n_token] (float32 or wider) over the whole vocabulary."""
        head = F.log_softmax(self._logits(hidden, 0), dim=-1)
        parts = [head[:, : self.shortlist]]
        head_size = self.shortlist + self.n_clusters
        for i in range(1, self.n_clusters + 1):
            tail = F.log_softmax(self._logits(hidden, i), dim=-1)
            parts.append(head[:, head_size - i, None] + tail)
        return torch.cat(parts, dim=-1)
