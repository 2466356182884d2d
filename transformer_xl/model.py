"""Transformer-XL language model (Dai et al., 2019), time-major [T, B] as in NVIDIA's recipe.

    tokens [T, B] -> adaptive embedding * sqrt(d_model) -> dropout
      -> n_layer x (relative multi-head attention over [memory ; segment] -> feed-forward)
      -> dropout -> projected adaptive softmax -> per-token NLL [T, B]

Attention of query i (absolute position mlen + i) to key j, for each head:

    score(i, j) = ((q_i + u) . k_j  +  (q_i + v) . W_r R(mlen + i - j)) / sqrt(d_head)

u = `r_w_bias`, v = `r_r_bias` (global, [n_head, d_head]), R the sinusoid of the
relative distance (clamped at `clamp_len` when > 0). Keys after the query are masked;
with `same_length` a query also ignores keys more than `mem_len` before it, so every
query sees mem_len + 1 keys, as in NVIDIA's current code (its earlier release, like the
original, showed mem_len keys). Layers are post-LayerNorm
(x = LN(x + f(x))) unless `pre_lnorm` (x = x + f(LN(x))).

The first (content) term is the query passed to `scaled_dot_product_attention` and the
second (position) term its additive mask, so the fused kernel forms the probabilities.
The position term needs the "relative shift": row i of P[i, c] = (q_i + v) . W_r R(d_c)
must move left by qlen - i places. With klen + 1 columns for the distances
d_c = klen - c (c = 0 .. klen), entry (i, j) is P[i, qlen - i + j], which is element
qlen + i * klen + j of the flattened [qlen, klen + 1] block: dropping the block's first
qlen elements and reading the rest as [qlen, klen] is the shifted matrix, a view, no
copy. Where the causal mask lets a value through it equals the pad-and-reshape trick's.

Memory: the input of every layer (n_layer tensors [M, B, d_model]) is kept, detached,
for the next segment: the last `mem_len` positions of [memory ; segment] ending
`ext_len` positions before the segment's end. NVIDIA keeps the same n_layer tensors
(the original code also kept the unused output of the last layer).

State-dict names follow NVIDIA's PyTorch recipe (`crit.out_layers.i.weight/bias`, tied
tensors listed under both names, as in its earlier release and the original code), so
those checkpoints load one-to-one; transformer_xl.checkpoints also reads the layout of
NVIDIA's later code (`out_layers_weights`, `out_layers_biases`, `shared_out_projs`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transformer_xl.adaptive import AdaptiveEmbedding, ProjectedAdaptiveLogSoftmax

Mems = list[torch.Tensor]  # one [M, B, d_model] tensor per layer


class PositionalEmbedding(nn.Module):
    """Distances [R] -> sinusoids [R, d_model] = [sin(d * f) ; cos(d * f)]."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        angles = distances[:, None] * self.inv_freq[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PositionwiseFF(nn.Module):
    """Feed-forward block with residual and LayerNorm: [T, B, d_model] -> same."""

    def __init__(self, d_model: int, d_inner: int, dropout: float, pre_lnorm: bool) -> None:
        super().__init__()
        self.CoreNet = nn.Sequential(
            nn.Linear(d_model, d_inner),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(d_inner, d_model),
            nn.Dropout(dropout),
        )
        self.layer_norm = nn.LayerNorm(d_model)
        self.pre_lnorm = pre_lnorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_lnorm:
            return x + self.CoreNet(self.layer_norm(x))
        return self.layer_norm(x + self.CoreNet(x))


