"""GNMT v2: LSTM encoder-decoder with normalized Bahdanau attention (batch-first).

Encoder: shared embedding -> dropout -> bidirectional LSTM (packed, so padding never
leaks in) -> dropout -> LSTM -> then for layers 3.. : dropout -> LSTM -> + residual.

Decoder: embedding -> LSTM (layer 1) whose outputs query the attention over the encoder
outputs; the attention context is concatenated to the input of every later layer:
dropout(x) ++ context -> LSTM (-> + residual from layer 3 on) -> classifier. Where the
decoder drops out is `decoder_dropout`:
    "outputs"  each LSTM's output, before the context joins it (the default; NVIDIA's
               first PyTorch GNMT release), which learned faster in our measurements
               (docs/GNMT.md, "Learning curve");
    "inputs"   every LSTM input whole: the target embedding, and x ++ context (NVIDIA's
               current code).
The encoder drops out every LSTM input in both cases, as NVIDIA's always has.

Attention score of query q against key k (normalized Bahdanau):
    e = (g * v / ||v||) . tanh(W_q q + W_k k + b),   g initialised to 1/sqrt(hidden)
with padded source positions masked before the softmax.

State-dict names follow NVIDIA's PyTorch GNMT (encoder.rnn_layers.N, decoder.att_rnn,
decoder.rnn_layers.N, ...) so its checkpoints load with one key renamed.

The decoder starts from zero states, as in NVIDIA's PyTorch recipe (whose published
BLEU and checkpoints we reproduce); `init_decoder_from_encoder=True` instead starts
decoder layer i from the final state of encoder layer i (layer 1: the backward
direction of the bidirectional layer), as the TensorFlow recipe describes.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from common.precision import cpu_has_native_bf16
from gnmt.tokenizer import PAD, Tokenizer

State = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer (h, c), each [1, B, H]


@dataclass
class GNMTConfig:
    vocab_size: int
    hidden_size: int = 1024
    num_layers: int = 4
    dropout: float = 0.2
    share_embedding: bool = True
    init_decoder_from_encoder: bool = False
    init_weight: float = 0.1
    decoder_dropout: str = "outputs"  # or "inputs": see the module's docstring


DECODER_DROPOUT = ("outputs", "inputs")


@functools.cache
def _cpu_has_bf16_rnn() -> bool:
    """Whether oneDNN has a bf16 LSTM here: where the CPU has native bf16."""
    return cpu_has_native_bf16()


def run_lstm(
    lstm: nn.LSTM, x: torch.Tensor | PackedSequence, state: tuple | None = None
) -> tuple[torch.Tensor | PackedSequence, tuple[torch.Tensor, torch.Tensor]]:
    """`lstm(x, state)` in bf16 on any CPU: under bf16 autocast, or with bf16 weights.

    oneDNN has a bf16 LSTM only from AVX-512 on; elsewhere nn.LSTM in bf16 either has
    no primitive (under autocast) or runs ATen's kernel about 20x slower than in fp32
    (bf16 matrix products are emulated on AVX2). There the recurrence runs in fp32
    with ATen's kernel, which measured faster than oneDNN's fp32 one on AVX2
    (docs/PERFORMANCE.md), with bf16 weights read as fp32; the result comes back in the
    dtype the rest of the model expects.
    """
    data = x.data if isinstance(x, PackedSequence) else x
    if data.device.type != "cpu" or _cpu_has_bf16_rnn():
        return lstm(x, state)
    bf16_weights = lstm.weight_ih_l0.dtype == torch.bfloat16
    autocast = (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    if not (bf16_weights or autocast):
        return lstm(x, state)
    if state is not None:
        state = tuple(s.float() for s in state)
    onednn = torch.backends.mkldnn.set_flags(False)[0]
    try:
        with torch.autocast("cpu", enabled=False):
            if bf16_weights:
                fp32 = {name: p.float() for name, p in lstm.named_parameters()}
                out, (h, c) = torch.func.functional_call(lstm, fp32, (x.float(), state))
            else:
                out, (h, c) = lstm(x.float(), state)
    finally:
        torch.backends.mkldnn.set_flags(onednn)
    if bf16_weights and not autocast:
        out, h, c = out.to(torch.bfloat16), h.bfloat16(), c.bfloat16()
    return out, (h, c)


def _init_lstm(lstm: nn.LSTM, bound: float) -> None:
    for name, param in lstm.named_parameters():
        if name.startswith("bias_hh"):
            nn.init.zeros_(param)  # bias_ih already carries a bias; two would double it
        else:
            nn.init.uniform_(param, -bound, bound)


class BahdanauAttention(nn.Module):
    """Normalized Bahdanau attention. Keys are projected once per source (`project_keys`)."""

    def __init__(self, hidden_size: int, init_weight: float = 0.1) -> None:
        super().__init__()
        self.linear_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.linear_k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.linear_att = nn.Parameter(torch.empty(hidden_size))
        self.normalize_scalar = nn.Parameter(torch.empty(1))
        self.normalize_bias = nn.Parameter(torch.empty(hidden_size))
        for p in (self.linear_q.weight, self.linear_k.weight, self.linear_att):
            nn.init.uniform_(p, -init_weight, init_weight)
        nn.init.constant_(self.normalize_scalar, 1.0 / math.sqrt(hidden_size))
        nn.init.zeros_(self.normalize_bias)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """[B, S, H] encoder outputs -> [B, S, H] projected keys (+ the normalize bias)."""
        return self.linear_k(keys) + self.normalize_bias

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        projected_keys: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query [B, T, H], keys [B, S, H], mask [B, S] (True = padding).

        Returns the context [B, T, H] and attention probabilities [B, T, S].
        """
        q = self.linear_q(query)
        v = self.linear_att / self.linear_att.norm() * self.normalize_scalar
        # [B, T, 1, H] + [B, 1, S, H] -> tanh -> . v -> [B, T, S]
        scores = torch.tanh(q.unsqueeze(2) + projected_keys.unsqueeze(1)) @ v
        scores = scores.masked_fill(mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        probs = F.softmax(scores, dim=-1)
        return torch.bmm(probs, keys.to(probs.dtype)), probs


class RecurrentAttention(nn.Module):
    """The decoder's first LSTM layer and the attention it queries."""

    def __init__(self, hidden_size: int, init_weight: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        self.attn = BahdanauAttention(hidden_size, init_weight)
        _init_lstm(self.rnn, init_weight)


class Encoder(nn.Module):
    def __init__(self, cfg: GNMTConfig, embedder: nn.Embedding) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.embedder = embedder
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn_layers = nn.ModuleList(
            [
                nn.LSTM(h, h, batch_first=True, bidirectional=True),
                nn.LSTM(2 * h, h, batch_first=True),
            ]
            + [nn.LSTM(h, h, batch_first=True) for _ in range(cfg.num_layers - 2)]
        )
        for lstm in self.rnn_layers:
            _init_lstm(lstm, cfg.init_weight)
        self.keep_final_states = cfg.init_decoder_from_encoder

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """src [B, S], lengths [B] -> outputs [B, S, H] (zeros at padding), final states.

        Final states (one (h, c) per decoder layer) are returned only when the decoder
        starts from them; otherwise the list is empty.
        """
        total = src.size(1)
        cpu_lengths = lengths.cpu()
        x = self.dropout(self.embedder(src))
        finals: State = []
        for i, lstm in enumerate(self.rnn_layers):
            if i > 0:
                residual = x
                x = self.dropout(x)
            # The bidirectional layer must be packed (its backward pass would otherwise
            # start in the padding); the later layers only when final states are needed.
            if i == 0 or self.keep_final_states:
                packed = pack_padded_sequence(
                    x, cpu_lengths, batch_first=True, enforce_sorted=False
                )
                out, (h, c) = run_lstm(lstm, packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
                if self.keep_final_states:
                    finals.append((h[-1:], c[-1:]))  # layer 1: the backward direction
            else:
                out, _ = run_lstm(lstm, x)
            x = out + residual if i >= 2 else out
        return x, finals


class Decoder(nn.Module):
    def __init__(self, cfg: GNMTConfig, embedder: nn.Embedding) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.embedder = embedder
        self.att_rnn = RecurrentAttention(h, cfg.init_weight)
        self.rnn_layers = nn.ModuleList(
            [nn.LSTM(2 * h, h, batch_first=True) for _ in range(cfg.num_layers - 1)]
        )
        for lstm in self.rnn_layers:
            _init_lstm(lstm, cfg.init_weight)
        self.classifier = nn.Linear(h, cfg.vocab_size)
        nn.init.uniform_(self.classifier.weight, -cfg.init_weight, cfg.init_weight)
        nn.init.uniform_(self.classifier.bias, -cfg.init_weight, cfg.init_weight)
        self.dropout = nn.Dropout(cfg.dropout)
        self.drop_inputs = cfg.decoder_dropout == "inputs"

    def forward(
        self,
        tgt: torch.Tensor,
        keys: torch.Tensor,
        projected_keys: torch.Tensor,
        mask: torch.Tensor,
        state: State | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """tgt [B, T] -> logits [B, T, V], attention [B, T, S], new state.

        Whole sequences at once in training (teacher forcing); one step (T = 1) with
        the carried `state` during search.
        """
        state = state or [None] * (len(self.rnn_layers) + 1)
        new_state: State = []
        embedded = self.embedder(tgt)
        if self.drop_inputs:
            embedded = self.dropout(embedded)
        x, hc = run_lstm(self.att_rnn.rnn, embedded, state[0])
        new_state.append(hc)
        context, probs = self.att_rnn.attn(x, keys, projected_keys, mask)
        for i, lstm in enumerate(self.rnn_layers):
            residual = x
            if self.drop_inputs:
                inp = self.dropout(torch.cat((x, context.to(x.dtype)), dim=2))
            else:
                inp = torch.cat((self.dropout(x), context.to(x.dtype)), dim=2)
            out, hc = run_lstm(lstm, inp, state[i + 1])
            new_state.append(hc)
            x = out + residual if i >= 1 else out
        return self.classifier(x), probs, new_state


@dataclass
class EncodedSource:
    """What the decoder needs from the encoder; rows can be repeated or selected (beams)."""

    keys: torch.Tensor  # [B, S, H] encoder outputs
    projected_keys: torch.Tensor  # [B, S, H]
    mask: torch.Tensor  # [B, S], True at padding
    state: State | None  # initial decoder state, or None for zeros

    def index_select(self, index: torch.Tensor) -> EncodedSource:
        state = None
        if self.state is not None:
            state = [(h.index_select(1, index), c.index_select(1, index)) for h, c in self.state]
        return EncodedSource(
            self.keys.index_select(0, index),
            self.projected_keys.index_select(0, index),
            self.mask.index_select(0, index),
            state,
        )


class GNMT(nn.Module):
    """GNMT v2. `model(src [B, S], src_lengths [B], tgt_input [B, T])` -> logits [B, T, V].

    Built as `GNMT(config)` from a `GNMTConfig`, or as `GNMT(vocab_size, hidden_size, ...)`.
    """

    def __init__(
        self,
        vocab_size: int | GNMTConfig,
        hidden_size: int = 1024,
        num_layers: int = 4,
        dropout: float = 0.2,
        share_embedding: bool = True,
        init_decoder_from_encoder: bool = False,
        decoder_dropout: str = GNMTConfig.decoder_dropout,
    ) -> None:
        super().__init__()
        if isinstance(vocab_size, GNMTConfig):
            cfg = vocab_size
        else:
            cfg = GNMTConfig(vocab_size, hidden_size, num_layers, dropout, share_embedding,
                             init_decoder_from_encoder, decoder_dropout=decoder_dropout)  # fmt: skip
        if cfg.num_layers < 2:
            raise ValueError("GNMT needs at least 2 layers (bidirectional + unidirectional)")
        if cfg.decoder_dropout not in DECODER_DROPOUT:
            raise ValueError(
                f"decoder_dropout {cfg.decoder_dropout!r}: one of {', '.join(DECODER_DROPOUT)}"
            )
        self.config = cfg
        bound = cfg.init_weight

        def embedding() -> nn.Embedding:
            emb = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=PAD)
            nn.init.uniform_(emb.weight, -bound, bound)
            return emb

        enc_emb = embedding()
        self.encoder = Encoder(cfg, enc_emb)
        self.decoder = Decoder(cfg, enc_emb if cfg.share_embedding else embedding())

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncodedSource:
        keys, finals = self.encoder(src, src_lengths)
        max_len = src.size(1)
        mask = (
            torch.arange(max_len, device=src.device)[None, :] >= src_lengths.to(src.device)[:, None]
        )
        projected = self.decoder.att_rnn.attn.project_keys(keys)
        return EncodedSource(keys, projected, mask, finals or None)

    def decode(
        self, tgt: torch.Tensor, source: EncodedSource, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """tgt [B, T] -> logits [B, T, V], attention [B, T, S], state after the last step."""
        return self.decoder(
            tgt, source.keys, source.projected_keys, source.mask, state or source.state
        )

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_input: torch.Tensor
    ) -> torch.Tensor:
        logits, _, _ = self.decode(tgt_input, self.encode(src, src_lengths))
        return logits


def label_smoothed_loss(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross entropy and summed NLL over non-padding tokens.

    logits [B, T, V] (any float dtype; computed in fp32), target [B, T] with PAD at
    padding. Per token: (1 - smoothing) * nll + smoothing * mean over the vocabulary
    of -log p. Returns (loss_sum, nll_sum), both scalars.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logprobs = F.log_softmax(logits, dim=-1)
    nll = -logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -logprobs.mean(dim=-1)
    keep = target != PAD
    loss = ((1.0 - smoothing) * nll + smoothing * smooth)[keep].sum()
    return loss, nll[keep].sum()


def config_dict(model: GNMT) -> dict[str, Any]:
    return asdict(model.config)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[GNMT, Tokenizer]:
    """(model in eval mode, tokenizer) from our checkpoint or NVIDIA's PyTorch GNMT one;
    the readers live in gnmt.checkpoints (`load_model`)."""
    from gnmt.checkpoints import load_model

    return load_model(path, map_location)