class RelMultiHeadAttn(nn.Module):
    """Multi-head attention with relative positions and global biases, plus the
    residual and LayerNorm around it: segment [Q, B, d_model] -> same."""

    def __init__(
        self,
        n_head: int,
        d_model: int,
        d_head: int,
        dropout: float,
        dropatt: float,
        pre_lnorm: bool,
    ) -> None:
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.scale = d_head**-0.5
        self.pre_lnorm = pre_lnorm
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
        self.r_net = nn.Linear(d_model, n_head * d_head, bias=False)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)  # its p is the attention-probability dropout

    def forward(
        self,
        w: torch.Tensor,
        r: torch.Tensor,
        r_w_bias: torch.Tensor,
        r_r_bias: torch.Tensor,
        attn_mask: torch.Tensor,
        mem: torch.Tensor | None,
    ) -> torch.Tensor:
        """w [Q, B, d_model] segment, r [K + 1, d_model] sinusoids of the distances
        K .. 0, biases [n_head, d_head], attn_mask [Q, K] bool (True = hidden),
        mem [M, B, d_model] or None, K = M + Q."""
        qlen, bsz = w.shape[:2]
        n_head, d_head = self.n_head, self.d_head
        width = n_head * d_head
        cat = w if mem is None or mem.size(0) == 0 else torch.cat([mem, w], 0)
        klen = cat.size(0)
        x = self.layer_norm(cat) if self.pre_lnorm else cat
        # Queries only for the segment: the memory rows would be thrown away.
        q = F.linear(x[-qlen:], self.qkv_net.weight[:width]).view(qlen, bsz, n_head, d_head)
        k, v = F.linear(x, self.qkv_net.weight[width:]).view(klen, bsz, 2, n_head, d_head).unbind(2)
        r_head = self.r_net(r).view(klen + 1, n_head, d_head)

        # Position term for every (query, distance): [n_head, B, Q * (K + 1)] (each
        # [Q, K + 1] block flat), then shifted to [B, n_head, Q, K] (module docstring).
        q_r = ((q + r_r_bias.to(q.dtype)) * self.scale).permute(2, 1, 0, 3)
        raw = torch.bmm(q_r.reshape(n_head, bsz * qlen, d_head), r_head.permute(1, 2, 0))
        raw = raw.view(n_head, bsz, qlen * (klen + 1))
        shifted = raw[:, :, qlen:].view(n_head, bsz, qlen, klen).transpose(0, 1)
        position_term = shifted.masked_fill(attn_mask, float("-inf"))

        q_w = (q + r_w_bias.to(q.dtype)).permute(1, 2, 0, 3)
        attn = F.scaled_dot_product_attention(
            q_w,
            k.permute(1, 2, 0, 3),
            v.permute(1, 2, 0, 3),
            attn_mask=position_term,
            dropout_p=self.dropatt.p if self.training else 0.0,
            scale=self.scale,
        )  # [B, n_head, Q, d_head]
        out = self.drop(self.o_net(attn.permute(2, 0, 1, 3).reshape(qlen, bsz, width)))
        return w + out if self.pre_lnorm else self.layer_norm(w + out)


class RelPartialLearnableDecoderLayer(nn.Module):
    """One Transformer-XL layer: relative attention, then the feed-forward block."""

    def __init__(
        self,
        n_head: int,
        d_model: int,
        d_head: int,
        d_inner: int,
        dropout: float,
        dropatt: float,
        pre_lnorm: bool,
    ) -> None:
        super().__init__()
        self.dec_attn = RelMultiHeadAttn(n_head, d_model, d_head, dropout, dropatt, pre_lnorm)
        self.pos_ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm)

    def forward(
        self,
        x: torch.Tensor,
        r: torch.Tensor,
        r_w_bias: torch.Tensor,
        r_r_bias: torch.Tensor,
        attn_mask: torch.Tensor,
        mem: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.pos_ff(self.dec_attn(x, r, r_w_bias, r_r_bias, attn_mask, mem))


@dataclass
class TransformerXLConfig:
    """The architecture, in the names of NVIDIA's `model_config` (attention type 0 only)."""

    n_token: int
    n_layer: int
    n_head: int
    d_model: int
    d_head: int
    d_inner: int
    dropout: float
    dropatt: float
    tie_weight: bool = True
    d_embed: int | None = None
    div_val: int = 1
    tie_projs: list[bool] = field(default_factory=lambda: [False])
    pre_lnorm: bool = False
    tgt_len: int | None = None
    ext_len: int | None = None
    mem_len: int | None = None
    cutoffs: list[int] = field(default_factory=list)
    same_length: bool = False
    attn_type: int = 0
    clamp_len: int = -1


class MemTransformerLM(nn.Module):
    """Transformer-XL with adaptive embedding and softmax (attention type 0 only).

    Arguments and their names are those of NVIDIA's `MemTransformerLM`, so its
    `model_config` dicts pass straight in; keys this implementation has no use for
    (`dtype`, `adapt_inp`) are ignored. `tgt_len`, `ext_len`, `mem_len` are the segment
    lengths (see `reset_length`); None means 0 for ext_len and mem_len.
    """

    def __init__(
        self,
        n_token: int | TransformerXLConfig,
        n_layer: int | None = None,
        n_head: int | None = None,
        d_model: int | None = None,
        d_head: int | None = None,
        d_inner: int | None = None,
        dropout: float = 0.0,
        dropatt: float = 0.0,
        tie_weight: bool = True,
        d_embed: int | None = None,
        div_val: int = 1,
        tie_projs: Sequence[bool] = (False,),
        pre_lnorm: bool = False,
        tgt_len: int | None = None,
        ext_len: int | None = None,
        mem_len: int | None = None,
        cutoffs: Sequence[int] = (),
        same_length: bool = False,
        attn_type: int = 0,
        clamp_len: int = -1,
        sample_softmax: int = -1,
        **ignored: Any,
    ) -> None:
        if isinstance(n_token, TransformerXLConfig):  # MemTransformerLM(config)
            self.__init__(**asdict(n_token))
            return
        super().__init__()
        if None in (n_layer, n_head, d_model, d_head, d_inner):
            raise TypeError("MemTransformerLM needs a TransformerXLConfig or n_layer, n_head, "
                            "d_model, d_head and d_inner")  # fmt: skip
        if attn_type != 0:
            raise ValueError(
                f"attn_type {attn_type} is not supported: only 0 (relative positions with "
                "global biases, the Transformer-XL attention) is implemented"
            )
        if sample_softmax > 0:
            raise ValueError("sample_softmax > 0 (sampled softmax) is not supported")
        d_embed = d_model if d_embed is None or d_embed < 0 else d_embed
        self.n_token, self.n_layer, self.n_head = n_token, n_layer, n_head
        self.d_model, self.d_head, self.d_inner, self.d_embed = d_model, d_head, d_inner, d_embed
        self.dropout, self.dropatt = dropout, dropatt
        self.tie_weight, self.div_val, self.pre_lnorm = tie_weight, div_val, pre_lnorm
        self.cutoffs = [int(c) for c in cutoffs]
        self.tie_projs = [bool(t) for t in tie_projs]
        self.same_length, self.clamp_len = same_length, clamp_len
        self.tgt_len, self.ext_len, self.mem_len = tgt_len, ext_len or 0, mem_len or 0

        self.word_emb = AdaptiveEmbedding(n_token, d_embed, d_model, self.cutoffs, div_val)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            RelPartialLearnableDecoderLayer(
                n_head, d_model, d_head, d_inner, dropout, dropatt, pre_lnorm
            )
            for _ in range(n_layer)
        )
        self.crit = ProjectedAdaptiveLogSoftmax(n_token, d_embed, d_model, self.cutoffs, div_val)
        if tie_weight:
            for out_layer, emb_layer in zip(
                self.crit.out_layers, self.word_emb.emb_layers, strict=True
            ):
                out_layer.weight = emb_layer.weight
        if len(self.crit.out_projs):
            for i, tie in enumerate(self.tie_projs[: len(self.crit.out_projs)]):
                if tie:
                    self.crit.out_projs[i] = self.word_emb.emb_projs[0 if div_val == 1 else i]
        self.pos_emb = PositionalEmbedding(d_model)
        self.r_w_bias = nn.Parameter(torch.zeros(n_head, d_head))
        self.r_r_bias = nn.Parameter(torch.zeros(n_head, d_head))

    @property
    def config(self) -> TransformerXLConfig:
        """The architecture, with the segment lengths as they are now."""
        return TransformerXLConfig(
            self.n_token, self.n_layer, self.n_head, self.d_model, self.d_head, self.d_inner,
            self.dropout, self.dropatt, self.tie_weight, self.d_embed, self.div_val,
            list(self.tie_projs), self.pre_lnorm, self.tgt_len, self.ext_len, self.mem_len,
            list(self.cutoffs), self.same_length, 0, self.clamp_len,
        )  # fmt: skip

    def reset_length(self, tgt_len: int, ext_len: int, mem_len: int) -> None:
        """Segment length, extended context and memory length (evaluation uses others
        than training)."""
        if tgt_len < 1 or ext_len < 0 or mem_len < 0:
            raise ValueError(
                f"need tgt_len >= 1, ext_len >= 0, mem_len >= 0; got {tgt_len}, {ext_len}, "
                f"{mem_len}"
            )
        self.tgt_len, self.ext_len, self.mem_len = tgt_len, ext_len, mem_len

    def init_mems(self, batch_size: int, device: torch.device | str | None = None) -> Mems:
        """Empty memories: n_layer tensors [0, batch_size, d_model]. Passing None to
        `forward` means the same."""
        param = self.r_w_bias
        device = param.device if device is None else device
        return [
            torch.empty(0, batch_size, self.d_model, dtype=param.dtype, device=device)
            for _ in range(self.n_layer)
        ]

    def non_embedding_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters outside the adaptive embedding and softmax (for --clip_nonemb)."""
        for name, param in self.named_parameters():
            if not name.startswith(("word_emb.", "crit.")):
                yield param

    def attn_mask(self, qlen: int, mlen: int, device: torch.device) -> torch.Tensor:
        """[qlen, mlen + qlen] bool, True where query i may not see key j."""
        query = torch.arange(mlen, mlen + qlen, device=device)[:, None]
        key = torch.arange(mlen + qlen, device=device)[None, :]
        mask = key > query
        if self.same_length:
            mask |= key < query - self.mem_len
        return mask

    def hidden_states(
        self, data: torch.Tensor, mems: Mems | None = None
    ) -> tuple[torch.Tensor, Mems]:
        """Final hidden states [T, B, d_model] of tokens data [T, B], and new memories."""
        if mems is not None and len(mems) != self.n_layer:
            raise ValueError(
                f"expected {self.n_layer} memory tensors (one a layer), got {len(mems)}"
            )
        qlen = data.size(0)
        mlen = mems[0].size(0) if mems is not None else 0
        klen = mlen + qlen
        mask = self.attn_mask(qlen, mlen, data.device)
        distances = torch.arange(klen, -1, -1.0, device=data.device)
        if self.clamp_len > 0:
            distances = distances.clamp(max=self.clamp_len)
        r = self.drop(self.pos_emb(distances))

        core = self.drop(self.word_emb(data))
        hids = []
        for i, layer in enumerate(self.layers):
            hids.append(core)
            core = layer(
                core, r, self.r_w_bias, self.r_r_bias, mask, None if mems is None else mems[i]
            )
        return self.drop(core), self._update_mems(hids, mems, qlen, mlen)

    @torch.no_grad()
    def _update_mems(self, hids: Mems, mems: Mems | None, qlen: int, mlen: int) -> Mems:
        """Positions [beg, end) of [memory ; segment] for each layer, detached."""
        end = mlen + max(0, qlen - self.ext_len)
        beg = max(0, end - self.mem_len)
        if beg >= mlen:  # nothing of the old memory survives: no concatenation
            return [h[beg - mlen : end - mlen].detach() for h in hids]
        return [
            torch.cat([m[beg:], h[: end - mlen]]).detach() for m, h in zip(mems, hids, strict=True)
        ]

    def forward(
        self, data: torch.Tensor, target: torch.Tensor, mems: Mems | None = None
    ) -> tuple[torch.Tensor, Mems]:
        """data [T, B], target [T', B] (T' <= T: the last T' positions are scored),
        mems None or n_layer tensors [M, B, d_model] ->
        (per-token NLL [T', B] float32, new memories)."""
        hidden, new_mems = self.hidden_states(data, mems)
        tgt_len = target.size(0)
        pred = hidden[-tgt_len:].reshape(-1, self.d_model)
        loss = self.crit(pred, target.reshape(-1))
        return loss.view(tgt_len, -1), new_mems

    def log_probs(self, data: torch.Tensor, mems: Mems | None = None) -> tuple[torch.Tensor, Mems]:
        """Log-probabilities [T, B, n_token] (float32) of the token after each position."""
        hidden, new_mems = self.hidden_states(data, mems)
        log_probs = self.crit.log_prob(hidden.reshape(-1, self.d_model))
        return log_probs.view(*data.shape, -1), new_mems


def model_config(model: MemTransformerLM) -> dict[str, Any]:
    """Constructor arguments of `model` (lengths as they are now), for checkpoints:
    `MemTransformerLM(**model_config(model))` builds the same architecture."""
    return asdict(model.config)


def init_weights(
    model: MemTransformerLM,
    init: str = "normal",
    init_range: float = 0.1,
    init_std: float = 0.02,
    proj_init_std: float = 0.01,
) -> None:
    """The recipe's initialisation: weights (linear, embedding, cluster, r_w_bias,
    r_r_bias) from N(0, init_std) or U(-init_range, init_range); projections from
    N(0, proj_init_std); LayerNorm weights from N(1, init_std); biases zero."""
    if init not in ("normal", "uniform"):
        raise ValueError(f"unknown init {init!r}: choose normal or uniform")

    def draw(weight: torch.Tensor) -> None:
        if init == "uniform":
            nn.init.uniform_(weight, -init_range, init_range)
        else:
            nn.init.normal_(weight, 0.0, init_std)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                draw(module.weight)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.normal_(module.weight, 1.0, init_std)
                module.bias.zero_()
        for proj in [*model.word_emb.emb_projs, *model.crit.out_projs]:
            nn.init.normal_(proj, 0.0, proj_init_std)
        if model.crit.n_clusters:
            draw(model.crit.cluster_weight)
            model.crit.cluster_bias.zero_()
        draw(model.r_w_bias)
        draw(model.r_r_bias)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[MemTransformerLM, list[str] | None]:
    """(model in eval mode, vocabulary id -> symbol or None) from our checkpoint or
    NVIDIA's; the readers live in transformer_xl.checkpoints (`load_model`)."""
    from transformer_xl.checkpoints import load_model

    return load_model(path, map_location)
